"""The follow-up report: per-node table (CSV/JSON), printed summary and waterfall plot (PNG).

One row per tracked node (:data:`FOLLOWUP_COLUMNS`); the JSON report adds the overall response with
its reasons, the registration (stages, residual, follow-up-to-baseline matrix) and every warning.
Values follow :mod:`LymphNodeQuantLib.table_format` (empty CSV cell / JSON null = no value).
Relative changes are percentages of the baseline value; a node not found at follow-up counts as 0 mm
there (-100 %), a new node has no relative change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ..errors import InputError
from ..output_files import PathLike, atomic_write
from ..table_format import csv_text, json_safe

FOLLOWUP_COLUMNS: list[tuple[str, str, str]] = [
    ("node_id", "", "tracked node number: the baseline node's number; nodes new at follow-up numbered after the largest"),
    ("status", "", "matched (found at both examinations), new (only at follow-up) or disappeared (not found at follow-up)"),
    ("role", "", "the response criteria's role: target, non-target, new, normal (Lugano: also not-measured)"),
    ("baseline_short_axis_mm", "mm", "RECIST short axis at baseline (measure.py)"),
    ("followup_short_axis_mm", "mm", "RECIST short axis at follow-up; empty when not found"),
    ("short_axis_change_mm", "mm", "follow-up minus baseline short axis (a node not found counts as 0 mm)"),
    ("short_axis_change_percent", "%", "short-axis change as a percentage of the baseline short axis"),
    ("baseline_long_axis_mm", "mm", "long axis at baseline, in the short axis' slice"),
    ("followup_long_axis_mm", "mm", "long axis at follow-up"),
    ("long_axis_change_mm", "mm", "follow-up minus baseline long axis"),
    ("long_axis_change_percent", "%", "long-axis change as a percentage of the baseline long axis"),
    ("baseline_ppd_mm2", "mm2", "long x short axis at baseline (Lugano's product of perpendicular diameters)"),
    ("followup_ppd_mm2", "mm2", "long x short axis at follow-up"),
    ("ppd_change_percent", "%", "PPD change as a percentage of the baseline PPD"),
    ("baseline_volume_ml", "mL", "node volume at baseline"),
    ("followup_volume_ml", "mL", "node volume at follow-up"),
    ("volume_change_ml", "mL", "follow-up minus baseline volume"),
    ("volume_change_percent", "%", "volume change as a percentage of the baseline volume"),
    ("nadir_status", "", "with a nadir examination: matched or not found (counted as 0 mm there)"),
    ("nadir_short_axis_mm", "mm", "short axis at the nadir examination"),
    ("nadir_long_axis_mm", "mm", "long axis at the nadir examination"),
    (
        "centroid_residual_mm",
        "mm",
        "distance between the baseline centroid and the registered follow-up centroid (matched nodes)",
    ),
    ("overlap_dice", "", "Dice overlap of the baseline node and the registered follow-up node"),
    ("check_match", "", "true when the centroid residual exceeds the warning threshold: check that it is the same node"),
    ("baseline_segment_id", "", "the node's number in the baseline segmentation (label value or component number)"),
    ("followup_segment_id", "", "the node's number in the follow-up segmentation as given"),
    ("baseline_slice_index", "", "baseline slice (array axis 0) where the axes were measured"),
    ("followup_slice_index", "", "follow-up slice where the axes were measured"),
    ("baseline_centroid_l_mm", "mm", "baseline centroid, LPS left (Slicer RAS: R = -L, A = -P, S = S)"),
    ("baseline_centroid_p_mm", "mm", "baseline centroid, LPS posterior"),
    ("baseline_centroid_s_mm", "mm", "baseline centroid, LPS superior"),
    ("followup_centroid_l_mm", "mm", "follow-up centroid in the follow-up CT's space, LPS left"),
    ("followup_centroid_p_mm", "mm", "follow-up centroid in the follow-up CT's space, LPS posterior"),
    ("followup_centroid_s_mm", "mm", "follow-up centroid in the follow-up CT's space, LPS superior"),
    ("followup_centroid_in_baseline_l_mm", "mm", "follow-up centroid mapped into baseline space, LPS left"),
    ("followup_centroid_in_baseline_p_mm", "mm", "follow-up centroid mapped into baseline space, LPS posterior"),
    ("followup_centroid_in_baseline_s_mm", "mm", "follow-up centroid mapped into baseline space, LPS superior"),
    (
        "baseline_centroid_in_followup_l_mm",
        "mm",
        "baseline centroid mapped into follow-up space (also for a node not found), LPS left",
    ),
    ("baseline_centroid_in_followup_p_mm", "mm", "baseline centroid mapped into follow-up space, LPS posterior"),
    ("baseline_centroid_in_followup_s_mm", "mm", "baseline centroid mapped into follow-up space, LPS superior"),
]
COLUMN_NAMES = [name for name, _, _ in FOLLOWUP_COLUMNS]
MATPLOTLIB_MISSING = (
    "The waterfall plot needs matplotlib, which is not installed: pip install matplotlib==3.11.2 "
    "(or pip install 'LymphNodeQuantLib[test]'), or leave out --waterfall."
)


def _percent(fraction: Optional[float]) -> Optional[float]:
    return None if fraction is None else 100.0 * fraction


def _point(prefix: str, point) -> dict:
    values = (None, None, None) if point is None else tuple(float(v) for v in point)
    return {f"{prefix}_{axis}_mm": value for axis, value in zip("lps", values)}


def node_row(node, role: Optional[str] = None) -> dict:
    """One :class:`.compare.NodeComparison` as a dict with the keys of :data:`FOLLOWUP_COLUMNS`."""
    b, f, n = node.baseline, node.followup, node.nadir
    row = {"node_id": node.node_id, "status": node.status, "role": role}
    for quantity, name in (("short_axis_mm", "short_axis"), ("long_axis_mm", "long_axis")):
        absolute, relative = node.change(quantity)
        row[f"baseline_{quantity}"] = None if b is None else getattr(b, quantity)
        row[f"followup_{quantity}"] = None if f is None else getattr(f, quantity)
        row[f"{name}_change_mm"], row[f"{name}_change_percent"] = absolute, _percent(relative)
    row["baseline_ppd_mm2"] = None if b is None else b.long_axis_mm * b.short_axis_mm
    row["followup_ppd_mm2"] = None if f is None else f.long_axis_mm * f.short_axis_mm
    row["ppd_change_percent"] = _percent(node.change("perpendicular_product_mm2")[1])
    absolute, relative = node.change("volume_ml")
    row.update(
        {
            "baseline_volume_ml": None if b is None else b.volume_ml,
            "followup_volume_ml": None if f is None else f.volume_ml,
            "volume_change_ml": absolute,
            "volume_change_percent": _percent(relative),
            "nadir_status": node.nadir_status,
            "nadir_short_axis_mm": None if n is None else n.short_axis_mm,
            "nadir_long_axis_mm": None if n is None else n.long_axis_mm,
            "centroid_residual_mm": node.centroid_residual_mm,
            "overlap_dice": node.overlap_dice,
            "check_match": node.check_match,
            "baseline_segment_id": None if b is None else b.node_id,
            "followup_segment_id": None if f is None else f.node_id,
            "baseline_slice_index": None if b is None else b.measurement_slice_index,
            "followup_slice_index": None if f is None else f.measurement_slice_index,
        }
    )
    row.update(_point("baseline_centroid", None if b is None else b.centroid_lps_mm))
    row.update(_point("followup_centroid", None if f is None else f.centroid_lps_mm))
    row.update(_point("followup_centroid_in_baseline", node.followup_centroid_in_baseline_lps_mm))
    row.update(_point("baseline_centroid_in_followup", node.baseline_centroid_in_followup_lps_mm))
    return {name: row[name] for name in COLUMN_NAMES}


def node_rows(result) -> list[dict]:
    """The table rows of a :class:`.compare.FollowupResult`, with each node's role from the response."""
    per_node = getattr(result.response, "per_node", {}) or {}
    return [node_row(node, per_node.get(node.node_id, {}).get("role")) for node in result.nodes]


def _examination(examination) -> Optional[dict]:
    if examination is None:
        return None
    return {
        "node_count": len(examination.nodes),
        "segmented_by_model": examination.segmented_by_model,
        "geometry": examination.ct.geometry.describe(),
        "messages": list(examination.messages),
    }


def report_document(result, metadata: Optional[dict] = None) -> dict:
    """The JSON report of a :class:`.compare.FollowupResult` (JSON-safe)."""
    document = {
        "criteria": result.response.criteria,
        "overall_response": result.response.overall_response,
        "response": result.response.as_dict(),
        "registration": result.registration.as_dict(),
        "node_centroid_residual_mm": result.node_centroid_residual_mm,
        "matching": result.matching.as_dict(),
        "nadir_registration": None if result.nadir_registration is None else result.nadir_registration.as_dict(),
        "nadir_matching": None if result.nadir_matching is None else result.nadir_matching.as_dict(),
        "examinations": {
            "baseline": _examination(result.baseline),
            "followup": _examination(result.followup),
            "nadir": _examination(result.nadir),
        },
        "warnings": list(result.warnings),
        "columns": [{"name": n, "unit": u, "description": d} for n, u, d in FOLLOWUP_COLUMNS],
        "nodes": node_rows(result),
        "timings_s": {k: round(float(v), 3) for k, v in result.timings_s.items()},
    }
    document.update(metadata or {})
    return json_safe(document)


def write_report(path: PathLike, result, overwrite: bool = False, metadata: Optional[dict] = None) -> Path:
    """``.json``: the whole report; ``.csv``: the per-node table. Refuses to replace a file unless ``overwrite``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        text = csv_text(COLUMN_NAMES, node_rows(result))
    elif suffix == ".json":
        text = json.dumps(report_document(result, metadata), indent=2) + "\n"
    else:
        raise InputError(f"Cannot write a follow-up report to '{path}': use a .json or .csv file name.")
    return atomic_write(path, lambda temporary: Path(temporary).write_text(text), overwrite)


# ----------------------------------------------------------------------------------- text


def _number(value: Optional[float], digits: int = 1, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def format_table(result) -> str:
    """A short table of the tracked nodes (the report files hold every column)."""
    lines = [f"{'node':>4}  {'status':<11}  {'role':<10}  {'short mm':>13}  {'change':>14}  {'volume mL':>15}  {'residual':>8}"]
    for row in node_rows(result):
        short = f"{_number(row['baseline_short_axis_mm'])} -> {_number(row['followup_short_axis_mm'])}"
        change = f"{_number(row['short_axis_change_mm'], signed=True)} mm"
        if row["short_axis_change_percent"] is not None:
            change += f" {_number(row['short_axis_change_percent'], 0, True)}%"
        volume = f"{_number(row['baseline_volume_ml'], 2)} -> {_number(row['followup_volume_ml'], 2)}"
        residual = "-" if row["centroid_residual_mm"] is None else f"{row['centroid_residual_mm']:.1f} mm"
        flag = "  CHECK MATCH" if row["check_match"] else ""
        lines.append(
            f"{row['node_id']:>4}  {row['status']:<11}  {row['role'] or '-':<10}  {short:>13}  {change:>14}  {volume:>15}  "
            f"{residual:>8}{flag}"
        )
    return "\n".join(lines)


def format_summary(result) -> str:
    """Overall response with the rules that decided it, and the registration residual."""
    response, registration = result.response, result.registration
    used, tried = registration.residual_blocks
    residual = "not measurable" if registration.residual_mm is None else f"{registration.residual_mm:.1f} mm"
    node_residual = result.node_centroid_residual_mm
    lines = [
        f"Overall response ({response.criteria}): {response.overall_response}",
        *(f"  {reason}" for reason in response.reasons),
        f"Registration ({' -> '.join(registration.stages)}, {registration.mask} mask): residual {residual} "
        f"(median local misalignment of {used} of {tried} chest blocks; warning above {registration.residual_warning_mm:g} mm)"
        + ("" if node_residual is None else f", median node centroid residual {node_residual:.1f} mm"),
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- waterfall


def require_matplotlib() -> None:
    """Raise a clear :class:`InputError` when matplotlib is not installed (call before the work)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise InputError(MATPLOTLIB_MISSING) from error


def waterfall_values(result) -> tuple[str, list[tuple[int, Optional[float], str, Optional[str]]]]:
    """(quantity, [(node id, percent change or None for a new node, status, role)]), largest increase first."""
    return waterfall_rows(node_rows(result), result.response.criteria)


def waterfall_rows(rows: list[dict], criteria: str) -> tuple[str, list[tuple[int, Optional[float], str, Optional[str]]]]:
    """:func:`waterfall_values` from report rows (:func:`node_rows`, or the JSON report's ``nodes``) and the criteria's name."""
    lugano = criteria.lower().startswith("lugano")
    key, quantity = ("ppd_change_percent", "PPD") if lugano else ("short_axis_change_percent", "short axis")
    values = [(row["node_id"], row[key], row["status"], row["role"]) for row in rows]
    values.sort(key=lambda r: (-(float("inf") if r[1] is None else r[1]), r[0]))
    return quantity, values


def write_waterfall(path: PathLike, result, overwrite: bool = False) -> Path:
    """A waterfall plot (PNG) of every node's relative change: new nodes hatched at the top, target nodes marked T."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quantity, rows = waterfall_values(result)
    lugano = result.response.criteria.lower().startswith("lugano")
    thresholds = ((50.0, "+50%: Lugano per-node PD"), (-50.0, "-50%: Lugano PR (SPD)")) if lugano else (
        (20.0, "+20%: RECIST PD (sum)"), (-30.0, "-30%: RECIST PR (sum)"))  # fmt: skip
    known = [r[1] for r in rows if r[1] is not None]
    top = max([100.0, *known]) * 1.1
    colours = {"matched": "#4477aa", "disappeared": "#228833", "new": "#cc3311"}
    figure, axes = plt.subplots(figsize=(max(5.0, 0.5 * len(rows) + 2.5), 4.0), dpi=100)
    for position, (node_id, value, status, role) in enumerate(rows):
        height = top if value is None else value
        axes.bar(position, height, color=colours[status], hatch="//" if value is None else None, edgecolor="black", linewidth=0.5)
        if value is None:
            axes.text(position, top, "new", ha="center", va="bottom", fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, label=s) for s, c in colours.items()]
    for (level, label), style in zip(thresholds, ("--", ":")):
        handles.append(axes.axhline(level, color="grey", linestyle=style, linewidth=0.8, label=label))
    axes.axhline(0.0, color="black", linewidth=0.8)
    axes.set_xticks(range(len(rows)), [f"{r[0]}{' T' if r[3] == 'target' else ''}" for r in rows])
    axes.set_xlabel("node (T: target)")
    axes.set_ylabel(f"{quantity} change from baseline (%)")
    axes.set_ylim(min([-105.0, *known]), top * 1.12)
    axes.set_title(f"{result.response.criteria}: overall {result.response.overall_response}", fontsize=10)
    axes.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    try:
        return atomic_write(path, lambda temporary: figure.savefig(temporary, format="png"), overwrite)
    finally:
        plt.close(figure)
