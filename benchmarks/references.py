"""Independent reference implementations shared by the tests and the benchmarks (defined once).

* :func:`challenge_style_scores`: LNQ2023-style Dice and ASSD written the straightforward way with
  SimpleITK on the whole volume (contours, Maurer distance maps), to check the engine's fast
  ``LymphNodeQuantLib.evaluate`` against.
* :func:`digitised_ellipsoid` / :func:`exact_section_axes`: a node with a known exact cross-section,
  to check RECIST measurement against.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def challenge_style_scores(prediction: np.ndarray, reference: np.ndarray, spacing_zyx_mm: Sequence[float]) -> tuple[float, float]:
    """(Dice, ASSD in mm) of two binary masks, computed as the LNQ2023 evaluation code does."""
    import SimpleITK as sitk

    def image(mask):
        img = sitk.GetImageFromArray(np.asarray(mask).astype(np.uint8))
        img.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx_mm)))
        return img

    p, r = image(prediction), image(reference)
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(r, p)
    p_contour = sitk.LabelContour(p, fullyConnected=False)
    r_contour = sitk.LabelContour(r, fullyConnected=False)
    p_distance = sitk.GetArrayFromImage(
        sitk.Abs(sitk.SignedMaurerDistanceMap(p_contour, squaredDistance=False, useImageSpacing=True))
    )
    r_distance = sitk.GetArrayFromImage(
        sitk.Abs(sitk.SignedMaurerDistanceMap(r_contour, squaredDistance=False, useImageSpacing=True))
    )
    p_surface = sitk.GetArrayFromImage(p_contour).astype(bool)
    r_surface = sitk.GetArrayFromImage(r_contour).astype(bool)
    return overlap.GetDiceCoefficient(), float(0.5 * r_distance[p_surface].mean() + 0.5 * p_distance[r_surface].mean())


def digitised_ellipsoid(
    short_mm: float, long_mm: float, angle_rad: float, spacing_zyx: Sequence[float], rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """An ellipsoid digitised at voxel centres (bool mask, z y x) and its z semi-axis in mm.

    Its in-plane long/short axes are tilted by ``angle_rad``; its centre lies on the middle slice,
    shifted in-plane by a random sub-pixel offset (two draws from ``rng``).
    """
    sz, sy, sx = spacing_zyx
    semi_z = max(long_mm / 2, 3 * sz)
    shape = (int(2 * semi_z / sz) + 5, int(long_mm / sy) + 8, int(long_mm / sx) + 8)
    centre = np.array(
        [shape[0] // 2 * sz, (shape[1] / 2 + rng.uniform(-0.5, 0.5)) * sy, (shape[2] / 2 + rng.uniform(-0.5, 0.5)) * sx]
    )
    z, y, x = np.meshgrid(*(np.arange(n) * s - c for n, s, c in zip(shape, spacing_zyx, centre)), indexing="ij")
    u = x * np.cos(angle_rad) + y * np.sin(angle_rad)
    v = -x * np.sin(angle_rad) + y * np.cos(angle_rad)
    return (u / (long_mm / 2)) ** 2 + (v / (short_mm / 2)) ** 2 + (z / semi_z) ** 2 <= 1.0, semi_z


def exact_section_axes(short_mm: float, long_mm: float, semi_z_mm: float, offset_from_centre_mm: float) -> tuple[float, float]:
    """Exact (short, long) axes of the ellipsoid's cross-section ``offset_from_centre_mm`` above its centre."""
    factor = np.sqrt(max(1 - (offset_from_centre_mm / semi_z_mm) ** 2, 0.0))
    return short_mm * factor, long_mm * factor
