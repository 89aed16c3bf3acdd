"""``.seg.nrrd`` writing: Slicer's own storage node reads our segments, names, values and terminology."""

import numpy as np
import pytest

from LymphNodeQuantLib.codes import node_color, terminology_entry_text
from LymphNodeQuantLib.errors import InputError, OutputExistsError
from LymphNodeQuantLib.geometry import ImageGeometry, Volume
from LymphNodeQuantLib.io import read_volume
from LymphNodeQuantLib.models.model_folder import DEFAULT_LABELS, ModelCard
from LymphNodeQuantLib.segmentation_io import read_segmentation, write_segmentation


def node_labels():
    array = np.zeros((12, 20, 24), np.uint16)
    array[2:5, 3:7, 4:9] = 1
    array[7:10, 12:16, 14:20] = 2
    array[6, 2, 2] = 3
    direction = np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1]], float)
    return Volume(array, ImageGeometry(array.shape, (3.0, 0.8, 0.9), (10.0, -20.0, 30.0), direction))


def card():
    return ModelCard.from_dict(
        {
            "name": "m",
            "version": "2.1",
            "architecture": {"name": "x", "arguments": {}},
            "input": {"spacing_zyx_mm": [1, 1, 1], "normalization": {"mean": 0, "std": 1}, "patch_size_zyx": [8, 8, 8]},
            "labels": DEFAULT_LABELS,
            "weights": {"file": "w", "sha256": "0", "size_bytes": 0},
        }
    )


def test_write_and_read_back(tmp_path):
    labels = node_labels()
    path = write_segmentation(tmp_path / "nodes.seg.nrrd", labels, card())
    volume, segments = read_segmentation(path)
    assert np.array_equal(volume.array, labels.array) and volume.geometry.same_grid(labels.geometry)
    assert [s["name"] for s in segments] == ["Lymph node 1", "Lymph node 2", "Lymph node 3"]
    assert [s["label_value"] for s in segments] == [1, 2, 3]
    assert all("SCT^59441001^Lymph node" in s["tags"] and "SCT^72410000^Mediastinum" in s["tags"] for s in segments)
    header = path.read_bytes().split(b"\n\n")[0].decode()
    assert "space: left-posterior-superior" in header and "LymphNodeQuant_Model:=m 2.1" in header
    with pytest.raises(OutputExistsError):
        write_segmentation(path, labels)
    write_segmentation(path, labels, overwrite=True)


def test_binary_and_plain_label_map(tmp_path):
    binary = node_labels().with_array((node_labels().array > 0).astype(np.uint8))
    _, segments = read_segmentation(write_segmentation(tmp_path / "b.seg.nrrd", binary))
    assert [s["name"] for s in segments] == ["Lymph nodes"]
    plain = write_segmentation(tmp_path / "labels.nii.gz", node_labels())
    assert np.array_equal(read_volume(plain).array, node_labels().array)
    with pytest.raises(InputError, match="integers"):
        write_segmentation(tmp_path / "f.seg.nrrd", node_labels().with_array(np.zeros((12, 20, 24), np.float32)))


@pytest.mark.mrml
def test_slicer_storage_node_reads_our_file(tmp_path, mrml_scene):
    import slicer
    import vtk

    labels = node_labels()
    path = write_segmentation(tmp_path / "nodes.seg.nrrd", labels, card())
    node = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    mrml_scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(node) == 1
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 3
    names, values = [], []
    for index in range(3):
        segment = segmentation.GetNthSegment(index)
        names.append(segment.GetName())
        values.append(segment.GetLabelValue())
        entry = vtk.reference("")
        assert segment.GetTag(segment.GetTerminologyEntryTagName(), entry)  # the tag every Slicer version reads
        assert "SCT^59441001^Lymph node" in str(entry)
        assert segment.GetColor() == pytest.approx(node_color(segment.GetLabelValue()), abs=1e-5)  # as the module colours node N
    assert names == ["Lymph node 1", "Lymph node 2", "Lymph node 3"]
    assert values == [1, 2, 3]
    # voxel content: the second segment's binary labelmap holds node 2's voxel count
    labelmap = slicer.vtkOrientedImageData()
    node.GetBinaryLabelmapRepresentation(segmentation.GetNthSegmentID(1), labelmap)
    from vtk.util.numpy_support import vtk_to_numpy

    voxels = vtk_to_numpy(labelmap.GetPointData().GetScalars())
    assert int((voxels > 0).sum()) == int((labels.array == 2).sum())


def test_engine_terminology_text_is_what_slicer_serializes(mrml_scene):
    """The .seg.nrrd writer spells the entry by hand (no Slicer in the engine): it must equal Slicer's own."""
    import sys
    from pathlib import Path

    module_dir = str(Path(__file__).resolve().parents[1] / "LymphNodeQuant")  # where Slicer finds the module's packages
    if module_dir not in sys.path:
        sys.path.insert(0, module_dir)
    from LymphNodeQuantMRML import terminology

    assert terminology_entry_text() == terminology.terminology_entry()
    other = terminology.Code("SCT", "1234", "Other")
    assert terminology_entry_text(other, other, other) == terminology.terminology_entry(other, other, other)
