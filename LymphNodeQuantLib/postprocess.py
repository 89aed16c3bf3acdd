"""From a probability map to lymph-node instances: threshold, connected components, size and anatomy filters."""

from __future__ import annotations

from typing import Optional

import numpy as np

from .components import connected_nodes, keep_nodes, nodes_at_least, raster_order


def label_instances(
    mask: np.ndarray, spacing_zyx_mm, min_volume_mm3: float = 0.0, connectivity: int = 26
) -> tuple[np.ndarray, int]:
    """Connected components of ``mask`` as uint16 labels 1..N, components under ``min_volume_mm3`` dropped.

    Numbering follows raster order of each node's first voxel (z, then y, then x), the order
    :func:`LymphNodeQuantLib.measure.measure_nodes` uses, so segment N is table row N.
    """
    ids, count = connected_nodes(mask, connectivity)
    if count == 0:
        return np.zeros(mask.shape, np.uint16), 0
    kept, count = keep_nodes(ids, nodes_at_least(ids, count, spacing_zyx_mm, min_volume_mm3), np.uint16)
    return raster_order(kept, count), count


def threshold_probability(probability: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Binary mask (uint8) of ``probability > threshold`` (at 0.5, the argmax of a two-class softmax)."""
    return (probability > threshold).astype(np.uint8)


#: Why a candidate is not a node, in the order the rules are applied (each candidate counts once).
DROP_REASONS = {
    "too_small": "smaller than the minimum node size (mm3 and voxels)",
    "air_or_lung": "mostly air or lung (median below -300 HU)",
    "bone_or_contrast": "mostly bone, calcium or contrast-filled lumen (median above 200 HU)",
    "outside_mediastinum": "less than half inside the mediastinum found from the CT",
}
#: a node is soft tissue: its median HU lies between these (partly calcified nodes keep a soft-tissue median)
NODE_MEDIAN_HU_RANGE = (-300.0, 200.0)
MIN_FRACTION_IN_MEDIASTINUM = 0.5


def filter_candidates(
    instances: np.ndarray,
    hu: Optional[np.ndarray],
    inside_mediastinum: Optional[np.ndarray],
    spacing_zyx_mm,
    min_volume_mm3: float = 0.0,
    min_voxels: int = 1,
) -> tuple[np.ndarray, int, dict]:
    """Drop candidate nodes that cannot be mediastinal lymph nodes; renumber the rest 1..N in raster order.

    ``instances``: uint16 candidates 1..M (:func:`label_instances`). ``hu``: the CT on the same grid
    (None skips the attenuation rules). ``inside_mediastinum``: boolean mask (None skips that rule).
    Returns (labels, N, {reason: count}) with the reasons of :data:`DROP_REASONS`.
    """
    from scipy import ndimage

    count = int(instances.max()) if instances.size else 0
    dropped = {reason: 0 for reason in DROP_REASONS}
    if count == 0:
        return instances.astype(np.uint16), 0, dropped
    index = np.arange(1, count + 1)  # node ids, for the per-node medians
    voxels = np.bincount(instances.ravel(), minlength=count + 1)[1:]
    reason = np.full(count, "", dtype=object)
    small = (voxels < min_voxels) | (voxels * float(np.prod(spacing_zyx_mm)) < min_volume_mm3)
    reason[small] = "too_small"
    if hu is not None:
        median = np.asarray(ndimage.median(hu, instances, index), dtype=float)
        reason[(reason == "") & (median < NODE_MEDIAN_HU_RANGE[0])] = "air_or_lung"
        reason[(reason == "") & (median > NODE_MEDIAN_HU_RANGE[1])] = "bone_or_contrast"
    if inside_mediastinum is not None:
        inside = np.bincount(instances.ravel(), weights=inside_mediastinum.ravel().astype(float), minlength=count + 1)[1:]
        reason[(reason == "") & (inside < MIN_FRACTION_IN_MEDIASTINUM * voxels)] = "outside_mediastinum"
    for name in DROP_REASONS:
        dropped[name] = int(np.count_nonzero(reason == name))
    labels, kept = keep_nodes(instances, np.concatenate([[False], reason == ""]), np.uint16)  # raster order kept
    return labels, kept, dropped
