"""Downloading one file: resumable, size- and sha256-checked before anyone uses it.

The bytes go to ``<name>.part`` beside the destination. An interrupted download keeps its part
file; the next attempt asks the server for the rest (HTTP ``Range``) and starts over when the
server cannot resume. Only a file with the expected size and sha256 is moved to its destination;
a wrong checksum deletes the part file, so a retry starts clean. Written with ``urllib`` (no extra
dependency); nothing here runs unless the user asks to install a model.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional

from ..errors import InputError
from ..progress import CancelToken

logger = logging.getLogger(__name__)

#: progress callback: (bytes done, bytes expected)
ByteProgress = Callable[[int, int], None]
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60


def sha256_of(path: Path, chunk_bytes: int = CHUNK_BYTES) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _open(url: str, start: int):
    request = urllib.request.Request(
        url, headers={"User-Agent": "LymphNodeQuant", **({"Range": f"bytes={start}-"} if start else {})}
    )
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as error:
        if error.code == 416 and start:  # the part file is already complete (or longer than the file)
            return None
        raise InputError(f"Downloading {url} failed: HTTP {error.code} {error.reason}.") from error
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise InputError(
            f"Cannot reach {url} ({reason}); check the network connection and retry (the download resumes)."
        ) from error


def _transfer(url: str, part: Path, expected_size: int, progress: Optional[ByteProgress], cancel: Optional[CancelToken]) -> None:
    start = part.stat().st_size if part.exists() else 0
    response = _open(url, start)
    if response is None:
        return
    with response:
        resumed = start > 0 and getattr(response, "status", 200) == 206
        if start and not resumed:
            logger.info(f"The server cannot resume {url}; downloading it again from the start.")
            start = 0
        done = start
        with open(part, "ab" if resumed else "wb") as handle:
            while chunk := response.read(CHUNK_BYTES):
                if cancel is not None:
                    cancel.raise_if_cancelled()
                handle.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, expected_size)
                if done > expected_size:
                    break


def download_file(
    url: str,
    destination: Path,
    size_bytes: int,
    sha256: str,
    *,
    progress: Optional[ByteProgress] = None,
    cancel: Optional[CancelToken] = None,
) -> Path:
    """Fetch ``url`` to ``destination`` (resuming a ``.part`` file), or raise without leaving a bad file there."""
    destination = Path(destination)
    if destination.is_file() and destination.stat().st_size == size_bytes and sha256_of(destination) == sha256.lower():
        return destination  # already downloaded and checked
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(destination.name + ".part")
    try:
        _transfer(url, part, size_bytes, progress, cancel)
    except (OSError, http.client.HTTPException) as error:  # a dropped connection: the part file stays for the next attempt
        raise InputError(f"The download of {url} was interrupted ({error}); run the same command again to resume.") from error
    received = part.stat().st_size if part.exists() else 0
    if received < size_bytes:
        raise InputError(
            f"The download of {url} stopped at {received} of {size_bytes} bytes; run the same command again to resume it."
        )
    if received > size_bytes:
        part.unlink()
        raise InputError(
            f"{url} is larger ({received} bytes) than the registry says ({size_bytes}); nothing was "
            "installed. The file on the server changed: update the registry or choose another source."
        )
    digest = sha256_of(part)
    if digest != sha256.lower():
        part.unlink()
        raise InputError(
            f"{url} fails its checksum (sha256 {digest[:16]}..., expected {sha256[:16]}...); the download "
            "was deleted and nothing was installed."
        )
    os.replace(part, destination)
    return destination
