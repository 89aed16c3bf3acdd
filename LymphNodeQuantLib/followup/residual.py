"""How far a registration is off, in mm, measured on the images themselves.

* :func:`local_misalignment` (the residual the warnings use): the registered follow-up is cut into
  blocks of 9 working voxels (about 27 mm) inside the baseline's chest, and each block is moved by up
  to +-:data:`SEARCH_VOXELS` voxels (about 18 mm) until it best matches the baseline (normalised
  cross-correlation, sub-voxel by a parabola through the peak). A block counts only where the match
  is unambiguous: enough contrast (:data:`MIN_BLOCK_STD_HU`), a good match (:data:`MIN_NCC`) and a
  peak that is sharp along all three axes (a tube or a plane would let a block slide). The residual
  is the median of the remaining blocks' shifts: after a perfect registration 0, after one that is
  10 mm off, about 10 mm. With fewer than :data:`MIN_BLOCKS` such blocks it is not measurable,
  which after a failed registration is the usual outcome.
* :func:`surface_distance_mm`: the mean symmetric distance between the baseline's lung surface and
  the registered follow-up's, where both scans overlap. Reported as well, but it underestimates a
  misalignment along a surface (a lung shifted 10 mm head-to-foot moves its surface by about 3 mm),
  so it is not what the warnings use.

Both work on the registration's working images (about 3 mm); neither is needed by the matching.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..geometry import Volume

BLOCK_VOXELS = 9
SEARCH_VOXELS = 6
MIN_BLOCK_STD_HU = 40.0
MIN_NCC = 0.5
MIN_SHARPNESS = 0.05  # the NCC peak must exceed the NCC 2 voxels away, along every axis, by this much
MAX_BLOCKS = 150
MIN_BLOCKS = 5


@dataclass(frozen=True)
class Misalignment:
    """Median local misalignment (mm; None when not measurable) and how many blocks it rests on."""

    residual_mm: Optional[float]
    blocks_used: int
    blocks_tried: int


def _resample(image, reference, transform, default: float):
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.Resample(image, reference, transform, sitk.sitkLinear, default, sitk.sitkFloat32))


def _candidate_blocks(
    fixed: np.ndarray, mask: np.ndarray, covered: np.ndarray, rng: np.random.Generator
) -> list[tuple[int, int, int]]:
    """Block centres on a grid: mostly chest, enough contrast, and the whole search region inside the follow-up scan."""
    half, reach = BLOCK_VOXELS // 2, BLOCK_VOXELS // 2 + SEARCH_VOXELS
    axes = [range(reach, n - reach, BLOCK_VOXELS) for n in fixed.shape]
    centres = []
    for z in axes[0]:
        for y in axes[1]:
            for x in axes[2]:
                block = (slice(z - half, z + half + 1), slice(y - half, y + half + 1), slice(x - half, x + half + 1))
                region = (slice(z - reach, z + reach + 1), slice(y - reach, y + reach + 1), slice(x - reach, x + reach + 1))
                if mask[block].mean() >= 0.5 and fixed[block].std() >= MIN_BLOCK_STD_HU and covered[region].all():
                    centres.append((z, y, x))
    if len(centres) > MAX_BLOCKS:
        centres = [centres[i] for i in sorted(rng.choice(len(centres), MAX_BLOCKS, replace=False))]
    return centres


def _subvoxel(ncc: np.ndarray, peak: tuple[int, ...], axis: int) -> float:
    position = peak[axis]
    if position == 0 or position == ncc.shape[axis] - 1:
        return float(position)
    before, after = list(peak), list(peak)
    before[axis] -= 1
    after[axis] += 1
    a, b, c = ncc[tuple(before)], ncc[peak], ncc[tuple(after)]
    curvature = a - 2.0 * b + c
    return float(position + (0.5 * (a - c) / curvature if curvature < 0 else 0.0))


def _block_shift(fixed_block: np.ndarray, region: np.ndarray) -> Optional[np.ndarray]:
    """Shift (voxels, z y x) that best matches ``fixed_block`` inside ``region``; None when ambiguous."""
    from numpy.lib.stride_tricks import sliding_window_view

    windows = sliding_window_view(region, fixed_block.shape)
    flat = windows.reshape(windows.shape[:3] + (-1,))
    template = (fixed_block.ravel() - fixed_block.mean()) / (fixed_block.std() * fixed_block.size)
    ncc = ((flat - flat.mean(axis=-1, keepdims=True)) @ template) / np.maximum(flat.std(axis=-1), 1e-6)
    peak = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
    if ncc[peak] < MIN_NCC:
        return None
    for axis in range(3):
        for step in (-2, 2):
            neighbour = list(peak)
            neighbour[axis] = min(max(peak[axis] + step, 0), ncc.shape[axis] - 1)
            if neighbour[axis] != peak[axis] and ncc[peak] - ncc[tuple(neighbour)] < MIN_SHARPNESS:
                return None
    return np.array([_subvoxel(ncc, peak, axis) for axis in range(3)]) - SEARCH_VOXELS


def local_misalignment(fixed: Volume, moving, transform, mask: np.ndarray, seed: int = 0) -> Misalignment:
    """Median shift (mm) that still aligns chest blocks of the registered follow-up with the baseline (module docstring).

    ``fixed``: the baseline's working image; ``moving``: the follow-up's working image (SimpleITK);
    ``transform``: baseline point -> follow-up point; ``mask``: the baseline's chest on ``fixed``'s grid.
    """
    import SimpleITK as sitk

    reference = fixed.to_sitk()
    warped = _resample(moving, reference, transform, -1024.0)
    ones = sitk.Image(moving.GetSize(), sitk.sitkFloat32) + 1.0
    ones.CopyInformation(moving)
    covered = _resample(ones, reference, transform, 0.0) > 0.999
    array = np.asarray(fixed.array, dtype=np.float64)
    centres = _candidate_blocks(array, mask, covered, np.random.default_rng(seed))
    half, reach = BLOCK_VOXELS // 2, BLOCK_VOXELS // 2 + SEARCH_VOXELS
    spacing = np.asarray(fixed.geometry.spacing_zyx_mm)
    shifts = []
    for z, y, x in centres:
        block = array[z - half : z + half + 1, y - half : y + half + 1, x - half : x + half + 1]
        region = warped[z - reach : z + reach + 1, y - reach : y + reach + 1, x - reach : x + reach + 1].astype(np.float64)
        shift = _block_shift(block, region)
        if shift is not None:
            shifts.append(float(np.linalg.norm(shift * spacing)))
    residual = float(np.median(shifts)) if len(shifts) >= MIN_BLOCKS else None
    return Misalignment(residual, len(shifts), len(centres))


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it; the first and last slices (the scan's ends) are not surface."""
    from scipy import ndimage

    inner = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1), border_value=1)
    surface = mask & ~inner
    surface[[0, -1]] = False
    return surface


def mask_image(mask: np.ndarray, reference):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.CopyInformation(reference)
    return image


def surface_distance_mm(fixed: Volume, fixed_mask: np.ndarray, moving, moving_mask: np.ndarray, transform) -> Optional[float]:
    """Mean symmetric distance (mm) between a baseline mask's surface and the registered follow-up mask's surface.

    The follow-up mask is resampled onto the baseline's working grid through ``transform``; only
    the part of the baseline grid that the follow-up scan covers counts (a scan end is no surface).
    """
    import SimpleITK as sitk
    from scipy import ndimage

    reference = fixed.to_sitk()
    warped = sitk.Resample(mask_image(moving_mask, moving), reference, transform, sitk.sitkNearestNeighbor, 0)
    covered_image = sitk.Resample(
        mask_image(np.ones(moving_mask.shape, bool), moving), reference, transform, sitk.sitkNearestNeighbor, 0
    )
    covered = ndimage.binary_erosion(sitk.GetArrayFromImage(covered_image) > 0, iterations=2)
    fixed_points = _surface(fixed_mask) & covered
    moving_points = _surface(sitk.GetArrayFromImage(warped) > 0) & covered
    if not fixed_points.any() or not moving_points.any():
        return None
    spacing = fixed.geometry.spacing_zyx_mm
    to_moving = ndimage.distance_transform_edt(~moving_points, sampling=spacing)[fixed_points]
    to_fixed = ndimage.distance_transform_edt(~fixed_points, sampling=spacing)[moving_points]
    return float(0.5 * (to_moving.mean() + to_fixed.mean()))
