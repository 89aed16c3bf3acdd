"""Reading and writing volumes with SimpleITK, geometry preserved.

Supported inputs: any single-file format SimpleITK reads (``.nrrd``, ``.nii``, ``.nii.gz``,
``.mha``, ``.mhd``) and a folder holding one DICOM series. A damaged or incomplete file is refused
(:mod:`.file_integrity`; SimpleITK alone zero-fills a cut-short NIfTI), and ITK's warnings become
log messages instead of raw stderr text. Label maps are read with :func:`read_label_map`, which
refuses a CT or other grey-level image. Writes go through :mod:`.output_files`: never over an
existing file unless asked, atomic, and grouped per run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import InputError, LNQError
from .file_integrity import check_nifti_file, itk_messages_captured
from .geometry import Volume
from .output_files import PathLike, atomic_write, check_output_path  # noqa: F401  (re-exported: the I/O API)

logger = logging.getLogger(__name__)

#: a label map with more distinct values than this (in a 1/64 subsample) is a grey-level image, not nodes
MAX_LABEL_VALUES = 1000
FOREGROUND_RULES = ("nonzero", "label1")

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


def _refuse_incomplete(path: Path, itk_messages: list[str]) -> None:
    for message in itk_messages:
        if "not read completely" in message:
            raise InputError(f"'{path}' is damaged or incomplete ({message}); copy or export the file again.")


def read_volume(path: PathLike) -> Volume:
    """Read a 3-D scalar volume (file or DICOM series folder) as an array (z, y, x) plus geometry."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise InputError(f"'{path}' does not exist; check the path.")
    if path.is_file():
        check_nifti_file(path)
    itk_messages: list[str] = []
    try:
        with itk_messages_captured() as itk_messages:
            image = _read_dicom_series(path) if path.is_dir() else sitk.ReadImage(str(path))
    except LNQError:
        raise
    except RuntimeError as error:
        _refuse_incomplete(path, itk_messages)
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown reason"
        raise InputError(
            f"Cannot read '{path}' as an image ({first_line}). Supported: {', '.join(VOLUME_SUFFIXES)} or a DICOM series folder."
        ) from error
    _refuse_incomplete(path, itk_messages)
    for message in itk_messages:
        logger.warning("reading '%s': %s", path, message)
    if image.GetNumberOfComponentsPerPixel() != 1:
        if str(path).lower().endswith(".seg.nrrd"):
            raise InputError(
                f"'{path}' is a 3D Slicer segmentation with {image.GetNumberOfComponentsPerPixel()} layers (overlapping "
                "segments); export it from Slicer as one label map (Segmentations > Export to files > labelmap)."
            )
        raise InputError(
            f"'{path}' has {image.GetNumberOfComponentsPerPixel()} components per voxel; a scalar (grey-level) volume is required."
        )
    if image.GetDimension() == 2 or (image.GetDimension() == 3 and min(image.GetSize()) == 1):
        raise InputError(f"'{path}' is a 2-D image (size {image.GetSize()}); a 3-D CT volume is required.")
    if image.GetDimension() != 3:
        raise InputError(f"'{path}' is {image.GetDimension()}-D; a 3-D volume is required.")
    return Volume.from_sitk(image)


def write_volume(path: PathLike, volume: Volume, overwrite: bool = False, compress: bool = True) -> Path:
    """Write a volume with its geometry; refuses to replace an existing file unless ``overwrite``."""
    import SimpleITK as sitk

    image = volume.to_sitk()
    return atomic_write(path, lambda temporary: sitk.WriteImage(image, str(temporary), compress), overwrite)


def check_label_map(volume: Volume, name: str = "the label map") -> Volume:
    """Refuse a grey-level image (CT in HU, float data) given as a label map; float maps of whole numbers become integers."""
    array = volume.array
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or np.any(np.mod(array, 1.0) != 0):
            raise InputError(
                f"{name} holds non-integer values: it is a grey-level image (a CT?), not a label map of nodes; pass the "
                "segmentation (.seg.nrrd or a label map with 0 = background)."
            )
        array = array.astype(np.int32)
    elif not np.issubdtype(array.dtype, np.integer) and array.dtype != np.bool_:
        raise InputError(f"{name} holds {array.dtype} values; a label map of integers is required.")
    low = array.min(initial=0)
    if low < 0:
        raise InputError(
            f"{name} holds negative values (down to {low}): it looks like a CT in Hounsfield units, not a label map "
            "of nodes; pass the segmentation (0 = background)."
        )
    distinct = np.unique(array[::4, ::4, ::4]).size
    if distinct > MAX_LABEL_VALUES:
        raise InputError(
            f"{name} holds over {MAX_LABEL_VALUES} different values ({distinct} in a 1/64 sample): it is a grey-level "
            "image, not a label map of nodes; pass the segmentation."
        )
    return volume if array is volume.array else volume.with_array(array)


def read_label_map(path: PathLike) -> Volume:
    """Read a node label map (``.seg.nrrd`` or any label map, 0 = background); refuse grey-level images."""
    return check_label_map(read_volume(path), f"'{path}'")


def as_label_array(volume: Volume, foreground: str = "nonzero") -> np.ndarray:
    """Binary foreground of a label map: ``"nonzero"`` every node label, ``"label1"`` value 1 only (LNQ2023 files)."""
    if foreground == "label1":
        return volume.array == 1
    if foreground == "nonzero":
        return volume.array != 0
    raise InputError(f"Unknown foreground rule '{foreground}'; use one of {', '.join(FOREGROUND_RULES)}.")


def foreground_note(volume: Volume, foreground: str, name: str) -> Optional[str]:
    """A note when a map holds labels other than 0/1, saying what the foreground rule made of them."""
    array = volume.array
    if array.size == 0 or array.max() <= 1:  # the common case, decided without sorting the volume
        return None
    others = [int(v) for v in np.unique(array[array > 1])]
    shown = ", ".join(str(v) for v in others[:5]) + (", ..." if len(others) > 5 else "")
    if foreground == "label1":
        return (
            f"{name} also holds label(s) {shown}: only label 1 was scored (--foreground label1); "
            "--foreground nonzero scores every node"
        )
    return (
        f"{name} holds label(s) other than 1 ({shown}): every non-zero voxel was scored as node "
        "(--foreground nonzero); --foreground label1 scores label 1 only"
    )
