"""Scoring on unlabelled real CT: which predicted nodes are certainly not lymph nodes.

Real scans have no node labels, but some predictions are wrong whatever the truth: a "node" whose
mean attenuation is above :data:`BONE_MEAN_HU` (bone, calcium, contrast-filled lumen), one lying
mostly (> 50%) in air or lung (< -400 HU), or one lying mostly outside the mediastinum found from
the CT (:mod:`.anatomy`). Used by ``benchmarks/real_ct_bench.py`` and the tests. These are
scoring rules (means, as a reader would judge); the inference filter
(:func:`.postprocess.filter_candidates`) uses medians and may keep a node these count as wrong.
"""

from __future__ import annotations

import numpy as np

from .anatomy import AIR_THRESHOLD_HU, ChestAnatomy

BONE_MEAN_HU = 200.0
AIR_HU = AIR_THRESHOLD_HU  # air or lung, as the lung search defines it
REASONS = ("above_200_hu", "in_air_or_lung", "outside_mediastinum")


def certainly_not_nodes(labels: np.ndarray, ct_hu: np.ndarray, anatomy: ChestAnatomy) -> dict[str, int]:
    """``{"nodes": N, reason: count, ...}`` for an instance map ``labels`` (1..N) on the CT's grid; each node counts once."""
    from scipy import ndimage

    count = int(labels.max()) if labels.size else 0
    counts = {"nodes": count, **{reason: 0 for reason in REASONS}}
    if count == 0:
        return counts
    index = np.arange(1, count + 1)
    mean = np.asarray(ndimage.mean(ct_hu, labels, index))
    air = np.asarray(ndimage.mean(ct_hu < AIR_HU, labels, index))
    inside = np.asarray(ndimage.mean(anatomy.mediastinum_in_box((0, 0, 0), labels.shape), labels, index))
    bone = mean > BONE_MEAN_HU
    in_air = ~bone & (air > 0.5)
    outside = ~bone & ~in_air & (inside < 0.5)
    counts.update(above_200_hu=int(bone.sum()), in_air_or_lung=int(in_air.sum()), outside_mediastinum=int(outside.sum()))
    return counts


def certainly_wrong_total(counts: dict[str, int]) -> int:
    return sum(counts[reason] for reason in REASONS)
