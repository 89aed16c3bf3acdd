"""The engine's messages go through :mod:`logging` (logger ``LymphNodeQuantLib`` and its children).

A job that must hand its messages to its caller (``segment_volume`` puts them in its result, which
the CLI prints, the JSON ``done`` event carries and the Slicer module shows) collects them with
:func:`collected_messages`; collected records are marked so a front end's own handler
(:func:`is_collected`) does not print them a second time.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

PACKAGE_LOGGER_NAME = __name__.rsplit(".", 1)[0]


class _Collector(logging.Handler):
    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        record.lnq_collected = True
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def collected_messages(level: int = logging.INFO) -> Iterator[list[str]]:
    """The messages (``level`` and above) the engine logs inside the block, in order."""
    logger = logging.getLogger(PACKAGE_LOGGER_NAME)
    collector = _Collector(level)
    previous_level = logger.level
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
    logger.addHandler(collector)
    try:
        yield collector.messages
    finally:
        logger.removeHandler(collector)
        logger.setLevel(previous_level)


def is_collected(record: logging.LogRecord) -> bool:
    """True when a :func:`collected_messages` block took the record (its caller reports it)."""
    return bool(getattr(record, "lnq_collected", False))
