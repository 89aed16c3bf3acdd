"""Follow-up engine (issue 14): registration and matching time at full size, matching accuracy over random pairs.

1. **Time** on a full-size pair: two 512 x 512 x 140 phantom CTs (0.7 x 0.7 x 2.5 mm) of the same
   patient related by a random rigid + smooth transform, nodes implanted at known sizes at both
   (``LymphNodeQuantLib.followup.known_pairs``). Timed, each ``--repeats`` times (>= 3; min / median /
   max) with every library pinned to ``--threads`` threads (default 2): registration (rigid + affine),
   registration with the B-spline stage (``--deformable``), matching (overlap resampling +
   assignment), measuring both node maps, and the whole ``compare_examinations`` call.
2. **Accuracy** over ``--pairs`` (default 20) smaller phantom pairs (128 x 128 x 40, 2.5 x 2.5 x 3 mm),
   each with its own random transform (rotations up to 2/2/5 degrees, translations up to 10/10/6 mm,
   a smooth deformation up to 3 mm) and its own random plan (4 nodes of 8-22 mm grown or shrunk by
   up to 50 %, one removed, one new): matches exactly right, wrong and missed; short-axis change
   error against the known change; registration error at the nodes; the residual, and the residual
   the same registration shows when deliberately shifted by 10 mm (is a bad registration visible?);
   and whether the response equals the response computed from the true correspondences.

Writes the ``followup`` section of ``benchmarks/RESULTS.md``. Run from the repository root:
``python benchmarks/followup_bench.py`` (about 10 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

FULL_SHAPE_ZYX = (140, 512, 512)
FULL_SPACING_ZYX_MM = (2.5, 0.7, 0.7)


def _timed(function, repeats: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return times, result


def time_full_size(repeats: int) -> dict:
    from LymphNodeQuantLib.followup.compare import compare_examinations
    from LymphNodeQuantLib.followup.known_pairs import make_phantom_pair
    from LymphNodeQuantLib.followup.matching import match_nodes
    from LymphNodeQuantLib.followup.registration import RegistrationSettings, register_followup
    from LymphNodeQuantLib.measure import measure_nodes

    pair = make_phantom_pair(seed=1, shape_zyx=FULL_SHAPE_ZYX, spacing_zyx_mm=FULL_SPACING_ZYX_MM, margin_slices=8)
    timings = {}
    timings["measure both node maps"], measured = _timed(
        lambda: [measure_nodes(v, c, nodes_from="labels") for v, c in ((pair.baseline_labels, pair.baseline_ct), (pair.followup_labels, pair.followup_ct))],
        repeats,
    )  # fmt: skip
    timings["registration, rigid + affine"], registration = _timed(
        lambda: register_followup(pair.baseline_ct, pair.followup_ct), repeats
    )
    timings["registration, rigid + affine + B-spline"], deformable = _timed(
        lambda: register_followup(pair.baseline_ct, pair.followup_ct, RegistrationSettings(deformable=True)), repeats
    )
    timings["matching (overlap + assignment)"], matching = _timed(
        lambda: match_nodes(measured[0], pair.baseline_labels, measured[1], pair.followup_labels, registration), repeats
    )
    timings["compare_examinations, whole pipeline"], result = _timed(
        lambda: compare_examinations(pair.baseline_ct, pair.followup_ct, pair.baseline_labels, pair.followup_labels), repeats
    )
    exact = {p.baseline_id: p.followup_id for p in result.matching.pairs} == pair.expected_matches()
    return {
        "timings": timings,
        "exact": exact,
        "residual_mm": registration.residual_mm,
        "deformable_residual_mm": deformable.residual_mm,
        "stage_s": registration.timings_s,
        "deformable_stage_s": deformable.timings_s,
    }


def random_plan(rng: np.random.Generator) -> tuple:
    sizes = np.exp(rng.uniform(np.log(8.0), np.log(22.0), 6))
    plan = [(float(s), float(s * rng.uniform(0.5, 1.5))) for s in sizes[:4]]
    return tuple(plan + [(float(sizes[4]), None), (None, float(sizes[5]))])


def make_random_pair(seed: int):
    from LymphNodeQuantLib.followup.known_pairs import make_phantom_pair

    rng = np.random.default_rng([seed, 2024])
    for _ in range(10):  # a plan whose nodes do not fit in the phantom's fat is drawn again
        try:
            return make_phantom_pair(seed=seed, plan=random_plan(rng))
        except ValueError:
            continue
    raise RuntimeError(f"no plan fitted for seed {seed}")


def score_pair(pair, result) -> dict:
    from LymphNodeQuantLib.followup.response import LesionDiameters, TrackedNode, assess_response

    expected = pair.expected_matches()
    found = {p.baseline_id: p.followup_id for p in result.matching.pairs}
    pixel_mm = max(pair.baseline_ct.geometry.spacing_zyx_mm[1:])
    errors, registration_errors = [], []
    for known in pair.nodes:
        if known.baseline_label and known.followup_label and found.get(known.baseline_label) == known.followup_label:
            row = result.node(known.baseline_label)
            errors.append(row.change("short_axis_mm")[0] - (known.followup_short_axis_mm - known.baseline_short_axis_mm))
            truth = pair.transform.followup_to_baseline(np.asarray(row.followup.centroid_lps_mm))
            registration_errors.append(float(np.linalg.norm(np.asarray(row.followup_centroid_in_baseline_lps_mm) - truth)))
    # the response from the true correspondences, with the same measurements
    baseline = {m.node_id: m for m in result.baseline.nodes}
    followup = {m.node_id: m for m in result.followup.nodes}
    truth_nodes, next_id = [], max(baseline) + 1
    for known in pair.nodes:
        b = LesionDiameters.from_measurement(baseline[known.baseline_label]) if known.baseline_label else None
        f = LesionDiameters.from_measurement(followup[known.followup_label]) if known.followup_label else None
        node_id = known.baseline_label or next_id
        next_id += known.baseline_label is None
        truth_nodes.append(TrackedNode(node_id, b, f))
    true_response = assess_response(truth_nodes, "recist").overall_response
    return {
        "exact": found == expected and result.matching.new_ids == [n.followup_label for n in pair.nodes if not n.baseline_label],
        "correct": sum(found.get(b) == f for b, f in expected.items()),
        "expected": len(expected),
        "wrong": sum(b not in expected or expected[b] != f for b, f in found.items()),
        "change_errors_px": [e / pixel_mm for e in errors],
        "change_errors_mm": errors,
        "registration_errors_mm": registration_errors,
        "residual_mm": result.registration.residual_mm,
        "surface_distance_mm": result.registration.surface_distance_mm,
        "shifted_residual_mm": shifted_residual_mm(pair, result),
        "response_agrees": result.response.overall_response == true_response,
        "warnings": len(result.warnings),
    }


def shifted_residual_mm(pair, result, shift_mm=(0.0, 6.0, 8.0)):
    """The residual the same registration would show were it off by 10 mm (is a bad registration visible?)."""
    import SimpleITK as sitk

    from LymphNodeQuantLib.followup.registration import chest_mask, working_image
    from LymphNodeQuantLib.followup.residual import local_misalignment
    from LymphNodeQuantLib.geometry import Volume

    fixed = Volume.from_sitk(working_image(pair.baseline_ct, 3.0))
    chest = chest_mask(fixed, 15.0)[0]
    off = sitk.CompositeTransform([sitk.TranslationTransform(3, shift_mm), result.registration.transform])
    return local_misalignment(fixed, working_image(pair.followup_ct, 3.0), off, chest, seed=7).residual_mm


def accuracy(pairs: int) -> dict:
    from LymphNodeQuantLib.followup.compare import compare_examinations

    scores, times = [], []
    for seed in range(pairs):
        pair = make_random_pair(seed)
        started = time.perf_counter()
        result = compare_examinations(pair.baseline_ct, pair.followup_ct, pair.baseline_labels, pair.followup_labels)
        times.append(time.perf_counter() - started)
        scores.append(score_pair(pair, result))
        print(f"pair {seed}: exact {scores[-1]['exact']}, residual {scores[-1]['residual_mm']} mm", flush=True)
    return {"scores": scores, "times": times}


def _mm(value) -> str:
    return "not measurable" if value is None else f"{value:.2f} mm"


def markdown(full: dict, acc: dict, threads: int, git_at_start: str, loads: list[float], command: str) -> str:
    from benchmarks.results_md import format_times, machine_description, time_summary

    lines = [
        "## Follow-up: registration and matching (issue 14)",
        "",
        f"Machine: {machine_description(git_at_start)}.  ",
        f"Command: `{command}`; every library pinned to {threads} threads; 1-minute load average during the run "
        f"{min(loads):.1f}-{max(loads):.1f} (other jobs shared the machine when it is above {threads}).",
        "",
        f"### Time: two {FULL_SHAPE_ZYX[2]}x{FULL_SHAPE_ZYX[1]}x{FULL_SHAPE_ZYX[0]} CTs "
        f"({FULL_SPACING_ZYX_MM[2]}x{FULL_SPACING_ZYX_MM[1]}x{FULL_SPACING_ZYX_MM[0]} mm, phantom pair with a known transform)",
        "",
        "| step | seconds, median (min-max) | repeats |",
        "|---|---|---|",
    ]
    for name, values in full["timings"].items():
        summary = time_summary(values)
        lines.append(f"| {name} | {format_times(summary)} | {summary['n']} |")
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in full["stage_s"].items())
    lines += [
        "",
        f"Stages of one rigid + affine registration: {stages}. Registration residual (median local misalignment): "
        f"{_mm(full['residual_mm'])} rigid + affine, {_mm(full['deformable_residual_mm'])} with the B-spline. "
        f"Matches exactly right: {'yes' if full['exact'] else 'NO'}.",
        "",
    ]
    scores = acc["scores"]
    change_px = np.abs(np.concatenate([s["change_errors_px"] for s in scores]))
    change_mm = np.abs(np.concatenate([s["change_errors_mm"] for s in scores]))
    registration_mm = np.concatenate([s["registration_errors_mm"] for s in scores])
    residuals = np.array([np.nan if s["residual_mm"] is None else s["residual_mm"] for s in scores])
    surfaces = np.array([np.nan if s["surface_distance_mm"] is None else s["surface_distance_mm"] for s in scores])
    shifted = np.array([np.nan if s["shifted_residual_mm"] is None else s["shifted_residual_mm"] for s in scores])
    correct, expected = sum(s["correct"] for s in scores), sum(s["expected"] for s in scores)
    lines += [
        f"### Matching accuracy: {len(scores)} phantom pairs (128x128x40, 2.5x2.5x3 mm), each with a random transform and plan",
        "",
        "| measure | value |",
        "|---|---|",
        f"| pairs with every match, new and disappeared node exactly right | {sum(s['exact'] for s in scores)} / {len(scores)} |",
        f"| nodes present at both examinations matched to the right node | {correct} / {expected} |",
        f"| wrong matches | {sum(s['wrong'] for s in scores)} |",
        f"| short-axis change error vs the known change, mean / max (mm) | {change_mm.mean():.2f} / {change_mm.max():.2f} |",
        f"| same, in in-plane pixels (2.5 mm), mean / max; share within 1 pixel | {change_px.mean():.2f} / {change_px.max():.2f}; "
        f"{np.mean(change_px <= 1.0) * 100:.0f}% |",
        f"| registration error at the nodes (mapped follow-up centroid vs the known transform), median / max (mm) | "
        f"{np.median(registration_mm):.2f} / {registration_mm.max():.2f} |",
        f"| registration residual (median local misalignment of chest blocks), median / max (mm); not measurable | "
        f"{np.nanmedian(residuals):.2f} / {np.nanmax(residuals):.2f}; {int(np.isnan(residuals).sum())} |",
        f"| the same residual with the registration deliberately 10 mm off, median / min (mm); not measurable | "
        f"{np.nanmedian(shifted):.2f} / {np.nanmin(shifted):.2f}; {int(np.isnan(shifted).sum())} |",
        f"| lung surface distance after registration (reported, not used for warnings), median / max (mm) | "
        f"{np.nanmedian(surfaces):.2f} / {np.nanmax(surfaces):.2f} |",
        f"| pairs with a warning | {sum(s['warnings'] > 0 for s in scores)} |",
        f"| RECIST response equal to the response from the true correspondences | {sum(s['response_agrees'] for s in scores)} / {len(scores)} |",
        f"| `compare_examinations` per pair, median (min-max) s | {format_times(time_summary(acc['times']))} |",
        "",
        "The short-axis change error is the measurement's own (each node measured in its own scan: digitisation of "
        "a 4-33 mm ellipsoid at 2.5 mm pixels), not the matching's; the registration error is what the 15 mm gate must absorb.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=20)
    args = parser.parse_args()
    from benchmarks.results_md import THREAD_ENV_VARS, command_line, git_state, load_average, pin_threads, update_section

    os.environ.update({name: str(args.threads) for name in THREAD_ENV_VARS})
    import SimpleITK  # noqa: F401  (imported so pin_threads pins it)

    pin_threads(args.threads)
    git_at_start = git_state()
    loads = [load_average()]
    full = time_full_size(max(args.repeats, 3))
    loads.append(load_average())
    acc = accuracy(args.pairs)
    loads.append(load_average())
    text = markdown(full, acc, args.threads, git_at_start, loads, command_line())
    print(text)
    update_section("followup", text)
    return 0 if full["exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
