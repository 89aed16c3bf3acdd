"""A phantom file loaded into a real vtkMRMLScalarVolumeNode keeps its LPS geometry as RAS."""

import numpy as np
import pytest

from LymphNodeQuantLib.io import write_volume
from LymphNodeQuantLib.synthetic import make_phantom

pytestmark = pytest.mark.mrml


def _matrix(vtk_matrix) -> np.ndarray:
    return np.array([[vtk_matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def test_phantom_nrrd_loads_with_oblique_lps_geometry(tmp_path, mrml_scene):
    import slicer.util
    import vtk

    angle = np.deg2rad(30.0)
    direction = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    phantom = make_phantom((24, 48, 40), (3.0, 4.0, 4.5), seed=5, origin_lps_mm=(12.5, -30.0, 101.0), direction_lps=direction)
    path = write_volume(tmp_path / "case-ct.nrrd", phantom.ct)

    volume_node = mrml_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "case")
    storage_node = mrml_scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage_node.SetFileName(str(path))
    assert storage_node.ReadData(volume_node) == 1

    ijk_to_ras = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(ijk_to_ras)
    expected = phantom.ct.geometry.ijk_to_ras_matrix()
    assert np.allclose(_matrix(ijk_to_ras), expected, atol=1e-4)
    # Explicitly: voxel (i, j, k) = (0, 0, 0) sits at the file origin with L and P negated.
    assert np.allclose(_matrix(ijk_to_ras)[:3, 3], [-12.5, 30.0, 101.0], atol=1e-4)
    array = slicer.util.arrayFromVolume(volume_node)
    assert array.shape == phantom.ct.array.shape  # (k, j, i) = (z, y, x)
    assert np.array_equal(array, phantom.ct.array)
