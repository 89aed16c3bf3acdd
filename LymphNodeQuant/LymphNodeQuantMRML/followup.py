"""The module's follow-up: baseline and follow-up CT nodes -> ``lnq followup`` in a background process -> new nodes.

* :func:`followup_inputs`: both CTs and, where the user has them, their segmentations as label
  volumes on each CT's grid (segment "Lymph node N" -> value N, so the user's numbers are kept).
* :class:`BackgroundFollowup`: writes them to a private temporary folder and runs
  ``lnq followup ... --progress json`` in its own process group (Cancel kills the whole tree);
  :meth:`~BackgroundFollowup.outcome` reads the JSON report and the renumbered node maps.
* :func:`add_followup_nodes`: puts the outcome into the scene inside a :class:`SceneTransaction`:
  a new follow-up segmentation whose segment "Lymph node N" is baseline node N (new nodes numbered
  after the largest baseline number), a new baseline segmentation only when the user's does not
  already carry those numbers, the per-node comparison table, a waterfall table with its bar
  chart, and the response with its reasons. Existing segmentation nodes are never modified.
* :func:`node_centers_ras`: a table row's node centre in each examination (world RAS).

The comparison itself (registration, matching, measurements, response) is the engine's
(:mod:`LymphNodeQuantLib.followup`); this module only converts.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from LymphNodeQuantLib.errors import InputError
from LymphNodeQuantLib.geometry import ImageGeometry, Volume

from . import plots, runner, segmentations, tables
from .transaction import SceneTransaction

ProgressCallback = Callable[[float, str], None]

#: criteria name for ``lnq followup --criteria`` -> label
CRITERIA = {"recist": "RECIST 1.1", "lugano": "Lugano 2014"}
#: attributes of the comparison table: its inputs and results
ATTRIBUTE_BASELINE_VOLUME_ID = "LymphNodeQuant.BaselineVolumeNodeID"
ATTRIBUTE_FOLLOWUP_VOLUME_ID = "LymphNodeQuant.FollowupVolumeNodeID"
ATTRIBUTE_BASELINE_SEGMENTATION_ID = "LymphNodeQuant.BaselineSegmentationNodeID"
ATTRIBUTE_FOLLOWUP_SEGMENTATION_ID = "LymphNodeQuant.FollowupSegmentationNodeID"
ATTRIBUTE_RESPONSE = "LymphNodeQuant.FollowupResponse"  # JSON: criteria, overall_response, reasons, warnings
ATTRIBUTE_WATERFALL_TABLE_ID = "LymphNodeQuant.WaterfallTableNodeID"
ATTRIBUTE_PLOT_CHART_ID = "LymphNodeQuant.PlotChartNodeID"  # as on the measurement table (core.py)
WATERFALL_COLUMNS = (
    (tables.SEGMENT_NAME_COLUMN, "", "Node (segment name at both examinations); new nodes have no relative change"),
    ("change_percent", "%", "Change from baseline: short axis (RECIST 1.1) or PPD (Lugano 2014); largest increase first"),
    ("status", "", "matched, new or disappeared"),
    ("role", "", "the criteria's role: target, non-target, new, normal"),
)


def criteria_name(criteria: str) -> str:
    """``criteria`` checked: "recist" or "lugano" (:class:`InputError` otherwise)."""
    name = (criteria or "").lower()
    if name not in CRITERIA:
        raise InputError(f"Unknown response criteria '{criteria}': choose recist (RECIST 1.1) or lugano (Lugano 2014).")
    return name


# ----------------------------------------------------------------------------------- inputs


@dataclass
class FollowupInputs:
    """What the engine process gets: both CTs and the segmentations the user has (on each CT's grid)."""

    baseline_ct: Volume
    followup_ct: Volume
    baseline_labels: Optional[Volume] = None
    followup_labels: Optional[Volume] = None


def followup_inputs(
    baseline_volume_node, followup_volume_node, baseline_segmentation_node=None, followup_segmentation_node=None
) -> FollowupInputs:
    """Check the selection and export it; a segmentation not given is made by the model in the engine process."""
    from .core import checked_ct

    if baseline_volume_node is None or followup_volume_node is None:
        raise InputError("Select both the baseline CT and the follow-up CT.")
    if baseline_volume_node.GetID() == followup_volume_node.GetID():
        raise InputError("The baseline and follow-up CT are the same volume; select each examination's own CT.")
    if (
        baseline_segmentation_node is not None
        and followup_segmentation_node is not None
        and baseline_segmentation_node.GetID() == followup_segmentation_node.GetID()
    ):
        raise InputError("The baseline and follow-up segmentations are the same node; select each examination's own, or none.")
    baseline_ct, followup_ct = checked_ct(baseline_volume_node), checked_ct(followup_volume_node)
    labels = [
        None if node is None else segmentations.labels_from_segmentation_node(node, ct_node).labels
        for node, ct_node in (
            (baseline_segmentation_node, baseline_volume_node),
            (followup_segmentation_node, followup_volume_node),
        )
    ]
    return FollowupInputs(baseline_ct, followup_ct, *labels)


# ----------------------------------------------------------------------------------- outcome


@dataclass
class FollowupOutcome:
    """What a comparison produced, before it is put into the scene.

    ``report`` is the engine's JSON report (:func:`LymphNodeQuantLib.followup.report.report_document`);
    the node maps hold the tracked node numbers, each on its own CT's grid.
    """

    report: dict
    baseline_labels: Volume
    followup_labels: Volume
    messages: list[str] = field(default_factory=list)
    model: str = "default"
    device: str = ""

    @classmethod
    def from_result(cls, result, model: str = "default", device: str = "") -> "FollowupOutcome":
        """From an in-process :class:`LymphNodeQuantLib.followup.compare.FollowupResult` (the Python console's path)."""
        from LymphNodeQuantLib.followup.report import report_document

        messages = [m for e in (result.baseline, result.followup) if e is not None for m in e.messages]
        return cls(report_document(result), result.baseline_labels, result.followup_labels, messages, model, device)

    @property
    def criteria(self) -> str:
        return str(self.report["criteria"])

    @property
    def overall_response(self) -> str:
        return str(self.report["overall_response"])

    @property
    def reasons(self) -> list[str]:
        return [str(reason) for reason in self.report["response"].get("reasons", [])]

    @property
    def warnings(self) -> list[str]:
        return [str(warning) for warning in self.report.get("warnings", [])]

    @property
    def rows(self) -> list[dict]:
        """One dict per tracked node, keyed by :data:`LymphNodeQuantLib.followup.report.FOLLOWUP_COLUMNS`."""
        return list(self.report["nodes"])

    def segmented_by_model(self, examination: str) -> bool:
        """True when the engine segmented ``examination`` ("baseline" or "followup") with the model."""
        return bool((self.report["examinations"].get(examination) or {}).get("segmented_by_model"))

    def response(self) -> dict:
        """criteria, overall_response, reasons, warnings (JSON-safe; kept on the comparison table)."""
        return {"criteria": self.criteria, "overall_response": self.overall_response, "reasons": self.reasons,
                "warnings": self.warnings}  # fmt: skip

    def response_text(self) -> str:
        return format_response(self.response())


def format_response(response: dict) -> str:
    """The overall response, the rules that decided it, and any warning (for a label)."""
    lines = [f"Overall response ({response['criteria']}): {response['overall_response']}", *response.get("reasons", [])]
    if response.get("warnings"):
        lines += ["Warnings:", *response["warnings"]]
    return "\n".join(lines)


def table_response_text(table_node) -> str:
    """:func:`format_response` of a comparison table ("" for no table or another table)."""
    text = table_node.GetAttribute(ATTRIBUTE_RESPONSE) if table_node is not None else None
    return format_response(json.loads(text)) if text else ""


class BackgroundFollowup(runner.BackgroundJob):
    """A comparison running in a separate engine process (``lnq followup --progress json``), polled by the GUI.

    The inputs are written to a private temporary folder, which is removed when the run is
    finished, failed or cancelled; :meth:`cancel` kills the whole process tree.
    """

    def __init__(
        self,
        inputs: FollowupInputs,
        criteria: str = "recist",
        model: str = "default",
        device: str = "auto",
        python_executable: Optional[str] = None,
    ) -> None:
        self.criteria, self.model, self.device = criteria_name(criteria), model, device
        self._folder = Path(tempfile.mkdtemp(prefix="LymphNodeQuant-followup-"))
        try:
            self.process = runner.EngineProcess(
                self._command(inputs, python_executable or runner.default_python_executable()),
                env=runner.engine_environment(),
                cwd=str(self._folder),
                task="follow-up comparison",
            )
            self.process.start()
        except BaseException:
            self.cleanup()
            raise

    def _command(self, inputs: FollowupInputs, python_executable: str) -> list[str]:
        from LymphNodeQuantLib.io import write_volume

        folder = self._folder
        written = {
            name: None if volume is None else write_volume(folder / f"{name.replace('_', '-')}.nrrd", volume)
            for name, volume in vars(inputs).items()
        }
        self.report_path = folder / "report.json"
        self.baseline_labels_path, self.followup_labels_path = folder / "baseline-nodes.nrrd", folder / "followup-nodes.nrrd"
        return runner.followup_command(
            python_executable, written["baseline_ct"], written["followup_ct"], self.report_path,
            baseline_segmentation_path=written["baseline_labels"], followup_segmentation_path=written["followup_labels"],
            baseline_segmentation_out=self.baseline_labels_path, followup_segmentation_out=self.followup_labels_path,
            criteria=self.criteria, model=self.model, device=self.device,
        )  # fmt: skip

    def outcome(self) -> FollowupOutcome:
        """Read the result of a finished run (raises the engine's error) and remove the temporary folder."""
        from LymphNodeQuantLib.io import read_volume

        try:
            outputs = self.process.outcome()
            done = self.process.result.data  # {"event": "done", "outputs": {...}, "overall_response": ..., "messages": [...]}
            report = json.loads(Path(outputs.get("report") or self.report_path).read_text(encoding="utf-8"))
            baseline = read_volume(outputs.get("baseline_seg_out") or self.baseline_labels_path)
            followup = read_volume(outputs.get("followup_seg_out") or self.followup_labels_path)
            messages = [str(m) for m in done.get("messages") or []]
            return FollowupOutcome(report, baseline, followup, messages, self.model, self.device)
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        shutil.rmtree(self._folder, ignore_errors=True)


# ----------------------------------------------------------------------------------- scene


@dataclass
class FollowupNodes:
    """The nodes one comparison added (or reused: the baseline segmentation when it carries the numbers)."""

    table: Any
    waterfall_table: Any
    chart: Any
    baseline_segmentation: Any
    followup_segmentation: Any
    created_baseline_segmentation: bool
    response_text: str
    messages: list[str]


def _model_info(outcome: FollowupOutcome, examination: str) -> segmentations.ModelInfo:
    if not outcome.segmented_by_model(examination):
        return segmentations.ModelInfo.from_card(None)
    from .core import model_card_of

    return segmentations.ModelInfo.from_card(model_card_of(outcome.model), outcome.device)


def carries_node_numbers(segmentation_node, volume_node, labels: Volume) -> bool:
    """True when ``segmentation_node`` already holds ``labels`` (on ``volume_node``'s grid) as segments "Lymph node N"."""
    if segmentation_node is None:
        return False
    export = segmentations.labels_from_segmentation_node(segmentation_node, volume_node)
    values = [int(v) for v in np.unique(labels.array) if v]
    named = all(export.segment_name_by_value.get(v) == segmentations.segment_name(v) for v in values)
    return named and np.array_equal(export.labels.array, labels.array)


def _segmentations(scene, outcome: FollowupOutcome, baseline_volume_node, followup_volume_node, baseline_segmentation_node):
    """(baseline segmentation, follow-up segmentation, created baseline?, messages): new nodes, never the user's changed."""
    followup = segmentations.add_segmentation_node(
        scene, outcome.followup_labels, f"{followup_volume_node.GetName()} lymph nodes (baseline numbers)",
        model_info=_model_info(outcome, "followup"), reference_volume_node=followup_volume_node,
    )  # fmt: skip
    if carries_node_numbers(baseline_segmentation_node, baseline_volume_node, outcome.baseline_labels):
        return baseline_segmentation_node, followup, False, []
    baseline = segmentations.add_segmentation_node(
        scene, outcome.baseline_labels, f"{baseline_volume_node.GetName()} lymph nodes",
        model_info=_model_info(outcome, "baseline"), reference_volume_node=baseline_volume_node,
    )  # fmt: skip
    messages = []
    if baseline_segmentation_node is not None:
        messages.append(
            f"'{baseline_segmentation_node.GetName()}' does not hold one segment \"Lymph node N\" per node as the comparison "
            f"numbered them, so the numbered baseline nodes are in the new segmentation '{baseline.GetName()}' "
            f"('{baseline_segmentation_node.GetName()}' is unchanged)."
        )
    return baseline, followup, True, messages


def _table_rows(outcome: FollowupOutcome) -> list[dict]:
    """The report's rows with their segment name; whole-number columns with gaps become numbers with NaN gaps."""
    from LymphNodeQuantLib.followup.report import COLUMN_NAMES

    rows = [{tables.SEGMENT_NAME_COLUMN: segmentations.segment_name(row["node_id"]), **row} for row in outcome.rows]
    for name in COLUMN_NAMES:  # a 0 would read as slice 0 or segment 0: an empty cell must stay empty
        values = [row.get(name) for row in rows]
        if None in values and any(isinstance(v, int) and not isinstance(v, bool) for v in values):
            for row in rows:
                row[name] = None if row.get(name) is None else float(row[name])
    return rows


def table_columns() -> list[tuple[str, str, str]]:
    """The comparison table's columns: the segment name, then :data:`~LymphNodeQuantLib.followup.report.FOLLOWUP_COLUMNS`."""
    from LymphNodeQuantLib.followup.report import FOLLOWUP_COLUMNS

    name = (tables.SEGMENT_NAME_COLUMN, "", "Segment name, the same node at both examinations (segmentations below)")
    return [name, *[tuple(column) for column in FOLLOWUP_COLUMNS]]


def _add_waterfall(scene, outcome: FollowupOutcome, name: str):
    """A table of the per-node change, largest increase first, and its bar chart (None without nodes)."""
    from LymphNodeQuantLib.followup.report import waterfall_rows

    quantity, values = waterfall_rows(outcome.rows, outcome.criteria)
    rows = [
        {tables.SEGMENT_NAME_COLUMN: segmentations.segment_name(node_id) + (" (new)" if status == "new" else ""),
         "change_percent": change, "status": status, "role": role or ""}
        for node_id, change, status, role in values
    ]  # fmt: skip
    table = tables.add_table_node(scene, f"{name} waterfall", rows, WATERFALL_COLUMNS)
    if not rows:
        return table, None
    chart = plots.add_bar_chart(
        scene, table, "change_percent", label_column=tables.SEGMENT_NAME_COLUMN,
        title=f"{outcome.criteria}: {quantity} change (overall {outcome.overall_response})",
        y_axis_title=f"{quantity} change from baseline (%)",
    )  # fmt: skip
    return table, chart


def add_followup_nodes(
    scene, outcome: FollowupOutcome, baseline_volume_node, followup_volume_node, baseline_segmentation_node=None
) -> FollowupNodes:
    """Put ``outcome`` into ``scene`` as new nodes (module docstring); on any error the scene is left as it was."""
    name = f"Follow-up {baseline_volume_node.GetName()} to {followup_volume_node.GetName()}"
    with SceneTransaction(scene):
        baseline, followup, created, messages = _segmentations(
            scene, outcome, baseline_volume_node, followup_volume_node, baseline_segmentation_node
        )
        table = tables.add_table_node(scene, name, _table_rows(outcome), table_columns())
        waterfall, chart = _add_waterfall(scene, outcome, name)
        response = outcome.response()
        for key, value in (
            (ATTRIBUTE_BASELINE_VOLUME_ID, baseline_volume_node.GetID()),
            (ATTRIBUTE_FOLLOWUP_VOLUME_ID, followup_volume_node.GetID()),
            (ATTRIBUTE_BASELINE_SEGMENTATION_ID, baseline.GetID()),
            (ATTRIBUTE_FOLLOWUP_SEGMENTATION_ID, followup.GetID()),
            (ATTRIBUTE_RESPONSE, json.dumps(response)),
            (ATTRIBUTE_WATERFALL_TABLE_ID, waterfall.GetID()),
            (ATTRIBUTE_PLOT_CHART_ID, chart.GetID() if chart is not None else ""),
        ):
            table.SetAttribute(key, value)
    counts = {status: sum(1 for row in outcome.rows if row["status"] == status) for status in ("matched", "new", "disappeared")}
    messages = [*outcome.messages, *messages]
    messages.append(
        f"{name}: {counts['matched']} matched, {counts['new']} new, {counts['disappeared']} disappeared node(s); "
        f"overall response {outcome.overall_response} ({outcome.criteria})."
    )
    messages += [f"Warning: {warning}" for warning in outcome.warnings]
    return FollowupNodes(table, waterfall, chart, baseline, followup, created, outcome.response_text(), messages)


# ----------------------------------------------------------------------------------- navigation


def _lps_point(table, row: int, prefix: str) -> Optional[np.ndarray]:
    columns = [table.GetColumnByName(f"{prefix}_{axis}_mm") for axis in "lps"]
    if any(column is None for column in columns):
        return None
    point = np.array([float(column.GetValue(row)) for column in columns])
    return None if np.isnan(point).any() else point


def _world_ras(scene, volume_id: Optional[str], point_lps: Optional[np.ndarray]) -> Optional[tuple[float, float, float]]:
    """An LPS point in a CT's own space as world RAS (through the CT's parent transforms, as the views show it)."""
    if point_lps is None:
        return None
    ras = ImageGeometry.lps_to_ras(point_lps)
    volume_node = scene.GetNodeByID(volume_id) if volume_id else None
    parent = volume_node.GetParentTransformNode() if volume_node is not None else None
    if parent is not None:
        import vtk

        to_world = vtk.vtkGeneralTransform()
        parent.GetTransformToWorld(to_world)
        ras = np.asarray(to_world.TransformPoint([float(v) for v in ras]))
    return tuple(float(v) for v in ras)


def node_centers_ras(scene, table_node, row: int) -> tuple[Optional[tuple], Optional[tuple]]:
    """(baseline, follow-up) world RAS centre of the node in ``row`` of a comparison table; None where there is none.

    A node found at one examination only is centred where the registration puts it at the other.
    """
    table = table_node.GetTable() if table_node is not None else None
    if table is None or row < 0 or row >= table.GetNumberOfRows():
        return None, None
    baseline = _lps_point(table, row, "baseline_centroid")
    if baseline is None:
        baseline = _lps_point(table, row, "followup_centroid_in_baseline")
    followup = _lps_point(table, row, "followup_centroid")
    if followup is None:
        followup = _lps_point(table, row, "baseline_centroid_in_followup")
    return (
        _world_ras(scene, table_node.GetAttribute(ATTRIBUTE_BASELINE_VOLUME_ID), baseline),
        _world_ras(scene, table_node.GetAttribute(ATTRIBUTE_FOLLOWUP_VOLUME_ID), followup),
    )
