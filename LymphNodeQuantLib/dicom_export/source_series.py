"""The DICOM series a CT was read from, instance by instance, in the engine's slice order.

The engine reads a DICOM folder with SimpleITK (:func:`LymphNodeQuantLib.io.read_volume`), which
sorts the slices along their normal; a DICOM SEG or SR must name, for each array slice ``k``, the
source instance (SOPInstanceUID) it came from. :func:`read_source_series` reads the same files with
pydicom (headers only) and places each one on the engine's grid by its Image Position (Patient),
so the mapping holds whatever the file names, instance numbers or slice direction are. Every
instance must lie on a slice of the grid, and its orientation, spacing and size must match it.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..geometry import ImageGeometry
from ..io import PathLike

#: an instance may sit this far (in voxels) from a grid slice and still be that slice (DICOM decimal strings are rounded)
POSITION_TOLERANCE_VOXELS = 0.05
ORIENTATION_TOLERANCE = 1e-3


@dataclass(frozen=True)
class SourceSeries:
    """The instances of one single-frame DICOM series, ordered by the engine's slice index ``k``."""

    folder: Path
    #: pydicom datasets (headers, no pixel data); ``datasets[k]`` is the source of array slice ``k``
    datasets: tuple
    geometry: ImageGeometry

    @property
    def sop_instance_uids(self) -> list[str]:
        return [str(d.SOPInstanceUID) for d in self.datasets]

    @property
    def series_instance_uid(self) -> str:
        return str(self.datasets[0].SeriesInstanceUID)

    def dataset_of_slice(self, k: int):
        """The source instance of array slice ``k``."""
        return self.datasets[int(k)]


@contextlib.contextmanager
def source_attributes_as_given():
    """Copy the source's patient/study attributes without highdicom's warning about one-part person names
    ("Anonymous"): they are the source's, copied unchanged, and dciodvfy reports them as warnings only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name", category=UserWarning)
        yield


def require_dicom_folder(path: PathLike, what: str) -> Path:
    """Refuse ``path`` unless it is a folder (a DICOM series); ``what`` names the output that needs it."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"'{path}' does not exist; check the path.")
    if not path.is_dir():
        raise InputError(
            f"{what} needs the CT as a DICOM series folder, but '{path}' is not a folder; a DICOM SEG or SR must reference "
            "the source DICOM instances. Pass the folder of the CT's DICOM series, or leave out the DICOM output."
        )
    return path


def series_file_names(folder: Path) -> list[str]:
    """The files of the folder's single DICOM series, as SimpleITK (GDCM) reads them for the engine."""
    import SimpleITK as sitk

    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise InputError(f"'{folder}' holds no DICOM series; pass the folder of the CT's DICOM series.")
    if len(series_ids) > 1:
        raise InputError(f"'{folder}' holds {len(series_ids)} DICOM series; put the CT series in a folder of its own.")
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_ids[0]))


def _read_header(file_name: str):
    import pydicom

    try:
        dataset = pydicom.dcmread(file_name, stop_before_pixels=True)
    except Exception as error:  # pydicom raises several types for damaged files
        raise InputError(f"Cannot read '{file_name}' as DICOM ({error}); copy or export the series again.") from error
    missing = [
        k for k in ("SOPInstanceUID", "SOPClassUID", "ImagePositionPatient", "ImageOrientationPatient") if k not in dataset
    ]
    missing += [k for k in ("FrameOfReferenceUID", "Rows", "Columns", "PixelSpacing") if k not in dataset]
    if missing:
        raise InputError(f"'{file_name}' lacks {', '.join(missing)}; a DICOM SEG/SR needs a CT series with full geometry.")
    if int(dataset.get("NumberOfFrames", 1) or 1) > 1:
        raise InputError(f"'{file_name}' is a multi-frame image; DICOM SEG/SR export supports series of single-frame CT images.")
    return dataset


def _check_in_plane(dataset, geometry: ImageGeometry) -> None:
    """Orientation, pixel spacing and size of one instance against the engine's grid."""
    orientation = np.asarray([float(v) for v in dataset.ImageOrientationPatient])
    rows_spacing, columns_spacing = (float(v) for v in dataset.PixelSpacing)  # (between rows = y, between columns = x)
    direction = np.asarray(geometry.direction_lps)
    shape_ok = (int(dataset.Rows), int(dataset.Columns)) == tuple(geometry.shape_zyx[1:])
    spacing_ok = np.allclose((rows_spacing, columns_spacing), geometry.spacing_zyx_mm[1:], rtol=1e-4)
    orientation_ok = np.allclose(orientation, np.concatenate([direction[:, 0], direction[:, 1]]), atol=ORIENTATION_TOLERANCE)
    if not (shape_ok and spacing_ok and orientation_ok):
        raise InputError(
            f"The DICOM instance {dataset.SOPInstanceUID} (size {dataset.Rows}x{dataset.Columns}, spacing "
            f"{rows_spacing}/{columns_spacing} mm, orientation {orientation.round(4).tolist()}) does not match the CT as "
            f"read ({geometry.describe()}); the series mixes geometries: export it again as one series."
        )


def order_by_slice(datasets: Sequence, geometry: ImageGeometry) -> list:
    """``datasets`` reordered so item ``k`` is the instance at array slice ``k`` of ``geometry``; refuses gaps and extras."""
    positions = np.asarray([[float(v) for v in d.ImagePositionPatient] for d in datasets])
    index_zyx = geometry.lps_to_index_zyx(positions)
    slices = np.rint(index_zyx[:, 0]).astype(int)
    off_grid = np.abs(index_zyx - np.stack([slices, np.zeros_like(slices), np.zeros_like(slices)], axis=1))
    bad = np.flatnonzero((off_grid > POSITION_TOLERANCE_VOXELS).any(axis=1) | (slices < 0) | (slices >= geometry.shape_zyx[0]))
    if bad.size:
        d = datasets[int(bad[0])]
        raise InputError(
            f"The DICOM instance {d.SOPInstanceUID} at {positions[bad[0]].round(3).tolist()} mm is not on a slice of the CT "
            f"as read ({geometry.describe()}); the series has uneven or missing slices: export it again."
        )
    ordered: list = [None] * geometry.shape_zyx[0]
    for dataset, k in zip(datasets, slices):
        if ordered[k] is not None:
            raise InputError(
                f"Two DICOM instances ({ordered[k].SOPInstanceUID}, {dataset.SOPInstanceUID}) lie at slice {k}; "
                "the folder holds duplicate slices: keep one copy of each."
            )
        ordered[k] = dataset
    missing = [k for k, d in enumerate(ordered) if d is None]
    if missing:
        raise InputError(f"No DICOM instance lies at slice(s) {missing[:5]} of the CT as read; the series is incomplete.")
    return ordered


def read_source_series(folder: PathLike, geometry: ImageGeometry) -> SourceSeries:
    """Headers of the DICOM series in ``folder``, ordered so ``datasets[k]`` is array slice ``k`` of ``geometry``.

    ``geometry`` is the CT's as the engine read it (``read_volume(folder).geometry``); each instance's
    size, spacing and orientation are checked against it, and its position places it on slice ``k``.
    """
    folder = require_dicom_folder(folder, "DICOM SEG/SR export")
    datasets = [_read_header(name) for name in series_file_names(folder)]
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        values = {str(d.get(key, "")) for d in datasets}
        if len(values) != 1:
            raise InputError(f"The DICOM files in '{folder}' have {len(values)} different {key}s; keep one series per folder.")
    for dataset in datasets:
        _check_in_plane(dataset, geometry)
    return SourceSeries(folder, tuple(order_by_slice(datasets, geometry)), geometry)
