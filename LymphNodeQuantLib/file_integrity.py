"""Checks of image files that SimpleITK does not make, and ITK's warnings turned into messages.

SimpleITK (ITK's NIfTI reader) reads a ``.nii``/``.nii.gz`` whose data is cut short by filling the
missing voxels with 0, and reads NaN stored in a NIfTI file as 0, both without an error; a chest CT
read that way silently loses slices. :func:`check_nifti_file` reads the header and streams the data
once: it refuses a damaged gzip stream (bad CRC, cut short), data shorter than the header says,
and NaN or infinite values in float data. Other formats (NRRD, MetaImage) already fail in
SimpleITK when their data is incomplete.

ITK writes its warnings straight to the process's stderr (``WARNING: In /tmp/SimpleITK-build/...``);
:func:`itk_messages_captured` collects them so the caller can report them as the project's own
messages.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import struct
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from .errors import InputError

#: NIfTI datatype codes of real floating-point data -> numpy type
_NIFTI_FLOAT_TYPES = {16: np.float32, 64: np.float64}
_CHUNK_ITEMS = 1 << 20


@dataclass(frozen=True)
class NiftiLayout:
    """Where a NIfTI file's voxel data lies and how big it is."""

    data_offset_bytes: int
    data_bytes: int
    float_dtype: Optional[np.dtype]  # set for float data (checked for NaN), else None
    bytes_per_voxel: int


def nifti_layout(header: bytes) -> Optional[NiftiLayout]:
    """Layout from the first 540 bytes of a NIfTI-1 or NIfTI-2 file; None when it is not NIfTI."""
    for order in "<>":
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            dims = struct.unpack(order + "8h", header[40:56])
            datatype, bitpix = struct.unpack(order + "2h", header[70:74])
            offset = int(struct.unpack(order + "f", header[108:112])[0])
            minimum_offset = 352  # 348-byte header + 4-byte extension flag
            break
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540:
            datatype, bitpix = struct.unpack(order + "2h", header[12:16])
            dims = struct.unpack(order + "8q", header[16:80])
            offset = int(struct.unpack(order + "q", header[168:176])[0])
            minimum_offset = 544
            break
    else:
        return None
    rank = int(dims[0])
    if not 1 <= rank <= 7 or bitpix <= 0 or bitpix % 8:
        raise InputError(f"The NIfTI header is damaged (dim[0] {rank}, bitpix {bitpix}); re-export the image.")
    voxels = int(np.prod([max(int(d), 1) for d in dims[1 : rank + 1]], dtype=np.int64))
    float_type = _NIFTI_FLOAT_TYPES.get(int(datatype))
    dtype = np.dtype(float_type).newbyteorder(order) if float_type is not None else None
    return NiftiLayout(max(offset, minimum_offset), voxels * bitpix // 8, dtype, bitpix // 8)


def _count_nonfinite(stream, layout: NiftiLayout) -> tuple[int, int]:
    """Read the data region: (bytes read, NaN/inf voxels in float data)."""
    read = nonfinite = 0
    chunk_bytes = _CHUNK_ITEMS * layout.bytes_per_voxel
    while read < layout.data_bytes:
        chunk = stream.read(min(chunk_bytes, layout.data_bytes - read))
        if not chunk:
            break
        read += len(chunk)
        if layout.float_dtype is not None:
            usable = len(chunk) - len(chunk) % layout.bytes_per_voxel
            nonfinite += int(np.count_nonzero(~np.isfinite(np.frombuffer(chunk[:usable], layout.float_dtype))))
    return read, nonfinite


def check_nifti_file(path: Path) -> None:
    """Refuse a NIfTI file that is damaged, cut short, or holds NaN/inf (SimpleITK would read them as 0)."""
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return
    opener = gzip.open if name.endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            layout = nifti_layout(stream.read(540))
            if layout is None:
                return  # not NIfTI inside: SimpleITK's own error says so
            stream.seek(layout.data_offset_bytes)
            read, nonfinite = _count_nonfinite(stream, layout)
            while stream.read(1 << 22):  # a gzip stream is checked (length, CRC) only at its end
                pass
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as error:
        raise InputError(
            f"'{path}' is damaged or incomplete (the compressed data {_reason(error)}); copy or export the file again."
        ) from error
    if read < layout.data_bytes:
        raise InputError(
            f"'{path}' is incomplete: its header describes {layout.data_bytes} bytes of voxel data but the file holds "
            f"{read} ({100 * read / max(layout.data_bytes, 1):.0f}%); copy or export the file again."
        )
    if nonfinite:
        raise InputError(
            f"'{path}' holds {nonfinite} NaN or infinite voxels (SimpleITK would read them as 0); fill them (e.g. with "
            "-1024 HU for a CT) and save the image again."
        )


def _reason(error: BaseException) -> str:
    if isinstance(error, EOFError):
        return "ends before its end marker"
    return f"cannot be decompressed: {error}"


_ITK_LOCATION = re.compile(r"^(WARNING|ERROR): In .*?, line \d+\s*$")
_ITK_SOURCE = re.compile(r"^\w+ \(0x[0-9a-fA-F]+\): ")


def itk_messages(text: str) -> list[str]:
    """ITK's stderr text as one message per block, without source locations and object addresses."""
    messages = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.splitlines() if line.strip() and not _ITK_LOCATION.match(line.strip())]
        if lines:
            messages.append(" ".join(_ITK_SOURCE.sub("", line) for line in lines))
    return messages


@contextlib.contextmanager
def itk_messages_captured() -> Iterator[list[str]]:
    """Collect what native code (ITK) writes to stderr in the block; the list is filled when the block ends."""
    messages: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr (e.g. a GUI process): nothing to capture
        yield messages
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield messages
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            messages.extend(itk_messages(sink.read().decode("utf-8", errors="replace")))
