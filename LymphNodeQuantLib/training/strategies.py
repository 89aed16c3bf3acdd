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
  structures (organs, vessels, airways, bones), never over labelled node voxels.
* ``dbdmp``: the supervised part uses ``dbdmp_base`` (masking or totalseg); the excluded voxels are
  supervised by the dual-branch pseudo-labels (:mod:`.dbdmp`).
* ``full``: labels as they are (for fully annotated data).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import InputError
from .cache import IGNORE, CachedCase
from .config import TrainingConfig
from .totalsegmentator import background_mask


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


def totalseg_target(label: np.ndarray, hu: np.ndarray, totalseg: np.ndarray, hu_window, class_names=None) -> np.ndarray:
    target = masking_target(label, hu, hu_window)
    anatomy = background_mask(totalseg, class_names)
    target[anatomy & (label != 1) & (label != IGNORE)] = 0
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
                               config.totalseg_background_classes)
    raise InputError(f"Unknown strategy '{strategy}'.")
