"""Reading and writing volumes with SimpleITK, geometry preserved.

Supported inputs: any single-file format SimpleITK reads (``.nrrd``, ``.nii``, ``.nii.gz``,
``.mha``, ``.mhd``) and a folder holding one DICOM series. Writes never overwrite an existing
file unless asked, and go through a temporary file in the same folder so a failed write leaves
the old file (if any) intact.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union

import numpy as np

from .errors import InputError, LNQError, OutputExistsError
from .geometry import Volume

PathLike = Union[str, os.PathLike]

VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")


def _read_dicom_series(folder: Path):
    import SimpleITK as sitk

    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise InputError(f"'{folder}' is a folder but holds no DICOM series; pass a CT file or a DICOM series folder.")
    if len(series_ids) > 1:
        raise InputError(
            f"'{folder}' holds {len(series_ids)} DICOM series ({', '.join(series_ids[:3])}...); "
            "put the CT series in a folder of its own."
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_ids[0]))
    return reader.Execute()


def read_volume(path: PathLike) -> Volume:
    """Read a 3-D scalar volume (file or DICOM series folder) as an array (z, y, x) plus geometry."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise InputError(f"'{path}' does not exist; check the path.")
    try:
        image = _read_dicom_series(path) if path.is_dir() else sitk.ReadImage(str(path))
    except LNQError:
        raise
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown reason"
        raise InputError(
            f"Cannot read '{path}' as an image ({first_line}). Supported: {', '.join(VOLUME_SUFFIXES)} "
            "or a DICOM series folder."
        ) from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"'{path}' has {image.GetNumberOfComponentsPerPixel()} components per voxel; a scalar (grey-level) volume is required."
        )
    if image.GetDimension() == 2 or (image.GetDimension() == 3 and min(image.GetSize()) == 1):
        raise InputError(f"'{path}' is a 2-D image (size {image.GetSize()}); a 3-D CT volume is required.")
    if image.GetDimension() != 3:
        raise InputError(f"'{path}' is {image.GetDimension()}-D; a 3-D volume is required.")
    return Volume.from_sitk(image)


def check_output_path(path: PathLike, overwrite: bool = False) -> Path:
    """Refuse an existing output unless ``overwrite``; make sure the parent folder exists."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"'{path}' already exists; choose another path or pass --overwrite to replace it.")
    if path.is_dir():
        raise OutputExistsError(f"'{path}' is a folder; give a file name.")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _full_suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in (".seg.nrrd", ".nii.gz"):
        if name.endswith(suffix):
            return path.name[-len(suffix):]
    return path.suffix


def _current_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def atomic_write(path: PathLike, write_to, overwrite: bool = False) -> Path:
    """Call ``write_to(temporary_path)`` then move the result onto ``path``.

    The temporary file sits in the destination folder and keeps the suffix, so format detection
    by extension works and the final ``os.replace`` is atomic. On failure nothing is left behind.
    """
    path = check_output_path(path, overwrite)
    suffix = _full_suffix(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    try:
        write_to(Path(temporary))
        # mkstemp creates the file 0600; give it the permissions any new file gets (0666 minus the umask)
        # so a colleague's or Slicer's process under another user can read it
        os.chmod(temporary, 0o666 & ~_current_umask())
        if path.exists() and not overwrite:  # created by someone else meanwhile
            raise OutputExistsError(f"'{path}' appeared while writing; nothing was overwritten.")
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def write_volume(path: PathLike, volume: Volume, overwrite: bool = False, compress: bool = True) -> Path:
    """Write a volume with its geometry; refuses to replace an existing file unless ``overwrite``."""
    import SimpleITK as sitk

    image = volume.to_sitk()
    return atomic_write(path, lambda temporary: sitk.WriteImage(image, str(temporary), compress), overwrite)


def as_label_array(volume: Volume, foreground: str = "label1") -> np.ndarray:
    """Binary foreground of a label map: ``"label1"`` takes value 1 (LNQ2023), ``"nonzero"`` all non-zero."""
    if foreground == "label1":
        return volume.array == 1
    if foreground == "nonzero":
        return volume.array != 0
    raise InputError(f"Unknown foreground rule '{foreground}'; use 'label1' or 'nonzero'.")
