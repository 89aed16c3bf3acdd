"""Clicking a row of the measurement table centres the views on that row's node.

``qMRMLTableView`` shows a ``vtkMRMLTableNode`` through a ``QSortFilterProxyModel`` over a
``qMRMLTableModel``; without ``UseColumnTitleAsColumnHeader`` the model's row 0 is the column-name
row, so the view's row k is table row k - 1. The widget maps a click through the proxy and the
model (``tableRowFromViewIndex``); this runs that function on the real table node the module makes,
with the harness's replica of the two Qt models (Slicer's row layout), sorted and unsorted.
"""

from __future__ import annotations

import numpy as np
import pytest
import slicer_harness
from slicer_harness import slicer_scene as _slicer_scene_fixture  # noqa: F401  (registers the "slicer_scene" fixture)

pytestmark = pytest.mark.mrml


@pytest.fixture
def measured(slicer_scene):
    module = slicer_harness.load_module()
    from LymphNodeQuantMRML.segmentations import add_segmentation_node
    from LymphNodeQuantMRML.volumes import add_volume_node

    from LymphNodeQuantLib.synthetic import make_phantom

    phantom = make_phantom((30, 64, 64), (3.0, 5.0, 5.0), seed=8)
    ct = add_volume_node(slicer_scene, phantom.ct, "CT")
    reference = add_segmentation_node(slicer_scene, phantom.node_labels, "reference", reference_volume_node=ct)
    logic = module.LymphNodeQuantLogic()
    return module, logic, phantom, logic.measure(reference, ct)


def _clicked_node(module, logic, view, view_row):
    """The name of the segment the views centre on when ``view_row`` is clicked (None: no jump)."""
    table = view.mrmlTableNode()
    row = module.tableRowFromViewIndex(view, view.sortFilterProxyModel().index(view_row, 0))
    center = logic.nodeCenterRAS(table, row)
    if center is None:
        return None
    segmentation = logic.core.scene.GetNodeByID(table.GetAttribute("LymphNodeQuant.SegmentationNodeID"))
    names = [
        segmentation.GetSegmentation().GetNthSegment(i).GetName()
        for i in range(segmentation.GetSegmentation().GetNumberOfSegments())
    ]
    ids = [segmentation.GetSegmentation().GetNthSegmentID(i) for i in range(len(names))]
    hits = [name for name, segment_id in zip(names, ids) if np.allclose(segmentation.GetSegmentCenterRAS(segment_id), center)]
    assert len(hits) == 1, hits
    return hits[0]


def test_every_row_click_lands_on_its_own_node_also_after_sorting(measured):
    from LymphNodeQuantMRML import tables

    module, logic, phantom, table = measured
    assert table.GetUseColumnTitleAsColumnHeader()  # the header is the column name, not row 0
    view = slicer_harness.FakeTableView(table)
    proxy = view.sortFilterProxyModel()
    name_column = [table.GetTable().GetColumnName(c) for c in range(table.GetNumberOfColumns())].index(tables.SEGMENT_NAME_COLUMN)
    short_axis_column = [table.GetTable().GetColumnName(c) for c in range(table.GetNumberOfColumns())].index("short_axis_mm")
    rows = table.GetNumberOfRows()
    assert rows >= 3 and view.tableModel().rowCount() == rows
    for sort in (None, (short_axis_column, True), (name_column, False)):
        if sort is not None:
            proxy.sort(*sort)
        for view_row in range(rows):
            shown = proxy.data(proxy.index(view_row, name_column))  # "Lymph node N", as the user sees it
            assert _clicked_node(module, logic, view, view_row) == shown, (sort, view_row)
    assert module.tableRowFromViewIndex(view, proxy.index(rows, 0)) == -1  # below the last row: nothing


def test_a_table_showing_column_names_as_row_0_is_mapped_through_the_model(measured):
    module, logic, phantom, table = measured
    table.SetUseColumnTitleAsColumnHeader(False)  # e.g. a table another module made
    view = slicer_harness.FakeTableView(table)
    assert view.tableModel().rowCount() == table.GetNumberOfRows() + 1
    assert _clicked_node(module, logic, view, 0) is None  # the column-name row
    for view_row in range(1, table.GetNumberOfRows() + 1):
        assert _clicked_node(module, logic, view, view_row) == table.GetTable().GetValue(view_row - 1, 0).ToString()


@pytest.mark.parametrize("titles_as_header", [True, False])
@pytest.mark.parametrize("transposed", [False, True])
def test_qt_free_row_rule_equals_the_models(measured, titles_as_header, transposed):
    from LymphNodeQuantMRML import tables

    _, _, _, table = measured
    table.SetUseColumnTitleAsColumnHeader(titles_as_header)
    model = slicer_harness.FakeTableView(table, transposed=transposed).tableModel()
    for row in range(model.rowCount()):
        for column in range(min(model.columnCount(), 3)):
            index = model.index(row, column)
            assert tables.mrml_table_row(table, row, column, transposed) == model.mrmlTableRowIndex(index)
