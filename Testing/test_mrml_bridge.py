"""The Qt-free MRML bridge on a real vtkMRMLScene (slicer-core): volumes, segmentations, tables."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from slicer_harness import MODULE_DIR

if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

from LymphNodeQuantLib.errors import InputError  # noqa: E402
from LymphNodeQuantLib.synthetic import make_phantom  # noqa: E402

pytestmark = pytest.mark.mrml


@pytest.fixture(scope="module")
def oblique_phantom():
    angle = np.deg2rad(20.0)
    direction = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    return make_phantom((30, 72, 64), (3.0, 4.0, 4.5), seed=3, origin_lps_mm=(10.0, -20.0, 55.0), direction_lps=direction)


def _bridge():
    from LymphNodeQuantMRML import segmentations, tables, terminology, transaction, volumes

    return volumes, segmentations, tables, terminology, transaction


def test_volume_node_round_trip_keeps_array_and_oblique_geometry(mrml_scene, oblique_phantom):
    volumes, *_ = _bridge()
    node = volumes.add_volume_node(mrml_scene, oblique_phantom.ct, "ct")
    volume = volumes.volume_from_node(node)
    assert np.array_equal(volume.array, oblique_phantom.ct.array)
    assert volume.array.dtype == oblique_phantom.ct.array.dtype
    assert volume.geometry.same_grid(oblique_phantom.ct.geometry, tolerance_mm=1e-4)
    # a copy, not a view into the node
    volume.array[0, 0, 0] += 1
    assert volumes.volume_from_node(node).array[0, 0, 0] == oblique_phantom.ct.array[0, 0, 0]


def test_bad_volume_nodes_get_clear_errors(mrml_scene, oblique_phantom):
    import slicer.util

    volumes, *_ = _bridge()
    with pytest.raises(InputError, match="No input CT volume selected"):
        volumes.volume_from_node(None)
    label_node = volumes.add_volume_node(mrml_scene, oblique_phantom.node_labels, "labels", labelmap=True)
    with pytest.raises(InputError, match="vtkMRMLLabelMapVolumeNode, not a CT image"):
        volumes.volume_from_node(label_node)
    empty = mrml_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InputError, match="holds no image data"):
        volumes.volume_from_node(empty)
    rgb = mrml_scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    slicer.util.updateVolumeFromArray(rgb, np.zeros((4, 5, 6, 3), np.uint8))
    with pytest.raises(InputError, match="3 components per voxel"):
        volumes.volume_from_node(rgb)
    model = mrml_scene.AddNewNodeByClass("vtkMRMLModelNode", "surface")
    with pytest.raises(InputError, match="not a CT image"):
        volumes.volume_from_node(model)


def test_labels_become_named_segments_with_terminology_colours_and_model_info(mrml_scene, oblique_phantom):
    volumes, segmentations, _, terminology, _ = _bridge()
    ct_node = volumes.add_volume_node(mrml_scene, oblique_phantom.ct, "ct")
    labels = oblique_phantom.node_labels
    values = [int(v) for v in np.unique(labels.array) if v]
    info = segmentations.ModelInfo(name="lnq-test", version="1.2.3", device="cpu", engine_version="0.1.0")
    node = segmentations.add_segmentation_node(mrml_scene, labels, "nodes", model_info=info, reference_volume_node=ct_node)

    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == len(values)
    colors = set()
    for value in values:
        segment_id = segmentations.segment_id_for_label(node, value)
        assert segment_id, f"no segment for label {value}"
        segment = segmentation.GetSegment(segment_id)
        assert segment.GetName() == f"Lymph node {value}"
        assert segment.GetLabelValue() == value
        codes = terminology.parse_terminology_entry(terminology.segment_terminology(segment))
        assert (codes["category"].scheme, codes["category"].value) == ("SCT", "85756007")
        assert (codes["type"].value, codes["type"].meaning) == ("59441001", "Lymph node")
        assert (codes["region"].value, codes["region"].meaning) == ("72410000", "Mediastinum")
        colors.add(tuple(round(c, 3) for c in segment.GetColor()))
    assert len(colors) == min(len(values), len(terminology.NODE_COLORS_RGB))
    assert node.GetAttribute(segmentations.ATTRIBUTE_MODEL_NAME) == "lnq-test"
    assert node.GetAttribute(segmentations.ATTRIBUTE_MODEL_VERSION) == "1.2.3"
    geometry = segmentations.reference_geometry_of_segmentation(node)
    assert geometry.same_grid(oblique_phantom.ct.geometry, tolerance_mm=1e-3)


def test_export_keeps_label_identity_after_removing_and_reordering_segments(mrml_scene, oblique_phantom):
    volumes, segmentations, *_ = _bridge()
    ct_node = volumes.add_volume_node(mrml_scene, oblique_phantom.ct, "ct")
    labels = oblique_phantom.node_labels
    node = segmentations.add_segmentation_node(mrml_scene, labels, "nodes", reference_volume_node=ct_node)
    export = segmentations.labels_from_segmentation_node(node, ct_node)
    assert np.array_equal(export.labels.array, labels.array)
    assert export.labels.geometry.same_grid(labels.geometry, tolerance_mm=1e-3)

    values = sorted(int(v) for v in np.unique(labels.array) if v)
    segmentation = node.GetSegmentation()
    segmentation.RemoveSegment(segmentations.segment_id_for_label(node, values[0]))
    last_id = segmentations.segment_id_for_label(node, values[-1])
    segmentation.SetSegmentIndex(last_id, 0)  # move the last node first
    export = segmentations.labels_from_segmentation_node(node)  # own reference geometry
    expected = np.where(labels.array == values[0], 0, labels.array)
    assert np.array_equal(export.labels.array, expected)
    assert export.segment_id_by_value[values[-1]] == last_id
    # the temporary export nodes are gone
    assert mrml_scene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems() == 0


def test_segments_with_other_names_get_free_values_and_duplicates_are_refused(mrml_scene, oblique_phantom):
    volumes, segmentations, *_ = _bridge()
    ct_node = volumes.add_volume_node(mrml_scene, oblique_phantom.ct, "ct")
    node = segmentations.add_segmentation_node(mrml_scene, oblique_phantom.node_labels, "nodes", reference_volume_node=ct_node)
    segmentation = node.GetSegmentation()
    highest = max(int(v) for v in np.unique(oblique_phantom.node_labels.array))
    first_id = segmentation.GetNthSegmentID(0)
    first_value = segmentation.GetSegment(first_id).GetLabelValue()
    segmentation.GetSegment(first_id).SetName("station 4R")
    export = segmentations.labels_from_segmentation_node(node, ct_node)
    assert export.segment_name_by_value[highest + 1] == "station 4R"
    assert np.array_equal(export.labels.array == highest + 1, oblique_phantom.node_labels.array == first_value)

    segmentation.GetSegment(segmentation.GetNthSegmentID(1)).SetName("station 4R")
    with pytest.raises(InputError, match="unique"):
        segmentations.labels_from_segmentation_node(node, ct_node)


def test_empty_labels_give_an_empty_segmentation_on_the_reference_grid(mrml_scene, oblique_phantom):
    volumes, segmentations, *_ = _bridge()
    ct_node = volumes.add_volume_node(mrml_scene, oblique_phantom.ct, "ct")
    empty = oblique_phantom.node_labels.with_array(np.zeros_like(oblique_phantom.node_labels.array))
    node = segmentations.add_segmentation_node(mrml_scene, empty, "nothing", reference_volume_node=ct_node)
    assert node.GetSegmentation().GetNumberOfSegments() == 0
    export = segmentations.labels_from_segmentation_node(node)
    assert not export.labels.array.any()
    assert export.labels.geometry.same_grid(oblique_phantom.ct.geometry, tolerance_mm=1e-3)


def test_seg_nrrd_save_and_reload_round_trips(mrml_scene, oblique_phantom, tmp_path):
    import vtk

    volumes, segmentations, _, terminology, _ = _bridge()
    ct_node = volumes.add_volume_node(mrml_scene, oblique_phantom.ct, "ct")
    info = segmentations.ModelInfo(name="lnq-test", version="2.0", device="cpu", engine_version="0.1.0")
    node = segmentations.add_segmentation_node(
        mrml_scene, oblique_phantom.node_labels, "nodes", model_info=info, reference_volume_node=ct_node
    )
    writer = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    writer.SetFileName(str(tmp_path / "nodes.seg.nrrd"))
    assert writer.WriteData(node)

    reloaded = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "reloaded")
    reader = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    reader.SetFileName(str(tmp_path / "nodes.seg.nrrd"))
    assert reader.ReadData(reloaded)
    export = segmentations.labels_from_segmentation_node(reloaded, ct_node)
    assert np.array_equal(export.labels.array, oblique_phantom.node_labels.array)
    segment = reloaded.GetSegmentation().GetNthSegment(0)
    codes = terminology.parse_terminology_entry(terminology.segment_terminology(segment))
    assert codes["type"].value == "59441001" and codes["region"].value == "72410000"
    version = vtk.reference("")
    assert segment.GetTag(segmentations.ATTRIBUTE_MODEL_VERSION, version) and str(version) == "2.0"
    # and the file is readable by the engine's own reader as a label map on the CT grid
    from LymphNodeQuantLib.io import read_volume

    from_file = read_volume(tmp_path / "nodes.seg.nrrd")
    assert from_file.geometry.same_grid(oblique_phantom.ct.geometry, tolerance_mm=1e-3)
    assert np.array_equal(from_file.array, oblique_phantom.node_labels.array)


def test_transaction_removes_only_the_nodes_added_inside_a_failed_block(mrml_scene, oblique_phantom):
    volumes, segmentations, _, _, transaction = _bridge()
    ct_node = volumes.add_volume_node(mrml_scene, oblique_phantom.ct, "ct")
    before = transaction.node_ids(mrml_scene)
    with pytest.raises(RuntimeError):
        with transaction.SceneTransaction(mrml_scene):
            segmentations.add_segmentation_node(mrml_scene, oblique_phantom.node_labels, "nodes", reference_volume_node=ct_node)
            mrml_scene.AddNewNodeByClass("vtkMRMLTableNode", "table")
            raise RuntimeError("cancelled midway")
    assert transaction.node_ids(mrml_scene) == before
    with transaction.SceneTransaction(mrml_scene) as kept:
        mrml_scene.AddNewNodeByClass("vtkMRMLTableNode", "table")
    assert len(kept.added_node_ids()) == 1 and len(transaction.node_ids(mrml_scene)) == len(before) + 1


def test_table_node_carries_units_descriptions_and_typed_columns(mrml_scene):
    import vtk
    from LymphNodeQuantMRML import plots, tables

    rows = [
        {"node_id": 1, "short_axis_mm": 12.5, "enlarged": True, "centroid_ras_mm": (1.0, 2.0, 3.0)},
        {"node_id": 2, "short_axis_mm": 6.25, "enlarged": False, "centroid_ras_mm": (4.0, 5.0, 6.0)},
    ]
    columns = [
        ("node_id", "", "Node number"),
        ("short_axis_mm", "mm", "RECIST short axis"),
        ("enlarged", "", "short axis >= 10 mm"),
        ("centroid_ras_mm", "mm", "centre"),
    ]
    table = tables.add_table_node(mrml_scene, "nodes", rows, columns)
    assert table.GetNumberOfRows() == 2
    assert table.GetColumnUnitLabel("short_axis_mm") == "mm"
    assert table.GetColumnDescription("short_axis_mm") == "RECIST short axis"
    assert isinstance(table.GetTable().GetColumnByName("short_axis_mm"), vtk.vtkDoubleArray)
    assert tables.column_values(table, "enlarged") == [1, 0]
    assert tables.column_values(table, "short_axis_mm") == [12.5, 6.25]
    assert tables.column_values(table, "centroid_ras_mm")[1] == "4.00 5.00 6.00"
    chart = plots.add_bar_chart(mrml_scene, table, "short_axis_mm", label_column="node_id", title="short axis")
    series = chart.GetNthPlotSeriesNode(0)
    assert series.GetTableNodeID() == table.GetID() and series.GetYColumnName() == "short_axis_mm"
    assert series.GetPlotType() == series.PlotTypeBar
    # refilling replaces, not appends
    tables.fill_table_node(table, rows[:1], columns)
    assert table.GetNumberOfRows() == 1 and table.GetNumberOfColumns() == len(columns)
