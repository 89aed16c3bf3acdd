"""Image geometry carried with every array.

Conventions, stated once for the whole package:

* Arrays are indexed ``(z, y, x)`` = ``(k, j, i)``, as in ``SimpleITK.GetArrayFromImage``
  and ``slicer.util.arrayFromVolume``.
* Physical points are in **LPS** millimetres (DICOM/ITK/NRRD convention). Slicer's RAS is
  ``diag(-1, -1, 1)`` times LPS; conversion happens only in :meth:`ImageGeometry.ijk_to_ras_matrix`
  and :meth:`ImageGeometry.from_ijk_to_ras_matrix`.
* ``direction_lps`` follows ITK: column ``c`` is the LPS unit vector of index axis ``c`` where
  index axes are ordered ``(i, j, k)`` = ``(x, y, z)``.
* ``spacing_zyx_mm`` and ``shape_zyx`` follow array order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .errors import InputError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class ImageGeometry:
    """Voxel grid of a 3-D image: shape, spacing, origin and direction."""

    shape_zyx: tuple[int, int, int]
    spacing_zyx_mm: tuple[float, float, float]
    origin_lps_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction_lps: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape_zyx", tuple(int(s) for s in self.shape_zyx))
        object.__setattr__(self, "spacing_zyx_mm", tuple(float(s) for s in self.spacing_zyx_mm))
        object.__setattr__(self, "origin_lps_mm", tuple(float(s) for s in self.origin_lps_mm))
        direction = np.asarray(self.direction_lps, dtype=float).reshape(3, 3)
        direction.setflags(write=False)
        object.__setattr__(self, "direction_lps", direction)
        if len(self.shape_zyx) != 3 or len(self.spacing_zyx_mm) != 3:
            raise InputError(f"ImageGeometry needs 3-D shape and spacing, got {self.shape_zyx} and {self.spacing_zyx_mm}.")
        if min(self.spacing_zyx_mm) <= 0 or not np.all(np.isfinite(self.spacing_zyx_mm)):
            raise InputError(f"Voxel spacing must be positive and finite, got {self.spacing_zyx_mm} mm (z, y, x).")

    # ------------------------------------------------------------------ basic properties
    @property
    def spacing_xyz_mm(self) -> tuple[float, float, float]:
        return tuple(reversed(self.spacing_zyx_mm))  # type: ignore[return-value]

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing_zyx_mm))

    @property
    def is_axial(self) -> bool:
        """True when the slice (k) axis is parallel to the patient's superior axis and i, j lie in the axial plane."""
        return bool(abs(abs(self.direction_lps[2, 2]) - 1.0) < 1e-3)

    # ------------------------------------------------------------------ matrices
    def ijk_to_lps_matrix(self) -> np.ndarray:
        """4x4 homogeneous matrix mapping continuous (i, j, k) = (x, y, z) indices to LPS mm."""
        matrix = np.eye(4)
        matrix[:3, :3] = self.direction_lps @ np.diag(self.spacing_xyz_mm)
        matrix[:3, 3] = self.origin_lps_mm
        return matrix

    def ijk_to_ras_matrix(self) -> np.ndarray:
        """4x4 matrix for ``vtkMRMLVolumeNode.SetIJKToRASMatrix``."""
        matrix = self.ijk_to_lps_matrix()
        matrix[:3, :] = LPS_TO_RAS @ matrix[:3, :]
        return matrix

    @classmethod
    def from_ijk_to_ras_matrix(cls, ijk_to_ras: np.ndarray, shape_zyx: Sequence[int]) -> "ImageGeometry":
        """Inverse of :meth:`ijk_to_ras_matrix` (e.g. from a Slicer volume node)."""
        ijk_to_ras = np.asarray(ijk_to_ras, dtype=float)
        linear_lps = LPS_TO_RAS @ ijk_to_ras[:3, :3]
        spacing_xyz = np.linalg.norm(linear_lps, axis=0)
        direction = linear_lps / spacing_xyz
        origin = LPS_TO_RAS @ ijk_to_ras[:3, 3]
        return cls(tuple(shape_zyx), tuple(spacing_xyz[::-1]), tuple(origin), direction)

    # ------------------------------------------------------------------ point mapping
    def index_zyx_to_lps(self, index_zyx: np.ndarray) -> np.ndarray:
        """Map (..., 3) continuous (z, y, x) indices to (..., 3) LPS points in mm."""
        index_xyz = np.asarray(index_zyx, dtype=float)[..., ::-1]
        linear = self.direction_lps @ np.diag(self.spacing_xyz_mm)
        return index_xyz @ linear.T + np.asarray(self.origin_lps_mm)

    def lps_to_index_zyx(self, points_lps: np.ndarray) -> np.ndarray:
        """Map (..., 3) LPS points in mm to continuous (z, y, x) indices."""
        linear = self.direction_lps @ np.diag(self.spacing_xyz_mm)
        index_xyz = (np.asarray(points_lps, dtype=float) - np.asarray(self.origin_lps_mm)) @ np.linalg.inv(linear).T
        return index_xyz[..., ::-1]

    @staticmethod
    def lps_to_ras(points_lps: np.ndarray) -> np.ndarray:
        return np.asarray(points_lps, dtype=float) * np.array([-1.0, -1.0, 1.0])

    # ------------------------------------------------------------------ derived grids
    def cropped(self, start_zyx: Sequence[int], stop_zyx: Sequence[int]) -> "ImageGeometry":
        """Geometry of the sub-box ``array[z0:z1, y0:y1, x0:x1]`` (start inclusive, stop exclusive)."""
        start = np.asarray(start_zyx, dtype=int)
        stop = np.asarray(stop_zyx, dtype=int)
        origin = self.index_zyx_to_lps(start.astype(float))
        return ImageGeometry(tuple(stop - start), self.spacing_zyx_mm, tuple(origin), self.direction_lps)

    def same_grid(self, other: "ImageGeometry", tolerance_mm: float = 1e-3) -> bool:
        """True when both geometries describe the same voxel grid (shape, spacing, origin, direction)."""
        return (
            self.shape_zyx == other.shape_zyx
            and np.allclose(self.spacing_zyx_mm, other.spacing_zyx_mm, atol=tolerance_mm)
            and np.allclose(self.origin_lps_mm, other.origin_lps_mm, atol=tolerance_mm)
            and np.allclose(self.direction_lps, other.direction_lps, atol=1e-4)
        )

    def describe(self) -> str:
        return (
            f"shape (z, y, x) {self.shape_zyx}, spacing (z, y, x) "
            f"{tuple(round(s, 4) for s in self.spacing_zyx_mm)} mm, origin LPS "
            f"{tuple(round(o, 3) for o in self.origin_lps_mm)} mm"
        )

    # ------------------------------------------------------------------ SimpleITK bridge
    @classmethod
    def from_sitk(cls, image) -> "ImageGeometry":
        """Geometry of a 3-D ``SimpleITK.Image``."""
        if image.GetDimension() != 3:
            raise InputError(f"Expected a 3-D image, got a {image.GetDimension()}-D one.")
        size_xyz = image.GetSize()
        return cls(
            tuple(reversed(size_xyz)),
            tuple(reversed(image.GetSpacing())),
            tuple(image.GetOrigin()),
            np.asarray(image.GetDirection(), dtype=float).reshape(3, 3),
        )

    def apply_to_sitk(self, image) -> None:
        """Set spacing, origin and direction of a ``SimpleITK.Image`` (its size must match)."""
        if tuple(reversed(image.GetSize())) != self.shape_zyx:
            raise InputError(f"Image size {image.GetSize()} (x, y, z) does not match geometry {self.shape_zyx} (z, y, x).")
        image.SetSpacing(self.spacing_xyz_mm)
        image.SetOrigin(self.origin_lps_mm)
        image.SetDirection(tuple(float(v) for v in self.direction_lps.ravel()))


@dataclass
class Volume:
    """A 3-D array indexed (z, y, x) together with its :class:`ImageGeometry`."""

    array: np.ndarray
    geometry: ImageGeometry

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise InputError(f"A volume array must be 3-D (z, y, x); got shape {self.array.shape}.")
        if tuple(self.array.shape) != self.geometry.shape_zyx:
            raise InputError(f"Array shape {self.array.shape} does not match geometry shape {self.geometry.shape_zyx}.")

    @classmethod
    def from_sitk(cls, image) -> "Volume":
        import SimpleITK as sitk

        return cls(sitk.GetArrayFromImage(image), ImageGeometry.from_sitk(image))

    def to_sitk(self):
        import SimpleITK as sitk

        array = self.array
        if array.dtype == bool:
            array = array.astype(np.uint8)
        image = sitk.GetImageFromArray(np.ascontiguousarray(array))
        self.geometry.apply_to_sitk(image)
        return image

    def with_array(self, array: np.ndarray) -> "Volume":
        """A new volume on the same grid holding ``array``."""
        return Volume(array, self.geometry)
