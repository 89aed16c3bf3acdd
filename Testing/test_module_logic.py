"""The module's Logic from the Python console: background process, cancel, outputs, bad input.

Real pieces throughout: slicer-core's vtkMRMLScene, the packaged model, and ``lnq segment``
running as a separate process.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import slicer_harness
from slicer_harness import packaged_model as _packaged_model_fixture  # noqa: F401  (registers the "packaged_model" fixture)
from slicer_harness import slicer_scene as _slicer_scene_fixture  # noqa: F401  (registers the "slicer_scene" fixture)

pytestmark = pytest.mark.mrml

SHAPE_ZYX = (40, 96, 96)
SPACING_ZYX_MM = (3.0, 3.5, 3.5)


@pytest.fixture(scope="module")
def phantom():
    from LymphNodeQuantLib.synthetic import make_phantom

    return make_phantom(SHAPE_ZYX, SPACING_ZYX_MM, seed=21)


@pytest.fixture(scope="module")
def engine_labels(phantom, packaged_model):
    """The engine's own result for the phantom (what every MRML path must reproduce)."""
    from LymphNodeQuantLib.inference import segment_volume

    return segment_volume(phantom.ct, model="default", device="cpu", output="instances").labels


@pytest.fixture
def module(slicer_scene):
    """The module file, on a scene with the module logics a Slicer scene has."""
    return slicer_harness.load_module()


def _add_ct(scene, volume, name="CT"):
    from LymphNodeQuantMRML.volumes import add_volume_node

    return add_volume_node(scene, volume, name)


def _labels(segmentation_node, reference_volume_node=None):
    from LymphNodeQuantMRML.segmentations import labels_from_segmentation_node

    return labels_from_segmentation_node(segmentation_node, reference_volume_node).labels


def test_background_process_gives_the_same_segmentation_as_the_engine(module, mrml_scene, phantom, engine_labels):
    logic = module.LymphNodeQuantLogic()
    ct = _add_ct(mrml_scene, phantom.ct)
    fractions = []
    background = logic.segment(ct, model="default", device="cpu", background=True, progress=lambda f, s: fractions.append((f, s)))
    assert np.array_equal(_labels(background, ct).array, engine_labels.array)
    assert background.GetSegmentation().GetNumberOfSegments() == len(np.unique(engine_labels.array)) - 1
    assert fractions, "no progress lines came from the engine process"
    values = [f for f, _ in fractions]
    assert all(0.0 <= f <= 1.0 for f in values) and values == sorted(values)
    assert all(stage for _, stage in fractions)
    assert background.GetAttribute("LymphNodeQuant.ModelName") == "lnq-chest-unet"
    assert background.GetAttribute("LymphNodeQuant.ModelVersion")
    # the post-processing's dropped-candidate counts travel from the engine process onto the node
    dropped = json.loads(background.GetAttribute("LymphNodeQuant.DroppedCandidates"))
    assert set(dropped) == {"too_small", "air_or_lung", "bone_or_contrast", "outside_mediastinum"}
    assert background.GetAttribute("LymphNodeQuant.HasMediastinum") == "true"
    assert any("lymph node(s) found" in message for message in logic.messages)


def test_gui_flow_cancel_midway_kills_the_process_and_leaves_the_scene_unchanged(module, mrml_scene, phantom, packaged_model):
    from LymphNodeQuantMRML.transaction import node_ids

    from LymphNodeQuantLib.errors import CancelledError

    logic = module.LymphNodeQuantLogic()
    ct = _add_ct(mrml_scene, phantom.ct)
    logic.getParameterNode()
    before = node_ids(mrml_scene)
    job = logic.startSegmentation(ct, "default", "cpu")
    folder = job._folder
    assert folder.is_dir()
    deadline = time.monotonic() + 120
    while job.fraction <= 0.0 and not job.poll() and time.monotonic() < deadline:
        time.sleep(0.02)  # what the GUI's timer does, without blocking between polls
    assert job.process.running, "the engine finished before it could be cancelled: " + "\n".join(job.process.log)
    pid = job.process.process.pid
    job.cancel()
    assert job.process.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # no process of the group is left
    assert not folder.exists()
    with pytest.raises(CancelledError):
        logic.finishSegmentation(job, ct)
    assert node_ids(mrml_scene) == before


def test_existing_segmentation_is_replaced_only_when_chosen(module, mrml_scene, phantom, engine_labels):
    from LymphNodeQuantMRML.core import SegmentationOutcome, model_card_of
    from LymphNodeQuantMRML.segmentations import add_segmentation_node

    logic = module.LymphNodeQuantLogic()
    ct = _add_ct(mrml_scene, phantom.ct)
    manual = add_segmentation_node(mrml_scene, phantom.node_labels, "manual", reference_volume_node=ct)
    manual_labels = _labels(manual, ct).array.copy()
    outcome = SegmentationOutcome(engine_labels, model_card_of("default"), "cpu")  # what a finished run hands over
    new = logic.core.add_segmentation(ct, outcome)
    assert new.GetID() != manual.GetID()
    assert np.array_equal(_labels(manual, ct).array, manual_labels)
    replaced = logic.segment(ct, model="default", device="cpu", outputSegmentationNode=manual)
    assert replaced is manual
    assert np.array_equal(_labels(manual, ct).array, engine_labels.array)
    assert manual.GetAttribute("LymphNodeQuant.ModelName") == "lnq-chest-unet"


def test_a_ct_without_nodes_gives_an_empty_result_not_an_error(module, mrml_scene, packaged_model, shared_data):
    from LymphNodeQuantLib.io import read_volume

    logic = module.LymphNodeQuantLogic()
    # A real abdominal CT (lung bases only): no mediastinum, so no mediastinal node, and the module says why.
    ct = _add_ct(mrml_scene, read_volume(shared_data / "totalseg-example" / "example_ct_sm.nii.gz"), "abdomen")
    segmentation = logic.segment(ct, model="default", device="cpu")
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 0
    assert any("No lymph nodes found" in message for message in logic.messages)
    assert any("No mediastinum in this scan" in message for message in logic.messages)
    assert segmentation.GetAttribute("LymphNodeQuant.HasMediastinum") == "false"
    table = logic.measure(segmentation, ct)
    assert table.GetNumberOfRows() == 0
    assert table.GetColumnUnitLabel("short_axis_mm") == "mm"


def test_measure_table_matches_the_engine_and_marks_enlarged_nodes(module, mrml_scene, phantom):
    from LymphNodeQuantMRML import tables
    from LymphNodeQuantMRML.segmentations import add_segmentation_node

    from LymphNodeQuantLib.measure import NODE_TABLE_COLUMNS, measure_nodes, measurements_to_rows

    logic = module.LymphNodeQuantLogic()
    ct = _add_ct(mrml_scene, phantom.ct)
    reference = add_segmentation_node(mrml_scene, phantom.node_labels, "reference", reference_volume_node=ct)
    table = logic.measure(reference, ct)
    expected = []  # one row per node id (the phantom's nodes may touch: each id is its own node)
    for value in sorted(int(v) for v in np.unique(phantom.node_labels.array) if v):
        mask = phantom.node_labels.with_array((phantom.node_labels.array == value).astype(np.uint8))
        expected += measurements_to_rows(measure_nodes(mask, phantom.ct))
    assert table.GetNumberOfRows() == len(expected) > 0
    for name, unit, _ in NODE_TABLE_COLUMNS:
        assert table.GetTable().GetColumnByName(name) is not None, name
        assert (table.GetColumnUnitLabel(name) or "") == (unit or "")
    for column in ("short_axis_mm", "volume_ml"):
        assert np.allclose(tables.column_values(table, column), [row[column] for row in expected], equal_nan=True)
    assert tables.column_values(table, "enlarged") == [int(bool(row["enlarged"])) for row in expected]
    # each row names its segment, and the row's centre is inside that node
    rows = tables.table_row_dicts(table)
    assert all(row[tables.SEGMENT_NAME_COLUMN].startswith("Lymph node ") for row in rows)
    chart = mrml_scene.GetNodeByID(table.GetAttribute("LymphNodeQuant.PlotChartNodeID"))
    assert chart is not None and chart.GetNthPlotSeriesNode(0).GetTableNodeID() == table.GetID()
    center = np.array(logic.nodeCenterRAS(table, 0))
    index_zyx = np.round(phantom.ct.geometry.lps_to_index_zyx(center * np.array([-1, -1, 1]))).astype(int)
    value = int(rows[0][tables.SEGMENT_NAME_COLUMN].split()[-1])
    assert phantom.node_labels.array[tuple(index_zyx)] == value


def test_reference_on_another_grid_is_resampled_and_scored_like_the_engine(module, mrml_scene, phantom):
    from LymphNodeQuantMRML import tables
    from LymphNodeQuantMRML.segmentations import add_segmentation_node

    from LymphNodeQuantLib.evaluate import evaluate_case, resample_labels_onto
    from LymphNodeQuantLib.geometry import ImageGeometry

    logic = module.LymphNodeQuantLogic()
    ct = _add_ct(mrml_scene, phantom.ct)
    prediction = add_segmentation_node(mrml_scene, phantom.partial_labels, "prediction", reference_volume_node=ct)
    grid = phantom.ct.geometry
    fine_grid = ImageGeometry(
        tuple(2 * n for n in grid.shape_zyx), tuple(s / 2 for s in grid.spacing_zyx_mm), grid.origin_lps_mm, grid.direction_lps
    )
    fine_reference = resample_labels_onto(phantom.node_labels, fine_grid)
    reference = add_segmentation_node(mrml_scene, fine_reference, "fine reference")
    table = logic.compare(prediction, reference)
    assert any("resampled onto the reference grid" in message for message in logic.messages)
    rows = {row["metric"]: row["value"] for row in tables.table_row_dicts(table)}
    engine = evaluate_case(
        phantom.partial_labels, fine_reference, foreground="nonzero", resample_prediction=True, detection_nodes="labels"
    )
    for metric in ("dice", "assd_mm", "hd95_mm", "true_positives", "false_negatives", "false_positives", "reference_nodes"):
        assert rows[metric] == pytest.approx(float(getattr(engine, metric)), abs=1e-9), metric
    assert rows["resampled_prediction"] == 1.0
    assert 0.0 < rows["dice"] < 1.0 and rows["false_negatives"] > 0  # partial annotation: nodes missed
    detection = mrml_scene.GetNodeByID(table.GetAttribute("LymphNodeQuant.DetectionTableNodeID"))
    detection_rows = tables.table_row_dicts(detection)
    assert [row["short_axis_bin_mm"] for row in detection_rows] == [row["short_axis_bin_mm"] for row in engine.detection_bins]
    assert sum(row["reference_nodes"] for row in detection_rows) == engine.reference_nodes


def test_compare_refuses_missing_or_identical_reference(module, mrml_scene, phantom):
    from LymphNodeQuantMRML.segmentations import add_segmentation_node

    from LymphNodeQuantLib.errors import InputError

    logic = module.LymphNodeQuantLogic()
    ct = _add_ct(mrml_scene, phantom.ct)
    prediction = add_segmentation_node(mrml_scene, phantom.node_labels, "prediction", reference_volume_node=ct)
    with pytest.raises(InputError, match="No reference segmentation"):
        logic.compare(prediction, None)
    with pytest.raises(InputError, match="itself"):
        logic.compare(prediction, prediction)


@pytest.mark.slow
def test_demo_case_end_to_end_from_files(module, mrml_scene, tmp_path, full_size, packaged_model):
    """Demo CT and reference loaded by Slicer's own storage nodes, segmented, measured, scored.

    Full size (``LNQ_FULL_SIZE=1``): the 512x512x110 ``lnq demo`` case. Reduced (default): the
    same flow on a small phantom written the same way. Both use the packaged model.
    """
    import slicer
    from LymphNodeQuantMRML import tables

    from LymphNodeQuantLib.evaluate import evaluate_case
    from LymphNodeQuantLib.io import read_volume
    from LymphNodeQuantLib.synthetic import make_phantom, write_lnq_case

    if full_size:
        from LymphNodeQuantLib.cli import main

        assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
        ct_path, seg_path = tmp_path / "demo" / "demo-ct.nrrd", tmp_path / "demo" / "demo-seg.nrrd"
    else:
        write_lnq_case(make_phantom(SHAPE_ZYX, SPACING_ZYX_MM, seed=2023), tmp_path, "demo", annotation="full")
        ct_path, seg_path = tmp_path / "demo-ct.nrrd", tmp_path / "demo-seg.nrrd"

    ct = mrml_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "demo-ct")
    storage = mrml_scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(ct_path))
    assert storage.ReadData(ct)
    labelmap = mrml_scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "demo-seg")
    storage = mrml_scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(seg_path))
    assert storage.ReadData(labelmap)
    reference = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "demo reference")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, reference)

    logic = module.LymphNodeQuantLogic()
    segmentation = logic.segment(ct, model="default", device="auto", background=True)
    table = logic.measure(segmentation, ct)
    assert table.GetNumberOfRows() == segmentation.GetSegmentation().GetNumberOfSegments() > 0
    scores = {row["metric"]: row["value"] for row in tables.table_row_dicts(logic.compare(segmentation, reference))}
    engine = evaluate_case(_labels(segmentation, ct), read_volume(seg_path), foreground="nonzero")
    assert scores["dice"] == pytest.approx(engine.dice, abs=1e-9)
    assert scores["dice"] > 0.3
