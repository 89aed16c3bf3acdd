"""Volume nodes <-> engine volumes (arrays indexed (z, y, x) plus LPS geometry)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from LymphNodeQuantLib.errors import InputError
from LymphNodeQuantLib.geometry import ImageGeometry, Volume


def _matrix_to_array(vtk_matrix) -> np.ndarray:
    return np.array([[vtk_matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def geometry_of_volume_node(volume_node) -> ImageGeometry:
    """Engine geometry (LPS) of a volume node's voxel grid, in the node's own (local) coordinates."""
    import vtk

    image = volume_node.GetImageData()
    if image is None:
        raise InputError(f"Volume '{volume_node.GetName()}' holds no image data; load the image again.")
    dims_xyz = image.GetDimensions()
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(ijk_to_ras)
    return ImageGeometry.from_ijk_to_ras_matrix(_matrix_to_array(ijk_to_ras), tuple(reversed(dims_xyz)))


def check_volume_node(volume_node, role: str = "input CT volume") -> None:
    """Raise :class:`InputError` unless ``volume_node`` is a 3-D single-component scalar volume."""
    if volume_node is None:
        raise InputError(f"No {role} selected: choose one in the module's '{role}' selector or load a CT first.")
    if not volume_node.IsA("vtkMRMLScalarVolumeNode") or volume_node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputError(
            f"'{volume_node.GetName()}' is a {volume_node.GetClassName()}, not a CT image: select a scalar (grey-value) CT volume."
        )
    image = volume_node.GetImageData()
    if image is None:
        raise InputError(f"Volume '{volume_node.GetName()}' holds no image data; load the image again.")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(
            f"'{volume_node.GetName()}' has {image.GetNumberOfScalarComponents()} components per voxel (colour or vector image); select a CT volume."
        )
    if min(image.GetDimensions()) < 2:
        raise InputError(f"'{volume_node.GetName()}' is a single slice ({image.GetDimensions()} voxels); a 3-D CT is needed.")


def volume_from_node(volume_node, role: str = "input CT volume") -> Volume:
    """Copy a scalar volume node into an engine :class:`Volume` (array (z, y, x), LPS geometry).

    Parent transforms are not applied: results are put back under the same transform node.
    """
    import slicer.util

    check_volume_node(volume_node, role)
    array = np.array(slicer.util.arrayFromVolume(volume_node), copy=True)
    return Volume(array, geometry_of_volume_node(volume_node))


def set_volume_node_geometry(volume_node, geometry: ImageGeometry) -> None:
    import slicer.util

    volume_node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(geometry.ijk_to_ras_matrix()))


def add_volume_node(scene, volume: Volume, name: str, *, labelmap: bool = False, parent_transform_id: Optional[str] = None):
    """Add ``volume`` to ``scene`` as a new scalar (or label map) volume node with display nodes."""
    import slicer.util

    node_class = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(node_class, name)
    set_volume_node_geometry(node, volume.geometry)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(volume.array))
    node.CreateDefaultDisplayNodes()
    if parent_transform_id:
        node.SetAndObserveTransformNodeID(parent_transform_id)
    return node
