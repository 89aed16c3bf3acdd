"""Synthetic chest CT phantoms with lymph nodes, full and partial labels.

Real LNQ2023 data cannot be downloaded in this project's environment, so models are trained and
tested on phantoms that reproduce what makes mediastinal lymph-node segmentation hard: nodes of
soft-tissue density (20-60 HU) embedded in mediastinal fat next to tubes of the same density
(oesophagus, non-enhanced vessels) or of higher density (contrast-filled vessels), confluent
clusters of touching nodes, partial volume (blur) and noise, and training labels that cover only
some nodes (as LNQ2023's partially annotated training set does).

Anatomy is laid out in the voxel frame: index x grows to the patient's left, y posterior, z
superior (an axial LPS scan); a custom ``direction_lps`` only relabels the grid. Anatomy scales
with the field of view so small test volumes still hold a whole chest.

Arrays are (z, y, x) like everywhere in the package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

from .geometry import ImageGeometry, Volume
from .io import PathLike, write_volume

#: Values of :attr:`Phantom.anatomy_labels` (0 = outside the body).
ANATOMY_LABELS = {
    1: "body",
    2: "lung_left",
    3: "lung_right",
    4: "heart",
    5: "aorta",
    6: "pulmonary_artery",
    7: "superior_vena_cava",
    8: "trachea",
    9: "esophagus",
    10: "vertebrae",
    11: "lymph_node",
    12: "rib",
    13: "sternum",
    14: "costal_cartilage",
    15: "clavicle",
    16: "liver",
    17: "stomach",
    18: "bowel",
    19: "thyroid",
}
ANATOMY_IDS = {name: value for value, name in ANATOMY_LABELS.items()}

# Reference adult chest, in mm, that anatomy is scaled from.
_REFERENCE_FOV_XY_MM = np.array([400.0, 400.0])


@dataclass
class PhantomNode:
    """Ground truth of one synthetic node (positions in mm from the centre of voxel 0, axes z, y, x)."""

    label: int
    center_zyx_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]  # short, middle, long (before rotation)
    rotation_zyx: np.ndarray  # 3x3, columns = directions of the short, middle, long axes in (z, y, x)
    mean_hu: float
    cluster: int
    annotated: bool
    voxel_count: int = 0

    @property
    def nominal_short_axis_mm(self) -> float:
        return 2.0 * self.semi_axes_mm[0]


@dataclass
class Phantom:
    """A synthetic CT with its labels, all on one grid.

    ``node_labels``: every node, one id per node (1..N), uint16.
    ``partial_labels``: binary (uint8) mask of the annotated nodes only (LNQ2023 training style).
    ``anatomy_labels``: uint8 map with :data:`ANATOMY_LABELS` values, the phantom's stand-in for a
    TotalSegmentator output (nodes are label 11 there).
    """

    ct: Volume
    node_labels: Volume
    partial_labels: Volume
    anatomy_labels: Volume
    nodes: list[PhantomNode] = field(default_factory=list)

    @property
    def full_labels(self) -> Volume:
        """Binary (uint8) mask of all nodes (LNQ2023 validation/test style)."""
        return self.node_labels.with_array((self.node_labels.array > 0).astype(np.uint8))


# ---------------------------------------------------------------------------------------------
# Shape rasterisation. Each helper returns a boolean mask restricted to a bounding box, so the
# cost is proportional to the shape's size, not the volume's (a 512x512x110 phantom takes seconds).


class _Canvas:
    """Voxel-centre coordinates in mm (z, y, x) relative to voxel 0, with bounding-box helpers."""

    def __init__(self, shape_zyx: Sequence[int], spacing_zyx_mm: Sequence[float]):
        self.shape = np.asarray(shape_zyx, dtype=int)
        self.spacing = np.asarray(spacing_zyx_mm, dtype=float)
        self.extent_mm = self.shape * self.spacing

    def box(self, low_mm: np.ndarray, high_mm: np.ndarray) -> Optional[tuple[slice, slice, slice]]:
        low = np.clip(np.floor(np.asarray(low_mm) / self.spacing).astype(int), 0, self.shape)
        high = np.clip(np.ceil(np.asarray(high_mm) / self.spacing).astype(int) + 1, 0, self.shape)
        if np.any(high <= low):
            return None
        return tuple(slice(int(a), int(b)) for a, b in zip(low, high))  # type: ignore[return-value]

    def coordinates(self, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(  # type: ignore[return-value]
            (np.arange(s.start, s.stop) * self.spacing[axis]).reshape([-1 if a == axis else 1 for a in range(3)])
            for axis, s in enumerate(box)
        )


def _capsule_chain(canvas: _Canvas, points_zyx_mm: np.ndarray, radius_mm: float | Sequence[float]):
    """Union of capsules along a polyline: yields (box, mask) pieces."""
    points = np.asarray(points_zyx_mm, dtype=float)
    radii = np.broadcast_to(np.asarray(radius_mm, dtype=float), (len(points),))
    for start, stop, r0, r1 in zip(points[:-1], points[1:], radii[:-1], radii[1:]):
        radius = max(r0, r1)
        box = canvas.box(np.minimum(start, stop) - radius, np.maximum(start, stop) + radius)
        if box is None:
            continue
        z, y, x = canvas.coordinates(box)
        segment = stop - start
        length_sq = float(segment @ segment) or 1e-9
        t = ((z - start[0]) * segment[0] + (y - start[1]) * segment[1] + (x - start[2]) * segment[2]) / length_sq
        t = np.clip(t, 0.0, 1.0)
        distance_sq = (
            (z - start[0] - t * segment[0]) ** 2 + (y - start[1] - t * segment[1]) ** 2 + (x - start[2] - t * segment[2]) ** 2
        )
        local_radius = r0 + (r1 - r0) * t
        yield box, distance_sq <= local_radius**2


def _paint(target: np.ndarray, pieces, value) -> None:
    for box, mask in pieces:
        target[box][mask] = value


def _ellipsoid(canvas: _Canvas, center_mm, semi_axes_mm, rotation=None, irregularity=None):
    """(box, mask) of a (possibly rotated, irregular) ellipsoid. ``rotation`` columns = axis directions."""
    center = np.asarray(center_mm, dtype=float)
    semi = np.asarray(semi_axes_mm, dtype=float)
    rotation = np.eye(3) if rotation is None else np.asarray(rotation, dtype=float)
    reach = semi.max() * (1.0 + (irregularity[0] if irregularity else 0.0)) + 1e-6
    box = canvas.box(center - reach, center + reach)
    if box is None:
        return None, None
    z, y, x = canvas.coordinates(box)
    offset = np.stack(np.broadcast_arrays(z - center[0], y - center[1], x - center[2]), axis=-1)
    local = offset @ rotation / semi
    rho = np.linalg.norm(local, axis=-1)
    threshold = 1.0
    if irregularity:
        amplitude, directions, frequencies, phases = irregularity
        unit = local / np.maximum(rho, 1e-9)[..., None]
        bumps = sum(np.cos(f * np.pi * (unit @ d) + p) for d, f, p in zip(directions, frequencies, phases))
        threshold = 1.0 + amplitude * bumps / len(directions)
    return box, rho <= threshold


def _random_rotation_long_axis_up(rng: np.random.Generator, max_tilt_deg: float) -> np.ndarray:
    """Rotation whose third column (long axis) is near +z, first two columns in the axial plane at any angle."""
    yaw = rng.uniform(0, 2 * np.pi)
    tilt = np.deg2rad(rng.uniform(0, max_tilt_deg))
    tilt_direction = rng.uniform(0, 2 * np.pi)
    # In (z, y, x) coordinates.
    in_plane = np.array([[1, 0, 0], [0, np.cos(yaw), -np.sin(yaw)], [0, np.sin(yaw), np.cos(yaw)]])
    axis = np.array([0.0, np.cos(tilt_direction), np.sin(tilt_direction)])
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    tilt_matrix = np.eye(3) + np.sin(tilt) * k + (1 - np.cos(tilt)) * k @ k
    base = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=float)  # short->x, middle->y, long->z
    return tilt_matrix @ in_plane @ base


# ---------------------------------------------------------------------------------------------


def make_phantom(
    shape_zyx: Sequence[int] = (110, 512, 512),
    spacing_zyx_mm: Sequence[float] = (3.0, 0.8, 0.8),
    seed: int = 0,
    n_nodes: Optional[int] = None,
    annotated_fraction: float = 0.5,
    cluster_probability: float = 0.3,
    short_axis_range_mm: tuple[float, float] = (4.0, 35.0),
    noise_hu: float = 12.0,
    blur_mm: float = 0.8,
    contrast: Optional[bool] = None,
    origin_lps_mm: Optional[Sequence[float]] = None,
    direction_lps: Optional[np.ndarray] = None,
    extended_anatomy: bool = False,
    scan_range: Optional[tuple[float, float]] = None,
) -> Phantom:
    """Build a seedable synthetic chest CT phantom.

    Args:
        shape_zyx, spacing_zyx_mm: the grid; defaults match a typical LNQ2023 CT.
        seed: every random choice derives from it (same seed, same phantom).
        n_nodes: number of nodes (default: 6-14 at random); clusters count each member.
        annotated_fraction: share of nodes labelled in ``partial_labels``; at least one node is
            labelled and, with two or more nodes, at least one is not.
        cluster_probability: chance that a node gets a touching neighbour (a confluent cluster).
        short_axis_range_mm: nominal short-axis diameters, drawn log-uniformly.
        noise_hu, blur_mm: Gaussian noise (HU) and Gaussian blur (mm, sigma) of the CT.
        contrast: contrast-enhanced vessels (default: random per seed, 80% enhanced).
        origin_lps_mm, direction_lps: geometry of the written grid (default: centred, axial).
        extended_anatomy: also ribs with cortical shells and costal cartilage, sternum, clavicles,
            upper abdomen (liver, stomach with gas, bowel) and neck (narrow body, thyroid), with
            CT-like correlated noise: the structures the basic phantom lacks and real scans have.
        scan_range: the scanned part of the body in chest fractions (0 = lung bases, 1 = lung
            apices); default (0, 1), or drawn from (-0.45..0.05, 0.95..1.35) with ``extended_anatomy``
            so scans start in the abdomen and stop in the neck at random.
    """
    rng = np.random.default_rng(seed)
    scene = _Scene.start(shape_zyx, spacing_zyx_mm, seed, rng, contrast, extended_anatomy, scan_range)
    _paint_body_and_lungs(scene)
    _paint_mediastinal_structures(scene)
    if extended_anatomy:
        _add_extended_anatomy(
            scene.hu,
            scene.anatomy,
            scene.canvas,
            scene.zmm,
            scene.z_frac,
            scene.extra_rng,
            scene.contrast,
            (scene.cx, scene.body_cy, scene.body_a, scene.body_b, scene.scale),
            (scene.x, scene.y),
            scene.tube,
        )
    node_labels, nodes = _place_nodes(scene, n_nodes, short_axis_range_mm, cluster_probability)
    partial = _annotate_partially(rng, nodes, node_labels, annotated_fraction)
    ct = _form_image(scene, blur_mm, noise_hu, extended_anatomy)
    extent_z, extent_y, extent_x = scene.canvas.extent_mm
    if origin_lps_mm is None:
        origin_lps_mm = (-extent_x / 2.0, -extent_y / 2.0 - 20.0, -extent_z + 100.0)
    geometry = ImageGeometry(
        scene.shape, tuple(spacing_zyx_mm), tuple(origin_lps_mm), np.eye(3) if direction_lps is None else direction_lps
    )
    return Phantom(
        ct=Volume(ct, geometry),
        node_labels=Volume(node_labels, geometry),
        partial_labels=Volume(partial, geometry),
        anatomy_labels=Volume(scene.anatomy, geometry),
        nodes=nodes,
    )


@dataclass
class _Scene:
    """The phantom being painted: HU and anatomy arrays, the body's layout, and the random streams.

    The stages below draw from ``rng`` in a fixed order (body, lungs, vessels, nodes, annotation,
    noise), so a seed gives the same phantom it always gave; ``extra_rng`` feeds only the extended
    anatomy, so turning that on leaves the basic phantom's draws unchanged.
    """

    shape: tuple
    canvas: "_Canvas"
    rng: np.random.Generator
    extra_rng: np.random.Generator
    contrast: bool
    scale: float
    cx: float
    body_cy: float
    range_low: float
    range_high: float
    hu: np.ndarray
    anatomy: np.ndarray
    body_a: float = 0.0
    body_b: float = 0.0
    x: np.ndarray = None  # (1, x) mm
    y: np.ndarray = None  # (y, 1) mm
    inner_2d: np.ndarray = None
    z_frac: np.ndarray = None

    @classmethod
    def start(cls, shape_zyx, spacing_zyx_mm, seed, rng, contrast, extended_anatomy, scan_range) -> "_Scene":
        shape = tuple(int(s) for s in shape_zyx)
        canvas = _Canvas(shape, spacing_zyx_mm)
        extent_z, extent_y, extent_x = canvas.extent_mm
        if min(shape) < 8:
            raise ValueError(f"Phantom shape {shape} too small; use at least 8 voxels per axis.")
        scale = float(min(1.0, *(np.array([extent_y, extent_x]) / _REFERENCE_FOV_XY_MM)))
        if contrast is None:
            contrast = bool(rng.random() < 0.8)
        extra_rng = np.random.default_rng([seed, 1])  # extended anatomy: the basic phantom's draws stay as they were
        if scan_range is None:
            scan_range = (
                (float(extra_rng.uniform(-0.45, 0.05)), float(extra_rng.uniform(0.95, 1.35))) if extended_anatomy else (0.0, 1.0)
            )
        return cls(
            shape,
            canvas,
            rng,
            extra_rng,
            contrast,
            scale,
            extent_x / 2.0,
            extent_y / 2.0 + 5.0 * scale,
            float(scan_range[0]),
            float(scan_range[1]),
            np.full(shape, -1000.0, dtype=np.float32),
            np.zeros(shape, dtype=np.uint8),
        )

    @property
    def z_span(self) -> tuple[float, float]:
        """Chest fractions the tubes (spine, trachea, vessels) run between: through the whole scan."""
        return min(-0.05, self.range_low - 0.05), max(1.05, self.range_high + 0.05)

    def zmm(self, fraction: float) -> float:
        """Chest fraction (0 = lung bases, 1 = apices) -> mm from slice 0."""
        return (fraction - self.range_low) / (self.range_high - self.range_low) * self.canvas.extent_mm[0]

    def tube(self, points, radius, value, name):
        pieces = list(_capsule_chain(self.canvas, np.asarray(points), radius))
        _paint(self.hu, pieces, value)
        _paint(self.anatomy, pieces, ANATOMY_IDS[name])
        return pieces


def _paint_body_and_lungs(scene: _Scene) -> None:
    """Body (elliptic cylinder, chest-wall muscle, subcutaneous fat) and both lungs (a dome per side)."""
    rng, canvas, shape, scale, cx, body_cy = scene.rng, scene.canvas, scene.shape, scene.scale, scene.cx, scene.body_cy
    hu, anatomy = scene.hu, scene.anatomy
    scene.body_a, scene.body_b = body_a, body_b = 170.0 * scale, 120.0 * scale  # x, y semi-axes
    scene.y = y = (np.arange(shape[1]) * canvas.spacing[1])[:, None]
    scene.x = x = (np.arange(shape[2]) * canvas.spacing[2])[None, :]
    radial = ((x - cx) / body_a) ** 2 + ((y - body_cy) / body_b) ** 2
    body_2d = radial <= 1.0
    inner_2d = ((x - cx) / (body_a - 12 * scale)) ** 2 + ((y - body_cy) / (body_b - 12 * scale)) ** 2 <= 1.0
    fat_ring_2d = body_2d & ~(((x - cx) / (body_a - 5 * scale)) ** 2 + ((y - body_cy) / (body_b - 5 * scale)) ** 2 <= 1.0)
    hu[:, body_2d] = 45.0 + rng.normal(0, 3)
    hu[:, fat_ring_2d] = -100.0
    hu[:, inner_2d] = -95.0 + rng.normal(0, 5)  # mediastinal / interstitial fat baseline
    anatomy[:, body_2d] = ANATOMY_IDS["body"]
    scene.inner_2d = inner_2d

    # Lungs: per-slice ellipses whose size follows a dome (apex superior, base inferior).
    scene.z_frac = z_frac = scene.range_low + (np.arange(shape[0]) + 0.5) / shape[0] * (scene.range_high - scene.range_low)
    lung_a, lung_b = 68.0 * scale, 95.0 * scale
    lung_offset_x = 82.0 * scale
    for k, t in enumerate(z_frac):
        if t < 0.04 or t > 0.97:
            continue
        size = np.sqrt(max(0.0, 1.0 - ((t - 0.45) / 0.53) ** 2)) if t > 0.45 else min(1.0, 0.65 + (t - 0.04))
        if size <= 0.05:
            continue
        for sign, name in ((1.0, "lung_left"), (-1.0, "lung_right")):
            lx = cx + sign * lung_offset_x
            mask = ((x - lx) / (lung_a * size)) ** 2 + ((y - body_cy + 5 * scale) / (lung_b * size)) ** 2 <= 1.0
            mask &= inner_2d
            hu[k][mask] = -850.0
            anatomy[k][mask] = ANATOMY_IDS[name]
    lung_texture = ndimage.gaussian_filter(rng.normal(0, 1, size=(max(shape[0] // 2, 1), shape[1] // 4, shape[2] // 4)), 1.0)
    lung_texture = ndimage.zoom(lung_texture, np.array(shape) / np.array(lung_texture.shape), order=1)[
        : shape[0], : shape[1], : shape[2]
    ]
    lung_mask = (anatomy == ANATOMY_IDS["lung_left"]) | (anatomy == ANATOMY_IDS["lung_right"])
    hu[lung_mask] += 40.0 * lung_texture[lung_mask] / max(lung_texture.std(), 1e-6)


def _paint_mediastinal_structures(scene: _Scene) -> None:
    """Spine, heart, trachea and bronchi, oesophagus, aorta with its branches, pulmonary arteries, SVC."""
    rng, canvas, hu, anatomy, tube, zmm = scene.rng, scene.canvas, scene.hu, scene.anatomy, scene.tube, scene.zmm
    cx, body_cy, s, contrast = scene.cx, scene.body_cy, scene.scale, scene.contrast
    z_low, z_high = scene.z_span
    vessel_hu = rng.uniform(160, 300) if contrast else rng.uniform(35, 50)
    venous_hu = rng.uniform(250, 450) if contrast else rng.uniform(35, 50)
    # Vertebral bodies (posterior, midline) with cortical shell; spinal canal left as fat-ish.
    spine_y = body_cy + 75 * s
    tube([(zmm(z_low), spine_y, cx), (zmm(z_high), spine_y, cx)], 20 * s, 700.0, "vertebrae")
    tube([(zmm(z_low), spine_y, cx), (zmm(z_high), spine_y, cx)], 17 * s, 260.0, "vertebrae")
    # Heart: ellipsoid, anterior-left, inferior; blood pool enhanced with contrast.
    heart_center = (zmm(0.2), body_cy - 15 * s, cx + 20 * s)
    box, mask = _ellipsoid(canvas, heart_center, (70 * s, 55 * s, 62 * s))
    if box is not None:
        hu[box][mask] = 40.0
        anatomy[box][mask] = ANATOMY_IDS["heart"]
        box2, mask2 = _ellipsoid(canvas, heart_center, (55 * s, 40 * s, 47 * s))
        hu[box2][mask2] = vessel_hu * 0.8 if contrast else 42.0
    # Trachea (air, soft-tissue wall) down to the carina, then main bronchi.
    carina = (zmm(0.58), body_cy + 20 * s, cx)
    trachea = [(zmm(z_high), body_cy + 15 * s, cx), carina]
    tube(trachea, 10 * s, 40.0, "trachea")
    tube(trachea, 8 * s, -1000.0, "trachea")
    for sign in (1.0, -1.0):
        bronchus = [carina, (zmm(0.48), body_cy + 25 * s, cx + sign * 45 * s)]
        tube(bronchus, 7 * s, 40.0, "trachea")
        tube(bronchus, 5.5 * s, -1000.0, "trachea")
    # Oesophagus: soft tissue tube (the hardest distractor: same density as nodes), slight air.
    esophagus = [
        (zmm(z_low), body_cy + 48 * s, cx + 12 * s),
        (zmm(0.55), body_cy + 40 * s, cx + 5 * s),
        (zmm(z_high), body_cy + 38 * s, cx + 4 * s),
    ]
    tube(esophagus, 8 * s, 38.0, "esophagus")
    if rng.random() < 0.5:
        tube(esophagus, 2 * s, -900.0, "esophagus")
    # Aorta: ascending from the heart, arch, descending left of the spine.
    aorta = [
        (zmm(0.35), body_cy - 10 * s, cx + 5 * s),
        (zmm(0.62), body_cy - 15 * s, cx - 5 * s),
        (zmm(0.76), body_cy + 0 * s, cx + 5 * s),
        (zmm(0.72), body_cy + 30 * s, cx + 28 * s),
        (zmm(0.55), body_cy + 52 * s, cx + 30 * s),
        (zmm(z_low), body_cy + 55 * s, cx + 25 * s),
    ]
    tube(aorta, [15 * s, 15 * s, 14 * s, 13 * s, 12 * s, 11 * s], vessel_hu, "aorta")
    # Arch branches towards the neck.
    for dx in (-12, 0, 12):
        tube(
            [(zmm(0.75), body_cy + 2 * s, cx + dx * s), (zmm(z_high), body_cy + 5 * s, cx + dx * 2.2 * s)],
            5 * s,
            vessel_hu,
            "aorta",
        )
    # Pulmonary trunk and arteries (anterior-left of the ascending aorta, below the arch).
    trunk = [(zmm(0.33), body_cy - 25 * s, cx + 28 * s), (zmm(0.52), body_cy - 12 * s, cx + 25 * s)]
    tube(trunk, 13 * s, vessel_hu, "pulmonary_artery")
    for end_x in (58, -52):
        tube(
            [(zmm(0.52), body_cy - 12 * s, cx + 25 * s), (zmm(0.5), body_cy + 5 * s, cx + end_x * s)],
            9 * s,
            vessel_hu,
            "pulmonary_artery",
        )
    # Superior vena cava (right, anterior), brighter in the venous inflow phase.
    tube(
        [(zmm(0.4), body_cy - 10 * s, cx - 30 * s), (zmm(z_high), body_cy - 8 * s, cx - 28 * s)],
        10 * s,
        venous_hu,
        "superior_vena_cava",
    )


def _place_nodes(scene: _Scene, n_nodes, short_axis_range_mm, cluster_probability) -> tuple[np.ndarray, list]:
    """Lymph nodes (irregular ellipsoids, some in confluent clusters) in the remaining mediastinal fat."""
    rng, canvas, shape, hu, anatomy, zmm = scene.rng, scene.canvas, scene.shape, scene.hu, scene.anatomy, scene.zmm
    cx, body_cy, s, scale = scene.cx, scene.body_cy, scene.scale, scene.scale
    occupied = anatomy != ANATOMY_IDS["body"]
    mediastinum_box_low = np.array([zmm(0.3), body_cy - 70 * s, cx - 60 * s])
    mediastinum_box_high = np.array([zmm(0.92), body_cy + 60 * s, cx + 60 * s])
    node_labels = np.zeros(shape, dtype=np.uint16)
    nodes: list[PhantomNode] = []
    target_nodes = int(rng.integers(6, 15)) if n_nodes is None else int(n_nodes)
    low_axis, high_axis = short_axis_range_mm
    cluster_id = 0
    attempts = 0
    pending_partner: Optional[tuple[PhantomNode, np.ndarray]] = None
    partner_tries = 0

    def give_up_partner() -> None:
        nonlocal pending_partner, partner_tries
        partner_tries += 1
        if pending_partner is None or partner_tries >= 30:
            pending_partner, partner_tries = None, 0

    while len(nodes) < target_nodes and attempts < 400 * max(target_nodes, 1):
        attempts += 1
        # Sizes stay within the requested range; a small field of view only lowers the upper end.
        short_axis = float(np.exp(rng.uniform(np.log(low_axis), np.log(max(low_axis, high_axis * scale)))))
        semi = np.array([short_axis / 2, short_axis / 2 * rng.uniform(1.0, 1.5), short_axis / 2 * rng.uniform(1.2, 2.2)])
        rotation = _random_rotation_long_axis_up(rng, 25.0)
        if pending_partner is not None:
            partner, partner_center = pending_partner
            direction = rng.normal(size=3)
            direction[0] *= 0.3
            direction /= np.linalg.norm(direction)
            reach_partner = float(np.abs(direction @ partner.rotation_zyx * partner.semi_axes_mm).max())
            center = partner_center + direction * (0.8 * reach_partner + 0.8 * semi[0])
            cluster = partner.cluster
        else:
            center = rng.uniform(mediastinum_box_low, mediastinum_box_high)
            cluster_id += 1
            cluster = cluster_id
        irregularity = (0.08, rng.normal(size=(3, 3)) / np.sqrt(3), rng.uniform(1.0, 3.0, 3), rng.uniform(0, 2 * np.pi, 3))
        box, mask = _ellipsoid(canvas, center, semi, rotation, irregularity)
        if box is None or mask.sum() < 4:
            give_up_partner()
            continue
        # Reject nodes cut by the volume edge: they would not be whole.
        if any(s.start == 0 or s.stop == n for s, n in zip(box, shape)):
            give_up_partner()
            continue
        # Nodes lie in fat: no overlap with organs or vessels. A cluster partner may overlap its
        # own node (that is what makes the cluster confluent) but no other node.
        if occupied[box][mask].any():
            give_up_partner()
            continue
        existing = node_labels[box][mask]
        allowed = {0} if pending_partner is None else {0, pending_partner[0].label}
        if not set(np.unique(existing).tolist()) <= allowed:
            give_up_partner()
            continue
        label = len(nodes) + 1
        mean_hu = float(rng.uniform(20, 60))
        node = PhantomNode(label, tuple(center), tuple(semi), rotation, mean_hu, cluster, annotated=False)
        target = node_labels[box]
        target[mask & (target == 0)] = label
        hu[box][mask] = mean_hu
        anatomy[box][mask] = ANATOMY_IDS["lymph_node"]
        nodes.append(node)
        pending_partner = (node, center) if (pending_partner is None and rng.random() < cluster_probability) else None
        partner_tries = 0

    for node in nodes:
        node.voxel_count = int((node_labels == node.label).sum())
    return node_labels, [n for n in nodes if n.voxel_count > 0]


def _annotate_partially(rng, nodes: list, node_labels: np.ndarray, annotated_fraction: float) -> np.ndarray:
    """Label whole nodes or none of them (LNQ2023 annotators outlined some nodes fully): the partial mask."""
    if nodes:
        order = rng.permutation(len(nodes))
        n_annotated = int(round(annotated_fraction * len(nodes)))
        n_annotated = min(max(n_annotated, 1), len(nodes) - 1 if len(nodes) > 1 else 1)
        for index in order[:n_annotated]:
            nodes[index].annotated = True
    annotated_ids = np.array([n.label for n in nodes if n.annotated], dtype=np.uint16)
    partial = np.isin(node_labels, annotated_ids).astype(np.uint8)

    return partial


def _form_image(scene: _Scene, blur_mm: float, noise_hu: float, extended_anatomy: bool) -> np.ndarray:
    """Partial-volume blur, then noise (spatially correlated with the extended anatomy), as int16 HU."""
    rng, canvas, shape, hu = scene.rng, scene.canvas, scene.shape, scene.hu
    if blur_mm > 0:
        hu = ndimage.gaussian_filter(hu, sigma=blur_mm / canvas.spacing, mode="nearest")
    noise = rng.normal(0.0, noise_hu, size=shape).astype(np.float32)
    if extended_anatomy:  # CT noise is spatially correlated in-plane (reconstruction kernel)
        noise = ndimage.gaussian_filter(noise, sigma=(0.0, 0.7, 0.7))
        noise *= np.float32(noise_hu / max(float(noise.std()), 1e-6))
    hu += noise
    ct = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)

    return ct


def _add_extended_anatomy(hu, anatomy, canvas, zmm, z_frac, rng, contrast, body, grid, tube) -> None:
    """Ribs, costal cartilage, sternum, clavicles, upper abdomen and neck (see ``make_phantom``)."""
    cx, body_cy, body_a, body_b, s = body
    x, y = grid
    fat = ANATOMY_IDS["body"]

    def paint(pieces, value, name, only_fat=True):
        for box, mask in pieces:
            if only_fat:
                mask = mask & (anatomy[box] == fat)
            hu[box][mask] = value
            anatomy[box][mask] = ANATOMY_IDS[name]

    # Neck: above the apices the body narrows to the neck (muscle, a little fat), thyroid by the trachea.
    neck = (((x - cx) / (62 * s)) ** 2 + ((y - body_cy - 20 * s) / (55 * s)) ** 2) <= 1.0
    for k in np.flatnonzero(z_frac > 1.03):
        outside = ~neck & (anatomy[k] == fat)
        hu[k][outside], anatomy[k][outside] = -1000.0, 0
        hu[k][neck & (anatomy[k] == fat)] = 35.0
    for sign in (1.0, -1.0):
        box, mask = _ellipsoid(canvas, (zmm(1.1), body_cy + 8 * s, cx + sign * 16 * s), (22 * s, 9 * s, 8 * s))
        if box is not None:
            paint([(box, mask)], 110.0 if contrast else 90.0, "thyroid")
    # Ribs (cortical shell, marrow) along the chest wall, descending anteriorly, costal cartilage to the sternum.
    a_rib, b_rib = body_a - 9 * s, body_b - 9 * s
    sternum_y = body_cy - body_b + 13 * s
    for j in range(11):
        t_back = 0.98 - 0.09 * j
        for sign in (1.0, -1.0):
            angles = np.deg2rad(np.linspace(80, -55, 8))
            points = [
                (zmm(t_back - 0.12 * (80 - np.rad2deg(a)) / 135), body_cy + b_rib * np.sin(a), cx + sign * a_rib * np.cos(a))
                for a in angles
            ]
            paint(list(_capsule_chain(canvas, np.array(points), 5.5 * s)), 650.0, "rib")
            paint(list(_capsule_chain(canvas, np.array(points), 3.5 * s)), 230.0, "rib", only_fat=False)
            cartilage = [points[-1], (points[-1][0] - zmm(0.02) + zmm(0.0), sternum_y, cx + sign * 14 * s)]
            calcified = rng.random() < 0.3
            paint(list(_capsule_chain(canvas, np.array(cartilage), 4.5 * s)), 300.0 if calcified else 120.0, "costal_cartilage")
    # Sternum: anterior midline bar, cortex and marrow.
    sternum = np.array([(zmm(0.3), sternum_y, cx), (zmm(0.97), sternum_y - 2 * s, cx)])
    paint(list(_capsule_chain(canvas, sternum, 9 * s)), 600.0, "sternum")
    paint(list(_capsule_chain(canvas, sternum, 6.5 * s)), 220.0, "sternum", only_fat=False)
    for sign in (1.0, -1.0):  # clavicles: sternum top to the shoulders
        clavicle = np.array([(zmm(0.97), sternum_y, cx + sign * 12 * s), (zmm(1.02), body_cy - 40 * s, cx + sign * 150 * s)])
        paint(list(_capsule_chain(canvas, clavicle, 7 * s)), 650.0, "clavicle")
    # Upper abdomen below the lung bases: liver (right), stomach with an air-fluid level (left), bowel gas.
    liver_hu = rng.uniform(95, 125) if contrast else rng.uniform(50, 65)
    box, mask = _ellipsoid(canvas, (zmm(-0.12), body_cy, cx - 40 * s), (0.22 * abs(zmm(1) - zmm(0)), 85 * s, 85 * s))
    if box is not None:
        paint([(box, mask)], liver_hu, "liver")
    stomach_centre = (zmm(-0.1), body_cy - 25 * s, cx + 60 * s)
    box, mask = _ellipsoid(canvas, stomach_centre, (0.12 * abs(zmm(1) - zmm(0)), 40 * s, 35 * s))
    if box is not None:
        paint([(box, mask)], 20.0, "stomach")
        gas = mask & (canvas.coordinates(box)[1] < stomach_centre[1] - 10 * s)  # anterior part (supine: gas rises)
        hu[box][gas] = -1000.0
    for _ in range(4):
        start = np.array([zmm(rng.uniform(-0.45, -0.2)), body_cy + rng.uniform(-70, 30) * s, cx + rng.uniform(-90, 90) * s])
        points = np.array([start, start + rng.normal(0, 35, 3) * np.array([0.3, s, s])])
        paint(list(_capsule_chain(canvas, points, rng.uniform(10, 16) * s)), 25.0, "bowel")
        for box, mask in _capsule_chain(canvas, points, rng.uniform(5, 8) * s):
            hu[box][mask & (anatomy[box] == ANATOMY_IDS["bowel"])] = -1000.0


def write_lnq_case(
    phantom: Phantom,
    folder: PathLike,
    case_id: str,
    annotation: str = "partial",
    overwrite: bool = False,
    with_anatomy: bool = False,
) -> dict[str, Path]:
    """Write a phantom in the LNQ2023 layout: ``<case_id>-ct.nrrd`` and ``<case_id>-seg.nrrd``.

    ``annotation="partial"`` writes the partial label as ``-seg`` (a training case);
    ``"full"`` writes every node (a validation/test case). The full instance map is always
    written as ``-instances.nrrd`` (one id per node) for detection scoring; ``with_anatomy`` adds
    ``-anatomy.nrrd`` (see :data:`ANATOMY_LABELS`).
    """
    if annotation not in ("partial", "full"):
        raise ValueError(f"annotation must be 'partial' or 'full', got '{annotation}'.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    seg = phantom.partial_labels if annotation == "partial" else phantom.full_labels
    paths = {
        "ct": write_volume(folder / f"{case_id}-ct.nrrd", phantom.ct, overwrite),
        "seg": write_volume(folder / f"{case_id}-seg.nrrd", seg, overwrite),
        "instances": write_volume(folder / f"{case_id}-instances.nrrd", phantom.node_labels, overwrite),
    }
    if with_anatomy:
        paths["anatomy"] = write_volume(folder / f"{case_id}-anatomy.nrrd", phantom.anatomy_labels, overwrite)
    return paths
