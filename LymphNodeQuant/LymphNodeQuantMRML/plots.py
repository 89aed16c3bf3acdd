"""A plot chart node showing one bar per lymph node (e.g. its short-axis diameter)."""

from __future__ import annotations

from typing import Optional


def add_bar_chart(
    scene,
    table_node,
    y_column: str,
    *,
    x_column: Optional[str] = None,
    label_column: Optional[str] = None,
    title: str = "",
    y_axis_title: str = "",
    x_axis_title: str = "Lymph node",
    existing_chart=None,
):
    """Add (or refill) a bar chart of ``table_node[y_column]`` with one bar per row.

    Returns the ``vtkMRMLPlotChartNode``; its series node references ``table_node``.
    """
    import slicer

    chart = existing_chart or scene.AddNewNodeByClass("vtkMRMLPlotChartNode", scene.GenerateUniqueName(title or y_column))
    series = None
    if chart.GetNumberOfPlotSeriesNodes() > 0:
        series = chart.GetNthPlotSeriesNode(0)
    if series is None:
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", scene.GenerateUniqueName(f"{title or y_column} series"))
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    series.SetAndObserveTableNodeID(table_node.GetID())
    series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeBar)
    if x_column:
        series.SetXColumnName(x_column)
    series.SetYColumnName(y_column)
    if label_column:
        series.SetLabelColumnName(label_column)
    series.SetColor(0.337, 0.706, 0.914)
    chart.SetTitle(title)
    chart.SetXAxisTitle(x_axis_title)
    chart.SetYAxisTitle(y_axis_title or y_column)
    chart.SetLegendVisibility(False)
    return chart
