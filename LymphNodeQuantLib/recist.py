"""RECIST long and short axis of a node in one image slice, computed exactly on a sub-pixel outline.

Definition (the one this package documents and tests):

1. **Sub-pixel outline.** The slice's node mask is smoothed in-plane by a Gaussian of
   ``SMOOTHING_SIGMA_PIXELS`` (one pixel) per axis (``scipy.ndimage.gaussian_filter``). On every
   row and every column of pixels, the outline leaves the node between the first (or last) node
   pixel and its outside neighbour; the outline point is placed where the smoothed mask falls
   through 0.5 between those two pixel centres (linear interpolation), so it always lies between
   an inside and an outside pixel centre. Where the smoothed mask does not fall through 0.5 there
   (parts thinner than about two pixels, sharp corners), the point stays at the pixel-edge
   midpoint. Points are in mm using the in-plane spacing.
2. The convex hull of those points is the node's outline in that slice.
3. The **long axis** is the longest chord of the hull (its diameter): the largest distance between
   two hull vertices, found exactly by comparing all vertex pairs.
4. The **short axis** is the longest chord *perpendicular to the long axis*: for a convex polygon,
   the length of the perpendicular chords is a concave, piecewise-linear function of the position
   along the long axis, so its maximum sits at a vertex; we intersect the perpendicular line
   through every vertex with the hull and keep the longest intersection. This is a true chord
   (a segment inside the hull), not the hull's width across the long axis (the projection
   extent), which adds the outline's ripple on both flanks.
5. When several chords tie for the longest (within ``TIE_TOLERANCE_MM``), the one giving the
   largest short axis wins.

Why the smoothing: the rule before issue 12 took the hull of the pixel-edge midpoints
(:func:`pixel_edge_points_mm`). Those trace the pixel staircase and the hull spans the outer
corner of every step, so the short axis came out about half a pixel too long on average on the
random ellipsoids of ``benchmarks/metrics_bench.py``. Smoothing removes the staircase; it also
pulls a curved outline inwards (by about sigma^2 / 2 x curvature), which matters for nodes of a
few pixels. One pixel balances the two: on those ellipsoids (5-30 mm, and 5-7 mm alone) the mean
short-axis error is within +/-0.2 pixel and every error within +/-1 pixel, while 1.5 pixels
overestimates 5-7 mm nodes again (on much of their outline the smoothed mask no longer falls
through 0.5 between the two pixel centres, so the edge midpoints stay) and 1.2 pixels
underestimates them at 0.7 mm pixels. See ``benchmarks/RESULTS.md`` and
Testing/test_measure_recist.py. What remains is the digitisation itself (the boundary is only
known to lie between an inside and an outside pixel centre) and the small positive bias of taking
maxima of noisy lengths (longest chord, largest short axis over slices), which RECIST prescribes.

The hull is built with a monotone-chain algorithm over row and column extremes (not scipy's
Qhull): a node slice has at most a few hundred boundary points, and the hand-written 2-D hull has
no failure mode on collinear input (single pixel rows/columns), which Qhull reports as an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Chords within this many mm of the longest one count as ties (step 5 of the definition).
TIE_TOLERANCE_MM = 1e-6

#: In-plane Gaussian smoothing (standard deviation, in pixels per axis) before the 0.5 crossing (step 1).
SMOOTHING_SIGMA_PIXELS = 1.0


@dataclass(frozen=True)
class SliceAxes:
    """Long and short axis (mm) of one slice's outline, with the long axis' end points (row, col mm)."""

    long_axis_mm: float
    short_axis_mm: float
    long_axis_end_points_mm: tuple[tuple[float, float], tuple[float, float]]


def pixel_edge_points_mm(mask_2d: np.ndarray, spacing_rc_mm: tuple[float, float]) -> np.ndarray:
    """Pixel-edge points (row, col) in mm: the four edge midpoints of the first and last pixel of every occupied row.

    The outline of the rule before issue 12 (kept for ``benchmarks/metrics_bench.py``, which
    compares the rules; :func:`boundary_points_mm` is the outline used now). Pixel ``(r, c)`` covers ``[r, r+1] x [c, c+1]`` in index units; its edge midpoints are
    ``(r+0.5, c)``, ``(r+0.5, c+1)``, ``(r, c+0.5)`` and ``(r+1, c+0.5)``. On any horizontal line
    only the extreme points matter for a convex hull, so the row extremes give the same hull as
    all pixels' points.
    """
    mask_2d = np.asarray(mask_2d, dtype=bool)
    rows = np.flatnonzero(mask_2d.any(axis=1))
    if rows.size == 0:
        return np.zeros((0, 2))
    sub = mask_2d[rows]
    first_col = sub.argmax(axis=1).astype(float)
    last_col = (sub.shape[1] - 1 - sub[:, ::-1].argmax(axis=1)).astype(float)
    r = rows.astype(float)
    points = []
    for col in (first_col, last_col):
        points += [
            np.stack([r + 0.5, col], axis=1),
            np.stack([r + 0.5, col + 1.0], axis=1),
            np.stack([r, col + 0.5], axis=1),
            np.stack([r + 1.0, col + 0.5], axis=1),
        ]
    return np.concatenate(points) * np.asarray(spacing_rc_mm, dtype=float)


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Vertices of the convex hull of 2-D ``points`` (counter-clockwise, no collinear vertices)."""
    points = np.unique(np.asarray(points, dtype=float), axis=0)  # sorted lexicographically
    if len(points) <= 2:
        return points

    def half(sequence: np.ndarray) -> list:
        chain: list = []
        for p in sequence:
            while len(chain) >= 2:
                (ax, ay), (bx, by) = chain[-2], chain[-1]
                if (bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax) <= 0:
                    chain.pop()
                else:
                    break
            chain.append((p[0], p[1]))
        return chain

    lower = half(points)
    upper = half(points[::-1])
    return np.asarray(lower[:-1] + upper[:-1])


def chord_lengths_across(hull: np.ndarray, direction: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Length of the intersection of the convex polygon ``hull`` with lines perpendicular to ``direction``.

    The line for offset ``t`` is ``{p : p . direction = t}``; ``direction`` must be a unit vector.
    """
    normal = np.array([-direction[1], direction[0]])
    along = hull @ direction  # position of each vertex along the long axis
    across = hull @ normal
    a0, a1 = along, np.roll(along, -1)
    c0, c1 = across, np.roll(across, -1)
    t = np.asarray(offsets, dtype=float)[:, None]
    low, high = np.minimum(a0, a1), np.maximum(a0, a1)
    span = a1 - a0
    crosses = (t >= low - 1e-12) & (t <= high + 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(np.abs(span) > 1e-12, (t - a0) / span, 0.0)
    fraction = np.clip(fraction, 0.0, 1.0)
    position = c0 + fraction * (c1 - c0)
    # an edge lying along the line (span 0) contributes both its end points
    parallel = crosses & (np.abs(span) <= 1e-12)
    top = np.where(crosses, position, -np.inf)
    bottom = np.where(crosses, position, np.inf)
    top = np.maximum(top, np.where(parallel, np.maximum(c0, c1), -np.inf))
    bottom = np.minimum(bottom, np.where(parallel, np.minimum(c0, c1), np.inf))
    length = top.max(axis=1) - bottom.min(axis=1)
    return np.where(np.isfinite(length), np.maximum(length, 0.0), 0.0)


def axes_of_hull(hull: np.ndarray) -> SliceAxes:
    """Long axis (hull diameter) and the longest chord perpendicular to it, ties broken by the larger short axis."""
    if len(hull) == 1:
        return SliceAxes(0.0, 0.0, (tuple(hull[0]), tuple(hull[0])))
    difference = hull[:, None, :] - hull[None, :, :]
    distance = np.sqrt((difference**2).sum(axis=-1))
    longest = distance.max()
    first, second = np.nonzero(np.triu(distance >= longest - TIE_TOLERANCE_MM, k=1))
    best: SliceAxes | None = None
    for i, j in zip(first, second):
        direction = (hull[j] - hull[i]) / distance[i, j]
        short = float(chord_lengths_across(hull, direction, hull @ direction).max()) if len(hull) > 2 else 0.0
        if best is None or short > best.short_axis_mm:
            best = SliceAxes(float(distance[i, j]), short, (tuple(hull[i]), tuple(hull[j])))
    assert best is not None
    return best


def smoothed_mask(mask: np.ndarray, sigma_pixels: float | None = None) -> np.ndarray:
    """The mask (2-D, or 3-D as (k, j, i)) padded in-plane by one pixel of zeros and smoothed in-plane by a Gaussian.

    The result has two more rows and columns than ``mask`` (index ``[r + 1, c + 1]`` belongs to
    pixel ``(r, c)``), so that pixels on the array border have an outside neighbour; values beyond
    the array count as 0. ``sigma_pixels`` defaults to ``SMOOTHING_SIGMA_PIXELS``.
    """
    sigma_pixels = SMOOTHING_SIGMA_PIXELS if sigma_pixels is None else sigma_pixels
    mask = np.asarray(mask, dtype=float)
    mask = np.pad(mask, [(0, 0)] * (mask.ndim - 2) + [(1, 1), (1, 1)])
    sigma = (0.0,) * (mask.ndim - 2) + (sigma_pixels, sigma_pixels)
    return ndimage.gaussian_filter(mask, sigma, mode="constant", cval=0.0)


def _crossings(inside: np.ndarray, outside: np.ndarray) -> np.ndarray:
    """Offset (0..1, from the inside pixel centre) where the smoothed mask falls through 0.5; 0.5 if it does not there."""
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = (inside - 0.5) / (inside - outside)
    return np.where((inside >= 0.5) & (outside < 0.5), np.clip(offset, 0.0, 1.0), 0.5)


def boundary_points_mm(mask_2d: np.ndarray, spacing_rc_mm: tuple[float, float], smoothed: np.ndarray | None = None) -> np.ndarray:
    """Sub-pixel outline points (row, col) in mm (step 1 of the definition): two per occupied row and per occupied column.

    Pixel ``(r, c)`` covers ``[r, r+1] x [c, c+1]`` in index units. On each occupied row, the
    outline crosses the grid edge from the first node pixel to its left neighbour and from the
    last one to its right neighbour; on each occupied column, likewise upwards and downwards.
    Each crossing lies on the line through the two pixel centres, at the offset where
    ``smoothed`` (default: :func:`smoothed_mask` of ``mask_2d``, padded like it) falls through
    0.5, or at the edge midpoint where it does not. Only these row and column extremes can reach
    the convex hull.
    """
    mask_2d = np.asarray(mask_2d, dtype=bool)
    if not mask_2d.any():
        return np.zeros((0, 2))
    field = smoothed_mask(mask_2d) if smoothed is None else smoothed
    points = []
    for transposed in (False, True):
        mask = mask_2d.T if transposed else mask_2d
        values = field.T if transposed else field
        lines = np.flatnonzero(mask.any(axis=1))
        sub = mask[lines]
        first = sub.argmax(axis=1)
        last = sub.shape[1] - 1 - sub[:, ::-1].argmax(axis=1)
        row = lines + 1  # pixel (r, c) has its centre at (r + 0.5, c + 0.5) and its smoothed value at [r + 1, c + 1]
        before = first + 0.5 - _crossings(values[row, first + 1], values[row, first])
        after = last + 0.5 + _crossings(values[row, last + 1], values[row, last + 2])
        for along in (before, after):
            pair = np.stack([lines + 0.5, along], axis=1)
            points.append(pair[:, ::-1] if transposed else pair)
    return np.concatenate(points) * np.asarray(spacing_rc_mm, dtype=float)


def _axes_from_points(points: np.ndarray) -> SliceAxes:
    if len(points) == 0:
        return SliceAxes(0.0, 0.0, ((0.0, 0.0), (0.0, 0.0)))
    return axes_of_hull(convex_hull(points))


def slice_axes(mask_2d: np.ndarray, spacing_rc_mm: tuple[float, float]) -> SliceAxes:
    """RECIST long/short axis (mm) of the pixels of ``mask_2d`` with pixel spacing (row, col) in mm."""
    return _axes_from_points(boundary_points_mm(mask_2d, spacing_rc_mm))


@dataclass(frozen=True)
class RecistResult:
    """A node's RECIST axes: the slice with the largest short axis and its long axis."""

    short_axis_mm: float
    long_axis_mm: float
    slice_index: int  # index along the array's first axis (k), relative to the given mask


def recist_axes(mask_zyx: np.ndarray, spacing_zyx_mm: tuple[float, float, float]) -> RecistResult:
    """RECIST axes of one node given as a 3-D (k, j, i) mask: measured in every k-slice, largest short axis wins.

    Ties between slices go to the longer long axis, then to the lower slice index.
    """
    spacing_rc = (float(spacing_zyx_mm[1]), float(spacing_zyx_mm[2]))
    mask_zyx = np.asarray(mask_zyx, dtype=bool)
    smoothed = smoothed_mask(mask_zyx)  # every slice at once (in-plane only)
    best = RecistResult(0.0, 0.0, -1)
    for k in np.flatnonzero(mask_zyx.any(axis=(1, 2))):
        axes = _axes_from_points(boundary_points_mm(mask_zyx[k], spacing_rc, smoothed[k]))
        if (
            best.slice_index < 0
            or axes.short_axis_mm > best.short_axis_mm + 1e-9
            or (abs(axes.short_axis_mm - best.short_axis_mm) <= 1e-9 and axes.long_axis_mm > best.long_axis_mm + 1e-9)
        ):
            best = RecistResult(axes.short_axis_mm, axes.long_axis_mm, int(k))
    return best


def max_diameter_3d_mm(mask_zyx: np.ndarray, spacing_zyx_mm: tuple[float, float, float]) -> float:
    """Largest distance (mm) between two voxel-face points of a 3-D mask (face centres: the 3-D analogue of pixel-edge midpoints)."""
    from scipy.spatial import ConvexHull

    z, y = np.nonzero(mask_zyx.any(axis=2))
    if z.size == 0:
        return 0.0
    rows = mask_zyx[z, y]
    first = rows.argmax(axis=1).astype(float)
    last = (rows.shape[1] - 1 - rows[:, ::-1].argmax(axis=1)).astype(float)
    zc, yc = z + 0.5, y + 0.5
    points = []
    for x in (first, last):  # on each (z, y) row only the extreme voxels can reach the hull
        xc = x + 0.5
        points += [
            np.stack([zc, yc, x], axis=1),
            np.stack([zc, yc, x + 1.0], axis=1),
            np.stack([zc, yc - 0.5, xc], axis=1),
            np.stack([zc, yc + 0.5, xc], axis=1),
            np.stack([zc - 0.5, yc, xc], axis=1),
            np.stack([zc + 0.5, yc, xc], axis=1),
        ]
    points = np.concatenate(points) * np.asarray(spacing_zyx_mm, dtype=float)
    vertices = points[ConvexHull(points).vertices]  # a voxel's face centres span 3-D, so Qhull never sees flat input
    best = 0.0
    for start in range(0, len(vertices), 512):  # chunked to bound memory on very large nodes
        block = vertices[start : start + 512]
        best = max(best, float(((block[:, None, :] - vertices[None, :, :]) ** 2).sum(-1).max()))
    return float(np.sqrt(best))
