"""CT preprocessing shared by inference and training (so both see identical inputs).

* :func:`check_ct` refuses inputs that are not a 3-D CT in Hounsfield units;
  :func:`check_chest_ct` those whose spacing, field of view or content cannot be a chest CT.
* :func:`find_mediastinum_box` returns the box around the mediastinum found from the CT
  (:mod:`LymphNodeQuantLib.anatomy`), padded by a margin.
* :func:`resample_volume` / :func:`resample_to_geometry` change the voxel grid (SimpleITK).
* :func:`normalize_ct` clips to an HU window then z-scores (as the LNQ2023 teams did).
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np

from .errors import InputError
from .geometry import ImageGeometry, Volume

logger = logging.getLogger(__name__)


def check_ct(volume: Volume) -> None:
    """Raise :class:`InputError` unless ``volume`` looks like a 3-D CT in Hounsfield units."""
    array = volume.array
    if array.ndim != 3 or min(array.shape) < 2:
        raise InputError(f"The image has shape {array.shape}: a 2-D image or a single slice; a 3-D CT volume is required.")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise InputError(f"The image holds {array.dtype} values; a scalar CT in Hounsfield units is required.")
    # subsample: a statistic over every 4th voxel per axis is plenty and keeps this fast for big CTs
    sample = np.asarray(array[::4, ::4, ::4], dtype=np.float32)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            bad = int(np.count_nonzero(~np.isfinite(array)))
            raise InputError(f"The CT holds {bad} NaN or infinite voxels; fix or fill them (e.g. with -1024 HU) first.")
    low, high = np.percentile(sample, [0.5, 99.5])
    # a CT in HU always holds negative values (air -1000, lung -850, fat -100), even when cropped to
    # the mediastinum; MR and unrescaled CT (0..4095) do not
    if low > -50.0 or high > 6000.0 or low < -4000.0:
        raise InputError(
            f"The image intensities ({low:.0f}..{high:.0f} at the 0.5/99.5 percentiles) do not look like CT in "
            "Hounsfield units (a chest CT has air near -1000 HU and fat near -100 HU). MR or other images are not "
            "supported; if this is CT stored without its rescale (e.g. 0..4095), convert it to HU first (usually value - 1024)."
        )


#: what the voxel grid of a chest CT can be: (finest, finest) in-plane spacing and the slice spacing,
#: the field of view, and the share of body (>= -400 HU) voxels; outside these a result is meaningless
CHEST_CT_LIMITS = {
    "spacing_mm": (0.25, 10.0),  # any axis
    "in_plane_spacing_max_mm": 5.0,  # the two finest axes; a node of 10 mm must span at least 2 voxels
    "field_of_view_min_mm": 100.0,  # the two largest extents: a mediastinum with its nodes is wider
    "extent_min_mm": 20.0,  # the smallest extent: at least a few slices through a node
    "body_fraction_min": 0.02,
}


def chest_ct_problems(volume: Volume) -> list[str]:
    """Why ``volume``'s grid and content cannot be a chest CT (empty when it can be), one sentence each."""
    limits = CHEST_CT_LIMITS
    spacing = sorted(float(s) for s in volume.geometry.spacing_zyx_mm)
    extent = sorted(float(n) * float(s) for n, s in zip(volume.geometry.shape_zyx, volume.geometry.spacing_zyx_mm))
    problems = []
    low, high = limits["spacing_mm"]
    if spacing[0] < low or spacing[2] > high:
        problems.append(f"voxel spacing {spacing[0]:g}..{spacing[2]:g} mm is outside {low:g}..{high:g} mm")
    elif spacing[1] > limits["in_plane_spacing_max_mm"]:
        problems.append(f"in-plane spacing {spacing[1]:g} mm is coarser than {limits['in_plane_spacing_max_mm']:g} mm")
    if extent[1] < limits["field_of_view_min_mm"]:
        problems.append(
            f"the field of view ({extent[1]:.0f} x {extent[2]:.0f} mm) is narrower than {limits['field_of_view_min_mm']:g} mm"
        )
    if extent[0] < limits["extent_min_mm"]:
        problems.append(f"the scan is only {extent[0]:.1f} mm thick (under {limits['extent_min_mm']:g} mm)")
    from .anatomy import AIR_THRESHOLD_HU

    sample = volume.array[::4, ::4, ::4]
    body_fraction = float(np.count_nonzero(sample >= AIR_THRESHOLD_HU)) / max(sample.size, 1)
    if body_fraction < limits["body_fraction_min"]:
        problems.append(
            f"only {100 * body_fraction:.1f}% of the voxels are tissue (>= {AIR_THRESHOLD_HU:g} HU): "
            "there is no body in the image"
        )
    return problems


def check_chest_ct(volume: Volume, allow_unusual_input: bool = False) -> None:
    """Refuse a volume whose grid or content cannot be a chest CT (:func:`chest_ct_problems`).

    With ``allow_unusual_input`` the problems are logged as a warning instead.
    """
    problems = chest_ct_problems(volume)
    if not problems:
        return
    text = "; ".join(problems)
    if not allow_unusual_input:
        raise InputError(
            f"This does not look like a chest CT: {text} ({volume.geometry.describe()}). Check the file and its "
            "spacing; to segment it anyway use lnq segment --allow-unusual-input (Python: allow_unusual_input=True)."
        )
    logger.warning(f"Unusual input, segmented anyway as asked: {text}. Results may be meaningless.")


def find_mediastinum_box(ct: Volume, margin_mm: float = 20.0, anatomy=None) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Index box ``(start_zyx, stop_zyx)`` (stop exclusive) around the mediastinum, padded by ``margin_mm``.

    The mediastinum is found from the CT itself (:func:`LymphNodeQuantLib.anatomy.find_chest_anatomy`,
    or pass its result as ``anatomy``). Without one (no lungs, or a scan without a mediastinum) the
    whole volume is returned and the reason logged.
    """
    from .anatomy import find_chest_anatomy

    anatomy = anatomy if anatomy is not None else find_chest_anatomy(ct)
    shape = tuple(int(s) for s in ct.geometry.shape_zyx)
    if not anatomy.mediastinum.any():
        for message in anatomy.messages:
            logger.info(message)
        logger.info("Not cropping to the mediastinum: using the whole volume.")
        return (0, 0, 0), shape  # type: ignore[return-value]
    start, stop = anatomy.mediastinum_box(ct.geometry.spacing_zyx_mm, margin_mm)
    logger.info(
        f"Cropped to the mediastinum box {list(start)}..{list(stop)} (z, y, x) between {anatomy.lung_volume_ml:.0f} ml of lung."
    )
    return start, stop  # type: ignore[return-value]


def crop_volume(volume: Volume, start_zyx: Sequence[int], stop_zyx: Sequence[int]) -> Volume:
    """The sub-volume ``array[z0:z1, y0:y1, x0:x1]`` with its geometry (a view, no copy)."""
    start = [int(v) for v in start_zyx]
    stop = [int(v) for v in stop_zyx]
    if any(a < 0 or b > s or a >= b for a, b, s in zip(start, stop, volume.array.shape)):
        raise InputError(f"Crop box {start}..{stop} does not fit inside the volume {volume.array.shape}.")
    array = volume.array[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]]
    return Volume(array, volume.geometry.cropped(start, stop))


def resampled_geometry(geometry: ImageGeometry, spacing_zyx_mm: Sequence[float]) -> ImageGeometry:
    """Grid covering the same physical extent (voxel edges) as ``geometry`` at a new spacing."""
    old = np.asarray(geometry.spacing_zyx_mm, dtype=float)
    new = np.asarray(spacing_zyx_mm, dtype=float)
    shape = np.maximum(1, np.round(np.asarray(geometry.shape_zyx) * old / new)).astype(int)
    # keep the extent's centre: first voxel centre moves by half the spacing change (plus rounding)
    extent_old = np.asarray(geometry.shape_zyx) * old
    offset_index = (extent_old - shape * new) / 2.0 / old + (new / old - 1.0) / 2.0
    origin = geometry.index_zyx_to_lps(offset_index)
    return ImageGeometry(tuple(shape), tuple(new), tuple(origin), geometry.direction_lps)


def _interpolator(interpolation: str):
    import SimpleITK as sitk

    table = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor, "bspline": sitk.sitkBSpline}
    if interpolation not in table:
        raise InputError(f"Unknown interpolation '{interpolation}'; use one of {', '.join(table)}.")
    return table[interpolation]


def resample_to_geometry(
    volume: Volume, geometry: ImageGeometry, interpolation: str = "linear", default_value: float = 0.0
) -> Volume:
    """Resample ``volume`` onto ``geometry`` (linear -> float32; nearest keeps the dtype)."""
    import SimpleITK as sitk

    if volume.geometry.same_grid(geometry):
        return volume
    image = volume.to_sitk()
    if interpolation != "nearest" and image.GetPixelID() != sitk.sitkFloat32:
        image = sitk.Cast(image, sitk.sitkFloat32)
    reference = sitk.Image([int(s) for s in reversed(geometry.shape_zyx)], image.GetPixelID())
    geometry.apply_to_sitk(reference)
    resampled = sitk.Resample(image, reference, sitk.Transform(), _interpolator(interpolation), float(default_value))
    return Volume(sitk.GetArrayFromImage(resampled), geometry)


def resample_volume(
    volume: Volume, spacing_zyx_mm: Sequence[float], interpolation: str = "linear", default_value: Optional[float] = None
) -> Volume:
    """Resample ``volume`` to ``spacing_zyx_mm`` keeping its physical extent and orientation.

    ``default_value`` fills voxels outside the input (default: the input's minimum, i.e. air for CT).
    """
    target = resampled_geometry(volume.geometry, spacing_zyx_mm)
    if default_value is None:
        default_value = float(volume.array.min()) if volume.array.size else 0.0
    return resample_to_geometry(volume, target, interpolation, default_value)


def normalize_ct(array: np.ndarray, normalization: dict) -> np.ndarray:
    """Clip to ``normalization["clip_hu"]`` (if given) then z-score with its ``mean``/``std`` (float32)."""
    try:
        mean = float(normalization["mean"])
        std = float(normalization["std"])
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(
            f"normalization needs numeric 'mean' and 'std' (and optionally 'clip_hu'); got {normalization}."
        ) from error
    if std <= 0:
        raise InputError(f"normalization std must be positive, got {std}.")
    result = (
        np.asarray(array, dtype=np.float32).copy()
        if not isinstance(array, np.ndarray) or array.dtype != np.float32
        else array.copy()
    )
    clip = normalization.get("clip_hu")
    if clip is not None:
        np.clip(result, float(clip[0]), float(clip[1]), out=result)
    result -= np.float32(mean)
    result /= np.float32(std)
    return result
