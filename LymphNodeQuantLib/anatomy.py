"""Chest anatomy found from the CT itself: lungs, and the mediastinum between them.

Used by inference (the crop box, and the post-processing that drops candidates outside the
mediastinum) and by training (outside the mediastinum is definite background), so both apply the
same definition. Everything runs on a coarse grid (about 3 mm, a stride of the CT's own voxels),
reoriented so that the array axes are (superior, posterior, left) whatever the file's direction.

* **Lungs** are 3-D components of air-like voxels (< -400 HU) whose values look like lung
  parenchyma, not like pure air: median >= -960 HU and 10th percentile >= -980 HU. Outside air,
  the scanner's padding (values below -1024 HU), bowel and stomach gas and the air beside the arms
  sit at -1000 HU and fail this; so does air outside the body's per-slice convex hull (outside
  air that a downsampled scan smooths up to lung values); lungs that touch the image edge pass
  (no border rule). Components under a fifth of the largest lung-like component are dropped.
* **Both lungs in a slice**: the lungs are split at the midline of their left-right extent;
  a slice holds both when each side has at least :data:`MIN_LUNG_AREA_MM2` and 30% of
  that side's largest cross-section (at the bases, the hull of two thin crescents spans the
  liver, stomach and heart), and the lungs fill at least 40% of their convex hull there (below
  that, at the bases, the hull holds the upper abdomen, not the mediastinum).
* **Mediastinum**, in each such slice: the largest connected piece of (convex hull of both lungs
  minus the lungs, holes filled so that an intrapulmonary nodule counts as lung), widened by
  ``margin_mm`` (into the hila and the lungs' edges). Chest wall, axillae and the lungs
  themselves are out. The ``z_margin_mm`` above the highest such slice copy its region (the
  thoracic inlet); below the lowest one lies the diaphragm. Neck further up and abdomen are out.
* **No mediastinum**: fewer than :data:`MIN_MEDIASTINUM_EXTENT_MM` of slices with both lungs (an
  abdominal CT with lung bases, a neck CT, a CT cropped inside the mediastinum).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage

from .geometry import Volume

AIR_THRESHOLD_HU = -400.0
#: lung parenchyma: median and 10th percentile of an air-like component at or above these
LUNG_MIN_MEDIAN_HU = -960.0
LUNG_MIN_P10_HU = -980.0
#: a lung-like component smaller than this share of the largest one is not a lung
LUNG_MIN_RELATIVE_SIZE = 0.2
#: share of a lung-like component inside the body's per-slice convex hull (outside air is outside it)
LUNG_MIN_INSIDE_BODY = 0.6
MIN_LUNG_AREA_MM2 = 300.0
LUNG_MIN_RELATIVE_AREA = 0.3
#: in a mediastinal slice the lungs fill at least this share of their convex hull
LUNG_MIN_HULL_SHARE = 0.4
MIN_MEDIASTINUM_EXTENT_MM = 50.0
COARSE_SPACING_MM = 3.0
MEDIASTINUM_MARGIN_MM = 10.0
MEDIASTINUM_Z_MARGIN_MM = 15.0


@dataclass
class ChestAnatomy:
    """Lungs and mediastinum of a CT on a coarse grid ``ct.array[::step_z, ::step_y, ::step_x]``.

    Masks are in the CT's own array order (z, y, x); map full-resolution indices with
    :meth:`mediastinum_in_box`.
    """

    step_zyx: tuple[int, int, int]
    shape_zyx: tuple[int, int, int]  # of the full-resolution CT
    lungs: np.ndarray  # coarse bool
    mediastinum: np.ndarray  # coarse bool
    lung_volume_ml: float
    both_lungs_extent_mm: float
    messages: list[str] = field(default_factory=list)

    @property
    def has_mediastinum(self) -> bool:
        return self.both_lungs_extent_mm >= MIN_MEDIASTINUM_EXTENT_MM and bool(self.mediastinum.any())

    def _upsample(self, coarse: np.ndarray, start_zyx: Sequence[int], stop_zyx: Sequence[int]) -> np.ndarray:
        index = [np.minimum(np.arange(a, b) // s, n - 1) for a, b, s, n in zip(start_zyx, stop_zyx, self.step_zyx, coarse.shape)]
        return coarse[np.ix_(*index)]

    def mediastinum_in_box(self, start_zyx: Sequence[int], stop_zyx: Sequence[int]) -> np.ndarray:
        """Full-resolution boolean mediastinum mask of the box ``[start, stop)`` (nearest coarse voxel)."""
        return self._upsample(self.mediastinum, start_zyx, stop_zyx)

    def lungs_in_box(self, start_zyx: Sequence[int], stop_zyx: Sequence[int]) -> np.ndarray:
        return self._upsample(self.lungs, start_zyx, stop_zyx)

    def mediastinum_box(self, spacing_zyx_mm: Sequence[float], margin_mm: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Full-resolution index box (start, stop) around the mediastinum, padded by ``margin_mm``."""
        where = np.nonzero(self.mediastinum)
        step = np.asarray(self.step_zyx)
        shape = np.asarray(self.shape_zyx)
        low = np.array([w.min() for w in where]) * step
        high = (np.array([w.max() for w in where]) + 1) * step
        margin = np.ceil(margin_mm / np.asarray(spacing_zyx_mm, dtype=float)).astype(int)
        start = np.clip(low - margin, 0, shape)
        stop = np.clip(high + margin, 0, shape)
        return tuple(int(v) for v in start), tuple(int(v) for v in stop)


# ------------------------------------------------------------------------------------ orientation


def _axes_to_spl(direction_lps: np.ndarray) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """For array axes (z, y, x): which array axis holds superior, posterior, left, and whether to flip it."""
    direction = np.asarray(direction_lps, dtype=float)
    columns = {0: direction[:, 2], 1: direction[:, 1], 2: direction[:, 0]}  # array axis -> LPS vector
    order, flips = [], []
    for lps_axis in (2, 1, 0):  # S, P, L
        axis = max((a for a in columns if a not in order), key=lambda a: abs(columns[a][lps_axis]))
        order.append(axis)
        flips.append(bool(columns[axis][lps_axis] < 0))
    return tuple(order), tuple(flips)  # type: ignore[return-value]


def _to_spl(array: np.ndarray, order, flips) -> np.ndarray:
    out = np.transpose(array, order)
    return out[tuple(slice(None, None, -1) if f else slice(None) for f in flips)]


def _from_spl(array: np.ndarray, order, flips) -> np.ndarray:
    out = array[tuple(slice(None, None, -1) if f else slice(None) for f in flips)]
    return np.transpose(out, np.argsort(order))


# ------------------------------------------------------------------------------------ lungs


def lung_mask(coarse_hu: np.ndarray, spacing_mm: Sequence[float]) -> np.ndarray:
    """Lungs (bool) of a coarse CT: air-like components with parenchyma-like values (module docstring)."""
    import cc3d

    air = coarse_hu < AIR_THRESHOLD_HU
    labels, count = cc3d.connected_components(air, connectivity=6, return_N=True)
    if count == 0:
        return np.zeros(air.shape, bool)
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    boxes = cc3d.statistics(labels)["bounding_boxes"]
    body = body_hull(coarse_hu, spacing_mm)
    lung_like = {}
    for component in np.flatnonzero(sizes * voxel_ml >= 5.0):
        if component == 0:
            continue
        box = boxes[component]
        member = labels[box] == component
        values = coarse_hu[box][member]
        median, p10 = np.median(values), np.percentile(values, 10)
        inside_body = np.count_nonzero(body[box][member]) / values.size
        if median >= LUNG_MIN_MEDIAN_HU and p10 >= LUNG_MIN_P10_HU and inside_body >= LUNG_MIN_INSIDE_BODY:
            lung_like[int(component)] = int(sizes[component])
    if not lung_like:
        return np.zeros(air.shape, bool)
    largest = max(lung_like.values())
    keep = [c for c, size in lung_like.items() if size >= LUNG_MIN_RELATIVE_SIZE * largest]
    return np.isin(labels, keep)


def body_hull(coarse_hu: np.ndarray, spacing_mm: Sequence[float]) -> np.ndarray:
    """Per axial slice, the convex hull of the body (the largest 3-D component of voxels >= -400 HU)."""
    import cc3d

    tissue = cc3d.largest_k(coarse_hu >= AIR_THRESHOLD_HU, k=1, connectivity=6) > 0
    hull = np.zeros(tissue.shape, bool)
    spacing_yx = np.asarray(spacing_mm[1:], dtype=float)
    for k in range(tissue.shape[0]):
        # the hull's corners lie on the outline, so the edge pixels of each row are enough points
        rows = np.nonzero(tissue[k].any(axis=1))[0]
        if rows.size < 2:
            continue
        first = tissue[k][rows].argmax(axis=1)
        last = tissue[k].shape[1] - 1 - tissue[k][rows][:, ::-1].argmax(axis=1)
        points = np.concatenate([np.stack([rows, first], 1), np.stack([rows, last], 1)]) * spacing_yx
        inside = convex_hull_region(points, tissue.shape[1:], spacing_yx, 0.5 * float(spacing_yx.max()))
        hull[k] = inside if inside is not None else tissue[k]
    return hull


def _split_and_fill(lungs_spl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(right, left) lungs split at the midline of their left-right extent, holes filled per slice."""
    columns = np.nonzero(lungs_spl.any(axis=(0, 1)))[0]
    midline = (columns.min() + columns.max() + 1) // 2
    right = lungs_spl.copy()
    right[:, :, midline:] = False
    left = lungs_spl & ~right
    for side in (right, left):
        for k in range(side.shape[0]):
            if side[k].any():
                side[k] = ndimage.binary_fill_holes(side[k])
    return right, left


def convex_hull_region(
    points_mm: np.ndarray, shape_yx: Sequence[int], spacing_yx_mm: Sequence[float], margin_mm: float
) -> np.ndarray | None:
    """In-plane mask of the convex hull of ``points_mm`` (y, x) widened by ``margin_mm``; None if degenerate."""
    # scipy gives the hull's half-planes; a pixel is inside when within margin_mm of every one of them
    # (no library offers this per-slice widened hull fill directly).
    from scipy.spatial import ConvexHull, QhullError

    try:
        hull = ConvexHull(points_mm)
    except (QhullError, ValueError):
        return None
    y_mm = np.arange(shape_yx[0])[:, None] * spacing_yx_mm[0]
    x_mm = np.arange(shape_yx[1])[None, :] * spacing_yx_mm[1]
    inside = np.ones(tuple(shape_yx), dtype=bool)
    for normal_y, normal_x, offset in hull.equations:  # normal . p + offset <= 0 inside (unit normals)
        inside &= normal_y * y_mm + normal_x * x_mm + offset <= margin_mm
    return inside


def mediastinum_between(
    right: np.ndarray, left: np.ndarray, spacing_mm: Sequence[float], margin_mm: float, z_margin_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """(mediastinum mask, per-slice 'both lungs' flags) of (superior, posterior, left) lung masks."""
    spacing = np.asarray(spacing_mm, dtype=float)
    pixel_mm2 = spacing[1] * spacing[2]
    areas = [side.sum(axis=(1, 2)) * pixel_mm2 for side in (right, left)]
    # a side counts where it is at least MIN_LUNG_AREA_MM2 and 30% of its largest cross-section: at
    # the lung bases the hull of two thin crescents would span the liver, stomach and heart
    both = np.logical_and.reduce([(area >= MIN_LUNG_AREA_MM2) & (area >= LUNG_MIN_RELATIVE_AREA * area.max()) for area in areas])
    region = np.zeros(right.shape, bool)
    lungs = right | left
    for k in np.flatnonzero(both):
        hull = convex_hull_region(np.argwhere(lungs[k]) * spacing[1:], lungs.shape[1:], spacing[1:], 0.0)
        if hull is None:
            both[k] = False
            continue
        if lungs[k].sum() < LUNG_MIN_HULL_SHARE * hull.sum():  # lung bases: the hull spans the abdomen
            both[k] = False
            continue
        # the central piece of hull minus lungs is the mediastinum (slivers along the chest wall are
        # not); then widened by margin_mm in every direction, into the hila and the lungs' edges
        between, count = ndimage.label(hull & ~lungs[k])
        if count == 0:
            both[k] = False
            continue
        central = between == 1 + int(np.argmax(np.bincount(between.ravel())[1:]))
        region[k] = ndimage.distance_transform_edt(~central, sampling=spacing[1:]) <= margin_mm
    slices = np.flatnonzero(both)
    if slices.size:  # superiorly only: below the lowest such slice lies the diaphragm, not mediastinum
        top = int(slices.max())
        for k in range(top + 1, min(right.shape[0], top + 1 + int(z_margin_mm // spacing[0]))):
            region[k] = region[top]
    return region, both


def find_chest_anatomy(
    ct: Volume, margin_mm: float = MEDIASTINUM_MARGIN_MM, z_margin_mm: float = MEDIASTINUM_Z_MARGIN_MM
) -> ChestAnatomy:
    """Lungs and mediastinum of ``ct`` (module docstring); never raises for a CT without them."""
    spacing = np.asarray(ct.geometry.spacing_zyx_mm, dtype=float)
    step = tuple(max(1, int(round(COARSE_SPACING_MM / s))) for s in spacing)
    coarse = np.asarray(ct.array[:: step[0], :: step[1], :: step[2]], dtype=np.float32)
    coarse_spacing = spacing * np.asarray(step)
    order, flips = _axes_to_spl(ct.geometry.direction_lps)
    spl = _to_spl(coarse, order, flips)
    spl_spacing = coarse_spacing[list(order)]
    lungs = lung_mask(spl, spl_spacing)
    lung_ml = float(lungs.sum() * np.prod(spl_spacing) / 1000.0)
    messages: list[str] = []
    if not lungs.any():
        region, extent_mm = np.zeros(spl.shape, bool), 0.0
        messages.append("No lungs found in the CT (no air-filled parenchyma inside the body).")
    else:
        right, left = _split_and_fill(lungs)
        region, both = mediastinum_between(right, left, spl_spacing, margin_mm, z_margin_mm)
        extent_mm = float(both.sum() * spl_spacing[0])
    anatomy = ChestAnatomy(
        step, ct.geometry.shape_zyx, _from_spl(lungs, order, flips), _from_spl(region, order, flips), lung_ml, extent_mm, messages
    )
    if lungs.any() and not anatomy.has_mediastinum:
        messages.append(
            f"No mediastinum in this scan: both lungs appear together over only {extent_mm:.0f} mm of its length "
            f"(a chest CT shows {MIN_MEDIASTINUM_EXTENT_MM:.0f} mm or more), e.g. an abdominal CT with lung bases, "
            "a neck CT, or a CT cropped inside the mediastinum."
        )
    return anatomy
