"""The tables of a whole batch, written at ``DIR`` root from the manifest and the cases' own outputs.

* ``cohort_nodes.csv``: one row per node of every finished case, ``case_id`` then the node table
  columns of :data:`..measure.NODE_TABLE_COLUMNS` (values as each case's table wrote them);
* ``cases.csv``: one row per case (:data:`CASE_SUMMARY_COLUMNS`): status, this run's action,
  node counts, scores, the error of a failed case;
* with references: ``evaluation_cases.csv`` (:func:`..evaluate.write_case_table`) and
  ``evaluation_summary.json``: :func:`..evaluate.summarize` with the LNQ2023 aggregation (median Dice
  and ASSD over cases; an empty prediction scores Dice 0 and ASSD NaN, and NaN ASSD is replaced by the
  worst finite ASSD, as the challenge ranked). A case with a reference that failed has no prediction:
  it is listed, and a second aggregation scores it as an empty prediction (Dice 0, ASSD NaN), as the
  challenge scored a missing prediction.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

from ..evaluate import CaseEvaluation, NodeMatch, summarize, summarize_scores, write_case_table
from ..measure import NODE_TABLE_COLUMNS
from ..output_files import atomic_write, written_together
from ..table_format import csv_text, json_safe
from .cases import Case
from .manifest import Manifest

COHORT_NODES_NAME = "cohort_nodes.csv"
CASE_SUMMARY_NAME = "cases.csv"
EVALUATION_CASES_NAME = "evaluation_cases.csv"
EVALUATION_SUMMARY_NAME = "evaluation_summary.json"

CASE_SUMMARY_COLUMNS = (
    "case_id",
    "status",
    "this_run",
    "node_count",
    "enlarged_node_count",
    "total_node_volume_ml",
    "dice",
    "assd_mm",
    "hd95_mm",
    "duration_s",
    "error_type",
    "error_message",
    "ct",
    "reference",
    "segmentation",
    "node_table",
    "model",
    "device",
    "finished_at",
)

_FLOAT_FIELDS = {
    name for name, kind in CaseEvaluation.__annotations__.items() if kind in ("float", float)
}  # None in JSON -> NaN again


def case_evaluation_from_dict(document: dict) -> CaseEvaluation:
    """A :class:`..evaluate.CaseEvaluation` back from its ``to_dict()`` JSON (null -> NaN)."""
    values = {k: (float("nan") if k in _FLOAT_FIELDS and v is None else v) for k, v in document.items()}
    for name in ("reference_node_matches", "prediction_node_matches"):
        values[name] = [NodeMatch(**m) for m in values.get(name, [])]
    known = CaseEvaluation.__dataclass_fields__
    return CaseEvaluation(**{k: v for k, v in values.items() if k in known})


def _node_rows(out_dir: Path, case_id: str, entry: dict) -> list[dict]:
    path = out_dir / entry["outputs"]["node_table"]["path"]
    with open(path, newline="", encoding="utf-8") as handle:
        return [{"case_id": case_id, **row} for row in csv.DictReader(handle)]


def _summary_row(case: Case, entry: dict, action: str) -> dict:
    error = entry.get("error") or {}
    scores = entry.get("evaluation") or {}
    outputs = entry.get("outputs") or {}
    return {
        "case_id": case.case_id,
        "status": entry.get("status", "not run"),
        "this_run": action,
        "ct": str(case.ct),
        "reference": str(case.reference) if case.reference else None,
        "error_type": error.get("type"),
        "error_message": " ".join(str(error.get("message", "")).split()) or None,
        "segmentation": outputs.get("segmentation", {}).get("path"),
        "node_table": outputs.get("node_table", {}).get("path"),
        **{k: entry.get(k) for k in ("node_count", "enlarged_node_count", "total_node_volume_ml", "duration_s")},
        **{k: entry.get(k) for k in ("model", "device", "finished_at")},
        **{k: scores.get(k) for k in ("dice", "assd_mm", "hd95_mm")},
    }


def evaluation_summary(evaluations: Sequence[CaseEvaluation], failed_with_reference: Sequence[str]) -> dict:
    """:func:`..evaluate.summarize` (LNQ2023: medians, NaN ASSD -> worst) plus, with failed cases, the same
    Dice/ASSD aggregation over every case with a reference, the failed ones scored as empty predictions."""
    document = {"summary": summarize(evaluations, nan_policy="worst"), "failed_cases_with_reference": list(failed_with_reference)}
    if failed_with_reference:
        nan = float("nan")
        extra = len(failed_with_reference)
        document["lnq2023_failed_as_empty"] = json_safe(
            summarize_scores(
                [e.dice for e in evaluations] + [0.0] * extra,
                [e.assd_mm for e in evaluations] + [nan] * extra,
                [e.hd95_mm for e in evaluations] + [nan] * extra,
                nan_policy="worst",
            )
        )
    document["cases"] = [e.to_dict() for e in evaluations]
    return document


def write_cohort_tables(out_dir: Path, cases: Sequence[Case], manifest: Manifest, actions: dict[str, str]) -> dict[str, Path]:
    """Write the cohort files for ``cases`` (in their order); returns {name: path}. Replaces this batch's own tables."""
    node_rows: list[dict] = []
    summary_rows: list[dict] = []
    evaluations: list[CaseEvaluation] = []
    failed_with_reference: list[str] = []
    for case in cases:
        entry = manifest.cases.get(case.case_id, {})
        summary_rows.append(_summary_row(case, entry, actions.get(case.case_id, "not run")))
        if entry.get("status") != "done":
            if case.reference is not None:
                failed_with_reference.append(case.case_id)
            continue
        node_rows.extend(_node_rows(out_dir, case.case_id, entry))
        if "evaluation" in entry.get("outputs", {}):
            document = json.loads((out_dir / entry["outputs"]["evaluation"]["path"]).read_text(encoding="utf-8"))
            evaluations.append(case_evaluation_from_dict(document))
    written = {}
    node_columns = ["case_id"] + [name for name, _, _ in NODE_TABLE_COLUMNS]
    texts = {
        COHORT_NODES_NAME: csv_text(node_columns, node_rows),
        CASE_SUMMARY_NAME: csv_text(CASE_SUMMARY_COLUMNS, summary_rows),
    }
    with written_together():
        for name, text in texts.items():
            written[name] = atomic_write(out_dir / name, lambda temporary, text=text: Path(temporary).write_text(text), True)
        if evaluations or failed_with_reference:
            written[EVALUATION_CASES_NAME] = write_case_table(out_dir / EVALUATION_CASES_NAME, evaluations, overwrite=True)
            document = json.dumps(json_safe(evaluation_summary(evaluations, failed_with_reference)), indent=1) + "\n"
            written[EVALUATION_SUMMARY_NAME] = atomic_write(
                out_dir / EVALUATION_SUMMARY_NAME, lambda temporary: Path(temporary).write_text(document), True
            )
    return written
