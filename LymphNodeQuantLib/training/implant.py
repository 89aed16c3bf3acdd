"""Implant synthetic lymph nodes into a real chest CT (lesion insertion, as in CT observer studies).

Real CTs with no node labels become training and test material: each implanted node is an
irregular, craniocaudally elongated ellipsoid (short axis 5-35 mm by default, sometimes in a
touching cluster) placed in mediastinal fat found from the CT itself
(:func:`LymphNodeQuantLib.anatomy.find_chest_anatomy`), where the IASLC stations put nodes: centres
at least :data:`MIN_CENTRE_DEPTH_MM` inside the mediastinum (not against the chest wall, the lungs'
edge or the diaphragm), and :data:`UPPER_STATIONS_SHARE` of them in the upper two thirds of the
mediastinum (paratracheal, aortopulmonary, para-aortic, subcarinal and hilar stations 2-7 and 10,
where most nodes are), the rest anywhere in its fat (stations 3, 8 and paracardiac). Its voxels get

    new = (1 - occupancy) * ct + occupancy * (node_hu + residual)

where ``occupancy`` is the sub-voxel fraction of the voxel inside the node (supersampled over the
voxel's whole extent, so thick slices get the partial volume they would have), ``node_hu`` is a
soft-tissue attenuation (20-70 HU) with a smooth internal texture, and ``residual`` is the scan's
own noise at that place (the CT minus its 3x3x3 median, clipped at 2.5 robust SDs of the noise in
the fat there, so the edges of vessels beside the node are not copied into it), so the node
carries the noise texture of the scan around it. Voxels that are air/lung (< -400 HU) or
bone/dense contrast (> 150 HU) are never changed, and at least 60% of a node lies over fat: a node
that would cover much lung, bone or organ is placed elsewhere. The label is ``occupancy >= 0.5``. Real, unlabelled nodes already in the scan stay unlabelled: exactly the
LNQ2023 partial-label setting.

Arrays are (z, y, x); positions in mm from voxel 0's centre along the array axes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

from ..anatomy import AIR_THRESHOLD_HU, ChestAnatomy, find_chest_anatomy
from ..geometry import Volume
from ..synthetic import _random_rotation_long_axis_up

#: bumped whenever placement or blending changes, so datasets written by older code are rewritten
IMPLANT_VERSION = 4
FAT_HU = (-160.0, -30.0)
FORBIDDEN_LOW_HU = AIR_THRESHOLD_HU  # air and lung
FORBIDDEN_HIGH_HU = 150.0  # bone, calcium, contrast-filled lumen
MAX_FORBIDDEN_FRACTION = 0.15
MIN_FAT_SHARE = 0.6  # share of the node over (locally) fat: it displaces fat, abutting organs at most
NODE_HU_RANGE = (20.0, 70.0)
MIN_CENTRE_DEPTH_MM = 10.0
UPPER_STATIONS_SHARE = 0.75


@dataclass
class ImplantedNode:
    """One implanted node: where, how big, how dense."""

    label: int
    center_zyx_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]  # short, middle, long (long near the z axis)
    mean_hu: float
    cluster: int
    voxel_count: int

    @property
    def nominal_short_axis_mm(self) -> float:
        return 2.0 * self.semi_axes_mm[0]


@dataclass
class ImplantResult:
    ct: Volume  # int16 HU with the nodes
    labels: Volume  # uint16, one id per implanted node
    nodes: list[ImplantedNode]


def node_occupancy(
    shape_zyx: Sequence[int],
    spacing_zyx_mm: Sequence[float],
    center_mm: np.ndarray,
    semi_axes_mm: np.ndarray,
    rotation: np.ndarray,
    bumps: tuple,
    max_subsample_mm: float = 0.5,
) -> tuple[Optional[tuple[slice, ...]], Optional[np.ndarray]]:
    """(box, occupancy in [0, 1]) of an irregular ellipsoid, each voxel supersampled over its extent.

    ``bumps`` = (amplitude, directions (3, 3), frequencies (3,), phases (3,)) modulate the surface
    radius by up to ``amplitude``; empty tuple for a plain ellipsoid.
    """
    spacing = np.asarray(spacing_zyx_mm, dtype=float)
    shape = np.asarray(shape_zyx)
    reach = float(np.max(semi_axes_mm)) * (1.0 + (bumps[0] if bumps else 0.0)) + 1e-6
    low = np.clip(np.floor((center_mm - reach) / spacing + 0.5).astype(int), 0, shape)
    high = np.clip(np.ceil((center_mm + reach) / spacing + 0.5).astype(int), 0, shape)
    if np.any(high <= low):
        return None, None
    factor = np.maximum(1, np.ceil(spacing / max_subsample_mm).astype(int))
    axes = []
    for axis in range(3):
        sub = (np.arange((high[axis] - low[axis]) * factor[axis]) + 0.5) / factor[axis] - 0.5 + low[axis]
        axes.append(sub * spacing[axis] - center_mm[axis])
    z, y, x = np.meshgrid(*axes, indexing="ij", sparse=True)
    local = np.stack(np.broadcast_arrays(z, y, x), axis=-1) @ rotation / np.asarray(semi_axes_mm, dtype=float)
    rho = np.linalg.norm(local, axis=-1)
    threshold = 1.0
    if bumps:
        amplitude, directions, frequencies, phases = bumps
        unit = local / np.maximum(rho, 1e-9)[..., None]
        threshold = 1.0 + amplitude * sum(
            np.cos(f * np.pi * (unit @ d) + p) for d, f, p in zip(directions, frequencies, phases)
        ) / len(directions)
    inside = (rho <= threshold).astype(np.float32)
    n = high - low
    occupancy = inside.reshape(n[0], factor[0], n[1], factor[1], n[2], factor[2]).mean(axis=(1, 3, 5))
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high)), occupancy


def candidate_centres(ct: Volume, anatomy: ChestAnatomy, min_depth_mm: float = 0.0) -> np.ndarray:
    """Full-resolution (z, y, x) indices of coarse voxels in mediastinal fat (local mean in :data:`FAT_HU`)
    at least ``min_depth_mm`` inside the mediastinum."""
    step = np.asarray(anatomy.step_zyx)
    coarse = np.asarray(ct.array[:: step[0], :: step[1], :: step[2]], dtype=np.float32)
    local_mean = ndimage.uniform_filter(np.maximum(coarse, -1024.0), size=3)
    lungs_near = ndimage.binary_dilation(anatomy.lungs, iterations=1)
    fat = (local_mean >= FAT_HU[0]) & (local_mean <= FAT_HU[1]) & anatomy.mediastinum & ~lungs_near
    if min_depth_mm > 0:
        coarse_spacing_mm = np.asarray(ct.geometry.spacing_zyx_mm, dtype=float) * step
        fat &= ndimage.distance_transform_edt(anatomy.mediastinum, sampling=coarse_spacing_mm) >= min_depth_mm
    return np.argwhere(fat) * step


def in_upper_mediastinum(centres_zyx: np.ndarray, ct: Volume, anatomy: ChestAnatomy) -> np.ndarray:
    """Per centre (full-resolution indices): whether it lies in the upper two thirds of the mediastinum's height."""
    spacing = np.asarray(ct.geometry.spacing_zyx_mm, dtype=float)
    # mm towards the head per index step along (z, y, x): the S row of the LPS direction, columns in (x, y, z) order
    superior_mm = np.asarray(ct.geometry.direction_lps, dtype=float)[2, ::-1] * spacing
    inside = np.argwhere(anatomy.mediastinum) * np.asarray(anatomy.step_zyx)
    if not inside.size:
        return np.zeros(len(centres_zyx), bool)
    heights = inside @ superior_mm
    low, high = float(heights.min()), float(heights.max())
    return np.asarray(centres_zyx, dtype=float) @ superior_mm >= low + (high - low) / 3.0


def _draw_node(rng: np.random.Generator, short_axis_range_mm: tuple[float, float]):
    low, high = short_axis_range_mm
    short = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    semi = np.array([short / 2, short / 2 * rng.uniform(1.0, 1.4), short / 2 * rng.uniform(1.2, 2.2)])
    bumps = (0.08, rng.normal(size=(3, 3)) / np.sqrt(3), rng.uniform(1.0, 3.0, 3), rng.uniform(0, 2 * np.pi, 3))
    return semi, _random_rotation_long_axis_up(rng, 25.0), bumps


def implant_nodes(
    ct: Volume,
    seed: int,
    n_nodes: int = 6,
    short_axis_range_mm: tuple[float, float] = (5.0, 35.0),
    cluster_probability: float = 0.3,
    anatomy: Optional[ChestAnatomy] = None,
    max_attempts: int = 400,
) -> ImplantResult:
    """Implant up to ``n_nodes`` nodes into ``ct`` (module docstring); fewer if the fat runs out."""
    rng = np.random.default_rng(seed)
    anatomy = anatomy or find_chest_anatomy(ct)
    spacing = np.asarray(ct.geometry.spacing_zyx_mm, dtype=float)
    original = np.asarray(ct.array, dtype=np.float32)
    hu = original.copy()
    labels = np.zeros(ct.geometry.shape_zyx, np.uint16)
    centres = candidate_centres(ct, anatomy, MIN_CENTRE_DEPTH_MM)
    if not centres.size:  # a thin mediastinum (coarse or cropped scan): any mediastinal fat
        centres = candidate_centres(ct, anatomy)
    upper = np.flatnonzero(in_upper_mediastinum(centres, ct, anatomy))
    nodes: list[ImplantedNode] = []
    partner: Optional[tuple[np.ndarray, np.ndarray, int]] = None  # (centre, semi axes, cluster) to touch
    attempts = 0
    while len(nodes) < n_nodes and centres.size and attempts < max_attempts:
        attempts += 1
        semi, rotation, bumps = _draw_node(rng, short_axis_range_mm)
        if partner is not None:
            direction = rng.normal(size=3) * np.array([0.3, 1.0, 1.0])
            direction /= np.linalg.norm(direction)
            centre = partner[0] + direction * 0.8 * (partner[1][0] + semi[0])
            cluster = partner[2]
        else:
            jitter = rng.uniform(-0.5, 0.5, 3) * np.asarray(anatomy.step_zyx)
            pool = upper if (upper.size and rng.random() < UPPER_STATIONS_SHARE) else np.arange(len(centres))
            centre = (centres[pool[rng.integers(len(pool))]] + jitter) * spacing
            cluster = 1 + max((n.cluster for n in nodes), default=0)
        placed = _place(
            hu,
            original,
            labels,
            spacing,
            centre,
            semi,
            rotation,
            bumps,
            rng,
            len(nodes) + 1,
            allowed_neighbour=nodes[-1].label if partner is not None else None,
        )
        if placed is None:
            partner = None
            continue
        mean_hu, voxels = placed
        nodes.append(ImplantedNode(len(nodes) + 1, tuple(map(float, centre)), tuple(map(float, semi)), mean_hu, cluster, voxels))
        partner = (centre, semi, cluster) if (partner is None and rng.random() < cluster_probability) else None
    out = np.clip(np.rint(hu), -32768, 32767).astype(np.int16)
    return ImplantResult(ct.with_array(out), ct.with_array(labels), nodes)


def _place(hu, original, labels, spacing, centre, semi, rotation, bumps, rng, label, allowed_neighbour):
    """Blend one node into ``hu``/``labels`` in place; None (nothing changed) when it does not fit."""
    box, occupancy = node_occupancy(hu.shape, spacing, centre, semi, rotation, bumps)
    if box is None or any(s.start == 0 or s.stop == n for s, n in zip(box, hu.shape)) or occupancy.sum() < 4:
        return None
    background = original[box]
    forbidden = (background < FORBIDDEN_LOW_HU) | (background > FORBIDDEN_HIGH_HU)
    if (occupancy * forbidden).sum() > MAX_FORBIDDEN_FRACTION * occupancy.sum():
        return None
    local_mean = ndimage.gaussian_filter(np.maximum(background, -1024.0), sigma=2.0 / spacing)
    # mostly in fat: a node hidden inside the heart or a muscle (same HU) would teach the network nonsense
    if (occupancy * (local_mean < FAT_HU[1] + 10.0)).sum() < MIN_FAT_SHARE * occupancy.sum():
        return None
    existing = labels[box][occupancy >= 0.5]
    if np.any((existing != 0) & (existing != (allowed_neighbour or 0))):
        return None
    # partial volume of the scanner's point spread on top of the voxel's own (about 0.5 mm)
    occupancy = ndimage.gaussian_filter(occupancy, sigma=0.5 / spacing) * ~forbidden
    mean_hu = float(rng.uniform(*NODE_HU_RANGE))
    texture = ndimage.gaussian_filter(rng.normal(0.0, 1.0, occupancy.shape), sigma=1.5 / spacing)
    node_hu = mean_hu + 6.0 * texture / max(float(texture.std()), 1e-6)
    residual = _noise_residual(background, local_mean)
    mask = (occupancy >= 0.5) & (labels[box] == 0)
    if not mask.any():
        return None
    hu[box] = (1.0 - occupancy) * hu[box] + occupancy * (node_hu + residual)
    labels[box][mask] = label
    return mean_hu, int(mask.sum())


def _noise_residual(background: np.ndarray, local_mean: np.ndarray) -> np.ndarray:
    """The scan's own noise around a node, without the structures beside it.

    CT minus its 3x3x3 median (a median keeps the edges of vessels and airways, so the difference
    is noise, not structure), clipped at 2.5 robust SDs of the noise in the fat here.
    """
    residual = background - ndimage.median_filter(background, size=3, mode="nearest")
    fat = (local_mean >= FAT_HU[0]) & (local_mean <= FAT_HU[1])
    noise_sd = 1.4826 * float(np.median(np.abs(residual[fat]))) if np.count_nonzero(fat) >= 20 else 20.0
    limit = 2.5 * max(noise_sd, 5.0)
    return np.clip(residual, -limit, limit)
