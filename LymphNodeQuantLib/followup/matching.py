"""Match the nodes of a follow-up examination to the baseline's, one to one, after registration.

1. Every follow-up node's centroid is mapped into baseline space (:meth:`Registration.followup_to_baseline`),
   and the follow-up node map is resampled onto the baseline grid (nearest neighbour, only in the
   box that holds the nodes) to measure the overlap (Dice) of every baseline/follow-up pair.
2. A pair may match when its centroids lie within ``max_distance_mm`` (15 mm: a node's centroid
   moves by its change of shape plus the registration's error), or, for large nodes that overlap
   (Dice >= ``min_dice``), within ``size_gate_fraction`` of the larger node's 3-D diameter (a
   40 mm node that grows on one side moves its centroid further than 15 mm). Small nodes, which
   may not overlap after a few mm of registration error, match on distance alone.
3. Among the allowed pairs, :func:`scipy.optimize.linear_sum_assignment` picks the one-to-one
   assignment with the most matches and then the lowest total cost, ``distance_mm +
   overlap_weight_mm x (1 - Dice)`` (overlap breaks near-ties in distance).
4. Baseline nodes left unmatched have disappeared; follow-up nodes left unmatched are new.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from ..geometry import Volume
from ..measure import NodeMeasurement
from .registration import Registration, resample_labels

UNMATCHABLE = 1e9


@dataclass(frozen=True)
class MatchSettings:
    """Gates and cost of :func:`match_nodes` (module docstring)."""

    max_distance_mm: float = 15.0
    min_dice: float = 0.1
    size_gate_fraction: float = 0.5
    overlap_weight_mm: float = 10.0


@dataclass(frozen=True)
class NodeMatch:
    """One matched pair: node ids at each examination, centroid distance in baseline space (mm) and overlap."""

    baseline_id: int
    followup_id: int
    distance_mm: float
    dice: float


@dataclass
class Matching:
    """The one-to-one matching of a follow-up's nodes to the baseline's."""

    pairs: list[NodeMatch]
    disappeared_ids: list[int]  # baseline nodes not found at follow-up
    new_ids: list[int]  # follow-up nodes not present at baseline
    #: follow-up node id -> its centroid mapped into baseline space (LPS mm)
    followup_centroids_in_baseline_lps_mm: dict[int, tuple[float, float, float]] = field(default_factory=dict)

    def followup_for(self, baseline_id: int) -> Optional[NodeMatch]:
        return next((p for p in self.pairs if p.baseline_id == baseline_id), None)

    def as_dict(self) -> dict:
        return {
            "pairs": [
                {
                    "baseline_id": p.baseline_id,
                    "followup_id": p.followup_id,
                    "distance_mm": round(p.distance_mm, 3),
                    "dice": round(p.dice, 4),
                }
                for p in self.pairs
            ],
            "disappeared_ids": list(self.disappeared_ids),
            "new_ids": list(self.new_ids),
        }


def _box_corners_lps(node_map: Volume, node_ids: Sequence[int]) -> dict[int, np.ndarray]:
    """The 8 corners (LPS mm) of each node's voxel bounding box."""
    import cc3d

    array = np.asarray(node_map.array)
    statistics = cc3d.statistics(array.astype(np.uint32, copy=False))
    corners = {}
    for node in node_ids:
        box = statistics["bounding_boxes"][node]
        low = np.array([s.start for s in box], dtype=float) - 0.5
        high = np.array([s.stop for s in box], dtype=float) - 0.5
        grid = np.array([[a, b, c] for a in (low[0], high[0]) for b in (low[1], high[1]) for c in (low[2], high[2])])
        corners[node] = node_map.geometry.index_zyx_to_lps(grid)
    return corners


def overlap_counts(
    baseline_map: Volume, followup_map: Volume, followup_ids: Sequence[int], registration: Registration, margin_voxels: int = 2
) -> tuple[dict[tuple[int, int], int], dict[int, int]]:
    """({(baseline id, follow-up id): voxels in common}, {follow-up id: its voxels on the baseline grid}) after registration.

    The follow-up map is resampled only inside the baseline box that holds the baseline nodes and
    the mapped bounding boxes of the follow-up nodes (a B-spline transform is slow to evaluate).
    """
    geometry = baseline_map.geometry
    shape = np.asarray(geometry.shape_zyx)
    points = []
    baseline_nonzero = np.nonzero(np.asarray(baseline_map.array))
    if baseline_nonzero[0].size:
        points = [np.array([[w.min() for w in baseline_nonzero], [w.max() for w in baseline_nonzero]], dtype=float)]
    corners = _box_corners_lps(followup_map, followup_ids)
    if corners:
        mapped = registration.followup_to_baseline(np.concatenate(list(corners.values())))
        points.append(geometry.lps_to_index_zyx(mapped))
    if not points:
        return {}, {}
    stacked = np.concatenate(points)
    start = np.clip(np.floor(stacked.min(axis=0)).astype(int) - margin_voxels, 0, shape)
    stop = np.clip(np.ceil(stacked.max(axis=0)).astype(int) + 1 + margin_voxels, 0, shape)
    if np.any(stop <= start):
        return {}, {}
    box = tuple(slice(int(a), int(b)) for a, b in zip(start, stop))
    warped = resample_labels(followup_map, registration, geometry.cropped(start, stop)).array.astype(np.int64)
    baseline = np.asarray(baseline_map.array[box]).astype(np.int64)
    both = (warped != 0) & (baseline != 0)
    pairs, counts = np.unique(np.stack([baseline[both], warped[both]]), axis=1, return_counts=True)
    common = {(int(b), int(f)): int(c) for (b, f), c in zip(pairs.T, counts)}
    ids, sizes = np.unique(warped[warped != 0], return_counts=True)
    return common, {int(i): int(s) for i, s in zip(ids, sizes)}


def match_nodes(
    baseline_nodes: Sequence[NodeMeasurement],
    baseline_map: Volume,
    followup_nodes: Sequence[NodeMeasurement],
    followup_map: Volume,
    registration: Registration,
    settings: MatchSettings = MatchSettings(),
) -> Matching:
    """Match ``followup_nodes`` to ``baseline_nodes`` one to one (module docstring).

    The maps hold each node's ``node_id`` as voxel value, on their examination's grid.
    """
    from scipy.optimize import linear_sum_assignment

    followup_ids = [m.node_id for m in followup_nodes]
    mapped = (
        registration.followup_to_baseline(np.array([m.centroid_lps_mm for m in followup_nodes]))
        if followup_nodes
        else np.zeros((0, 3))
    )
    centroids = {node: tuple(float(v) for v in point) for node, point in zip(followup_ids, mapped)}
    if not baseline_nodes or not followup_nodes:
        return Matching([], [m.node_id for m in baseline_nodes], followup_ids, centroids)
    common, warped_sizes = overlap_counts(baseline_map, followup_map, followup_ids, registration)
    baseline_points = np.array([m.centroid_lps_mm for m in baseline_nodes])
    distance = np.linalg.norm(baseline_points[:, None, :] - mapped[None, :, :], axis=-1)
    dice = np.zeros(distance.shape)
    for i, b in enumerate(baseline_nodes):
        for j, f in enumerate(followup_nodes):
            overlap = common.get((b.node_id, f.node_id), 0)
            if overlap:
                dice[i, j] = 2.0 * overlap / (b.voxel_count + warped_sizes.get(f.node_id, 0))
    diameters = np.maximum.outer([m.max_diameter_3d_mm for m in baseline_nodes], [m.max_diameter_3d_mm for m in followup_nodes])
    allowed = (distance <= settings.max_distance_mm) | (
        (dice >= settings.min_dice) & (distance <= settings.size_gate_fraction * diameters)
    )
    cost = np.where(allowed, distance + settings.overlap_weight_mm * (1.0 - dice), UNMATCHABLE)
    rows, columns = linear_sum_assignment(cost)
    pairs = [
        NodeMatch(baseline_nodes[i].node_id, followup_ids[j], float(distance[i, j]), float(dice[i, j]))
        for i, j in zip(rows, columns)
        if allowed[i, j]
    ]
    matched_baseline = {p.baseline_id for p in pairs}
    matched_followup = {p.followup_id for p in pairs}
    return Matching(
        sorted(pairs, key=lambda p: p.baseline_id),
        [m.node_id for m in baseline_nodes if m.node_id not in matched_baseline],
        [node for node in followup_ids if node not in matched_followup],
        centroids,
    )


def match_points(first_lps_mm: np.ndarray, second_lps_mm: np.ndarray, max_distance_mm: float) -> list[tuple[int, int]]:
    """One-to-one (index, index) pairs of two point sets in the same space, within ``max_distance_mm``, most pairs first."""
    from scipy.optimize import linear_sum_assignment

    first, second = np.asarray(first_lps_mm, float).reshape(-1, 3), np.asarray(second_lps_mm, float).reshape(-1, 3)
    if not len(first) or not len(second):
        return []
    distance = np.linalg.norm(first[:, None, :] - second[None, :, :], axis=-1)
    allowed = distance <= max_distance_mm
    rows, columns = linear_sum_assignment(np.where(allowed, distance, UNMATCHABLE))
    return [(int(i), int(j)) for i, j in zip(rows, columns) if allowed[i, j]]
