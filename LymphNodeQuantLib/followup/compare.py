"""The follow-up pipeline: baseline and follow-up CTs (+ optional nadir) -> tracked nodes, changes and response.

:func:`compare_examinations` takes arrays with geometry (no files, no Slicer):

1. **Nodes.** Each examination's node segmentation is used as given (an instance map: each label
   value is a node; a binary map: each 3-D connected component is a node) or, when not given,
   made by the packaged model (:func:`LymphNodeQuantLib.inference.segment_volume`). Every node is
   measured in its own examination's space and slices (:func:`LymphNodeQuantLib.measure.measure_nodes`).
2. **Registration** of the follow-up (and nadir) CT to the baseline (:mod:`.registration`).
3. **Matching** one to one (:mod:`.matching`): matched, new at follow-up, disappeared.
4. **Tracked nodes** keep their baseline number; new nodes are numbered after the largest baseline
   number. The follow-up (and nadir) node map is returned renumbered that way, so "node 3" is the
   same node at every examination.
5. **Response** by RECIST 1.1 or Lugano 2014 (:func:`.response.assess_response`).

A bad registration is never silent: its residual (mm) is in the result, each matched node carries
its centroid residual, and both raise warnings above their thresholds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np

from ..errors import InputError
from ..geometry import Volume
from ..measure import NodeMeasurement, measure_nodes
from ..progress import CancelToken, ProgressCallback, StageProgress
from .matching import Matching, MatchSettings, match_nodes
from .registration import Registration, RegistrationSettings, register_followup

logger = logging.getLogger(__name__)

STATUSES = ("matched", "new", "disappeared")


@dataclass(frozen=True)
class FollowupSettings:
    registration: RegistrationSettings = RegistrationSettings()
    matching: MatchSettings = MatchSettings()
    #: "auto" (an instance map's labels when it holds values above 1, else connected components), "labels", "components"
    nodes_from: str = "auto"
    min_volume_mm3: float = 0.0
    #: a matched node whose centroid lies further than this from its baseline centroid after registration is flagged
    node_residual_warning_mm: float = 10.0


@dataclass
class Examination:
    """One examination's nodes: its CT, its node map (voxel value = node id, own grid) and measurements."""

    name: str
    ct: Volume
    node_map: Volume
    nodes: list[NodeMeasurement]
    segmented_by_model: bool
    messages: list[str] = field(default_factory=list)

    def node(self, node_id: Optional[int]) -> Optional[NodeMeasurement]:
        return next((m for m in self.nodes if m.node_id == node_id), None)


def _change(new: Optional[float], old: Optional[float]) -> tuple[Optional[float], Optional[float]]:
    """(absolute, relative) change; a node absent at one examination counts as 0 there, relative change needs old > 0."""
    if new is None and old is None:
        return None, None
    new, old = new or 0.0, old or 0.0
    return new - old, ((new - old) / old if old > 0 else None)


@dataclass
class NodeComparison:
    """One tracked node: its measurements at each examination and its change from baseline to follow-up."""

    node_id: int  # baseline number; new nodes after the largest baseline number
    status: str  # "matched", "new" or "disappeared"
    baseline: Optional[NodeMeasurement]
    followup: Optional[NodeMeasurement]
    nadir: Optional[NodeMeasurement] = None
    nadir_status: Optional[str] = None  # "matched", "not found" (None without a nadir examination)
    #: the node's centroid at follow-up mapped into baseline space (LPS mm)
    followup_centroid_in_baseline_lps_mm: Optional[tuple[float, float, float]] = None
    #: the node's baseline centroid mapped into follow-up space (LPS mm): where to look for it at follow-up
    baseline_centroid_in_followup_lps_mm: Optional[tuple[float, float, float]] = None
    #: distance between the baseline centroid and the mapped follow-up centroid (matched nodes), mm
    centroid_residual_mm: Optional[float] = None
    overlap_dice: Optional[float] = None
    check_match: bool = False  # centroid residual above FollowupSettings.node_residual_warning_mm

    def change(self, quantity: str) -> tuple[Optional[float], Optional[float]]:
        """(absolute, relative) change of ``short_axis_mm``, ``long_axis_mm``, ``volume_ml`` or ``perpendicular_product_mm2``."""
        return _change(_value(self.followup, quantity), _value(self.baseline, quantity))

    def diameters(self, which: str):
        """:class:`.response.LesionDiameters` at ``baseline``, ``followup`` or ``nadir`` (None when absent there)."""
        from .response import DISAPPEARED, LesionDiameters

        measurement = getattr(self, which)
        if which == "nadir" and measurement is None and self.nadir_status == "not found":
            return DISAPPEARED
        return None if measurement is None else LesionDiameters.from_measurement(measurement)

    def tracked(self):
        from .response import TrackedNode

        nadir = self.diameters("nadir") if self.baseline is not None else None
        return TrackedNode(self.node_id, self.diameters("baseline"), self.diameters("followup"), nadir)

    def as_dict(self) -> dict:
        from .report import node_row

        return node_row(self)


def _value(measurement: Optional[NodeMeasurement], quantity: str) -> Optional[float]:
    if measurement is None:
        return None
    if quantity == "perpendicular_product_mm2":
        return float(measurement.long_axis_mm * measurement.short_axis_mm)
    return float(getattr(measurement, quantity))


@dataclass
class FollowupResult:
    """Everything :func:`compare_examinations` found; :meth:`as_dict` is the JSON report."""

    criteria: str
    nodes: list[NodeComparison]
    registration: Registration
    matching: Matching
    response: object  # response.ResponseAssessment
    baseline: Examination
    followup: Examination
    #: the follow-up node map renumbered to the tracked node ids, on the follow-up grid
    followup_labels: Volume
    nadir: Optional[Examination] = None
    nadir_registration: Optional[Registration] = None
    nadir_matching: Optional[Matching] = None
    nadir_labels: Optional[Volume] = None
    warnings: list[str] = field(default_factory=list)
    timings_s: dict = field(default_factory=dict)

    @property
    def node_centroid_residual_mm(self) -> Optional[float]:
        """Median centroid residual of the matched nodes (mm); None without matches."""
        values = [n.centroid_residual_mm for n in self.nodes if n.centroid_residual_mm is not None]
        return float(np.median(values)) if values else None

    @property
    def baseline_labels(self) -> Volume:
        """The baseline node map (voxel value = tracked node number), on the baseline grid."""
        return _renumbered(self.baseline.node_map, {m.node_id: m.node_id for m in self.baseline.nodes})

    def node(self, node_id: int) -> Optional[NodeComparison]:
        return next((n for n in self.nodes if n.node_id == node_id), None)

    def as_dict(self) -> dict:
        from .report import report_document

        return report_document(self)


# ----------------------------------------------------------------------------------- examinations


def _nodes_from(labels: Volume, nodes_from: str) -> str:
    if nodes_from == "auto":
        return "labels" if int(np.max(labels.array, initial=0)) > 1 else "components"
    if nodes_from not in ("labels", "components"):
        raise InputError(f"nodes_from must be 'auto', 'labels' or 'components', got '{nodes_from}'.")
    return nodes_from


def prepare_examination(
    name: str,
    ct: Volume,
    labels: Optional[Volume],
    settings: FollowupSettings,
    model="default",
    device: str = "auto",
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> Examination:
    """Nodes of one examination: the given segmentation, or the packaged model's (module docstring)."""
    from ..io import check_label_map
    from ..measure import label_nodes

    if np.issubdtype(np.asarray(ct.array).dtype, np.bool_):
        raise InputError(f"The {name} CT is a binary image; pass the CT in Hounsfield units.")
    messages: list[str] = []
    segmented = labels is None
    if segmented:
        from ..inference import segment_volume

        result = segment_volume(ct, model, device, progress=progress, cancel=cancel)
        labels, mode = result.labels, "labels"
        messages = [f"{name}: {message}" for message in result.messages]
    else:
        labels = check_label_map(labels, f"the {name} segmentation")
        if not labels.geometry.same_grid(ct.geometry):
            raise InputError(
                f"The {name} segmentation is not on the {name} CT's voxel grid (CT {ct.geometry.describe()}; segmentation "
                f"{labels.geometry.describe()}); pass the segmentation made on that CT, or resample it onto the CT first."
            )
        mode = _nodes_from(labels, settings.nodes_from)
    nodes = measure_nodes(labels, ct, min_volume_mm3=settings.min_volume_mm3, nodes_from=mode)
    if mode == "labels":
        kept = np.isin(labels.array, [m.node_id for m in nodes])
        node_map = labels.with_array(np.where(kept, labels.array, 0).astype(np.uint32))
    else:
        ids, _ = label_nodes(labels, min_volume_mm3=settings.min_volume_mm3)
        node_map = labels.with_array(ids)
    return Examination(name, ct, node_map, nodes, segmented, messages)


# ----------------------------------------------------------------------------------- tracking


def _renumbered(node_map: Volume, mapping: dict[int, int]) -> Volume:
    """``node_map`` with its ids replaced by ``mapping[id]`` (ids not in it become 0)."""
    largest = max([int(np.max(node_map.array, initial=0)), 0])
    lookup = np.zeros(largest + 1, dtype=np.uint32)
    for old, new in mapping.items():
        lookup[old] = new
    dtype = np.uint16 if max(mapping.values(), default=0) < 2**16 else np.uint32
    return node_map.with_array(lookup[np.asarray(node_map.array, dtype=np.int64)].astype(dtype))


def _comparisons(baseline: Examination, followup: Examination, matching: Matching, settings: FollowupSettings):
    """Tracked nodes (baseline ids, new nodes after them) and {follow-up id: tracked id}."""
    rows, followup_to_tracked = [], {}
    for node in baseline.nodes:
        pair = matching.followup_for(node.node_id)
        if pair is None:
            rows.append(NodeComparison(node.node_id, "disappeared", node, None))
            continue
        followup_to_tracked[pair.followup_id] = node.node_id
        rows.append(
            NodeComparison(
                node.node_id,
                "matched",
                node,
                followup.node(pair.followup_id),
                followup_centroid_in_baseline_lps_mm=matching.followup_centroids_in_baseline_lps_mm[pair.followup_id],
                centroid_residual_mm=pair.distance_mm,
                overlap_dice=pair.dice,
                check_match=pair.distance_mm > settings.node_residual_warning_mm,
            )
        )
    next_id = max((m.node_id for m in baseline.nodes), default=0) + 1
    for followup_id in matching.new_ids:
        followup_to_tracked[followup_id] = next_id
        rows.append(
            NodeComparison(
                next_id,
                "new",
                None,
                followup.node(followup_id),
                followup_centroid_in_baseline_lps_mm=matching.followup_centroids_in_baseline_lps_mm[followup_id],
            )
        )
        next_id += 1
    return rows, followup_to_tracked


def _map_baseline_centroids(rows: list[NodeComparison], registration: Registration) -> None:
    """Each baseline node's centroid in follow-up space (also for a node not found there: where it was expected)."""
    with_baseline = [row for row in rows if row.baseline is not None]
    if not with_baseline:
        return
    points = registration.baseline_to_followup(np.array([row.baseline.centroid_lps_mm for row in with_baseline], dtype=float))
    for row, point in zip(with_baseline, points):
        row.baseline_centroid_in_followup_lps_mm = tuple(float(v) for v in point)


def _attach_nadir(
    rows: list[NodeComparison], nadir: Examination, matching: Matching, settings: FollowupSettings
) -> dict[int, int]:
    """Put each baseline node's nadir measurement on its row; {nadir id: tracked id}.

    A nadir node that matches no baseline node takes the number of the new follow-up node at its
    place (both mapped into baseline space, within the matching distance), else a number after all others.
    """
    from .matching import match_points

    nadir_to_tracked = {}
    for row in rows:
        if row.baseline is None:
            continue
        pair = matching.followup_for(row.node_id)
        row.nadir_status = "not found" if pair is None else "matched"
        if pair is not None:
            row.nadir = nadir.node(pair.followup_id)
            nadir_to_tracked[pair.followup_id] = row.node_id
    new_rows = [row for row in rows if row.status == "new"]
    unmatched = list(matching.new_ids)
    points = [matching.followup_centroids_in_baseline_lps_mm[i] for i in unmatched]
    for i, j in match_points(
        points, [row.followup_centroid_in_baseline_lps_mm for row in new_rows], settings.matching.max_distance_mm
    ):
        nadir_to_tracked[unmatched[i]] = new_rows[j].node_id
    next_id = max((r.node_id for r in rows), default=0) + 1
    for nadir_id in unmatched:
        if nadir_id not in nadir_to_tracked:
            nadir_to_tracked[nadir_id] = next_id
            next_id += 1
    return nadir_to_tracked


def _match_warnings(rows: list[NodeComparison], matching: Matching, settings: FollowupSettings, name: str) -> list[str]:
    """Matches a reader must check: large centroid residuals, or no match at all between two examinations with nodes."""
    warnings = []
    flagged = [r.node_id for r in rows if r.check_match]
    if flagged:
        warnings.append(
            f"{name}: node(s) {flagged} matched with a centroid residual above {settings.node_residual_warning_mm:g} mm; "
            "check that they are the same node."
        )
    if not matching.pairs and matching.disappeared_ids and matching.new_ids:
        warnings.append(
            f"{name}: no node matched although both examinations have nodes: the registration may have failed "
            "(same patient? same body region?); check the images."
        )
    return warnings


# ----------------------------------------------------------------------------------- pipeline


def compare_examinations(
    baseline_ct: Volume,
    followup_ct: Volume,
    baseline_labels: Optional[Volume] = None,
    followup_labels: Optional[Volume] = None,
    *,
    nadir_ct: Optional[Volume] = None,
    nadir_labels: Optional[Volume] = None,
    criteria: str = "recist",
    target_node_ids: Optional[Sequence[int]] = None,
    non_target_progression: bool = False,
    settings: FollowupSettings = FollowupSettings(),
    model: Union[str, object] = "default",
    device: str = "auto",
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> FollowupResult:
    """Track the nodes from baseline to follow-up and assess the response (module docstring).

    Segmentations not given are made with ``model`` on ``device``. ``target_node_ids`` (baseline
    numbers) replaces the automatic target selection; ``non_target_progression`` is the reader's
    judgement of unequivocal progression. Progress is reported as (fraction, stage); ``cancel`` is
    checked between stages and registration iterations.
    """
    from .response import assess_response, select_target_nodes

    started = time.perf_counter()
    select_target_nodes([], criteria)  # an unknown criteria name is refused before the work
    examinations = [("baseline", baseline_ct, baseline_labels), ("follow-up", followup_ct, followup_labels)]
    if nadir_ct is not None:
        examinations.append(("nadir", nadir_ct, nadir_labels))
    elif nadir_labels is not None:
        raise InputError("A nadir segmentation was given without the nadir CT; pass both, or neither.")
    weights = [0.3 if labels is None else 0.02 for _, _, labels in examinations] + [0.25] * (len(examinations) - 1)
    bounds = np.concatenate([[0.0], np.cumsum(weights) / (sum(weights) / 0.97)])
    stages = [StageProgress(progress).sub(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    timings: dict[str, float] = {}
    prepared = []
    for stage, (name, ct, labels) in zip(stages, examinations):
        clock = time.perf_counter()
        stage(0.0, f"segmenting the {name} CT" if labels is None else f"measuring the {name} nodes")
        prepared.append(prepare_examination(name, ct, labels, settings, model, device, stage, cancel))
        timings[f"nodes_{name}"] = time.perf_counter() - clock
    aligned = []
    for stage, examination in zip(stages[len(examinations) :], prepared[1:]):
        clock = time.perf_counter()
        aligned.append(_register_and_match(prepared[0], examination, settings, stage, cancel))
        timings[f"registration_{examination.name}"] = time.perf_counter() - clock

    StageProgress(progress)(0.97, "assessing the response")
    result = _assemble(prepared, aligned, settings)
    result.response = assess_response(
        [row.tracked() for row in result.nodes], criteria, target_node_ids, non_target_progression=non_target_progression
    )
    result.criteria = result.response.criteria
    timings["total"] = time.perf_counter() - started
    result.timings_s = timings
    StageProgress(progress)(1.0, "done")
    return result


def _register_and_match(baseline: Examination, examination: Examination, settings: FollowupSettings, stage, cancel):
    registration = register_followup(baseline.ct, examination.ct, settings.registration, stage.sub(0.0, 0.9), cancel)
    stage(0.9, f"matching the {examination.name} nodes")
    matching = match_nodes(
        baseline.nodes, baseline.node_map, examination.nodes, examination.node_map, registration, settings.matching
    )
    return registration, matching


def _assemble(
    prepared: list[Examination], aligned: list[tuple[Registration, Matching]], settings: FollowupSettings
) -> FollowupResult:
    """The result without its response: tracked rows, renumbered maps, warnings (the registrations logged their own)."""
    baseline, followup = prepared[0], prepared[1]
    registration, matching = aligned[0]
    rows, followup_to_tracked = _comparisons(baseline, followup, matching, settings)
    _map_baseline_centroids(rows, registration)
    extra_warnings = _match_warnings(rows, matching, settings, "follow-up")
    result = FollowupResult(
        criteria="",
        nodes=rows,
        registration=registration,
        matching=matching,
        response=None,
        baseline=baseline,
        followup=followup,
        followup_labels=_renumbered(followup.node_map, followup_to_tracked),
        warnings=[f"follow-up: {w}" for w in registration.warnings],
    )
    if len(prepared) > 2:
        nadir, (nadir_registration, nadir_matching) = prepared[2], aligned[1]
        nadir_to_tracked = _attach_nadir(rows, nadir, nadir_matching, settings)
        result.nadir, result.nadir_registration, result.nadir_matching = nadir, nadir_registration, nadir_matching
        result.nadir_labels = _renumbered(nadir.node_map, nadir_to_tracked)
        result.warnings += [f"nadir: {w}" for w in nadir_registration.warnings]
        if nadir_matching.new_ids:
            extra_warnings.append(
                f"nadir: node(s) {sorted(nadir_to_tracked[i] for i in nadir_matching.new_ids)} were not at baseline but "
                "already at the nadir examination: new since baseline (the nadir is taken for baseline nodes only)."
            )
    for warning in extra_warnings:
        logger.warning(warning)
    result.warnings += extra_warnings
    return result
