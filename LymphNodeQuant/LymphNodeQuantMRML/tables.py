"""Table nodes for per-node measurements and for the evaluation against a reference."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping, Optional, Sequence

#: table node attribute naming the segmentation a measurement table describes
ATTRIBUTE_SEGMENTATION_ID = "LymphNodeQuant.SegmentationNodeID"
#: column holding the segment ID of each row (used to jump to a node when its row is clicked)
SEGMENT_ID_COLUMN = "segment_id"
SEGMENT_NAME_COLUMN = "segment"


def _vtk_array_for(values: Sequence[Any]):
    """A VTK array type that holds ``values`` (bool -> int 0/1, numbers -> double, else string)."""
    import vtk

    non_null = [value for value in values if value is not None]
    if non_null and all(isinstance(value, bool) for value in non_null):
        return vtk.vtkIntArray()
    if non_null and all(isinstance(value, int) and not isinstance(value, bool) for value in non_null):
        return vtk.vtkIntArray()
    if all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in non_null):
        return vtk.vtkDoubleArray()
    return vtk.vtkStringArray()


def _cell(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return " ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in value)
    return value


def fill_table_node(table_node, rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str, str]]) -> None:
    """Replace the table's content: one column per ``(name, unit, description)``, one row per dict.

    Units and descriptions go into the table's column properties (shown as tooltips and saved with
    the table's schema file).
    """
    import vtk

    table_node.RemoveAllColumns()
    # Header = column name [unit]; without this qMRMLTableView shows the column names as row 0,
    # so view row k would be table row k - 1 (see mrml_table_row / the widget's row click).
    table_node.SetUseColumnTitleAsColumnHeader(True)
    table = table_node.GetTable()
    for name, unit, description in columns:
        values = [_cell(row.get(name)) for row in rows]
        array = _vtk_array_for(values)
        array.SetName(name)
        for value in values:
            if isinstance(array, vtk.vtkStringArray):
                array.InsertNextValue("" if value is None else str(value))
            elif isinstance(array, vtk.vtkIntArray):
                array.InsertNextValue(int(value) if value is not None else 0)
            else:
                array.InsertNextValue(math.nan if value is None else float(value))
        table.AddColumn(array)
        if unit:
            table_node.SetColumnUnitLabel(name, unit)
        if description:
            table_node.SetColumnDescription(name, description)
    table_node.Modified()


def mrml_table_row(table_node, model_row: int, model_column: int = 0, transposed: bool = False) -> int:
    """The table row that a ``qMRMLTableModel`` index shows (``qMRMLTableModel::mrmlTableRowIndex``).

    Unless the table uses column titles as header, the model's row 0 holds the column names and
    table row r is model row r + 1; a transposed model swaps rows and columns. Inside Slicer the
    widget asks the model itself; this is the same rule for code without Qt.
    """
    index = model_column if transposed else model_row
    return index if table_node.GetUseColumnTitleAsColumnHeader() else index - 1


def column_values(table_node, column_name: str) -> list[Any]:
    """The values of one column as Python objects."""
    column = table_node.GetTable().GetColumnByName(column_name)
    if column is None:
        raise KeyError(f"Table '{table_node.GetName()}' has no column '{column_name}'.")
    return [column.GetValue(index) for index in range(column.GetNumberOfTuples())]


def add_table_node(scene, name: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str, str]], existing=None):
    table_node = existing or scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
    fill_table_node(table_node, rows, columns)
    return table_node


def evaluation_rows(evaluation: Any) -> list[dict[str, Any]]:
    """(metric, value, unit, description) rows from an evaluation dataclass or dict.

    Scalar fields become one row each; ``*_mm`` fields are in millimetres; nested per-node lists are
    left to :func:`detection_rows`.
    """
    items = dataclasses.asdict(evaluation) if dataclasses.is_dataclass(evaluation) else dict(evaluation)
    rows = []
    for key, value in items.items():
        if not isinstance(value, (int, float)) or value is None:
            continue  # text and nested per-node results are not metrics
        unit = "mm" if key.endswith("_mm") else ("%" if key.endswith("_percent") else "")
        rows.append({"metric": key, "value": float(value), "unit": unit})
    return rows


EVALUATION_COLUMNS = (
    ("metric", "", "Metric name (LNQ2023 definitions: Dice on the foreground, ASSD and HD95 in mm)"),
    ("value", "", "Metric value (NaN where undefined, e.g. ASSD with an empty segmentation)"),
    ("unit", "", "Unit of the value"),
)


DETECTION_COLUMNS = (
    ("short_axis_bin_mm", "mm", "Short-axis size bin of the nodes (reference nodes by their size, predicted nodes by theirs)"),
    ("reference_nodes", "", "Reference nodes in the bin"),
    ("true_positives", "", "Reference nodes overlapped by a predicted node"),
    ("false_negatives", "", "Reference nodes missed"),
    ("predicted_nodes", "", "Predicted nodes in the bin"),
    ("false_positives", "", "Predicted nodes overlapping no reference node"),
    ("sensitivity", "", "true_positives / reference_nodes (NaN without reference nodes)"),
    ("precision", "", "matched predicted nodes / predicted_nodes (NaN without predicted nodes)"),
)


def add_evaluation_table_node(scene, name: str, evaluation: Any, extra_rows: Iterable[Mapping[str, Any]] = (), existing=None):
    rows = evaluation_rows(evaluation) + [dict(row) for row in extra_rows]
    return add_table_node(scene, name, rows, EVALUATION_COLUMNS, existing)


def table_row_dicts(table_node) -> list[dict[str, Any]]:
    """All rows of a table node as dicts (column name -> value)."""
    table = table_node.GetTable()
    names = [table.GetColumnName(index) for index in range(table.GetNumberOfColumns())]
    return [{name: table.GetColumnByName(name).GetValue(row) for name in names} for row in range(table.GetNumberOfRows())]


def find_row(table_node, column_name: str, value: Any) -> Optional[int]:
    for index, cell in enumerate(column_values(table_node, column_name)):
        if cell == value:
            return index
    return None
