"""Nodes as voxel sets: connected components, instance ids, size filtering and renumbering.

The one definition used by inference (candidates), measurement (table rows) and evaluation
(detection), so "a node" means the same everywhere:

* :func:`connected_nodes` labels the 3-D connected components of a mask (cc3d; 26-connectivity
  by default, as LNQ2023's per-node analyses);
* :func:`instance_nodes` turns an instance map (one label value per node) into consecutive ids
  and keeps each node's label value;
* :func:`keep_nodes` drops nodes and renumbers the rest 1..N, keeping their order;
* :func:`raster_order` renumbers nodes by their first voxel (z, then y, then x).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import InputError

CONNECTIVITIES = (6, 18, 26)


def connected_nodes(mask: np.ndarray, connectivity: int = 26) -> tuple[np.ndarray, int]:
    """Connected components of ``mask`` as uint32 ids 1..N (cc3d's order) and N."""
    import cc3d

    if connectivity not in CONNECTIVITIES:
        raise InputError(f"connectivity must be 6, 18 or 26 (3-D neighbourhoods), got {connectivity}.")
    ids, count = cc3d.connected_components(
        np.ascontiguousarray(mask, dtype=np.uint8), connectivity=connectivity, return_N=True, out_dtype=np.uint32
    )
    return ids, int(count)


def instance_nodes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive uint32 ids 1..N for the label values of an instance map, and the label value of each id."""
    array = np.asarray(labels)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.mod(array, 1) == 0):
            raise InputError("The label map holds non-integer values; pass an integer label map (instance ids).")
        array = array.astype(np.int64)
    if array.min(initial=0) < 0:
        raise InputError("The label map holds negative values; instance ids must be >= 0.")
    if array.dtype == np.uint64:  # np.bincount cannot take uint64
        array = array.astype(np.int64)
    largest = int(array.max(initial=0))
    if largest < 2**24:  # a lookup table is much faster than sorting the whole volume
        present = np.flatnonzero(np.bincount(array.ravel(), minlength=largest + 1))
        present = present[present > 0]
        lookup = np.zeros(largest + 1, dtype=np.uint32)
        lookup[present] = np.arange(1, present.size + 1, dtype=np.uint32)
        return lookup[array], present.astype(np.int64)
    unique, inverse = np.unique(array, return_inverse=True)
    ids = (inverse.reshape(array.shape) + (0 if unique[0] == 0 else 1)).astype(np.uint32)
    return ids, unique[unique != 0].astype(np.int64)


def node_sizes(ids: np.ndarray, count: int) -> np.ndarray:
    """Voxel count of nodes 1..count (index 0: background)."""
    return np.bincount(ids.ravel(), minlength=count + 1)


def keep_nodes(ids: np.ndarray, keep: np.ndarray, dtype=np.uint32) -> tuple[np.ndarray, int]:
    """Renumber the nodes with ``keep[id]`` true as 1..N in their current order; the others become 0."""
    keep = np.asarray(keep, dtype=bool).copy()
    keep[0] = False
    if int(keep.sum()) > np.iinfo(dtype).max:
        raise InputError(f"More than {np.iinfo(dtype).max} nodes; this is not a lymph-node label map.")
    remap = np.zeros(keep.size, dtype)
    remap[keep] = np.arange(1, int(keep.sum()) + 1, dtype=dtype)
    return remap[ids], int(keep.sum())


def raster_order(ids: np.ndarray, count: int) -> np.ndarray:
    """Ids 1..count renumbered by their first voxel in C (z, y, x) order."""
    flat = ids.ravel()
    first = np.full(count + 1, flat.size, dtype=np.int64)
    nonzero = np.flatnonzero(flat)
    np.minimum.at(first, flat[nonzero], nonzero)
    order = np.argsort(first[1:], kind="stable") + 1  # old ids in raster order
    remap = np.zeros(count + 1, ids.dtype)
    remap[order] = np.arange(1, count + 1, dtype=ids.dtype)
    return remap[ids]


def nodes_at_least(ids: np.ndarray, count: int, spacing_zyx_mm: Sequence[float], min_volume_mm3: float) -> np.ndarray:
    """``keep`` mask (index = id) of the nodes whose volume reaches ``min_volume_mm3``."""
    return node_sizes(ids, count) * float(np.prod(spacing_zyx_mm)) >= min_volume_mm3
