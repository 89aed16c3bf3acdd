"""What to learn from voxels nobody labelled: one target map per case and strategy.

Targets are uint8 arrays: 0 background, 1 lymph node, :data:`IGNORE` excluded from the loss.
Fully annotated cases always use their labels as they are; the strategies differ only on
partially annotated cases:

* ``noisy``: unlabelled = background (the naive baseline; unannotated nodes teach "not a node").
* ``masking``: unlabelled voxels that could be a node are excluded from the loss. "Could be" =
  CT within ``masking_hu_window`` (soft tissue); air, lung, fat, bone and contrast-filled vessels
  outside the window are background. (Excluding *every* unlabelled voxel would leave no background
  at all and the network would learn "everything is a node".)
* ``coating``: labelled nodes plus a background shell ``coating_margin_mm`` thick around each;
  everything else excluded (Foreground instance coating).
* ``totalseg``: ``masking`` plus definite background inside the chosen TotalSegmentator
  structures (organs, vessels, airways, bones) and, with ``mediastinum_margin_mm`` set, outside
  the mediastinum (:func:`mediastinum_region`: the chest wall, which TotalSegmentator's "total"
  task does not label); never over labelled node voxels.
* ``anatomy``: ``masking`` plus definite background outside the mediastinum found from the CT
  itself (:mod:`LymphNodeQuantLib.anatomy`, the region inference keeps: chest wall, neck,
  abdomen, lungs), inside soft tissue too thick to be a node (deeper than
  ``thick_tissue_depth_mm`` inside the soft-tissue window: heart, liver, large muscle) and, where a
  TotalSegmentator map exists, inside its structures. Needs no TotalSegmentator run, so it fits
  real CTs with implanted nodes (:mod:`.implant`).
* ``dbdmp``: the supervised part uses ``dbdmp_base`` (masking or totalseg); the excluded voxels are
  supervised by the dual-branch pseudo-labels (:mod:`.dbdmp`).
* ``full``: labels as they are (for fully annotated data).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

from ..errors import InputError
from .cache import IGNORE, CachedCase
from .config import TrainingConfig
from .totalsegmentator import background_mask, lung_masks


def noisy_target(label: np.ndarray) -> np.ndarray:
    return label.copy()


def masking_target(label: np.ndarray, hu: np.ndarray, hu_window: tuple[float, float]) -> np.ndarray:
    target = np.where((hu >= hu_window[0]) & (hu <= hu_window[1]), IGNORE, 0).astype(np.uint8)
    target[label == 1] = 1
    target[label == IGNORE] = IGNORE
    return target


def coating_target(label: np.ndarray, spacing_zyx_mm, margin_mm: float) -> np.ndarray:
    foreground = label == 1
    target = np.full(label.shape, IGNORE, dtype=np.uint8)
    if foreground.any():
        # distance (mm) of every voxel to the nearest labelled node voxel
        distance_mm = ndimage.distance_transform_edt(~foreground, sampling=spacing_zyx_mm)
        target[(distance_mm > 0) & (distance_mm <= margin_mm)] = 0
    target[foreground] = 1
    target[label == IGNORE] = IGNORE
    return target


def mediastinum_region(
    left_lung: np.ndarray, right_lung: np.ndarray, spacing_zyx_mm: Sequence[float], margin_mm: float
) -> np.ndarray:
    """Where a mediastinal node can lie: per slice (axis 0), the convex hull of both lungs widened by ``margin_mm``.

    The lungs enclose the mediastinum left-right and, with their anterior and posterior edges,
    front-back, so the hull of both lungs in a slice holds the whole mediastinum (hilum included)
    and leaves out the chest wall. Slices that do not hold both lungs (above the apices, below the
    bases) are left wholly inside: no claim is made there. The widening offsets every hull edge
    outwards by ``margin_mm`` (mm, in-plane spacing), which tolerates hull and partial-volume error.
    """
    from ..anatomy import convex_hull_region

    shape = left_lung.shape
    region = np.ones(shape, dtype=bool)
    spacing_yx = np.asarray(spacing_zyx_mm[1:], dtype=float)
    for k in range(shape[0]):
        if not (left_lung[k].any() and right_lung[k].any()):
            continue
        inside = convex_hull_region(np.argwhere(left_lung[k] | right_lung[k]) * spacing_yx, shape[1:], spacing_yx, margin_mm)
        if inside is not None:  # None: degenerate (collinear) lungs, no hull to trust in this slice
            region[k] = inside
    return region


def totalseg_target(
    label: np.ndarray,
    hu: np.ndarray,
    totalseg: np.ndarray,
    hu_window,
    class_names=None,
    spacing_zyx_mm: Optional[Sequence[float]] = None,
    mediastinum_margin_mm: Optional[float] = None,
) -> np.ndarray:
    """``masking`` + background inside TotalSegmentator structures and (optionally) outside the mediastinum."""
    target = masking_target(label, hu, hu_window)
    unlabelled = (label != 1) & (label != IGNORE)
    anatomy = background_mask(totalseg, class_names)
    target[anatomy & unlabelled] = 0
    if mediastinum_margin_mm is not None:
        if spacing_zyx_mm is None:
            raise ValueError("mediastinum_margin_mm needs spacing_zyx_mm")
        left, right = lung_masks(totalseg)
        outside = ~mediastinum_region(left, right, spacing_zyx_mm, mediastinum_margin_mm)
        target[outside & unlabelled] = 0
    return target


def anatomy_target(
    label: np.ndarray,
    hu: np.ndarray,
    mediastinum: np.ndarray,
    hu_window,
    spacing_zyx_mm,
    thick_tissue_depth_mm: float,
    totalseg: Optional[np.ndarray] = None,
    class_names=None,
) -> np.ndarray:
    """``masking`` + background outside ``mediastinum``, deep inside thick soft tissue, and in TotalSegmentator structures."""
    target = masking_target(label, hu, hu_window)
    unlabelled = (label != 1) & (label != IGNORE)
    target[(mediastinum == 0) & unlabelled] = 0
    soft = (hu >= hu_window[0]) & (hu <= hu_window[1])
    # a node's short axis is at most ~35 mm: soft tissue deeper than that half-width is an organ
    depth_mm = ndimage.distance_transform_edt(soft, sampling=spacing_zyx_mm)
    target[(depth_mm > thick_tissue_depth_mm) & unlabelled] = 0
    if totalseg is not None:
        target[background_mask(totalseg, class_names) & unlabelled] = 0
    return target


def build_target(case: CachedCase, config: TrainingConfig, strategy: str | None = None) -> np.ndarray:
    """The training target of ``case`` under ``strategy`` (default: the config's)."""
    strategy = strategy or config.strategy
    if strategy == "dbdmp":
        strategy = config.dbdmp_base
    if case.annotation == "full" or strategy in ("full", "noisy"):
        return noisy_target(case.label)
    if strategy == "masking":
        return masking_target(case.label, case.hu, config.masking_hu_window)
    if strategy == "coating":
        return coating_target(case.label, case.geometry.spacing_zyx_mm, config.coating_margin_mm)
    if strategy == "totalseg":
        if case.totalseg is None:
            raise InputError(
                f"Case '{case.case_id}' has no TotalSegmentator map; the 'totalseg' strategy needs "
                f"'{case.case_id}-totalseg.nii.gz' beside its CT (or --totalseg-dir)."
            )
        return totalseg_target(
            case.label,
            case.hu,
            case.totalseg,
            config.masking_hu_window,
            config.totalseg_background_classes,
            case.geometry.spacing_zyx_mm,
            config.mediastinum_margin_mm,
        )
    if strategy == "anatomy":
        if case.mediastinum is None:
            raise InputError(f"Case '{case.case_id}' was cached without a mediastinum mask; delete the cache and rerun.")
        return anatomy_target(
            case.label,
            case.hu,
            case.mediastinum,
            config.masking_hu_window,
            case.geometry.spacing_zyx_mm,
            config.thick_tissue_depth_mm,
            case.totalseg,
            config.totalseg_background_classes,
        )
    raise InputError(f"Unknown strategy '{strategy}'.")
