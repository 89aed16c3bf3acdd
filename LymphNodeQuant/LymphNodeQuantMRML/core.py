"""The module's logic without Qt: segment, measure and compare on a MRML scene.

Each step converts MRML -> engine arrays + geometry, calls ``LymphNodeQuantLib`` and converts the
result back to new MRML nodes. Every step runs inside a :class:`SceneTransaction`, so a failure
or a cancel leaves the scene exactly as it was.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from LymphNodeQuantLib.errors import CancelledError, InputError
from LymphNodeQuantLib.geometry import Volume

from . import plots, runner, segmentations, tables
from .compatibility import DEVICES
from .transaction import SceneTransaction
from .volumes import volume_from_node

ProgressCallback = Callable[[float, str], None]

#: node attributes linking results to their inputs
ATTRIBUTE_INPUT_VOLUME_ID = "LymphNodeQuant.InputVolumeNodeID"
#: JSON {reason: count} of the candidates the post-processing dropped, and whether a mediastinum was found
ATTRIBUTE_DROPPED_CANDIDATES = "LymphNodeQuant.DroppedCandidates"
ATTRIBUTE_HAS_MEDIASTINUM = "LymphNodeQuant.HasMediastinum"
ATTRIBUTE_PLOT_CHART_ID = "LymphNodeQuant.PlotChartNodeID"
ATTRIBUTE_DETECTION_TABLE_ID = "LymphNodeQuant.DetectionTableNodeID"


def check_device(device: str) -> str:
    device = (device or "auto").lower()
    if device == "gpu":
        device = "cuda"
    if device not in DEVICES:
        raise InputError(f"Unknown device '{device}': choose one of {', '.join(DEVICES)} (GPU = cuda).")
    return device


def checked_ct(volume_node) -> Volume:
    """The CT in ``volume_node`` as an engine volume; :class:`InputError` for a missing or non-CT volume."""
    from LymphNodeQuantLib.preprocessing import check_ct

    volume = volume_from_node(volume_node)
    check_ct(volume)
    return volume


def model_card_of(model: str):
    """The model card of a registry name or model folder (no weights are loaded)."""
    from LymphNodeQuantLib.models.model_folder import load_model_card, resolve_model

    return load_model_card(resolve_model(model))


@dataclass
class SegmentationOutcome:
    """What a segmentation run produced, before it is put into the scene."""

    labels: Volume
    model_card: Any
    device: str
    messages: list[str] = field(default_factory=list)
    #: candidates the engine's post-processing dropped, {reason: count} (LymphNodeQuantLib.postprocess.DROP_REASONS)
    dropped_candidates: dict = field(default_factory=dict)
    #: False when the engine found no mediastinum in the CT (then no node is reported)
    has_mediastinum: bool = True


class BackgroundSegmentation(runner.BackgroundJob):
    """A segmentation running in a separate engine process (the GUI polls it from a timer).

    The input CT is written to a private temporary folder, ``lnq segment --progress json`` runs in
    its own process group, and :meth:`cancel` kills the whole process tree. The folder is removed
    when the run is finished, failed or cancelled.
    """

    def __init__(self, volume: Volume, model: str, device: str, python_executable: Optional[str] = None) -> None:
        from LymphNodeQuantLib.io import write_volume

        self.model = model
        self.device = device
        self._folder = Path(tempfile.mkdtemp(prefix="LymphNodeQuant-"))
        try:
            input_path = write_volume(self._folder / "input-ct.nrrd", volume)
            self.output_path = self._folder / "nodes-labels.nrrd"
            command = runner.segment_command(
                python_executable or runner.default_python_executable(), input_path, self.output_path, model=model, device=device
            )
            self.process = runner.EngineProcess(command, env=runner.engine_environment(), cwd=str(self._folder))
            self.process.start()
        except BaseException:
            self.cleanup()
            raise

    def outcome(self) -> SegmentationOutcome:
        """Read the result of a finished run (raises the engine's error) and remove the temp folder."""
        from LymphNodeQuantLib.io import read_volume

        try:
            outputs = self.process.outcome()
            done = self.process.result.data  # {"event": "done", "outputs": {...}, "device": ..., "messages": [...]}
            labels = read_volume(outputs.get("segmentation") or self.output_path)
            messages = done.get("messages") if isinstance(done.get("messages"), list) else []
            dropped = done.get("dropped_candidates") if isinstance(done.get("dropped_candidates"), dict) else {}
            return SegmentationOutcome(
                labels,
                model_card_of(self.model),
                str(done.get("device") or self.device),
                [str(m) for m in messages],
                {str(k): int(v) for k, v in dropped.items()},
                bool(done.get("has_mediastinum", True)),
            )
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        shutil.rmtree(self._folder, ignore_errors=True)


class LymphNodeQuantCore:
    """Blocking segment / measure / compare on ``scene`` (``slicer.mrmlScene`` when not given)."""

    def __init__(self, scene=None) -> None:
        self._scene = scene
        self.messages: list[str] = []
        self.last_outcome: Optional[SegmentationOutcome] = None
        self.last_measurements: list[Any] = []
        self.last_evaluation: Any = None

    @property
    def scene(self):
        if self._scene is not None:
            return self._scene
        import slicer

        return slicer.mrmlScene

    def _say(self, message: str) -> None:
        import logging

        self.messages.append(message)
        logging.info(message)

    # ------------------------------------------------------------------ segment
    def run_segmentation(
        self,
        volume_node,
        model: str = "default",
        device: str = "auto",
        *,
        progress: Optional[ProgressCallback] = None,
        cancel=None,
        background: bool = False,
        python_executable: Optional[str] = None,
    ) -> SegmentationOutcome:
        """Segment the CT in ``volume_node`` without touching the scene (engine in- or out-of-process)."""
        device = check_device(device)
        volume = checked_ct(volume_node)
        if background:
            job = BackgroundSegmentation(volume, model, device, python_executable)
            return job.wait(progress, cancel)
        from LymphNodeQuantLib.inference import segment_volume

        result = segment_volume(volume, model=model, device=device, output="instances", progress=progress, cancel=cancel)
        return SegmentationOutcome(
            result.labels,
            result.model_card,
            str(result.device),
            [str(m) for m in (result.messages or [])],
            dict(result.dropped_candidates),
            result.has_mediastinum,
        )

    def add_segmentation(self, volume_node, outcome: SegmentationOutcome, output_node=None, name: Optional[str] = None):
        """Put a segmentation outcome into the scene: a new node, or ``output_node`` when given."""
        self.messages = list(outcome.messages)
        info = segmentations.ModelInfo.from_card(outcome.model_card, outcome.device)
        with SceneTransaction(self.scene):
            if output_node is None:
                node = segmentations.add_segmentation_node(
                    self.scene,
                    outcome.labels,
                    name or f"{volume_node.GetName()} lymph nodes",
                    model_info=info,
                    reference_volume_node=volume_node,
                )
            else:
                node = output_node
                segmentations.fill_segmentation_node(node, outcome.labels, info, volume_node)
                if node.GetDisplayNode() is None:
                    node.CreateDefaultDisplayNodes()
            node.SetAttribute(ATTRIBUTE_INPUT_VOLUME_ID, volume_node.GetID())
            node.SetAttribute(ATTRIBUTE_DROPPED_CANDIDATES, json.dumps(outcome.dropped_candidates, sort_keys=True))
            node.SetAttribute(ATTRIBUTE_HAS_MEDIASTINUM, "true" if outcome.has_mediastinum else "false")
        count = node.GetSegmentation().GetNumberOfSegments()
        if count == 0:
            self._say(
                f"No lymph nodes found in '{volume_node.GetName()}' by model {info.name} {info.version}: the segmentation is empty."
            )
        else:
            self._say(
                f"Found {count} lymph node{'s' if count != 1 else ''} in '{volume_node.GetName()}' (model {info.name} {info.version}, {info.device})."
            )
        return node

    def segment(
        self,
        volume_node,
        model: str = "default",
        device: str = "auto",
        *,
        output_node=None,
        progress=None,
        cancel=None,
        background: bool = False,
    ):
        """Segment lymph nodes in ``volume_node``; returns the ``vtkMRMLSegmentationNode``.

        A new node is created unless ``output_node`` is given (its segments are then replaced).
        ``background=True`` runs the engine in a separate process (as the GUI does).
        """
        if output_node is not None and output_node.IsA("vtkMRMLSegmentationNode") is False:
            raise InputError(f"'{output_node.GetName()}' is not a segmentation node.")
        outcome = self.run_segmentation(volume_node, model, device, progress=progress, cancel=cancel, background=background)
        self.last_outcome = outcome
        if cancel is not None and getattr(cancel, "cancelled", False):
            raise CancelledError("Segmentation cancelled by the user; the scene was left unchanged.")
        return self.add_segmentation(volume_node, outcome, output_node)

    # ------------------------------------------------------------------ measure
    def measure(self, segmentation_node, volume_node=None, *, table_node=None, with_plot: bool = True):
        """Per-node measurements of ``segmentation_node`` in a ``vtkMRMLTableNode``.

        Each segment is one node (its row carries the segment's name and ID). ``volume_node``
        (the CT) gives the grid and the HU statistics; without it the segmentation's reference
        geometry is used and the HU columns stay empty.
        """
        from LymphNodeQuantLib.measure import NODE_TABLE_COLUMNS, measure_nodes, measurements_to_rows

        ct = checked_ct(volume_node) if volume_node is not None else None
        export = segmentations.labels_from_segmentation_node(segmentation_node, volume_node)
        # One segment = one node, even where two nodes touch: the engine measures the instance
        # labels as given (nodes_from="labels"), numbering them 1..N in increasing label value.
        measurements = measure_nodes(export.labels, ct, nodes_from="labels")
        present_values = [int(v) for v in np.unique(export.labels.array) if v]
        engine_ids = [int(m.node_id) for m in measurements]
        value_of = (
            dict(zip(engine_ids, engine_ids))
            if set(engine_ids) == set(present_values)
            else dict(zip(range(1, len(present_values) + 1), present_values))
        )
        for measurement in measurements:
            measurement.node_id = value_of[int(measurement.node_id)]  # node id = segment "Lymph node N"
        rows = measurements_to_rows(measurements)
        for row in rows:
            value = int(row["node_id"])
            row[tables.SEGMENT_NAME_COLUMN] = export.segment_name_by_value[value]
            row[tables.SEGMENT_ID_COLUMN] = export.segment_id_by_value[value]
        columns = [
            (tables.SEGMENT_NAME_COLUMN, "", "Segment name in the segmentation"),
            *[tuple(column) for column in NODE_TABLE_COLUMNS],
            (tables.SEGMENT_ID_COLUMN, "", "Segment ID (used to jump to the node)"),
        ]
        self.last_measurements = measurements
        with SceneTransaction(self.scene):
            table = tables.add_table_node(self.scene, f"{segmentation_node.GetName()} measurements", rows, columns, table_node)
            table.SetAttribute(tables.ATTRIBUTE_SEGMENTATION_ID, segmentation_node.GetID())
            if with_plot and rows:
                chart_id = table.GetAttribute(ATTRIBUTE_PLOT_CHART_ID)
                existing_chart = self.scene.GetNodeByID(chart_id) if chart_id else None
                chart = plots.add_bar_chart(
                    self.scene, table, "short_axis_mm", label_column=tables.SEGMENT_NAME_COLUMN,
                    title=f"{segmentation_node.GetName()} short axis", y_axis_title="Short-axis diameter (mm)",
                    existing_chart=existing_chart,
                )  # fmt: skip
                table.SetAttribute(ATTRIBUTE_PLOT_CHART_ID, chart.GetID())
        enlarged = sum(1 for m in measurements if getattr(m, "enlarged", False))
        self._say(f"Measured {len(measurements)} node(s) in '{segmentation_node.GetName()}'; {enlarged} enlarged.")
        return table

    # ------------------------------------------------------------------ compare
    def compare(self, segmentation_node, reference_segmentation_node, *, table_node=None):
        """Dice, ASSD, HD95 and per-node detection of ``segmentation_node`` against a reference.

        A prediction on another grid is resampled (nearest neighbour) onto the reference's grid,
        and a message says so.
        """
        from LymphNodeQuantLib.evaluate import evaluate_case

        if reference_segmentation_node is None:
            raise InputError("No reference segmentation selected: choose one in 'Reference segmentation'.")
        if segmentation_node is not None and reference_segmentation_node.GetID() == segmentation_node.GetID():
            raise InputError("The reference segmentation is the segmentation itself; choose another reference.")
        if segmentation_node is None:
            raise InputError("No segmentation to score: segment first or choose an output segmentation.")
        prediction_grid = segmentations.reference_geometry_of_segmentation(segmentation_node)
        reference_grid = segmentations.reference_geometry_of_segmentation(reference_segmentation_node)
        if reference_grid is None:
            if prediction_grid is None:
                raise InputError(
                    "Neither segmentation has a reference geometry, so there is no grid to score on: set one "
                    "(Segment Editor > 'Specify geometry') or import the reference with its CT as reference volume."
                )
            reference_grid = prediction_grid
            self._say(
                f"'{reference_segmentation_node.GetName()}' has no reference geometry; it was scored on the grid of '{segmentation_node.GetName()}'."
            )
        prediction = segmentations.labels_from_segmentation_node(segmentation_node, geometry=prediction_grid).labels
        reference = segmentations.labels_from_segmentation_node(reference_segmentation_node, geometry=reference_grid).labels
        # Segments are nodes (they may touch): detection counts label values, not components.
        evaluation = evaluate_case(
            prediction, reference, foreground="nonzero", resample_prediction=True, detection_nodes="labels"
        )
        if evaluation.resampled_prediction:
            self._say(
                f"'{segmentation_node.GetName()}' ({prediction.geometry.describe()}) is on another grid than the reference "
                f"'{reference_segmentation_node.GetName()}' ({reference.geometry.describe()}); it was resampled onto the "
                "reference grid (nearest neighbour) before scoring."
            )
        self.last_evaluation = evaluation
        name = f"{segmentation_node.GetName()} vs {reference_segmentation_node.GetName()}"
        with SceneTransaction(self.scene):
            table = tables.add_evaluation_table_node(self.scene, name, evaluation, existing=table_node)
            table.SetAttribute(tables.ATTRIBUTE_SEGMENTATION_ID, segmentation_node.GetID())
            detection_id = table.GetAttribute(ATTRIBUTE_DETECTION_TABLE_ID)
            detection_table = self.scene.GetNodeByID(detection_id) if detection_id else None
            detection_table = tables.add_table_node(
                self.scene, f"{name} detection by size", evaluation.detection_bins, tables.DETECTION_COLUMNS, detection_table
            )
            table.SetAttribute(ATTRIBUTE_DETECTION_TABLE_ID, detection_table.GetID())
        self._say(
            f"Dice {evaluation.dice:.3f}, ASSD {evaluation.assd_mm:.2f} mm, HD95 {evaluation.hd95_mm:.2f} mm; "
            f"{evaluation.true_positives} of {evaluation.reference_nodes} reference nodes detected, "
            f"{evaluation.false_positives} false positive(s)."
        )
        return table

    # ------------------------------------------------------------------ navigation
    def node_center_ras(self, table_node, row: int) -> Optional[tuple[float, float, float]]:
        """RAS centre of the node in ``row`` of a measurement table (to jump the slice views to)."""
        table = table_node.GetTable()
        if row < 0 or row >= table.GetNumberOfRows():
            return None
        segmentation_node = self.scene.GetNodeByID(table_node.GetAttribute(tables.ATTRIBUTE_SEGMENTATION_ID) or "")
        id_column = table.GetColumnByName(tables.SEGMENT_ID_COLUMN)
        if segmentation_node is not None and id_column is not None and id_column.GetValue(row):
            center = segmentation_node.GetSegmentCenterRAS(str(id_column.GetValue(row)))
            if center is not None:
                return tuple(float(c) for c in center)
        columns = [table.GetColumnByName(name) for name in ("centroid_r_mm", "centroid_a_mm", "centroid_s_mm")]
        if all(column is not None for column in columns):
            return tuple(float(column.GetValue(row)) for column in columns)
        return None
