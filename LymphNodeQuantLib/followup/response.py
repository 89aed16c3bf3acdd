"""Nodal response from tracked node diameters: RECIST 1.1 and the Lugano 2014 CT-based response.

Sources (the rule each function applies is cited in its docstring):

* [E2009] Eisenhauer EA, Therasse P, Bogaerts J, et al. New response evaluation criteria in solid
  tumours: revised RECIST guideline (version 1.1). Eur J Cancer 2009;45:228-247.
* [S2009] Schwartz LH, Bogaerts J, Ford R, et al. Evaluation of lymph nodes with RECIST 1.1.
  Eur J Cancer 2009;45:261-267.
* [S2016] Schwartz LH, Litiere S, de Vries E, et al. RECIST 1.1 - Update and clarification: from
  the RECIST committee. Eur J Cancer 2016;62:132-137.
* [FAQ] The RECIST working group's questions and clarifications (recist.eortc.org): "Abnormal
  lymph node", "New lymph node lesions", "Two target lesions" (lymph nodes are one organ).
* [C2014] Cheson BD, Fisher RI, Barrington SF, et al. Recommendations for initial evaluation,
  staging, and response assessment of Hodgkin and non-Hodgkin lymphoma: the Lugano
  classification. J Clin Oncol 2014;32:3059-3068 (Table 3, CT-based response).

Conventions of this implementation:

* A node is measured as in :mod:`LymphNodeQuantLib.measure`: short and long axis in the slice where
  the short axis is largest; Lugano's LDi/SDi are that long/short axis and its PPD their product.
* A node not found at follow-up (``TrackedNode.followup is None``) counts as 0 x 0 mm (RECIST:
  disappeared; [C2014]: "no longer visible, 0 x 0 mm"). A node that is found is used with its
  actual size, however small ([E2009] 4.3.1 note on nodes; [C2014] "use actual measurement").
* Thresholds hold exactly: diameters are quantised to 1e-6 mm (the node table's precision) and
  compared in integer and rational arithmetic, so a 30 % decrease whose floating-point ratio is
  0.29999999999999993 is still PR, and an increase of exactly 5.0 mm is 5 mm.
* Unequivocal progression of non-target (Lugano: non-measured) nodes is a reader's judgement
  without a size threshold ([E2009] 4.3.3, [S2016]); it is taken as the ``non_target_progression``
  argument and never inferred.
* Only lymph nodes are seen: non-nodal lesions, spleen, liver, bone marrow, PET (Deauville score),
  confirmation of responses at a later examination and the best overall response across
  examinations are not assessed (listed in ``ResponseAssessment.not_assessed``).
"""

from __future__ import annotations

import math
import numbers
import operator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Optional, Sequence

from ..errors import InputError
from ..table_format import json_safe

RECIST = "RECIST 1.1"
LUGANO = "Lugano 2014"

#: RECIST: a node with short axis >= 15 mm is measurable (target candidate) [E2009] 3.1.2, [S2009].
RECIST_MEASURABLE_SHORT_AXIS_MM = 15.0
#: RECIST: short axis >= 10 mm is pathological; < 10 mm is normal [E2009] 3.1.2, 4.3.1.
RECIST_PATHOLOGICAL_SHORT_AXIS_MM = 10.0
#: RECIST: at most 2 target lesions per organ, all lymph nodes being one organ [E2009] 4.2, [FAQ]
#: (the 5-in-total limit cannot bind: only nodes are seen).
RECIST_MAX_TARGET_NODES = 2
RECIST_PR_DECREASE = Fraction(30, 100)  # >= 30 % decrease from the baseline sum [E2009] 4.3.1
RECIST_PD_INCREASE = Fraction(20, 100)  # >= 20 % increase over the nadir sum ...
RECIST_PD_ABSOLUTE_MM = 5.0  # ... and >= 5 mm absolute increase [E2009] 4.3.1

#: Lugano: a node is measurable/abnormal when LDi > 15 mm; LDi <= 15 mm is normal (CR) [C2014].
LUGANO_NORMAL_LDI_MM = 15.0
LUGANO_MAX_TARGET_NODES = 6  # up to 6 of the largest measurable nodes [C2014]
LUGANO_PR_DECREASE = Fraction(50, 100)  # >= 50 % decrease in SPD from baseline [C2014] Table 3
LUGANO_PPD_INCREASE = Fraction(50, 100)  # per-node PD: PPD >= 50 % over the node's nadir ...
LUGANO_SMALL_LESION_LDI_MM = 20.0  # ... and LDi or SDi up from nadir by >= 5 mm for a node <= 20 mm,
LUGANO_DIAMETER_INCREASE_SMALL_MM = 5.0
LUGANO_DIAMETER_INCREASE_LARGE_MM = 10.0  # ... >= 10 mm for a node > 20 mm (LDi at its nadir) [C2014] Table 3

_UNITS_PER_MM = 1_000_000  # 1e-6 mm: the precision of the node table (measure.py rounds to 6 decimals)

_RECIST_SOURCES = [
    "Eisenhauer EA et al. Eur J Cancer 2009;45:228-247 (RECIST 1.1)",
    "Schwartz LH et al. Eur J Cancer 2009;45:261-267 (lymph nodes with RECIST 1.1)",
    "Schwartz LH et al. Eur J Cancer 2016;62:132-137 (RECIST 1.1 update and clarification)",
    "RECIST working group questions and clarifications, recist.eortc.org",
]
_LUGANO_SOURCES = ["Cheson BD et al. J Clin Oncol 2014;32:3059-3068 (Lugano classification, Table 3, CT-based response)"]
_RECIST_NOT_ASSESSED = [
    "non-nodal target and non-target lesions (only lymph nodes are seen)",
    "unequivocal progression of non-target nodes: a reader's judgement (argument non_target_progression)",
    "confirmation of CR/PR at a later examination and the best overall response over several examinations",
    "PD by reappearance after an earlier overall CR (needs the earlier response)",
    "spreading targets over nodal regions, which the RECIST working group suggests (nodal stations are not known)",
]
_LUGANO_NOT_ASSESSED = [
    "PET-CT (Deauville 5-point scale): this is the CT-based response",
    "spleen and liver size, extranodal lesions and bone marrow (only lymph nodes are seen)",
    "progression of non-measured lesions: a reader's judgement (argument non_target_progression)",
    "choosing targets from disparate body regions (nodal stations are not known)",
    "LDi is the long axis in the slice of the largest short axis, which can be shorter than the node's longest "
    "transverse diameter in another slice",
]


@dataclass(frozen=True)
class LesionDiameters:
    """One node at one time point, as measured by measure.py (RECIST axes in one slice), in mm."""

    short_axis_mm: float
    long_axis_mm: float

    def __post_init__(self) -> None:
        for name in ("short_axis_mm", "long_axis_mm"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
                raise InputError(f"A node's {name} must be a finite number >= 0 mm, got {value!r}.")
            object.__setattr__(self, name, float(value))  # frozen: numpy and int values become plain floats
        if self.short_axis_mm > self.long_axis_mm + 1e-6:
            raise InputError(
                f"A node's short axis ({self.short_axis_mm} mm) is longer than its long axis ({self.long_axis_mm} mm): "
                "give the short axis first, or check the measurement."
            )

    @property
    def perpendicular_product_mm2(self) -> float:
        """Long x short axis in the measurement slice (mm2): Lugano's PPD."""
        return self.long_axis_mm * self.short_axis_mm

    @classmethod
    def from_measurement(cls, measurement) -> "LesionDiameters":
        """From a :class:`~LymphNodeQuantLib.measure.NodeMeasurement` (or anything with the two axes)."""
        return cls(float(measurement.short_axis_mm), float(measurement.long_axis_mm))


#: A node not found at follow-up counts as this (see the module docstring).
DISAPPEARED = LesionDiameters(0.0, 0.0)


@dataclass(frozen=True)
class TrackedNode:
    """One node followed from baseline to follow-up (``node_id``: its baseline number; new nodes after those)."""

    node_id: int
    baseline: Optional[LesionDiameters]  # None: node is new at follow-up
    followup: Optional[LesionDiameters]  # None: node disappeared (not found at follow-up), counted as 0 x 0 mm
    nadir: Optional[LesionDiameters] = None  # the node at the nadir examination, when one is given

    def __post_init__(self) -> None:
        if self.baseline is None and self.followup is None:
            raise InputError(f"Node {self.node_id} has neither a baseline nor a follow-up measurement; drop it or measure it.")
        if self.baseline is None and self.nadir is not None:
            raise InputError(f"Node {self.node_id} is new at follow-up but has a nadir measurement; a new node has no nadir.")


@dataclass
class ResponseAssessment:
    """The response, the numbers that decided it and the rule that applied (``reasons``)."""

    criteria: str  # "RECIST 1.1" or "Lugano 2014"
    overall_response: str  # RECIST: CR, PR, SD, PD, non-CR/non-PD (no target), NE; Lugano CT-based: CR, PR, SD, PD, NE
    target_node_ids: list[int]
    non_target_node_ids: list[int]
    new_node_ids: list[int]
    target_selection: str  # "automatic" or "user"
    target_response: Optional[str] = None  # RECIST target-lesion response (CR, PR, SD, PD)
    non_target_response: Optional[str] = None  # RECIST non-target response (CR, non-CR/non-PD, PD)
    baseline_sum_mm: Optional[float] = None  # RECIST: sum of target short axes
    nadir_sum_mm: Optional[float] = None  # smallest sum on study, baseline included
    followup_sum_mm: Optional[float] = None
    sum_change_from_nadir_mm: Optional[float] = None
    baseline_spd_mm2: Optional[float] = None  # Lugano: sum of the targets' PPDs
    nadir_spd_mm2: Optional[float] = None
    followup_spd_mm2: Optional[float] = None
    change_from_baseline: Optional[float] = None  # fraction of the baseline sum (RECIST) or SPD (Lugano); -0.3 = 30 % smaller
    change_from_nadir: Optional[float] = None  # fraction of the nadir sum / SPD (None when that is 0)
    reasons: list[str] = field(default_factory=list)
    per_node: dict[int, dict] = field(default_factory=dict)
    not_assessed: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """JSON-safe dict (``per_node`` keyed by the node id as a string)."""
        document = asdict(self)
        document["per_node"] = {str(node_id): values for node_id, values in self.per_node.items()}
        return json_safe(document)


# ---------------------------------------------------------------------------------------- helpers


def _units(mm: float) -> int:
    """``mm`` in exact integer units of 1e-6 mm (products: 1e-12 mm2)."""
    return round(mm * _UNITS_PER_MM)


def _mm(units: int) -> float:
    return units / _UNITS_PER_MM


def _mm2(units: int) -> float:
    return units / _UNITS_PER_MM**2


def _at_least(part: int, whole: int, fraction: Fraction) -> bool:
    """``part >= fraction * whole``, exactly."""
    return part >= fraction * whole


def _change(new: int, old: int) -> Optional[float]:
    return None if old == 0 else (new - old) / old


def _percent(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f}%"


def _followup(node: TrackedNode) -> LesionDiameters:
    return DISAPPEARED if node.followup is None else node.followup


def _criteria_name(criteria: str) -> str:
    key = str(criteria).strip().lower().replace(" ", "").replace("_", "").replace("-", "")
    if key in ("recist", "recist1.1", "recist11"):
        return RECIST
    if key in ("lugano", "lugano2014"):
        return LUGANO
    raise InputError(f"Unknown response criteria '{criteria}': use 'recist' (RECIST 1.1) or 'lugano' (Lugano 2014).")


def _checked_nodes(nodes: Sequence[TrackedNode]) -> dict[int, TrackedNode]:
    by_id: dict[int, TrackedNode] = {}
    for node in nodes:
        if not isinstance(node, TrackedNode):
            raise InputError(f"Expected TrackedNode objects, got {type(node).__name__}.")
        if node.node_id in by_id:
            raise InputError(f"Node id {node.node_id} appears twice; every tracked node needs its own id.")
        by_id[node.node_id] = node
    return by_id


def _diameters(prefix: str, diameters: Optional[LesionDiameters]) -> dict:
    if diameters is None:
        return {f"{prefix}_short_axis_mm": None, f"{prefix}_long_axis_mm": None, f"{prefix}_ppd_mm2": None}
    return {
        f"{prefix}_short_axis_mm": diameters.short_axis_mm,
        f"{prefix}_long_axis_mm": diameters.long_axis_mm,
        f"{prefix}_ppd_mm2": diameters.perpendicular_product_mm2,
    }


def _node_record(node: TrackedNode, role: str) -> dict:
    record = {"role": role, "found_at_followup": node.followup is not None}  # not found: follow-up counted as 0 x 0 mm
    for prefix, value in (("baseline", node.baseline), ("nadir", node.nadir), ("followup", _followup(node))):
        record.update(_diameters(prefix, value))
    return record


# ------------------------------------------------------------------------------- target selection


def is_measurable(diameters: Optional[LesionDiameters], criteria: str) -> bool:
    """Measurable node at baseline: RECIST short axis >= 15 mm [E2009] 3.1.2; Lugano LDi > 15 mm [C2014]."""
    if diameters is None:
        return False
    if _criteria_name(criteria) == RECIST:
        return _units(diameters.short_axis_mm) >= _units(RECIST_MEASURABLE_SHORT_AXIS_MM)
    return _units(diameters.long_axis_mm) > _units(LUGANO_NORMAL_LDI_MM)


def select_target_nodes(nodes: Sequence[TrackedNode], criteria: str) -> list[int]:
    """Target node ids chosen by the criteria's rules, largest first.

    RECIST 1.1: the measurable nodes (short axis >= 15 mm) with the largest short axis, at most 2
    (lymph nodes are one organ) [E2009] 4.2, [FAQ]. Lugano 2014: the measurable nodes (LDi > 15 mm)
    with the largest PPD, at most 6 [C2014]. Ties: longer long axis first, then the lower id.
    Empty when no node is measurable (non-measurable disease).
    """
    name = _criteria_name(criteria)
    candidates = [n for n in _checked_nodes(nodes).values() if is_measurable(n.baseline, name)]
    if name == RECIST:
        candidates.sort(key=lambda n: (-_units(n.baseline.short_axis_mm), -_units(n.baseline.long_axis_mm), n.node_id))
        return [n.node_id for n in candidates[:RECIST_MAX_TARGET_NODES]]
    candidates.sort(
        key=lambda n: (
            -_units(n.baseline.long_axis_mm) * _units(n.baseline.short_axis_mm),
            -_units(n.baseline.long_axis_mm),
            n.node_id,
        )
    )
    return [n.node_id for n in candidates[:LUGANO_MAX_TARGET_NODES]]


def _user_targets(by_id: dict[int, TrackedNode], criteria: str, target_node_ids: Sequence[int]) -> list[int]:
    """The user's target choice, checked against the criteria (replaces the automatic selection)."""
    try:
        ids = [int(i) if isinstance(i, str) else operator.index(i) for i in target_node_ids]
    except (TypeError, ValueError):
        raise InputError(f"Target node ids must be whole numbers (node ids), got {list(target_node_ids)!r}.") from None
    limit, rule = (
        (RECIST_MAX_TARGET_NODES, "short axis >= 15 mm at baseline")
        if criteria == RECIST
        else (LUGANO_MAX_TARGET_NODES, "long axis (LDi) > 15 mm at baseline")
    )
    if not ids:
        raise InputError("The target node list is empty: name at least one target node, or leave it out for automatic selection.")
    if len(set(ids)) != len(ids):
        raise InputError(f"Target node ids {ids} repeat a node; name each target node once.")
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise InputError(f"Target node id(s) {unknown} are not among the tracked nodes {sorted(by_id)}.")
    if len(ids) > limit:
        raise InputError(
            f"{criteria} allows at most {limit} target nodes, {len(ids)} were given ({ids}); choose {limit} or fewer."
        )
    for i in ids:
        node = by_id[i]
        if node.baseline is None:
            raise InputError(f"Node {i} is new at follow-up; target nodes are chosen at baseline.")
        if not is_measurable(node.baseline, criteria):
            raise InputError(
                f"Node {i} is not measurable by {criteria} (needs {rule}; it has short axis "
                f"{node.baseline.short_axis_mm:g} mm, long axis {node.baseline.long_axis_mm:g} mm); choose another target node."
            )
    return ids


def _targets(by_id: dict[int, TrackedNode], criteria: str, target_node_ids: Optional[Sequence[int]]) -> tuple[list[int], str]:
    if target_node_ids is None:
        return select_target_nodes(list(by_id.values()), criteria), "automatic"
    return _user_targets(by_id, criteria, target_node_ids), "user"


# ----------------------------------------------------------------------------------------- RECIST


def _is_pathological(diameters: Optional[LesionDiameters]) -> bool:
    """Short axis >= 10 mm: a pathological node [E2009] 3.1.2, 4.3.1; [S2016]: a new node must reach it to count."""
    return diameters is not None and _units(diameters.short_axis_mm) >= _units(RECIST_PATHOLOGICAL_SHORT_AXIS_MM)


def _recist_role(node: TrackedNode, targets: list[int]) -> str:
    """target / non-target (pathological at baseline), new (pathological at follow-up, not at baseline), normal."""
    if _is_pathological(node.baseline):
        return "target" if node.node_id in targets else "non-target"
    # a node that was normal (< 10 mm) or absent at baseline and is >= 10 mm now is a new lesion [FAQ "New lymph node lesions"]
    return "new" if _is_pathological(node.followup) else "normal"


def _recist_nadir_units(targets: list[TrackedNode], baseline_units: int) -> tuple[int, str]:
    """Smallest sum on study, the baseline included [E2009] 4.3.1: min(baseline sum, sum at the nadir examination)."""
    given = [n.nadir is not None for n in targets]
    if not any(given):
        return baseline_units, "baseline"
    if not all(given):
        missing = [n.node_id for n in targets if n.nadir is None]
        raise InputError(
            f"Target node(s) {missing} have no nadir measurement while other targets do: give the nadir examination's "
            "measurement of every target node (a node not seen there: 0 x 0 mm), or of none."
        )
    nadir_units = sum(_units(n.nadir.short_axis_mm) for n in targets)
    return (nadir_units, "nadir examination") if nadir_units < baseline_units else (baseline_units, "baseline")


def _recist_target_response(targets: list[TrackedNode], result: ResponseAssessment) -> str:
    """CR / PR / SD / PD of the target nodes from their short-axis sums [E2009] 4.3.1, [S2016]."""
    baseline = sum(_units(n.baseline.short_axis_mm) for n in targets)
    followup = sum(_units(_followup(n).short_axis_mm) for n in targets)
    nadir, nadir_from = _recist_nadir_units(targets, baseline)
    result.baseline_sum_mm, result.nadir_sum_mm, result.followup_sum_mm = _mm(baseline), _mm(nadir), _mm(followup)
    result.sum_change_from_nadir_mm = _mm(followup - nadir)
    result.change_from_baseline, result.change_from_nadir = _change(followup, baseline), _change(followup, nadir)
    result.reasons.append(
        f"Sum of target short axes: baseline {_mm(baseline):.1f} mm, nadir {_mm(nadir):.1f} mm ({nadir_from}), follow-up "
        f"{_mm(followup):.1f} mm: {_percent(result.change_from_baseline)} from baseline (PR at -30%), "
        f"{_percent(result.change_from_nadir)} and {_mm(followup - nadir):+.1f} mm from nadir (PD at +20% and +5 mm)."
    )
    if all(not _is_pathological(_followup(n)) for n in targets):
        # CR: every target node < 10 mm short axis; the sum need not be 0 [E2009] 4.3.1. A node < 10 mm is normal,
        # so growth below 10 mm is no progression: a target node "reappears" only at >= 10 mm [FAQ "Abnormal lymph node"].
        result.reasons.append("Target CR: every target node has short axis < 10 mm (normal size).")
        return "CR"
    if _at_least(followup - nadir, nadir, RECIST_PD_INCREASE) and followup - nadir >= _units(RECIST_PD_ABSOLUTE_MM):
        result.reasons.append("Target PD: sum >= 20% above the nadir sum and >= 5 mm above it.")
        return "PD"
    if _at_least(baseline - followup, baseline, RECIST_PR_DECREASE):
        result.reasons.append("Target PR: sum >= 30% below the baseline sum.")
        return "PR"
    result.reasons.append("Target SD: neither >= 30% below baseline nor >= 20% and >= 5 mm above nadir.")
    return "SD"


def _recist_non_target_response(non_targets: list[TrackedNode], progression: bool, result: ResponseAssessment) -> Optional[str]:
    """CR (all < 10 mm), non-CR/non-PD (one still >= 10 mm) or PD (reader's unequivocal progression) [E2009] 4.3.2-4.3.3."""
    if progression:
        result.reasons.append("Non-target PD: unequivocal progression of non-target nodes, as judged by the reader.")
        return "PD"
    if not non_targets:
        return None
    persisting = [n.node_id for n in non_targets if _is_pathological(_followup(n))]
    if not persisting:
        result.reasons.append("Non-target CR: every non-target node has short axis < 10 mm.")
        return "CR"
    result.reasons.append(f"Non-target non-CR/non-PD: node(s) {persisting} still have short axis >= 10 mm.")
    return "non-CR/non-PD"


def _recist_new_nodes(new: list[TrackedNode], result: ResponseAssessment) -> None:
    """A new node counts as a new lesion (PD) at short axis >= 10 mm [E2009] 4.3.3, [S2016]; 10-15 mm flagged [FAQ]."""
    for node in new:
        short = _followup(node).short_axis_mm
        was = "absent" if node.baseline is None else f"{node.baseline.short_axis_mm:.1f} mm"
        small = _units(short) < _units(RECIST_MEASURABLE_SHORT_AXIS_MM)
        result.per_node[node.node_id]["needs_confirmation"] = small
        result.reasons.append(
            f"New lesion: node {node.node_id} has short axis {short:.1f} mm (>= 10 mm) at follow-up, {was} at baseline."
            + (
                " Under 15 mm: the RECIST working group suggests confirming it at the next assessment when it is the only "
                "sign of progression; it is counted as new here."
                if small
                else ""
            )
        )


def _recist_overall(target: Optional[str], non_target: Optional[str], new: bool) -> str:
    """Overall response: [E2009] Table 4 (with targets) and Table 5 (non-targets only)."""
    if new or target == "PD" or non_target == "PD":
        return "PD"
    if target is None:
        if non_target is None:
            return "NE"  # no pathological node at baseline: no nodal disease to follow
        return "CR" if non_target == "CR" else "non-CR/non-PD"
    if target == "CR":
        return "CR" if non_target in (None, "CR") else "PR"
    return target  # PR or SD (non-target non-PD)


def _assess_recist(by_id: dict[int, TrackedNode], targets: list[int], selection: str, progression: bool) -> ResponseAssessment:
    roles = {i: _recist_role(node, targets) for i, node in sorted(by_id.items())}
    ids = {role: [i for i, r in roles.items() if r == role] for role in ("target", "non-target", "new")}
    result = ResponseAssessment(
        RECIST, "", sorted(targets), ids["non-target"], ids["new"], selection,
        per_node={i: _node_record(by_id[i], role) for i, role in roles.items()},
        not_assessed=list(_RECIST_NOT_ASSESSED), sources=list(_RECIST_SOURCES),
    )  # fmt: skip
    result.reasons.append(
        f"Targets ({selection}): {sorted(targets) or 'none'}; RECIST 1.1 allows up to 2 nodes with short axis >= 15 mm; "
        "other nodes >= 10 mm are non-targets."
    )
    if targets:
        result.target_response = _recist_target_response([by_id[i] for i in targets], result)
    else:
        result.reasons.append("No measurable node (short axis >= 15 mm): non-measurable disease, non-targets only.")
    result.non_target_response = _recist_non_target_response([by_id[i] for i in ids["non-target"]], progression, result)
    _recist_new_nodes([by_id[i] for i in ids["new"]], result)
    result.overall_response = _recist_overall(result.target_response, result.non_target_response, bool(ids["new"]))
    if result.overall_response == "NE":
        result.reasons.append("No pathological node (short axis >= 10 mm) at baseline: no nodal disease to assess.")
    result.reasons.append(f"Overall response {result.overall_response} (RECIST 1.1 Tables 4 and 5).")
    return result


# ----------------------------------------------------------------------------------------- Lugano


def _lugano_nadir(node: TrackedNode) -> Optional[LesionDiameters]:
    """The node's own nadir: the smaller-PPD of its baseline and nadir measurements [C2014] ("from nadir")."""
    options = [d for d in (node.baseline, node.nadir) if d is not None]
    if not options:
        return None
    return min(options, key=lambda d: _units(d.long_axis_mm) * _units(d.short_axis_mm))


def _lugano_node_progression(node: TrackedNode) -> dict:
    """Per-node PD [C2014] Table 3: LDi > 15 mm, PPD >= 50 % over the node's nadir, and LDi or SDi up from nadir
    by >= 5 mm (node <= 20 mm LDi at nadir) or >= 10 mm (node > 20 mm)."""
    nadir, now = _lugano_nadir(node), _followup(node)
    if nadir is None:
        return {}
    ldi, sdi, ldi0, sdi0 = (_units(v) for v in (now.long_axis_mm, now.short_axis_mm, nadir.long_axis_mm, nadir.short_axis_mm))
    small = ldi0 <= _units(LUGANO_SMALL_LESION_LDI_MM)
    threshold = _units(LUGANO_DIAMETER_INCREASE_SMALL_MM if small else LUGANO_DIAMETER_INCREASE_LARGE_MM)
    increase = max(ldi - ldi0, sdi - sdi0)
    abnormal = ldi > _units(LUGANO_NORMAL_LDI_MM)
    ppd_grew = _at_least(ldi * sdi - ldi0 * sdi0, ldi0 * sdi0, LUGANO_PPD_INCREASE)
    return {
        "lugano_nadir_ppd_mm2": _mm2(ldi0 * sdi0),
        "ppd_change_from_nadir": _change(ldi * sdi, ldi0 * sdi0),
        "diameter_increase_from_nadir_mm": _mm(increase),
        "diameter_increase_threshold_mm": _mm(threshold),
        "abnormal_ldi_over_15_mm": abnormal,
        "progression": abnormal and ppd_grew and increase >= threshold,
    }


def _lugano_role(node: TrackedNode, targets: list[int]) -> str:
    """target / non-target (non-measured, LDi > 15 mm at baseline) / new (absent at baseline, now > 15 mm) / normal."""
    if node.baseline is not None:
        if node.node_id in targets:
            return "target"
        return "non-target" if is_measurable(node.baseline, LUGANO) else "normal"
    return "new" if _units(_followup(node).long_axis_mm) > _units(LUGANO_NORMAL_LDI_MM) else "normal"


def _lugano_spd(result: ResponseAssessment, targets: list[TrackedNode]) -> tuple[int, int]:
    """Sum of the targets' PPDs at baseline, nadir examination (reported only) and follow-up [C2014]; exact units."""

    def spd(pick) -> Optional[int]:
        values = [pick(n) for n in targets]
        if any(v is None for v in values):
            return None
        return sum(_units(v.long_axis_mm) * _units(v.short_axis_mm) for v in values)

    baseline, followup, nadir = spd(lambda n: n.baseline), spd(_followup), spd(lambda n: n.nadir)
    nadir = baseline if nadir is None or nadir > baseline else nadir
    result.baseline_spd_mm2, result.nadir_spd_mm2, result.followup_spd_mm2 = _mm2(baseline), _mm2(nadir), _mm2(followup)
    result.change_from_baseline, result.change_from_nadir = _change(followup, baseline), _change(followup, nadir)
    result.reasons.append(
        f"SPD of the targets: baseline {_mm2(baseline):.1f} mm2, follow-up {_mm2(followup):.1f} mm2: "
        f"{_percent(result.change_from_baseline)} from baseline (PR at -50%)."
    )
    return baseline, followup


def _lugano_response(by_id: dict[int, TrackedNode], result: ResponseAssessment, spd: tuple[int, int], progression: bool) -> str:
    """CT-based response [C2014] Table 3: PD (per node, new node > 15 mm), CR (all LDi <= 15 mm), PR (SPD -50 %), SD."""
    progressing = [i for i, record in result.per_node.items() if record.get("progression")]
    for i in progressing:
        record = result.per_node[i]
        result.reasons.append(
            f"Node {i} progresses: LDi {by_id[i].followup.long_axis_mm:.1f} mm > 15 mm, PPD "
            f"{_percent(record['ppd_change_from_nadir'])} from its nadir (>= +50%), diameter +"
            f"{record['diameter_increase_from_nadir_mm']:.1f} mm (>= {record['diameter_increase_threshold_mm']:g} mm)."
        )
    for i in result.new_node_ids:
        result.reasons.append(f"New node {i}: LDi {by_id[i].followup.long_axis_mm:.1f} mm > 15 mm.")
    if progression:
        result.reasons.append("Clear progression of non-measured lesions, as judged by the reader.")
    if progressing or result.new_node_ids or progression:
        return "PD"
    if not result.target_node_ids:
        result.reasons.append("No measurable node (LDi > 15 mm) at baseline and no progression: not evaluable.")
        return "NE"
    abnormal = [i for i, node in by_id.items() if _units(_followup(node).long_axis_mm) > _units(LUGANO_NORMAL_LDI_MM)]
    if not abnormal:
        result.reasons.append("CR: every node (targets, non-measured and others) has LDi <= 15 mm.")
        return "CR"
    baseline_spd, followup_spd = spd
    if _at_least(baseline_spd - followup_spd, baseline_spd, LUGANO_PR_DECREASE):
        result.reasons.append(f"PR: SPD >= 50% below baseline; node(s) {abnormal} still have LDi > 15 mm.")
        return "PR"
    result.reasons.append(f"SD: SPD less than 50% below baseline and no progression; node(s) {abnormal} have LDi > 15 mm.")
    return "SD"


def _assess_lugano(by_id: dict[int, TrackedNode], targets: list[int], selection: str, progression: bool) -> ResponseAssessment:
    roles = {i: _lugano_role(node, targets) for i, node in sorted(by_id.items())}
    ids = {role: [i for i, r in roles.items() if r == role] for role in ("non-target", "new")}
    result = ResponseAssessment(
        LUGANO, "", sorted(targets), ids["non-target"], ids["new"], selection,
        per_node={i: {**_node_record(by_id[i], role), **_lugano_node_progression(by_id[i])} for i, role in roles.items()},
        not_assessed=list(_LUGANO_NOT_ASSESSED), sources=list(_LUGANO_SOURCES),
    )  # fmt: skip
    result.reasons.append(
        f"Targets ({selection}): {sorted(targets) or 'none'}; Lugano 2014 allows up to 6 nodes with LDi > 15 mm; "
        "other nodes with LDi > 15 mm are non-measured lesions."
    )
    spd = _lugano_spd(result, [by_id[i] for i in sorted(targets)]) if targets else (0, 0)
    result.overall_response = _lugano_response(by_id, result, spd, progression)
    result.reasons.append(f"Overall CT-based response {result.overall_response} (Lugano 2014, Table 3).")
    return result


# ------------------------------------------------------------------------------------------- entry


def assess_response(
    nodes: Sequence[TrackedNode],
    criteria: str,
    target_node_ids: Optional[Sequence[int]] = None,
    *,
    non_target_progression: bool = False,
) -> ResponseAssessment:
    """Nodal response at follow-up by ``criteria`` ("recist" for RECIST 1.1, "lugano" for Lugano 2014 CT-based).

    ``target_node_ids`` replaces the automatic target selection (:func:`select_target_nodes`); it is
    checked against the criteria (known ids, at most 2 / 6, measurable at baseline) and refused with
    an :class:`~LymphNodeQuantLib.errors.InputError` otherwise. ``non_target_progression`` is the
    reader's judgement of unequivocal progression of non-target (non-measured) nodes, which has no
    size threshold and is never inferred. See the module docstring for sources and conventions.
    """
    name = _criteria_name(criteria)
    by_id = _checked_nodes(nodes)
    targets, selection = _targets(by_id, name, target_node_ids)
    if name == RECIST:
        return _assess_recist(by_id, targets, selection, bool(non_target_progression))
    return _assess_lugano(by_id, targets, selection, bool(non_target_progression))
