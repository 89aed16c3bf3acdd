"""Writing output files safely: checked before the work, atomic, and several files together.

* :func:`check_output_path` refuses, before any work starts, an output that exists (unless
  overwriting), is a folder, or lies in a folder that cannot be created or written.
* :func:`atomic_write` writes through a temporary file in the destination folder and moves it
  into place, so a failed write never leaves a half-written file or loses the old one.
* :func:`written_together` groups the writes of one run: every :func:`atomic_write` inside the
  ``with`` block is staged, and the files appear together when the block ends, or not at all.
  Ctrl-C during the final moves is held back until they are done, so an interrupted run never
  leaves one output without the other.
* :func:`written_this_process` tells the command line what was completely written, so its
  message after an interruption is true.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

from .errors import OutputError, OutputExistsError

PathLike = Union[str, os.PathLike]

_written: list[Path] = []
_active_group: contextvars.ContextVar[Optional["_OutputGroup"]] = contextvars.ContextVar("lnq_output_group", default=None)


def written_this_process() -> list[Path]:
    """Every output file completely written (moved into place) since :func:`forget_written`."""
    return list(_written)


def forget_written() -> None:
    _written.clear()


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path.cwd()


def _check_folder_writable(folder: Path) -> None:
    """Refuse ``folder`` unless it exists and takes a new file, or could be created where it would go."""
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise OutputError(
            f"Cannot create the folder '{folder}': '{existing}' is a file, not a folder; choose another output path."
        )
    try:  # a real probe: permission bits say nothing on read-only file systems, ACLs or for root
        handle, probe = tempfile.mkstemp(prefix=".lnq-write-check-", dir=existing)
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        raise OutputError(
            f"Cannot write into '{existing}' ({error.strerror or error}); choose an output folder you can write to."
        ) from error


def check_output_path(path: PathLike, overwrite: bool = False) -> Path:
    """Refuse an existing output (unless ``overwrite``), a folder, or an unwritable location; nothing is created."""
    path = Path(path)
    if path.is_dir():
        raise OutputExistsError(f"'{path}' is a folder; give a file name.")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"'{path}' already exists; choose another path or pass --overwrite to replace it.")
    _check_folder_writable(path.parent)
    return path


def _full_suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in (".seg.nrrd", ".nii.gz"):
        if name.endswith(suffix):
            return path.name[-len(suffix) :]
    return path.suffix


def _current_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(
            f"Cannot create the folder '{path.parent}' ({error.strerror or error}); choose another output path."
        ) from error


def _write_temporary(path: Path, write_to: Callable[[Path], object]) -> Path:
    """``write_to`` a temporary file beside ``path`` (same suffix, so formats are detected); removed on failure."""
    _make_parent(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_full_suffix(path), dir=path.parent)
    os.close(handle)
    try:
        write_to(Path(temporary))
        # mkstemp creates the file 0600; give it the permissions any new file gets (0666 minus the umask)
        # so a colleague's or Slicer's process under another user can read it
        os.chmod(temporary, 0o666 & ~_current_umask())
    except BaseException:
        os.remove(temporary)
        raise
    return Path(temporary)


class _OutputGroup:
    """Temporary files waiting to be moved into place together."""

    def __init__(self) -> None:
        self.staged: list[tuple[Path, Path, bool]] = []  # (temporary, destination, overwrite)

    def discard(self) -> None:
        for temporary, _, _ in self.staged:
            temporary.unlink(missing_ok=True)
        self.staged.clear()

    def commit(self) -> list[Path]:
        """Move every staged file into place; on any failure restore what was there and remove the rest."""
        for _, destination, overwrite in self.staged:
            if destination.exists() and not overwrite:  # created by someone else meanwhile
                raise OutputExistsError(f"'{destination}' appeared while writing; nothing was overwritten.")
        done: list[tuple[Path, Optional[Path]]] = []  # (destination, backup of the file it replaced)
        try:
            for temporary, destination, _ in self.staged:
                backup = None
                if destination.exists():
                    backup = destination.with_name(f".{destination.name}.{os.getpid()}.previous")
                    os.replace(destination, backup)
                done.append((destination, backup))
                os.replace(temporary, destination)
        except BaseException:
            for destination, backup in reversed(done):
                if backup is not None:
                    os.replace(backup, destination)
                elif destination.exists():
                    os.remove(destination)
            self.discard()
            raise
        for _, backup in done:
            if backup is not None:
                os.remove(backup)
        written = [destination for _, destination, _ in self.staged]
        self.staged.clear()
        _written.extend(written)
        return written


@contextlib.contextmanager
def _interrupts_held_back() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block is done, then raise it; only the main thread gets signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


@contextlib.contextmanager
def written_together() -> Iterator[None]:
    """Every :func:`atomic_write` in the block is staged and moved into place when the block ends without error."""
    if _active_group.get() is not None:  # nested: the outer group decides
        yield
        return
    group = _OutputGroup()
    token = _active_group.set(group)
    try:
        yield
    except BaseException:
        group.discard()
        raise
    finally:
        _active_group.reset(token)
    with _interrupts_held_back():
        group.commit()


def atomic_write(path: PathLike, write_to: Callable[[Path], object], overwrite: bool = False) -> Path:
    """Call ``write_to(temporary_path)`` then move the result onto ``path`` (inside :func:`written_together`: later).

    The temporary file sits in the destination folder and keeps the suffix, so format detection
    by extension works and the final ``os.replace`` is atomic. On failure nothing is left behind.
    """
    path = check_output_path(path, overwrite)
    temporary = _write_temporary(path, write_to)
    group = _active_group.get()
    if group is not None:
        group.staged.append((temporary, path, overwrite))
        return path
    single = _OutputGroup()
    single.staged.append((temporary, path, overwrite))
    single.commit()
    return path
