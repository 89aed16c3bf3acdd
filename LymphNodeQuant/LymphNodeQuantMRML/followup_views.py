"""Show a follow-up comparison: baseline and follow-up CT side by side over the waterfall chart; centre both on a node.

MRML only (no Qt): Slicer's layout manager follows the layout node's view arrangement and each
slice view shows what its slice composite node names. Slicer's own side-by-side layout
(``vtkMRMLLayoutNode.SlicerLayoutSideBySideView``, 29) shows the Red and Yellow slice views, both
axial; :data:`LAYOUT_XML` is that layout with a plot view below it for the chart. The baseline
CT goes into the Red view, the follow-up CT into the Yellow view, each with its own segmentation
(shown in that view only), and a table row click centres each view on the node in its own CT.
"""

from __future__ import annotations

from typing import Optional

from .followup import (
    ATTRIBUTE_BASELINE_SEGMENTATION_ID,
    ATTRIBUTE_BASELINE_VOLUME_ID,
    ATTRIBUTE_FOLLOWUP_SEGMENTATION_ID,
    ATTRIBUTE_FOLLOWUP_VOLUME_ID,
    ATTRIBUTE_PLOT_CHART_ID,
    node_centers_ras,
)

BASELINE_VIEW, FOLLOWUP_VIEW, PLOT_VIEW = "Red", "Yellow", "PlotView1"
#: a layout id of our own: Slicer's built-in layouts use 0-100 (vtkMRMLLayoutNode::SlicerLayout), extensions' custom ones above
LAYOUT_ID = 1401
_SLICE_VIEW = (
    '<item><view class="vtkMRMLSliceNode" singletontag="{name}">'
    '<property name="orientation" action="default">Axial</property>'
    '<property name="viewlabel" action="default">{label}</property>'
    '<property name="viewcolor" action="default">{color}</property></view></item>'
)
LAYOUT_XML = (
    '<layout type="vertical" split="true">'
    '<item splitSize="600"><layout type="horizontal">'
    + _SLICE_VIEW.format(name=BASELINE_VIEW, label="R", color="#F34A33")
    + _SLICE_VIEW.format(name=FOLLOWUP_VIEW, label="Y", color="#EDD54C")
    + "</layout></item>"
    f'<item splitSize="300"><view class="vtkMRMLPlotViewNode" singletontag="{PLOT_VIEW}">'
    '<property name="viewlabel" action="default">P</property></view></item>'
    "</layout>"
)


def view_node(scene, class_name: str, layout_name: str):
    """The view node (slice, slice composite, plot) of the view named ``layout_name``, or None."""
    for index in range(scene.GetNumberOfNodesByClass(class_name)):
        node = scene.GetNthNodeByClass(index, class_name)
        if node.GetLayoutName() == layout_name:
            return node
    return None


def show_side_by_side_layout(scene) -> bool:
    """Switch to :data:`LAYOUT_XML` (registered once on the layout node); False when the scene has no layout node."""
    layout_node = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    if layout_node is None:
        return False
    if layout_node.IsLayoutDescription(LAYOUT_ID):
        layout_node.SetLayoutDescription(LAYOUT_ID, LAYOUT_XML)
    else:
        layout_node.AddLayoutDescription(LAYOUT_ID, LAYOUT_XML)
    layout_node.SetViewArrangement(LAYOUT_ID)
    return True


def _show_only_in(segmentation_node, view_ids: list[str]) -> None:
    display_node = segmentation_node.GetDisplayNode() if segmentation_node is not None else None
    if display_node is None or not view_ids:
        return
    display_node.RemoveAllViewNodeIDs()
    for view_id in view_ids:
        display_node.AddViewNodeID(view_id)
    display_node.SetVisibility(True)


def _show_chart(scene, chart_id: str) -> None:
    selection = scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
    if selection is not None:
        selection.SetActivePlotChartID(chart_id)
    plot_view = view_node(scene, "vtkMRMLPlotViewNode", PLOT_VIEW)
    if plot_view is not None:
        plot_view.SetPlotChartNodeID(chart_id)


def show_followup(scene, table_node, hidden_segmentation_node=None) -> None:
    """Side-by-side layout: baseline CT and segmentation in the Red view, follow-up in the Yellow view, chart below.

    The baseline segmentation is shown in the Red view (and the 3D views), the follow-up one in
    the Yellow view only; ``hidden_segmentation_node`` (the follow-up segmentation the comparison
    renumbered into a new node) is hidden. Only display settings change, never a segment.
    """
    show_side_by_side_layout(scene)
    three_d = [
        scene.GetNthNodeByClass(i, "vtkMRMLViewNode").GetID() for i in range(scene.GetNumberOfNodesByClass("vtkMRMLViewNode"))
    ]
    for view, volume_key, segmentation_key, extra in (
        (BASELINE_VIEW, ATTRIBUTE_BASELINE_VOLUME_ID, ATTRIBUTE_BASELINE_SEGMENTATION_ID, three_d),
        (FOLLOWUP_VIEW, ATTRIBUTE_FOLLOWUP_VOLUME_ID, ATTRIBUTE_FOLLOWUP_SEGMENTATION_ID, []),
    ):
        composite = view_node(scene, "vtkMRMLSliceCompositeNode", view)
        if composite is not None:
            composite.SetBackgroundVolumeID(table_node.GetAttribute(volume_key))
        slice_node = view_node(scene, "vtkMRMLSliceNode", view)
        if slice_node is not None:
            _show_only_in(scene.GetNodeByID(table_node.GetAttribute(segmentation_key) or ""), [slice_node.GetID(), *extra])
    if hidden_segmentation_node is not None and hidden_segmentation_node.GetDisplayNode() is not None:
        hidden_segmentation_node.GetDisplayNode().SetVisibility(False)
    chart_id = table_node.GetAttribute(ATTRIBUTE_PLOT_CHART_ID)
    if chart_id:
        _show_chart(scene, chart_id)


def center_views_on_row(scene, table_node, row: int) -> tuple[Optional[tuple], Optional[tuple]]:
    """Centre the Red view on the row's node in the baseline CT and the Yellow view on it in the follow-up CT.

    Returns the (baseline, follow-up) world RAS centres used (None where a view was not moved).
    """
    centers = node_centers_ras(scene, table_node, row)
    for view, center in zip((BASELINE_VIEW, FOLLOWUP_VIEW), centers):
        slice_node = view_node(scene, "vtkMRMLSliceNode", view)
        if slice_node is not None and center is not None:
            slice_node.JumpSliceByCentering(*center)
    return centers
