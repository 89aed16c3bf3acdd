"""From a probability map to lymph-node instances: threshold, connected components, size filter."""

from __future__ import annotations

import numpy as np


def label_instances(
    mask: np.ndarray, spacing_zyx_mm, min_volume_mm3: float = 0.0, connectivity: int = 26
) -> tuple[np.ndarray, int]:
    """Connected components of ``mask`` (cc3d) as uint16 labels 1..N, components under ``min_volume_mm3`` dropped.

    Numbering follows raster order of each node's first voxel (z, then y, then x), the order
    :func:`LymphNodeQuantLib.measure.measure_nodes` uses, so segment N is table row N.
    """
    import cc3d

    components, count = cc3d.connected_components(np.ascontiguousarray(mask, dtype=np.uint8), connectivity=connectivity, return_N=True)
    if count == 0:
        return np.zeros(mask.shape, np.uint16), 0
    voxel_mm3 = float(np.prod(spacing_zyx_mm))
    flat = components.ravel()
    sizes = np.bincount(flat, minlength=count + 1)
    # first voxel (C order) of each component
    first = np.full(count + 1, flat.size, dtype=np.int64)
    nonzero = np.flatnonzero(flat)
    np.minimum.at(first, flat[nonzero], nonzero)
    keep = [c for c in range(1, count + 1) if sizes[c] * voxel_mm3 >= min_volume_mm3]
    keep.sort(key=lambda c: first[c])
    if len(keep) > np.iinfo(np.uint16).max:
        raise ValueError("more than 65535 nodes")
    remap = np.zeros(count + 1, np.uint16)
    remap[keep] = np.arange(1, len(keep) + 1, dtype=np.uint16)
    return remap[components], len(keep)


def threshold_probability(probability: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Binary mask (uint8) of ``probability > threshold`` (at 0.5, the argmax of a two-class softmax)."""
    return (probability > threshold).astype(np.uint8)
