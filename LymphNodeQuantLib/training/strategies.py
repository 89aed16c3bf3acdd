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
* ``dbdmp``: the supervised part uses ``dbdmp_base`` (masking or totalseg); the excluded voxels are
  supervised by the dual-branch pseudo-labels (:mod:`.dbdmp`).
* ``full``: labels as they are (for fully annotated data).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

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


def mediastinum_region(left_lung: np.ndarray, right_lung: np.ndarray, spacing_zyx_mm: Sequence[float],
                       margin_mm: float) -> np.ndarray:
    """Where a mediastinal node can lie: per slice (axis 0), the convex hull of both lungs widened by ``margin_mm``.

    The lungs enclose the mediastinum left-right and, with their anterior and posterior edges,
    front-back, so the hull of both lungs in a slice holds the whole mediastinum (hilum included)
    and leaves out the chest wall. Slices that do not hold both lungs (above the apices, below the
    bases) are left wholly inside: no claim is made there. The widening offsets every hull edge
    outwards by ``margin_mm`` (mm, in-plane spacing), which tolerates hull and partial-volume error.
    """
    # Written here because no library offers a per-slice convex-hull fill: scipy gives the hull's
    # half-planes, and a voxel is inside when it is within margin_mm of every one of them.
    shape = left_lung.shape
    region = np.ones(shape, dtype=bool)
    spacing_yx = np.asarray(spacing_zyx_mm[1:], dtype=float)
    y_mm = np.arange(shape[1])[:, None] * spacing_yx[0]
    x_mm = np.arange(shape[2])[None, :] * spacing_yx[1]
    for k in range(shape[0]):
        if not (left_lung[k].any() and right_lung[k].any()):
            continue
        points = np.argwhere(left_lung[k] | right_lung[k]) * spacing_yx
        try:
            hull = ConvexHull(points)
        except QhullError:  # degenerate (collinear) lungs: no hull to trust in this slice
            continue
        inside = np.ones(shape[1:], dtype=bool)
        for normal_y, normal_x, offset in hull.equations:  # normal . p + offset <= 0 inside, unit normals
            inside &= normal_y * y_mm + normal_x * x_mm + offset <= margin_mm
        region[k] = inside
    return region


def totalseg_target(label: np.ndarray, hu: np.ndarray, totalseg: np.ndarray, hu_window, class_names=None,
                    spacing_zyx_mm: Optional[Sequence[float]] = None,
                    mediastinum_margin_mm: Optional[float] = None) -> np.ndarray:
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
            raise InputError(f"Case '{case.case_id}' has no TotalSegmentator map; the 'totalseg' strategy needs "
                             f"'{case.case_id}-totalseg.nii.gz' beside its CT (or --totalseg-dir).")
        return totalseg_target(case.label, case.hu, case.totalseg, config.masking_hu_window,
                               config.totalseg_background_classes, case.geometry.spacing_zyx_mm,
                               config.mediastinum_margin_mm)
    raise InputError(f"Unknown strategy '{strategy}'.")
