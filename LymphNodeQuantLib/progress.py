"""Progress reporting and cancellation shared by long-running engine functions.

A long job takes ``progress: ProgressCallback | None`` and ``cancel: CancelToken | None``.
It calls ``progress(fraction_done, stage_name)`` with ``fraction_done`` in [0, 1] and
calls ``cancel.raise_if_cancelled()`` between units of work (e.g. sliding windows).
"""

from __future__ import annotations

import threading
from typing import Callable, Optional

from .errors import CancelledError

ProgressCallback = Callable[[float, str], None]


class CancelToken:
    """A thread-safe flag that a GUI or signal handler sets to stop a job."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise CancelledError("Cancelled by the user; no output was written.")


class StageProgress:
    """Maps the progress of one stage onto a sub-range of the overall progress.

    ``StageProgress(callback, start=0.2, stop=0.9)("inference")(0.5)`` reports 0.55.
    """

    def __init__(self, callback: Optional[ProgressCallback], start: float = 0.0, stop: float = 1.0) -> None:
        self.callback = callback
        self.start = start
        self.stop = stop

    def __call__(self, fraction: float, stage: str) -> None:
        if self.callback is not None:
            fraction = min(max(fraction, 0.0), 1.0)
            self.callback(self.start + (self.stop - self.start) * fraction, stage)

    def sub(self, start: float, stop: float) -> "StageProgress":
        """A progress reporter for a sub-range [start, stop] of this one (fractions of this range)."""
        span = self.stop - self.start
        return StageProgress(self.callback, self.start + span * start, self.start + span * stop)
