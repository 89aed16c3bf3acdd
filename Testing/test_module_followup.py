"""The module's follow-up: two CTs -> ``lnq followup`` in a background process -> nodes that keep their numbers.

Real pieces throughout: slicer-core's vtkMRMLScene, the module file through the harness, the engine
running as a separate process, and a phantom patient at two examinations related by a known motion
(``LymphNodeQuantLib.followup.known_pairs``: nodes grown, shrunk, unchanged, gone and new).
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import slicer_harness
from slicer_harness import packaged_model as _packaged_model_fixture  # noqa: F401  (registers the "packaged_model" fixture)
from slicer_harness import slicer_scene as _slicer_scene_fixture  # noqa: F401  (registers the "slicer_scene" fixture)

pytestmark = pytest.mark.mrml


@pytest.fixture(scope="module")
def pair():
    from LymphNodeQuantLib.followup.known_pairs import make_phantom_pair

    return make_phantom_pair(seed=1)


@pytest.fixture(scope="module")
def engine_result(pair):
    """The engine's own comparison of the pair, in this process (what every module path must reproduce)."""
    from LymphNodeQuantLib.followup.compare import compare_examinations

    return compare_examinations(pair.baseline_ct, pair.followup_ct, pair.baseline_labels, pair.followup_labels)


@pytest.fixture
def module(slicer_scene):
    return slicer_harness.load_module()


def _add_pair(scene, pair, segmentations=("baseline", "followup")):
    """Both CTs as volume nodes, and the given segmentations as the user would have them."""
    from LymphNodeQuantMRML.segmentations import add_segmentation_node
    from LymphNodeQuantMRML.volumes import add_volume_node

    cts = {"baseline": add_volume_node(scene, pair.baseline_ct, "Baseline CT"), "followup": add_volume_node(scene, pair.followup_ct, "Follow-up CT")}  # fmt: skip
    given = {
        name: add_segmentation_node(scene, getattr(pair, f"{name}_labels"), f"{name} nodes", reference_volume_node=cts[name])
        for name in segmentations
    }
    return cts, given


def _content(segmentation_node, ct_node):
    """What a user's segmentation holds: its labels (by segment name), segment names and IDs."""
    from LymphNodeQuantMRML.segmentations import labels_from_segmentation_node

    export = labels_from_segmentation_node(segmentation_node, ct_node)
    return export.labels.array.copy(), dict(export.segment_name_by_value), dict(export.segment_id_by_value)


def _same_content(a, b) -> bool:
    return np.array_equal(a[0], b[0]) and a[1:] == b[1:]


def _labels(segmentation_node, ct_node):
    from LymphNodeQuantMRML.segmentations import labels_from_segmentation_node

    return labels_from_segmentation_node(segmentation_node, ct_node).labels


def _centroid_lps(labels, value):
    return labels.geometry.index_zyx_to_lps(np.argwhere(labels.array == value).mean(axis=0))


def test_background_comparison_keeps_the_baseline_numbers_and_the_users_nodes(module, slicer_scene, pair, engine_result):
    from LymphNodeQuantMRML import tables
    from LymphNodeQuantMRML.followup import ATTRIBUTE_PLOT_CHART_ID

    from LymphNodeQuantLib.followup.report import COLUMN_NAMES, node_rows

    cts, given = _add_pair(slicer_scene, pair)
    before = {name: _content(given[name], cts[name]) for name in given}
    logic = module.LymphNodeQuantLogic()
    fractions = []
    nodes = logic.followup(cts["baseline"], cts["followup"], given["baseline"], given["followup"], device="cpu",
                           progress=lambda fraction, stage: fractions.append((fraction, stage)))  # fmt: skip

    values = [f for f, _ in fractions]
    assert fractions and values == sorted(values) and 0.0 <= values[0] and values[-1] == 1.0, "progress from the process"
    assert all(stage for _, stage in fractions)
    for name in given:  # the user's nodes are untouched, and the baseline one is reused: it carries the numbers
        assert _same_content(_content(given[name], cts[name]), before[name]), name
    assert nodes.baseline_segmentation is given["baseline"] and not nodes.created_baseline_segmentation
    assert nodes.followup_segmentation.GetID() not in (given["baseline"].GetID(), given["followup"].GetID())

    renumbered = _labels(nodes.followup_segmentation, cts["followup"])
    new_number = int(pair.baseline_labels.array.max()) + 1
    for known in pair.nodes:
        if known.followup_label is None:  # gone at follow-up: no segment with its number there
            assert not np.any(renumbered.array == known.baseline_label)
            continue
        number = known.baseline_label or new_number  # a new node comes after every baseline number
        assert np.array_equal(renumbered.array == number, pair.followup_labels.array == known.followup_label), number
        segment_id = nodes.followup_segmentation.GetSegmentation().GetSegmentIdBySegmentName(f"Lymph node {number}")
        assert segment_id, number
        if known.baseline_label is not None:  # the same physical node: its follow-up centroid, moved back by the known motion
            moved_back = pair.transform.followup_to_baseline(_centroid_lps(renumbered, number)[None])[0]
            assert np.linalg.norm(moved_back - _centroid_lps(pair.baseline_labels, number)) < 2.5, number

    # the table is the engine's, row for row, with the segment name first and column titles as header
    rows = tables.table_row_dicts(nodes.table)
    expected = node_rows(engine_result)
    assert [(r["segment"], r["node_id"], r["status"]) for r in rows] == [(f"Lymph node {e['node_id']}", e["node_id"], e["status"]) for e in expected]  # fmt: skip
    assert [nodes.table.GetTable().GetColumnName(i) for i in range(nodes.table.GetNumberOfColumns())] == [
        "segment",
        *COLUMN_NAMES,
    ]
    assert nodes.table.GetUseColumnTitleAsColumnHeader() and nodes.table.GetColumnUnitLabel("short_axis_change_mm") == "mm"
    for row, engine in zip(rows, expected):
        for column in ("short_axis_change_mm", "volume_change_percent", "followup_slice_index", "centroid_residual_mm"):
            # abs 1e-3: the registration (multithreaded ITK) may differ in the last digits between two processes
            assert row[column] == pytest.approx(np.nan if engine[column] is None else engine[column], nan_ok=True, abs=1e-3)
        assert row["role"] == (engine["role"] or "")
    assert [row["status"] for row in rows] == ["matched"] * 4 + ["disappeared", "new"]

    response = engine_result.response
    assert nodes.response_text.splitlines()[: 1 + len(response.reasons)] == [
        f"Overall response ({response.criteria}): {response.overall_response}",
        *response.reasons,
    ]
    assert logic.followupResponseText(nodes.table) == nodes.response_text  # kept on the table (saved with the scene)
    assert any("4 matched, 1 new, 1 disappeared" in message for message in logic.messages)

    # waterfall: largest increase first, the chart draws that table
    changes = [row["change_percent"] for row in tables.table_row_dicts(nodes.waterfall_table)]
    known_changes = [c for c in changes if not np.isnan(c)]
    assert np.isnan(changes[0]) and known_changes == sorted(known_changes, reverse=True) and known_changes[-1] == -100.0
    chart = slicer_scene.GetNodeByID(nodes.table.GetAttribute(ATTRIBUTE_PLOT_CHART_ID))
    assert chart is nodes.chart and chart.GetNthPlotSeriesNode(0).GetTableNodeID() == nodes.waterfall_table.GetID()


def test_a_baseline_segmentation_without_node_numbers_is_left_alone_and_a_numbered_one_is_added(module, slicer_scene, pair):
    from LymphNodeQuantMRML import tables
    from LymphNodeQuantMRML.segmentations import add_segmentation_node

    cts, given = _add_pair(slicer_scene, pair, segmentations=("followup",))
    binary = pair.baseline_labels.with_array((pair.baseline_labels.array > 0).astype(np.uint8))
    user_baseline = add_segmentation_node(slicer_scene, binary, "baseline (one segment)", reference_volume_node=cts["baseline"])
    user_baseline.GetSegmentation().GetNthSegment(0).SetName("Lymph nodes")  # one segment for all nodes, as drawn by hand
    before = {"baseline": _content(user_baseline, cts["baseline"]), "followup": _content(given["followup"], cts["followup"])}
    logic = module.LymphNodeQuantLogic()
    nodes = logic.followup(cts["baseline"], cts["followup"], user_baseline, given["followup"], criteria="lugano", device="cpu")

    assert _same_content(_content(user_baseline, cts["baseline"]), before["baseline"])
    assert _same_content(_content(given["followup"], cts["followup"]), before["followup"])
    assert nodes.created_baseline_segmentation and nodes.baseline_segmentation.GetID() != user_baseline.GetID()
    assert any("'baseline (one segment)' is unchanged" in message for message in logic.messages)
    assert nodes.response_text.startswith("Overall response (Lugano 2014): ")
    baseline = _labels(nodes.baseline_segmentation, cts["baseline"]).array
    followup = _labels(nodes.followup_segmentation, cts["followup"]).array
    assert np.array_equal(baseline > 0, binary.array > 0)  # the same voxels, now one numbered segment per node
    for row in tables.table_row_dicts(nodes.table):  # each row's number names the same node in both new segmentations
        if row["status"] != "new":
            assert np.any(baseline == row["node_id"])
        if row["status"] != "disappeared":
            assert np.array_equal(followup == row["node_id"], pair.followup_labels.array == row["followup_segment_id"])


def test_a_baseline_without_segmentation_is_segmented_in_the_engine_process(module, slicer_scene, packaged_model):
    """No baseline segmentation: the packaged model makes one (a new node); the given follow-up nodes take its numbers."""
    from LymphNodeQuantMRML import tables

    from LymphNodeQuantLib.followup.known_pairs import make_phantom_pair

    small = make_phantom_pair(seed=2, shape_zyx=(32, 80, 80), spacing_zyx_mm=(3.0, 4.0, 4.0), margin_slices=4)
    cts, given = _add_pair(slicer_scene, small, segmentations=("followup",))
    before = _content(given["followup"], cts["followup"])
    logic = module.LymphNodeQuantLogic()
    nodes = logic.followup(cts["baseline"], cts["followup"], None, given["followup"], model=packaged_model, device="cpu")
    assert nodes.created_baseline_segmentation
    assert nodes.baseline_segmentation.GetAttribute("LymphNodeQuant.ModelName") == "lnq-chest-unet"
    assert _same_content(_content(given["followup"], cts["followup"]), before)
    assert any(message.startswith("baseline: ") and "lymph node(s) found" in message for message in logic.messages)
    rows = tables.table_row_dicts(nodes.table)
    baseline = _labels(nodes.baseline_segmentation, cts["baseline"])
    followup = _labels(nodes.followup_segmentation, cts["followup"])
    assert {int(v) for v in np.unique(baseline.array) if v} == {row["node_id"] for row in rows if row["status"] != "new"}
    assert {int(v) for v in np.unique(followup.array) if v} == {row["node_id"] for row in rows if row["status"] != "disappeared"}
    matched = [row["node_id"] for row in rows if row["status"] == "matched"]
    assert matched, "the packaged model found none of the phantom's nodes at baseline"
    for number in matched:  # "Lymph node N" is the same physical node at both examinations
        moved_back = small.transform.followup_to_baseline(_centroid_lps(followup, number)[None])[0]
        assert np.linalg.norm(moved_back - _centroid_lps(baseline, number)) < 5.0, number


def test_cancel_kills_the_process_tree_and_leaves_the_scene_unchanged(module, slicer_scene, pair):
    from LymphNodeQuantMRML.transaction import node_ids

    from LymphNodeQuantLib.errors import CancelledError

    cts, given = _add_pair(slicer_scene, pair)
    logic = module.LymphNodeQuantLogic()
    logic.getParameterNode()
    before = node_ids(slicer_scene)
    job = logic.startFollowup(cts["baseline"], cts["followup"], given["baseline"], given["followup"], device="cpu")
    folder = job._folder
    deadline = time.monotonic() + 120
    while job.fraction <= 0.0 and not job.poll() and time.monotonic() < deadline:
        time.sleep(0.02)  # what the GUI's timer does
    assert job.process.running, "the comparison finished before it could be cancelled: " + "\n".join(job.process.log)
    pid = job.process.process.pid
    job.cancel()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # no process of the group is left
    assert not folder.exists()
    with pytest.raises(CancelledError, match="Follow-up comparison cancelled"):
        logic.finishFollowup(job, cts["baseline"], cts["followup"], given["baseline"])
    assert node_ids(slicer_scene) == before


def test_a_failure_while_adding_the_nodes_leaves_the_scene_unchanged(module, slicer_scene, pair, engine_result):
    from LymphNodeQuantMRML.followup import FollowupOutcome, add_followup_nodes
    from LymphNodeQuantMRML.transaction import node_ids

    cts, given = _add_pair(slicer_scene, pair, segmentations=())
    outcome = FollowupOutcome.from_result(engine_result)
    del outcome.report["nodes"]  # a damaged report: the segmentations are added before the table fails
    before = node_ids(slicer_scene)
    with pytest.raises(KeyError):
        add_followup_nodes(slicer_scene, outcome, cts["baseline"], cts["followup"])
    assert node_ids(slicer_scene) == before


def test_bad_selections_are_refused_before_any_process_starts(module, slicer_scene, pair):
    from LymphNodeQuantLib.errors import InputError

    cts, given = _add_pair(slicer_scene, pair)
    logic = module.LymphNodeQuantLogic()
    with pytest.raises(InputError, match="Select both"):
        logic.startFollowup(cts["baseline"], None)
    with pytest.raises(InputError, match="same volume"):
        logic.startFollowup(cts["baseline"], cts["baseline"])
    with pytest.raises(InputError, match="same node"):
        logic.startFollowup(cts["baseline"], cts["followup"], given["baseline"], given["baseline"])
    with pytest.raises(InputError, match="Unknown response criteria"):
        logic.startFollowup(cts["baseline"], cts["followup"], criteria="who")


@pytest.fixture
def layout_logic(slicer_scene):
    """What Slicer's application adds to a scene: the application logic (selection node), the layout logic
    (layout node, slice and plot view nodes for the current layout) and one slice logic per slice view (its
    slice composite node)."""
    import slicer

    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(slicer_scene)
    application = slicer.vtkMRMLApplicationLogic()
    application.SetMRMLScene(slicer_scene)
    layout = slicer.vtkMRMLLayoutLogic()
    layout.SetMRMLScene(slicer_scene)
    slices = []
    for name in ("Red", "Yellow", "Green"):
        slice_logic = slicer.vtkMRMLSliceLogic()
        slice_logic.SetMRMLScene(slicer_scene)
        slice_logic.AddSliceNode(name)
        slices.append(slice_logic)
    yield layout
    for logic in [*slices, layout, application]:  # detached before the scene is cleared, as when Slicer closes
        logic.SetMRMLScene(None)


def test_side_by_side_views_and_row_clicks_centre_each_view_on_its_node(module, slicer_scene, layout_logic, pair, engine_result):
    import xml.etree.ElementTree as ElementTree

    import slicer
    from LymphNodeQuantMRML import followup_views, tables
    from LymphNodeQuantMRML.followup import FollowupOutcome

    cts, given = _add_pair(slicer_scene, pair)
    shift_ras = np.array([30.0, -12.0, 5.0])  # the follow-up CT sits under a transform: its views show it moved
    transform = slicer_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    transform.SetMatrixTransformToParent(
        slicer.util.vtkMatrixFromArray(np.block([[np.eye(3), shift_ras[:, None]], [0, 0, 0, 1]]))
    )
    cts["followup"].SetAndObserveTransformNodeID(transform.GetID())
    logic = module.LymphNodeQuantLogic()
    nodes = logic._addFollowup(FollowupOutcome.from_result(engine_result), cts["baseline"], cts["followup"], given["baseline"])
    before = {name: _content(given[name], cts[name]) for name in given}
    logic.showFollowup(nodes.table, hiddenSegmentationNode=given["followup"])

    layout_node = layout_logic.GetLayoutNode()
    assert layout_node.GetViewArrangement() == followup_views.LAYOUT_ID
    views = [(v.get("class"), v.get("singletontag")) for v in ElementTree.fromstring(followup_views.LAYOUT_XML).iter("view")]
    assert views == [("vtkMRMLSliceNode", "Red"), ("vtkMRMLSliceNode", "Yellow"), ("vtkMRMLPlotViewNode", "PlotView1")]
    assert followup_views.view_node(slicer_scene, "vtkMRMLPlotViewNode", "PlotView1").GetPlotChartNodeID() == nodes.chart.GetID()
    assert slicer_scene.GetNodeByID("vtkMRMLSelectionNodeSingleton").GetActivePlotChartID() == nodes.chart.GetID()
    red, yellow = (followup_views.view_node(slicer_scene, "vtkMRMLSliceNode", name) for name in ("Red", "Yellow"))
    for name, ct in (("Red", cts["baseline"]), ("Yellow", cts["followup"])):
        assert followup_views.view_node(slicer_scene, "vtkMRMLSliceCompositeNode", name).GetBackgroundVolumeID() == ct.GetID()
    baseline_display, followup_display = (
        nodes.baseline_segmentation.GetDisplayNode(),
        nodes.followup_segmentation.GetDisplayNode(),
    )
    assert baseline_display.IsDisplayableInView(red.GetID()) and not baseline_display.IsDisplayableInView(yellow.GetID())
    assert followup_display.IsDisplayableInView(yellow.GetID()) and not followup_display.IsDisplayableInView(red.GetID())
    assert not given["followup"].GetDisplayNode().GetVisibility()
    for name in given:  # only display settings changed
        assert _same_content(_content(given[name], cts[name]), before[name])

    baseline_labels, followup_labels = pair.baseline_labels, _labels(nodes.followup_segmentation, cts["followup"])
    view = slicer_harness.FakeTableView(nodes.table)
    view.sortFilterProxyModel().sort(list(tables.table_row_dicts(nodes.table)[0]).index("short_axis_change_mm"))
    for view_row in range(nodes.table.GetNumberOfRows()):  # each click, also in a sorted table, lands in its own node
        row = module.tableRowFromViewIndex(view, view.sortFilterProxyModel().index(view_row, 0))
        node_id, status = (tables.table_row_dicts(nodes.table)[row][key] for key in ("node_id", "status"))
        logic.centerFollowupViews(nodes.table, row)
        red_ras = np.array([red.GetSliceToRAS().GetElement(i, 3) for i in range(3)])
        yellow_ras = (
            np.array([yellow.GetSliceToRAS().GetElement(i, 3) for i in range(3)]) - shift_ras
        )  # back into the CT's own space
        red_lps, yellow_lps = red_ras * [-1, -1, 1], yellow_ras * [-1, -1, 1]
        if status != "new":
            assert _value_at(baseline_labels, red_lps) == node_id
        else:  # where the new node lies in baseline space: the known motion maps it there
            assert (
                np.linalg.norm(red_lps - pair.transform.followup_to_baseline(_centroid_lps(followup_labels, node_id)[None])[0])
                < 2.5
            )
        if status != "disappeared":
            assert _value_at(followup_labels, yellow_lps) == node_id
        else:  # where the vanished node would be at follow-up
            expected = pair.transform.baseline_to_followup(_centroid_lps(baseline_labels, node_id)[None])[0]
            assert np.linalg.norm(yellow_lps - expected) < 2.5
    assert logic.followupCentersRAS(nodes.table, nodes.table.GetNumberOfRows()) == (None, None)


def _value_at(labels, point_lps):
    index = np.round(labels.geometry.lps_to_index_zyx(point_lps)).astype(int)
    return int(labels.array[tuple(index)])
