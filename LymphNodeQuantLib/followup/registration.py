"""Register a follow-up CT to the baseline CT (SimpleITK): rigid, then affine, optionally a coarse B-spline.

* **Working images.** Both CTs are averaged down (``BinShrink``) to about ``working_spacing_mm``
  (3 mm) and clamped to [-1024, 1500] HU, so a 512x512x140 pair registers in seconds and padding
  values or metal do not dominate the histogram.
* **Chest mask.** The metric only samples the baseline's chest: lungs and mediastinum
  (:func:`LymphNodeQuantLib.anatomy.find_chest_anatomy`) widened by ``chest_margin_mm`` (chest
  wall, ribs, spine). Arms, table and neck lie outside it and cannot drive the alignment. A CT
  without lungs falls back to its body (largest component above -500 HU), then to the whole image;
  the result says which mask was used.
* **Stages.** Mattes mutual information (it tolerates contrast given at one examination only),
  random sampling with a fixed seed; rigid (Euler, initialised by the centres of mass of the two
  chest masks; 3 resolution levels), then affine (2 levels), then with ``deformable`` a B-spline on
  a ``bspline_grid_mm`` control grid (1 level, at twice the working spacing).
* **Residual.** The registration is judged on the images, not on its own metric: the median
  distance by which chest blocks of the registered follow-up must still move to match the baseline
  (:func:`.residual.local_misalignment`), plus the lung surface distance for reference. Above
  ``residual_warning_mm``, or when it cannot be measured, the result carries a warning.

The transform follows ITK: it maps a **baseline** point (LPS mm) to the **follow-up** point that
shows the same anatomy; :meth:`Registration.followup_to_baseline` maps the other way.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from ..errors import InputError
from ..geometry import ImageGeometry, Volume
from ..progress import CancelToken, ProgressCallback, StageProgress
from .residual import local_misalignment, mask_image, surface_distance_mm

logger = logging.getLogger(__name__)

CLAMP_HU = (-1024.0, 1500.0)
BODY_THRESHOLD_HU = -500.0


@dataclass(frozen=True)
class RegistrationSettings:
    """How :func:`register_followup` works; the defaults suit chest CTs of the same patient."""

    working_spacing_mm: float = 3.0
    chest_margin_mm: float = 15.0
    deformable: bool = False
    bspline_grid_mm: float = 60.0
    bspline_iterations: int = 50
    histogram_bins: int = 50
    #: metric samples at the finest level (a random share of the masked voxels, at most all of them)
    metric_samples: int = 30000
    iterations: int = 200
    seed: int = 7
    residual_warning_mm: float = 5.0


@dataclass
class Registration:
    """A follow-up CT registered to its baseline; :meth:`as_dict` gives the JSON-safe summary."""

    #: baseline LPS point -> follow-up LPS point (SimpleITK transform, ITK's fixed-to-moving direction)
    transform: object
    #: the rigid/affine part alone (used to start the inversion of a B-spline transform)
    affine: object
    stages: tuple[str, ...]
    metric_value: float
    #: median local misalignment of chest blocks after registration (mm); None when not measurable
    residual_mm: Optional[float]
    #: the region the metric sampled: "chest" (lungs + mediastinum + margin), "body" or "whole image"
    mask: str
    residual_warning_mm: float
    #: (blocks the residual rests on, blocks tried)
    residual_blocks: tuple[int, int] = (0, 0)
    #: mean symmetric distance between the lung surfaces (body surfaces without lungs) after registration, mm
    surface_distance_mm: Optional[float] = None
    #: which surface that is: "lungs", "body" or "none"
    surface: str = "none"
    warnings: list[str] = field(default_factory=list)
    timings_s: dict = field(default_factory=dict)

    @property
    def deformable(self) -> bool:
        return "bspline" in self.stages

    def baseline_to_followup(self, points_lps: np.ndarray) -> np.ndarray:
        """Map (N, 3) baseline LPS points to the follow-up."""
        points = np.asarray(points_lps, dtype=float).reshape(-1, 3)
        return np.array([self.transform.TransformPoint(tuple(map(float, p))) for p in points]).reshape(-1, 3)

    def followup_to_baseline(self, points_lps: np.ndarray, tolerance_mm: float = 1e-3) -> np.ndarray:
        """Map (N, 3) follow-up LPS points to the baseline (the inverse transform)."""
        points = np.asarray(points_lps, dtype=float).reshape(-1, 3)
        inverse_affine = self.affine.GetInverse()
        start = np.array([inverse_affine.TransformPoint(tuple(map(float, p))) for p in points]).reshape(-1, 3)
        if not self.deformable:
            return start
        return invert_points(self.transform, self.affine, points, start, tolerance_mm)

    def followup_to_baseline_matrix_lps(self) -> Optional[np.ndarray]:
        """4x4 homogeneous matrix mapping follow-up LPS points to the baseline; None for a deformable registration."""
        if self.deformable:
            return None
        return np.linalg.inv(affine_matrix(self.affine))

    def followup_to_baseline_matrix_ras(self) -> Optional[np.ndarray]:
        """The same in RAS (a Slicer linear transform node's matrix); None for a deformable registration."""
        matrix = self.followup_to_baseline_matrix_lps()
        if matrix is None:
            return None
        flip = np.diag([-1.0, -1.0, 1.0, 1.0])
        return flip @ matrix @ flip

    def as_dict(self) -> dict:
        matrix = self.followup_to_baseline_matrix_lps()
        return {
            "stages": list(self.stages),
            "metric": "Mattes mutual information (negative: lower is better)",
            "metric_value": float(self.metric_value),
            "mask": self.mask,
            "residual_mm": None if self.residual_mm is None else round(float(self.residual_mm), 3),
            "residual": "median local misalignment of chest blocks after registration (block matching)",
            "residual_blocks_used": self.residual_blocks[0],
            "residual_blocks_tried": self.residual_blocks[1],
            "residual_warning_mm": self.residual_warning_mm,
            "surface_distance_mm": None if self.surface_distance_mm is None else round(float(self.surface_distance_mm), 3),
            "surface": self.surface,
            "followup_to_baseline_matrix_lps": None if matrix is None else np.round(matrix, 6).tolist(),
            "warnings": list(self.warnings),
            "timings_s": {k: round(float(v), 3) for k, v in self.timings_s.items()},
        }


def affine_matrix(transform) -> np.ndarray:
    """4x4 homogeneous matrix of a SimpleITK matrix-offset transform (Euler, affine): x -> A (x - c) + t + c."""
    linear = np.asarray(transform.GetMatrix(), dtype=float).reshape(3, 3)
    centre = np.asarray(transform.GetCenter(), dtype=float)
    translation = np.asarray(transform.GetTranslation(), dtype=float)
    matrix = np.eye(4)
    matrix[:3, :3] = linear
    matrix[:3, 3] = translation + centre - linear @ centre
    return matrix


def invert_points(
    transform, affine, targets: np.ndarray, start: np.ndarray, tolerance_mm: float, iterations: int = 50
) -> np.ndarray:
    """Points x with ``transform(x) = target``, by fixed-point iteration from ``start``.

    SimpleITK has no inverse of a B-spline transform; its displacement on top of the affine part is
    smooth and small, so ``x <- x + A^-1 (target - T(x))`` (A: the affine part's matrix) converges.
    """
    inverse_linear = np.linalg.inv(affine_matrix(affine)[:3, :3])
    points = np.array(start, dtype=float)
    for index, target in enumerate(np.asarray(targets, dtype=float)):
        x = points[index]
        for _ in range(iterations):
            error = target - np.asarray(transform.TransformPoint(tuple(map(float, x))))
            x = x + inverse_linear @ error
            if np.linalg.norm(error) < tolerance_mm:
                break
        points[index] = x
    return points


# ----------------------------------------------------------------------------------- working images


def working_image(ct: Volume, spacing_mm: float):
    """The CT averaged down to about ``spacing_mm`` per axis (float32, clamped to :data:`CLAMP_HU`)."""
    import SimpleITK as sitk

    image = sitk.Cast(ct.to_sitk(), sitk.sitkFloat32)
    factors = [max(1, int(round(spacing_mm / s))) for s in ct.geometry.spacing_xyz_mm]
    if any(f > 1 for f in factors):
        image = sitk.BinShrink(image, factors)
    return sitk.Clamp(image, sitk.sitkFloat32, *CLAMP_HU)


def _body(array: np.ndarray) -> np.ndarray:
    import cc3d

    body = array > BODY_THRESHOLD_HU
    if not body.any():
        return body
    return cc3d.largest_k(body, k=1, connectivity=6) > 0


def chest_mask(work: Volume, margin_mm: float) -> tuple[np.ndarray, np.ndarray, str, str]:
    """(metric mask, surface mask, mask name, surface name) of a working image (module docstring)."""
    from scipy import ndimage

    from ..anatomy import find_chest_anatomy

    anatomy = find_chest_anatomy(work)
    shape = work.geometry.shape_zyx
    lungs = anatomy.lungs_in_box((0, 0, 0), shape)
    spacing = work.geometry.spacing_zyx_mm
    if lungs.any():
        core = lungs | anatomy.mediastinum_in_box((0, 0, 0), shape)
        mask = ndimage.distance_transform_edt(~core, sampling=spacing) <= margin_mm
        return mask & _body(work.array), lungs, "chest", "lungs"
    body = _body(work.array)
    if body.any():
        return body, body, "body", "body"
    return np.ones(shape, bool), np.zeros(shape, bool), "whole image", "none"


# ----------------------------------------------------------------------------------- registration


def _method(settings: RegistrationSettings, fixed_mask, shrink: Sequence[int], sigmas_mm: Sequence[float], progress, cancel):
    import SimpleITK as sitk

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.histogram_bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    masked = max(int(sitk.GetArrayViewFromImage(fixed_mask).sum()), 1)
    method.SetMetricSamplingPercentage(min(1.0, settings.metric_samples / masked), settings.seed)
    method.SetMetricFixedMask(fixed_mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetShrinkFactorsPerLevel(list(shrink))
    method.SetSmoothingSigmasPerLevel(list(sigmas_mm))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    levels, total = len(shrink), settings.iterations * len(shrink)
    seen = [0]

    def on_iteration() -> None:
        seen[0] += 1
        if progress is not None:
            progress(min(seen[0] / total, 0.99) if levels else 0.0, "registering")
        if cancel is not None and cancel.cancelled:
            method.StopRegistration()

    method.AddCommand(sitk.sitkIterationEvent, on_iteration)
    return method


def _run_linear(fixed, moving, fixed_mask, initial, settings, shrink, sigmas, progress, cancel):
    method = _method(settings, fixed_mask, shrink, sigmas, progress, cancel)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0,
        minStep=0.01,
        numberOfIterations=settings.iterations,
        relaxationFactor=0.6,
        gradientMagnitudeTolerance=1e-6,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetInitialTransform(initial, inPlace=True)
    method.Execute(fixed, moving)
    if cancel is not None:
        cancel.raise_if_cancelled()
    return initial, float(method.GetMetricValue())


def _run_bspline(fixed, moving, fixed_mask, affine, settings, progress, cancel):
    import SimpleITK as sitk

    extent_mm = np.asarray(fixed.GetSize()) * np.asarray(fixed.GetSpacing())
    mesh = [max(1, int(round(e / settings.bspline_grid_mm))) for e in extent_mm]
    bspline = sitk.BSplineTransformInitializer(fixed, mesh, 3)
    # one level at twice the working spacing: the grid is coarse (60 mm), and finer levels cost minutes for little gain
    method = _method(settings, fixed_mask, (2,), (settings.working_spacing_mm,), progress, cancel)
    method.SetOptimizerAsLBFGSB(
        gradientConvergenceTolerance=1e-5, numberOfIterations=settings.bspline_iterations, maximumNumberOfCorrections=5
    )
    method.SetMovingInitialTransform(affine)
    method.SetInitialTransform(bspline, inPlace=True)
    method.Execute(fixed, moving)
    if cancel is not None:
        cancel.raise_if_cancelled()
    return sitk.CompositeTransform([affine, bspline]), float(method.GetMetricValue())


def _initial_rigid(fixed_mask, moving_mask):
    """Euler transform centred on the baseline chest, translated to align the two chest masks' centres of mass."""
    import SimpleITK as sitk

    return sitk.CenteredTransformInitializer(
        sitk.Cast(fixed_mask, sitk.sitkFloat32),
        sitk.Cast(moving_mask, sitk.sitkFloat32),
        sitk.Euler3DTransform(),
        sitk.CenteredTransformInitializerFilter.MOMENTS,
    )


def register_followup(
    baseline_ct: Volume,
    followup_ct: Volume,
    settings: RegistrationSettings = RegistrationSettings(),
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> Registration:
    """Register ``followup_ct`` to ``baseline_ct`` (module docstring); both are CTs in HU."""
    import SimpleITK as sitk

    report = StageProgress(progress)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    report(0.0, "preparing registration")
    fixed = working_image(baseline_ct, settings.working_spacing_mm)
    moving = working_image(followup_ct, settings.working_spacing_mm)
    fixed_volume, moving_volume = Volume.from_sitk(fixed), Volume.from_sitk(moving)
    fixed_mask, fixed_surface, mask_name, fixed_surface_name = chest_mask(fixed_volume, settings.chest_margin_mm)
    moving_mask, moving_surface, _, moving_surface_name = chest_mask(moving_volume, settings.chest_margin_mm)
    if not fixed_mask.any():
        raise InputError("The baseline CT shows no body (no voxel above -500 HU); check that it is a CT in Hounsfield units.")
    fixed_mask_image, moving_mask_image = mask_image(fixed_mask, fixed), mask_image(moving_mask, moving)
    timings["prepare"] = time.perf_counter() - started

    deformable_share = 0.35 if settings.deformable else 0.0
    linear_stop = 0.95 - deformable_share
    sigmas = (4.0 * settings.working_spacing_mm, 2.0 * settings.working_spacing_mm, 0.0)
    clock = time.perf_counter()
    rigid, metric = _run_linear(
        fixed, moving, fixed_mask_image, _initial_rigid(fixed_mask_image, moving_mask_image), settings, (4, 2, 1), sigmas,
        report.sub(0.05, 0.05 + (linear_stop - 0.05) * 0.5), cancel,
    )  # fmt: skip
    timings["rigid"] = time.perf_counter() - clock
    clock = time.perf_counter()
    affine = sitk.AffineTransform(3)
    affine.SetCenter(rigid.GetCenter())
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    affine, metric = _run_linear(
        fixed, moving, fixed_mask_image, affine, settings, (2, 1), sigmas[1:],
        report.sub(0.05 + (linear_stop - 0.05) * 0.5, linear_stop), cancel,
    )  # fmt: skip
    timings["affine"] = time.perf_counter() - clock
    transform, stages = affine, ("rigid", "affine")
    if settings.deformable:
        clock = time.perf_counter()
        transform, metric = _run_bspline(fixed, moving, fixed_mask_image, affine, settings, report.sub(linear_stop, 0.95), cancel)
        timings["bspline"] = time.perf_counter() - clock
        stages += ("bspline",)
    report(0.95, "measuring the registration residual")
    clock = time.perf_counter()
    misalignment = local_misalignment(fixed_volume, moving, transform, fixed_mask, settings.seed)
    surface = fixed_surface_name if fixed_surface_name == moving_surface_name else "none"
    distance = surface_distance_mm(fixed_volume, fixed_surface, moving, moving_surface, transform) if surface != "none" else None
    timings["residual"] = time.perf_counter() - clock
    timings["total"] = time.perf_counter() - started
    registration = Registration(
        transform, affine, stages, metric, misalignment.residual_mm, mask_name, settings.residual_warning_mm,
        (misalignment.blocks_used, misalignment.blocks_tried), distance, surface, timings_s=timings,
    )  # fmt: skip
    registration.warnings.extend(registration_warnings(registration))
    for warning in registration.warnings:
        logger.warning(warning)
    report(1.0, "registered")
    return registration


def registration_warnings(registration: Registration) -> list[str]:
    """What a reader must know about a registration: a large or unmeasurable residual, a fallback mask."""
    warnings = []
    used, tried = registration.residual_blocks
    if registration.residual_mm is None:
        warnings.append(
            f"The registration residual could not be measured: only {used} of {tried} chest blocks found an unambiguous "
            "match after registration (too little structure, or the registration failed); check the node matches by eye."
        )
    elif registration.residual_mm > registration.residual_warning_mm:
        warnings.append(
            f"Registration residual {registration.residual_mm:.1f} mm (median local misalignment of {used} chest blocks "
            f"after registration) exceeds {registration.residual_warning_mm:g} mm: node matches may be wrong; check them "
            "by eye (a different breath hold or scan range, or try --deformable)."
        )
    if registration.mask != "chest":
        warnings.append(
            f"No lungs found: the registration used the {registration.mask} instead of the chest, so arms and table may have driven it."
        )
    return warnings


# ----------------------------------------------------------------------------------- labels


def resample_labels(labels: Volume, registration: Registration, baseline_geometry: ImageGeometry) -> Volume:
    """A follow-up label map on a baseline grid (nearest neighbour through the registration): node voxels in baseline space."""
    import SimpleITK as sitk

    reference = sitk.Image([int(v) for v in reversed(baseline_geometry.shape_zyx)], sitk.sitkUInt8)
    baseline_geometry.apply_to_sitk(reference)
    array = np.asarray(labels.array)
    if array.dtype.kind not in "iu" or array.dtype.itemsize > 4:
        array = array.astype(np.uint32)
    moving = labels.with_array(array).to_sitk()
    warped = sitk.Resample(moving, reference, registration.transform, sitk.sitkNearestNeighbor, 0, moving.GetPixelID())
    return Volume(sitk.GetArrayFromImage(warped), baseline_geometry)
