"""Run ``lnq segment`` (or ``lnq followup``) ``... --progress json`` in a background process and follow its progress.

The process gets its own process group (POSIX: a new session; Windows: a new process group) so
:meth:`EngineProcess.cancel` can stop it *and everything it started* (PyTorch worker processes).
Two reader threads drain stdout and stderr so the child never blocks on a full pipe; stdout lines
that are JSON objects become events, anything else is kept as log text. The GUI calls
:meth:`EngineProcess.poll` from a timer (never blocks); :meth:`EngineProcess.wait` is the blocking
loop for scripts and tests.

Protocol (``lnq segment --progress json``), one JSON object per stdout line::

    {"event": "progress", "fraction": 0.42, "stage": "inference"}
    {"event": "done", "outputs": {...}}
    {"event": "error", "message": "..."}
"""

from __future__ import annotations

import collections
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from LymphNodeQuantLib.errors import CancelledError, LNQError

ProgressCallback = Callable[[float, str], None]


class EngineProcessError(LNQError):
    """The background engine process failed; the message carries its own error text."""


@dataclass
class EngineEvent:
    """One parsed JSON line from the engine process."""

    kind: str  # "progress" | "done" | "error" | other event names passed through
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> Optional[float]:
        value = self.data.get("fraction")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def stage(self) -> str:
        return str(self.data.get("stage", ""))


def parse_event_line(line: str) -> Optional[EngineEvent]:
    """The event in one stdout line, or None for a line that is not a JSON event object."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("event"), str):
        return None
    return EngineEvent(data["event"], data)


def engine_environment(extra_pythonpath: Sequence[str] = ()) -> dict[str, str]:
    """Environment for the child: the engine package importable, unbuffered output, UTF-8."""
    import LymphNodeQuantLib

    engine_parent = str(Path(LymphNodeQuantLib.__file__).resolve().parent.parent)
    paths = [*extra_pythonpath, engine_parent]
    existing = os.environ.get("PYTHONPATH")
    if existing:
        paths.append(existing)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def segment_command(
    python_executable: str,
    input_path: Path,
    output_path: Path,
    *,
    model: str = "default",
    device: str = "auto",
    extra_arguments: Sequence[str] = (),
) -> list[str]:
    """Command line for ``python -m LymphNodeQuantLib segment`` with JSON progress."""
    return [
        python_executable, "-m", "LymphNodeQuantLib", "segment", str(input_path),
        "--out", str(output_path), "--model", str(model), "--device", str(device),
        "--progress", "json", *extra_arguments,
    ]  # fmt: skip


def followup_command(
    python_executable: str,
    baseline_path: Path,
    followup_path: Path,
    report_path: Path,
    *,
    baseline_segmentation_path: Optional[Path] = None,
    followup_segmentation_path: Optional[Path] = None,
    baseline_segmentation_out: Optional[Path] = None,
    followup_segmentation_out: Optional[Path] = None,
    criteria: str = "recist",
    model: str = "default",
    device: str = "auto",
    extra_arguments: Sequence[str] = (),
) -> list[str]:
    """Command line for ``python -m LymphNodeQuantLib followup`` with JSON progress (segmentations optional)."""
    command = [python_executable, "-m", "LymphNodeQuantLib", "followup", "--baseline", str(baseline_path),
               "--followup", str(followup_path), "--out", str(report_path), "--criteria", str(criteria),
               "--model", str(model), "--device", str(device), "--progress", "json"]  # fmt: skip
    for option, path in (
        ("--baseline-seg", baseline_segmentation_path),
        ("--followup-seg", followup_segmentation_path),
        ("--baseline-seg-out", baseline_segmentation_out),
        ("--followup-seg-out", followup_segmentation_out),
    ):
        if path is not None:
            command += [option, str(path)]
    return command + [str(argument) for argument in extra_arguments]


def install_model_command(
    python_executable: str,
    source: str,
    *,
    folds: Optional[Sequence[int]] = None,
    accept_licence: bool = False,
    overwrite: bool = False,
) -> list[str]:
    """Command line for ``python -m LymphNodeQuantLib models install`` with JSON progress."""
    command = [python_executable, "-m", "LymphNodeQuantLib", "models", "install", str(source), "--progress", "json"]
    if folds is not None:
        command += ["--folds", ",".join(str(int(f)) for f in folds)]
    if accept_licence:
        command.append("--accept-licence")
    if overwrite:
        command.append("--overwrite")
    return command


def kill_process_tree(process: subprocess.Popen, grace_seconds: float = 3.0) -> None:
    """Terminate ``process`` and all its descendants (its whole process group), then reap it."""
    if process.poll() is not None:
        return
    children = []
    try:  # psutil also finds descendants that left the process group
        import psutil

        children = psutil.Process(process.pid).children(recursive=True)
    except Exception:
        children = []
    if os.name == "posix":
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    else:  # pragma: no cover - Windows
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, check=False)
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        if os.name == "posix":
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        else:  # pragma: no cover
            process.kill()
        process.wait(timeout=grace_seconds)
    for child in children:
        try:
            child.kill()
        except Exception:
            pass
    if os.name == "posix":  # anything left in the group after the leader died
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class EngineProcess:
    """One background engine run: start, poll without blocking, cancel, or wait."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        env: Optional[dict[str, str]] = None,
        cwd: Optional[str] = None,
        log_lines: int = 200,
        task: str = "segmentation",
    ) -> None:
        self.command = [str(part) for part in command]
        self.task = task  # what the process does, for its messages ("segmentation", "follow-up comparison")
        self.env = env
        self.cwd = cwd
        self.process: Optional[subprocess.Popen] = None
        self.events: "queue.Queue[EngineEvent]" = queue.Queue()
        self.log: collections.deque[str] = collections.deque(maxlen=log_lines)
        self.fraction = 0.0
        self.stage = ""
        self.result: Optional[EngineEvent] = None  # the "done" or "error" event
        self.cancelled = False
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "EngineProcess":
        if self.process is not None:
            raise RuntimeError("This engine process was already started.")
        kwargs: dict[str, Any] = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True
        else:  # pragma: no cover - Windows
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            cwd=self.cwd,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **kwargs,
        )
        for stream, handler in ((self.process.stdout, self._on_stdout_line), (self.process.stderr, self._on_stderr_line)):
            thread = threading.Thread(target=self._read, args=(stream, handler), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    @staticmethod
    def _read(stream, handler) -> None:
        for line in iter(stream.readline, ""):
            handler(line.rstrip("\r\n"))
        stream.close()

    def _on_stdout_line(self, line: str) -> None:
        event = parse_event_line(line)
        if event is None:
            if line.strip():
                self.log.append(line)
            return
        self.events.put(event)

    def _on_stderr_line(self, line: str) -> None:
        if line.strip():
            self.log.append(line)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> Optional[int]:
        return None if self.process is None else self.process.poll()

    # ------------------------------------------------------------------ polling
    def poll(self) -> list[EngineEvent]:
        """Events received since the last call (never blocks); updates fraction/stage/result."""
        received = []
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            received.append(event)
            if event.kind == "progress" and event.fraction is not None:
                self.fraction = min(max(event.fraction, 0.0), 1.0)
                self.stage = event.stage or self.stage
            elif event.kind in ("done", "error"):
                self.result = event
        return received

    @property
    def finished(self) -> bool:
        """True once the process has exited and both output streams are fully read."""
        return self.process is not None and self.process.poll() is not None and not any(t.is_alive() for t in self._threads)

    def cancel(self) -> None:
        """Kill the whole process tree. Safe to call more than once or after the process ended."""
        self.cancelled = True
        if self.process is not None:
            kill_process_tree(self.process)
        for thread in self._threads:
            thread.join(timeout=2.0)

    def outcome(self) -> dict[str, Any]:
        """The ``outputs`` of a finished run; raises a clear error for a failed or cancelled run."""
        self.poll()
        if self.cancelled:
            raise CancelledError(f"{self.task[:1].upper()}{self.task[1:]} cancelled by the user; the scene was left unchanged.")
        if self.result is not None and self.result.kind == "error":
            raise EngineProcessError(str(self.result.data.get("message", "unknown error")))
        code = self.returncode
        if self.result is None or self.result.kind != "done" or code not in (0, None):
            tail = "\n".join(list(self.log)[-15:])
            raise EngineProcessError(
                f"The {self.task} process stopped (exit code {code}) without reporting a result."
                + (f" Its last output:\n{tail}" if tail else "")
            )
        return dict(self.result.data.get("outputs") or {})

    def wait(self, progress: Optional[ProgressCallback] = None, cancel=None, poll_seconds: float = 0.05) -> dict[str, Any]:
        """Block until the run ends, forwarding progress; ``cancel`` is a CancelToken-like object."""
        if self.process is None:
            self.start()
        last = None
        while True:
            for event in self.poll():
                if event.kind == "progress" and event.fraction is not None and progress is not None:
                    current = (min(max(event.fraction, 0.0), 1.0), event.stage)
                    if current != last:
                        last = current
                        progress(*current)
            if cancel is not None and getattr(cancel, "cancelled", False):
                self.cancel()
                break
            if self.finished:
                break
            time.sleep(poll_seconds)
        self.poll()
        return self.outcome()


class BackgroundJob:
    """Base of the module's background jobs (segmentation, package install, model install): an
    :class:`EngineProcess` in ``self.process`` that the GUI polls from a timer and can cancel."""

    process: EngineProcess

    @property
    def fraction(self) -> float:
        return self.process.fraction

    @property
    def stage(self) -> str:
        return self.process.stage

    def poll(self) -> bool:
        """Update progress; True once the process has ended (successfully or not)."""
        self.process.poll()
        return self.process.finished

    def cancel(self) -> None:
        self.process.cancel()
        self.cleanup()

    def wait(self, progress: Optional[ProgressCallback] = None, cancel=None):
        """Block until the process ends (for scripts and tests), then return :meth:`outcome`; cleans up when cancelled."""
        try:
            self.process.wait(progress, cancel)
        except CancelledError:
            self.cleanup()
            raise
        return self.outcome()

    def outcome(self):
        """The finished job's result (raises its error); each job defines it."""
        raise NotImplementedError

    def cleanup(self) -> None:
        """Remove what the job keeps on disk while it runs (nothing by default)."""


def default_python_executable() -> str:
    """The Python that runs the engine: Slicer's ``PythonSlicer`` inside Slicer, else this one."""
    import shutil

    import slicer

    if hasattr(slicer, "app"):
        found = shutil.which("PythonSlicer")
        if found:
            return found
    return sys.executable
