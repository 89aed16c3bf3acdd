"""Baseline/follow-up CT pairs with a known answer, for testing and benchmarking the follow-up engine.

One patient at two examinations: the follow-up CT is the baseline's node-free anatomy seen through a
known transform (a rigid motion plus a smooth deformation, :class:`KnownTransform`), and nodes are
implanted at both time points at known sizes (:class:`NodePlan`: grown, shrunk, unchanged, removed
at follow-up or new at follow-up). Each node is a plain ellipsoid, long axis along the slice
normal and short axis in the slice plane, centred on a slice, blended with its partial volume
(:func:`LymphNodeQuantLib.training.implant.node_occupancy`); its label is the voxels at least half
inside. So its nominal RECIST short axis is its ellipsoid's short diameter, at both time points,
and a node's short-axis change is known without measuring it.

Nodes are painted after the warp, so the transform moves a node but does not distort it. Anatomy
comes from :func:`LymphNodeQuantLib.synthetic.make_phantom` (:func:`make_phantom_pair`) or from a
real CT (:func:`make_ct_pair`); node centres are drawn in the baseline's mediastinal fat
(:func:`LymphNodeQuantLib.training.implant.candidate_centres`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import numpy as np

from ..geometry import ImageGeometry, Volume

#: nodes at both time points: (baseline short axis, follow-up short axis) in mm, None = absent
DEFAULT_PLAN: tuple[tuple[Optional[float], Optional[float]], ...] = (
    (22.0, 14.0),  # shrinks
    (16.0, 10.0),  # shrinks
    (12.0, 17.0),  # grows
    (13.0, 13.0),  # unchanged
    (9.0, None),  # disappears
    (None, 12.0),  # new at follow-up
)
#: middle and long semi-axes as multiples of the short one
MIDDLE_RATIO, LONG_RATIO = 1.3, 1.7
NODE_HU = 40.0
FAT_GAP_MM = 10.0


@dataclass
class KnownTransform:
    """Follow-up LPS point q -> baseline LPS point ``p = c + R (q - c) + t + d(q)``.

    ``R`` rotates by ``rotation_deg`` about the L, P and S axes, ``c`` is ``centre_lps_mm`` and
    ``d(q)_i = amplitude_i sin(2 pi (k_i . q) / wavelength + phase_i)`` is a smooth deformation
    (unit wave vectors ``k_i``).
    """

    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    translation_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    centre_lps_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    amplitude_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    wavelength_mm: float = 250.0
    wave_vectors: np.ndarray = field(default_factory=lambda: np.eye(3)[[1, 2, 0]])
    phases: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @classmethod
    def random(cls, rng: np.random.Generator, centre_lps_mm, rotation_deg=(2.0, 2.0, 5.0), translation_mm=(10.0, 10.0, 6.0),
               amplitude_mm: float = 3.0) -> "KnownTransform":  # fmt: skip
        """Rotations and translations uniform in +-the given limits, a deformation of up to ``amplitude_mm``."""
        vectors = rng.normal(size=(3, 3))
        return cls(
            tuple(rng.uniform(-1, 1, 3) * np.asarray(rotation_deg)),
            tuple(rng.uniform(-1, 1, 3) * np.asarray(translation_mm)),
            tuple(float(v) for v in centre_lps_mm),
            tuple(rng.uniform(-1, 1, 3) * amplitude_mm),
            float(rng.uniform(200.0, 300.0)),
            vectors / np.linalg.norm(vectors, axis=1, keepdims=True),
            tuple(rng.uniform(0, 2 * np.pi, 3)),
        )

    @property
    def rotation(self) -> np.ndarray:
        from scipy.spatial.transform import Rotation

        return Rotation.from_euler("xyz", self.rotation_deg, degrees=True).as_matrix()

    def _deformation(self, points: np.ndarray) -> np.ndarray:
        phase = 2 * np.pi * (points @ np.asarray(self.wave_vectors).T) / self.wavelength_mm + np.asarray(self.phases)
        return np.asarray(self.amplitude_mm) * np.sin(phase)

    def followup_to_baseline(self, points_lps: np.ndarray) -> np.ndarray:
        q = np.asarray(points_lps, dtype=float)
        centre = np.asarray(self.centre_lps_mm)
        return centre + (q - centre) @ self.rotation.T + np.asarray(self.translation_mm) + self._deformation(q)

    def baseline_to_followup(self, points_lps: np.ndarray, iterations: int = 100) -> np.ndarray:
        """The inverse, by fixed-point iteration (the deformation's gradient is well below 1)."""
        p = np.asarray(points_lps, dtype=float)
        centre, rotation = np.asarray(self.centre_lps_mm), self.rotation
        q = p.copy()
        for _ in range(iterations):
            q = centre + (p - centre - np.asarray(self.translation_mm) - self._deformation(q)) @ rotation
        return q

    def sitk_transform(self, domain: ImageGeometry, grid_mm: float = 6.0, margin_mm: float = 60.0):
        """A SimpleITK displacement-field transform (follow-up -> baseline points) covering ``domain`` plus a margin."""
        import SimpleITK as sitk

        corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=float)
        corners = domain.index_zyx_to_lps(corners * (np.asarray(domain.shape_zyx) - 1))
        low, high = corners.min(axis=0) - margin_mm, corners.max(axis=0) + margin_mm
        size = np.ceil((high - low) / grid_mm).astype(int) + 1
        axes = [low[a] + np.arange(size[a]) * grid_mm for a in range(3)]
        z, y, x = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
        points = np.stack([x, y, z], axis=-1)
        displacement = self.followup_to_baseline(points) - points
        field_image = sitk.GetImageFromArray(displacement.astype(np.float64), isVector=True)
        field_image.SetOrigin(tuple(float(v) for v in low))
        field_image.SetSpacing((grid_mm,) * 3)
        return sitk.DisplacementFieldTransform(field_image)


@dataclass
class KnownNode:
    """Ground truth of one node: its label at each time point (None: absent) and its nominal size and centre there."""

    baseline_label: Optional[int]
    followup_label: Optional[int]
    baseline_short_axis_mm: Optional[float]
    followup_short_axis_mm: Optional[float]
    baseline_centre_lps_mm: np.ndarray
    followup_centre_lps_mm: np.ndarray


@dataclass
class KnownPair:
    baseline_ct: Volume
    baseline_labels: Volume
    followup_ct: Volume
    followup_labels: Volume
    transform: KnownTransform
    nodes: list[KnownNode]

    def expected_matches(self) -> dict[int, int]:
        """{baseline label: follow-up label} of the nodes present at both time points."""
        return {n.baseline_label: n.followup_label for n in self.nodes if n.baseline_label and n.followup_label}


# ----------------------------------------------------------------------------------- painting


def _node_axes(short_axis_mm: float) -> np.ndarray:
    semi = short_axis_mm / 2.0
    return np.array([semi, semi * MIDDLE_RATIO, semi * LONG_RATIO])


def _rotation(yaw: float) -> np.ndarray:
    """Columns: short, middle, long axis directions in (z, y, x); long along z, the others in the slice plane."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[0.0, 0.0, 1.0], [s, c, 0.0], [c, -s, 0.0]])


def paint_node(hu: np.ndarray, labels: np.ndarray, geometry: ImageGeometry, centre_lps_mm, short_axis_mm: float, yaw: float,
               label: int, rng: np.random.Generator) -> None:  # fmt: skip
    """Blend one ellipsoid node into ``hu`` (with the scan's own noise texture) and write its label (occupancy >= 0.5)."""
    from scipy import ndimage

    from ..training.implant import node_occupancy

    spacing = np.asarray(geometry.spacing_zyx_mm)
    centre_mm = geometry.lps_to_index_zyx(np.asarray(centre_lps_mm)) * spacing
    box, occupancy = node_occupancy(hu.shape, spacing, centre_mm, _node_axes(short_axis_mm), _rotation(yaw), ())
    background = hu[box].astype(np.float64)
    residual = np.clip(background - ndimage.gaussian_filter(background, 2.0 / spacing), -150.0, 150.0)
    node_hu = NODE_HU + rng.normal(0.0, 3.0)
    hu[box] = (1.0 - occupancy) * background + occupancy * (node_hu + residual)
    labels[box][occupancy >= 0.5] = label


def _snap_to_slice(geometry: ImageGeometry, point_lps: np.ndarray) -> np.ndarray:
    index = geometry.lps_to_index_zyx(point_lps)
    index[0] = np.round(index[0])
    return geometry.index_zyx_to_lps(index)


def _fits(geometry: ImageGeometry, centre_lps: np.ndarray, reach_mm: float, margin_mm: float = 3.0) -> bool:
    index = geometry.lps_to_index_zyx(centre_lps)
    reach = (reach_mm + margin_mm) / np.asarray(geometry.spacing_zyx_mm)
    return bool(np.all(index - reach >= 1) and np.all(index + reach <= np.asarray(geometry.shape_zyx) - 2))


def place_nodes(background: Volume, followup_geometry: ImageGeometry, transform: KnownTransform,
                plan: Sequence[tuple[Optional[float], Optional[float]]], rng: np.random.Generator) -> list[np.ndarray]:  # fmt: skip
    """Baseline centres (LPS mm) in mediastinal fat, apart from each other, inside both fields of view.

    As in :mod:`LymphNodeQuantLib.training.implant`, a node (at its larger size) may cover at most
    :data:`~LymphNodeQuantLib.training.implant.MAX_FORBIDDEN_FRACTION` of air, lung, bone or contrast.
    """
    from ..anatomy import find_chest_anatomy
    from ..training.implant import FORBIDDEN_HIGH_HU, FORBIDDEN_LOW_HU, MAX_FORBIDDEN_FRACTION, candidate_centres, node_occupancy

    candidates = candidate_centres(background, find_chest_anatomy(background))
    candidates = candidates[rng.permutation(len(candidates))]
    geometry = background.geometry
    spacing = np.asarray(geometry.spacing_zyx_mm)
    forbidden = (background.array < FORBIDDEN_LOW_HU) | (background.array > FORBIDDEN_HIGH_HU)
    centres: list[np.ndarray] = []
    reaches: list[float] = []
    for sizes in plan:
        short = max(s for s in sizes if s is not None)
        reach = short / 2.0 * LONG_RATIO
        for index in candidates:
            centre = geometry.index_zyx_to_lps(index.astype(float))
            if any(np.linalg.norm(centre - c) < reach + r + FAT_GAP_MM for c, r in zip(centres, reaches)):
                continue
            if not _fits(geometry, centre, reach) or not _fits(followup_geometry, transform.baseline_to_followup(centre), reach):
                continue
            box, occupancy = node_occupancy(geometry.shape_zyx, spacing, index * spacing, _node_axes(short), _rotation(0.0), ())
            if (occupancy * forbidden[box]).sum() > MAX_FORBIDDEN_FRACTION * occupancy.sum():
                continue
            centres.append(centre)
            reaches.append(reach)
            break
        else:
            raise ValueError(
                f"No room for a node of {short:g} mm in the mediastinal fat; use a larger field of view or fewer nodes."
            )
    return centres


def implant_pair(baseline_background: Volume, followup_background: Volume, transform: KnownTransform,
                 plan: Sequence[tuple[Optional[float], Optional[float]]], seed: int, noise_hu: float = 0.0) -> KnownPair:  # fmt: skip
    """Implant the ``plan``'s nodes into both backgrounds (``followup_background`` = the baseline's seen through ``transform``)."""
    rng = np.random.default_rng(seed)
    centres = place_nodes(baseline_background, followup_background.geometry, transform, plan, rng)
    volumes = []
    nodes = [KnownNode(None, None, None, None, None, None) for _ in plan]
    for time_point, background in enumerate((baseline_background, followup_background)):
        geometry = background.geometry
        hu = np.asarray(background.array, dtype=np.float64).copy()
        labels = np.zeros(geometry.shape_zyx, np.uint16)
        label = 0
        for node, sizes, centre in zip(nodes, plan, centres):
            yaw = rng.uniform(0.0, np.pi)
            if sizes[time_point] is None:
                continue
            point = centre if time_point == 0 else transform.baseline_to_followup(centre)
            point = _snap_to_slice(geometry, point)
            label += 1
            paint_node(hu, labels, geometry, point, sizes[time_point], yaw, label, rng)
            if time_point == 0:
                node.baseline_label, node.baseline_short_axis_mm, node.baseline_centre_lps_mm = label, sizes[0], point
            else:
                node.followup_label, node.followup_short_axis_mm, node.followup_centre_lps_mm = label, sizes[1], point
        if noise_hu > 0:
            hu += rng.normal(0.0, noise_hu, hu.shape)
        volumes += [Volume(np.clip(np.rint(hu), -32768, 32767).astype(np.int16), geometry), Volume(labels, geometry)]
    return KnownPair(*volumes, transform, nodes)


def warp(ct: Volume, geometry: ImageGeometry, transform: KnownTransform, default_hu: float = -1024.0) -> Volume:
    """``ct`` seen through ``transform`` on the follow-up grid ``geometry`` (linear interpolation)."""
    import SimpleITK as sitk

    reference = sitk.Image([int(v) for v in reversed(geometry.shape_zyx)], sitk.sitkFloat32)
    geometry.apply_to_sitk(reference)
    moved = sitk.Resample(
        sitk.Cast(ct.to_sitk(), sitk.sitkFloat32), reference, transform.sitk_transform(geometry), sitk.sitkLinear, default_hu
    )
    return Volume(sitk.GetArrayFromImage(moved), geometry)


# ----------------------------------------------------------------------------------- pairs


def _centre(geometry: ImageGeometry) -> np.ndarray:
    return geometry.index_zyx_to_lps((np.asarray(geometry.shape_zyx) - 1) / 2.0)


def make_phantom_pair(
    seed: int = 0,
    shape_zyx: Sequence[int] = (40, 128, 128),
    spacing_zyx_mm: Sequence[float] = (3.0, 2.5, 2.5),
    plan: Sequence[tuple[Optional[float], Optional[float]]] = DEFAULT_PLAN,
    transform: Optional[KnownTransform] = None,
    noise_hu: float = 12.0,
    margin_slices: int = 6,
    table_shift_mm: Sequence[float] = (0.0, 0.0, 0.0),
) -> KnownPair:
    """A phantom patient at two examinations (module docstring); ``transform`` defaults to a random one from ``seed``.

    The anatomy is rendered ``margin_slices`` taller than both scans so the follow-up's field of view,
    moved by the transform, still lies inside it. ``table_shift_mm`` (LPS) moves the follow-up's
    grid and the patient in it together, as a different table position does: the same anatomy then
    has coordinates ``table_shift_mm`` apart in the two scans.
    """
    from ..synthetic import make_phantom

    rng = np.random.default_rng([seed, 14])
    shape = np.asarray(shape_zyx, dtype=int)
    full = make_phantom(tuple(shape + [2 * margin_slices, 0, 0]), spacing_zyx_mm, seed=seed, n_nodes=0, noise_hu=0.0).ct
    stop = shape + [margin_slices, 0, 0]
    baseline = Volume(full.array[margin_slices : stop[0]].astype(np.float32), full.geometry.cropped((margin_slices, 0, 0), stop))
    transform = transform or KnownTransform.random(rng, _centre(baseline.geometry))
    shift = np.asarray(table_shift_mm, dtype=float)
    if np.any(shift):
        transform = replace(transform, translation_mm=tuple(np.asarray(transform.translation_mm) - shift))
    followup_geometry = replace(baseline.geometry, origin_lps_mm=tuple(np.asarray(baseline.geometry.origin_lps_mm) + shift))
    followup = warp(full, followup_geometry, transform, default_hu=-1000.0)
    return implant_pair(baseline, followup, transform, plan, seed, noise_hu)


def make_ct_pair(
    ct: Volume,
    start_zyx: Sequence[int],
    stop_zyx: Sequence[int],
    seed: int = 0,
    plan: Sequence[tuple[Optional[float], Optional[float]]] = DEFAULT_PLAN,
    transform: Optional[KnownTransform] = None,
) -> KnownPair:
    """A real CT's box ``[start, stop)`` as the baseline and the whole CT seen through a known transform on the same box as the follow-up."""
    rng = np.random.default_rng([seed, 14])
    geometry = ct.geometry.cropped(start_zyx, stop_zyx)
    box = tuple(slice(int(a), int(b)) for a, b in zip(start_zyx, stop_zyx))
    baseline = Volume(np.asarray(ct.array[box], dtype=np.float32), geometry)
    transform = transform or KnownTransform.random(rng, _centre(geometry))
    return implant_pair(baseline, warp(ct, geometry, transform), transform, plan, seed)
