"""ASSD speed and agreement: this project vs the LNQ2023 challenge-style computation, medpy and MONAI.

Builds one synthetic case of 120 x 512 x 512 voxels at 0.8 x 0.8 x 3 mm with 12 lymph nodes
(reference = the phantom's nodes; prediction = the same nodes perturbed: some grown, some shrunk,
one missed, one shifted, two false positives), saves both as .npy, and times each method in a
fresh subprocess (so its peak memory is its own) on the same arrays, at least 3 timed repeats each
(min/median/max reported), every method with the same thread count (``--threads``, default all
cores: torch, OpenMP/MKL/BLAS and ITK pinned to it):

* ``ours``: ``LymphNodeQuantLib.evaluate.surface_distances`` (union bounding box + KD-tree);
* ``challenge``: a plain re-implementation of the challenge algorithm with SimpleITK on the whole
  volume (``LabelContour`` face-connected surfaces, ``SignedMaurerDistanceMap`` in mm, mean of the
  two directed means);
* ``medpy``: ``medpy.metric.binary.assd`` (whole-volume EDT; pools both directed distance sets
  into one mean, and counts voxels on the image border as surface: not the challenge's rules);
* ``monai``: ``monai.metrics.compute_average_surface_distance(symmetric=True)`` (also pools both
  directed distance sets into one mean).

Checks that ours equals the challenge-style value within 1e-4 mm (exit code 1 otherwise). Also
measures the RECIST short-axis error of candidate definitions (sub-pixel outline of the smoothed
mask vs pixel-edge midpoints vs corners, perpendicular chord vs width) on random digitised
ellipsoids, which is how ``recist.py`` chose its rule. Writes the ``metrics`` section of
``benchmarks/RESULTS.md``.

Run from the repository root: ``python benchmarks/metrics_bench.py`` (a few minutes on 2 cores);
``--recist-only`` reruns only the RECIST comparison and rewrites only its subsection.
Benchmark-only dependency: ``medpy==0.5.2`` (skipped, with the reason recorded, when missing).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.references import challenge_style_scores, digitised_ellipsoid, exact_section_axes  # noqa: E402

SHAPE_ZYX = (120, 512, 512)
SPACING_ZYX_MM = (3.0, 0.8, 0.8)
N_NODES = 12
REPEATS = {"ours": 5, "ours_evaluate_case": 5, "challenge": 3, "medpy": 3, "monai": 3}  # timed calls per method (>= 3)
AGREEMENT_MM = 1e-4


# ---------------------------------------------------------------------------------------- the case
def build_case(seed: int = 0, shape_zyx: tuple[int, int, int] = SHAPE_ZYX) -> tuple[np.ndarray, np.ndarray, dict]:
    from scipy import ndimage

    from LymphNodeQuantLib.synthetic import make_phantom

    phantom = make_phantom(shape_zyx, SPACING_ZYX_MM, seed=seed, n_nodes=N_NODES)
    nodes = phantom.node_labels.array
    reference = (nodes > 0).astype(np.uint8)
    prediction = np.zeros_like(reference)
    boxes = ndimage.find_objects(nodes)
    node_ids = [i + 1 for i, box in enumerate(boxes) if box is not None]
    for number, node in enumerate(node_ids):
        box = tuple(slice(max(s.start - 3, 0), s.stop + 3) for s in boxes[node - 1])
        mask = nodes[box] == node
        if number == 0:
            continue  # missed node
        if number % 3 == 1:
            mask = ndimage.binary_dilation(mask, structure=ndimage.generate_binary_structure(3, 1))
        elif number % 3 == 2:
            eroded = ndimage.binary_erosion(mask)
            mask = eroded if eroded.any() else mask
        if number == 3:
            mask = np.roll(mask, 2, axis=2)  # shifted 1.6 mm
        prediction[box] |= mask.astype(np.uint8)
    for fraction in ((0.25, 0.4, 0.6), (0.75, 0.6, 0.45)):  # false positives
        centre = [int(f * n) for f, n in zip(fraction, shape_zyx)]
        z, y, x = np.ogrid[: shape_zyx[0], : shape_zyx[1], : shape_zyx[2]]
        sphere = ((z - centre[0]) * 3.0) ** 2 + ((y - centre[1]) * 0.8) ** 2 + ((x - centre[2]) * 0.8) ** 2 <= 4.0**2
        prediction[sphere] = 1
    info = {
        "reference_nodes": len(node_ids),
        "reference_voxels": int(reference.sum()),
        "prediction_voxels": int(prediction.sum()),
    }
    return prediction, reference, info


# ---------------------------------------------------------------------------------------- the methods
def assd_ours(prediction: np.ndarray, reference: np.ndarray) -> float:
    from LymphNodeQuantLib.evaluate import surface_distances

    return surface_distances(prediction == 1, reference == 1, SPACING_ZYX_MM).assd_mm


def assd_ours_evaluate_case(prediction: np.ndarray, reference: np.ndarray) -> float:
    from LymphNodeQuantLib.evaluate import evaluate_case
    from LymphNodeQuantLib.geometry import ImageGeometry, Volume

    geometry = ImageGeometry(prediction.shape, SPACING_ZYX_MM)
    return evaluate_case(Volume(prediction, geometry), Volume(reference, geometry)).assd_mm


def assd_challenge(prediction: np.ndarray, reference: np.ndarray) -> float:
    return challenge_style_scores(prediction == 1, reference == 1, SPACING_ZYX_MM)[1]


def assd_medpy(prediction: np.ndarray, reference: np.ndarray) -> float:
    from medpy.metric.binary import assd

    return float(assd(prediction == 1, reference == 1, voxelspacing=SPACING_ZYX_MM))


def assd_monai(prediction: np.ndarray, reference: np.ndarray) -> float:
    import torch
    from monai.metrics import compute_average_surface_distance

    p = torch.from_numpy(prediction == 1)[None, None]
    r = torch.from_numpy(reference == 1)[None, None]
    value = compute_average_surface_distance(p, r, include_background=True, symmetric=True, spacing=list(SPACING_ZYX_MM))
    return float(value.item())


METHODS = {
    "ours": assd_ours,
    "ours_evaluate_case": assd_ours_evaluate_case,
    "challenge": assd_challenge,
    "medpy": assd_medpy,
    "monai": assd_monai,
}


def _status_mb(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MiB. VmHWM starts afresh at exec, unlike
    ``getrusage``'s ru_maxrss, which a subprocess inherits from the (large) parent it was forked from."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    try:  # Linux >= 4.0: writing 5 resets VmHWM to the current RSS
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def worker(method: str, folder: Path, repeats: int, threads: int) -> dict:
    """Run in a fresh process: load the case, time ``repeats`` calls, report value and peak memory."""
    from benchmarks.results_md import pin_threads

    prediction = np.load(folder / "prediction.npy")
    reference = np.load(folder / "reference.npy")
    function = METHODS[method]
    tiny = np.zeros((6, 6, 6), np.uint8)
    tiny[2:4, 2:4, 2:4] = 1
    function(tiny, np.roll(tiny, 1, axis=2))  # imports and lazy initialisation outside the timing, for every method
    torch_threads = pin_threads(threads)  # after the imports (a library may set its own count when imported)
    peak_before = _status_mb("VmHWM")
    reset = _reset_peak()
    rss_loaded = _status_mb("VmRSS")
    times, value = [], float("nan")
    for _ in range(repeats):
        start = time.perf_counter()
        value = function(prediction, reference)
        times.append(time.perf_counter() - start)
    peak = max(_status_mb("VmHWM"), 0.0 if reset else peak_before)
    return {
        "method": method,
        "value": value,
        "times_s": times,
        "peak_rss_mb": peak,
        "rss_before_mb": rss_loaded,
        "peak_increase_mb": peak - rss_loaded,
        "peak_reset": reset,
        "torch_threads": torch_threads,
    }


def run_method(method: str, folder: Path, threads: int) -> dict:
    from benchmarks.results_md import pinned_thread_env

    if method == "medpy":
        try:
            import medpy  # noqa: F401
        except ImportError as error:
            return {"method": method, "skipped": f"medpy not installed ({error}); pip install medpy==0.5.2"}
    completed = subprocess.run(
        [sys.executable, __file__, "--worker", method, str(folder), str(REPEATS[method]), str(threads)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=pinned_thread_env(threads),
    )
    if completed.returncode != 0:
        return {
            "method": method,
            "skipped": f"failed: {completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else completed.returncode}",
        }
    return json.loads(completed.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------- RECIST accuracy
def _corner_points_mm(mask_2d, spacing_rc):
    rows, cols = np.nonzero(mask_2d)
    corners = [np.stack([rows + a, cols + b], axis=1) for a in (0.0, 1.0) for b in (0.0, 1.0)]
    return np.concatenate(corners) * np.asarray(spacing_rc)


def _variant_axes(mask_2d, spacing_rc, variant):
    """Short/long axis of one slice under the rule ``variant`` ("outline-shortaxis", see ``recist_variants``)."""
    from LymphNodeQuantLib.recist import axes_of_hull, boundary_points_mm, convex_hull, pixel_edge_points_mm, smoothed_mask

    outline, rule = variant.split("-")
    if outline.startswith("smooth"):
        points = boundary_points_mm(mask_2d, spacing_rc, smoothed_mask(mask_2d, float(outline[len("smooth") :])))
    elif outline == "corners":
        points = _corner_points_mm(mask_2d, spacing_rc)
    else:
        points = pixel_edge_points_mm(mask_2d, spacing_rc)
    hull = convex_hull(points)
    axes = axes_of_hull(hull)
    if rule == "chord":
        return axes.short_axis_mm, axes.long_axis_mm
    p, q = np.array(axes.long_axis_end_points_mm)
    direction = (q - p) / np.linalg.norm(q - p)
    return float(np.ptp(hull @ np.array([-direction[1], direction[0]]))), axes.long_axis_mm


def recist_variants() -> dict[str, str]:
    """Candidate rules (key: outline-shortaxis) and their labels; the first one is this project's."""
    from LymphNodeQuantLib.recist import SMOOTHING_SIGMA_PIXELS as ours

    smoothed = "sub-pixel outline (0.5 crossing of the mask smoothed by {:g} px)"
    variants = {f"smooth{ours:g}-chord": smoothed.format(ours) + ", perpendicular chord (this project)"}
    for sigma in sorted({1.0, 1.2, 1.5} - {ours}):
        variants[f"smooth{sigma:g}-chord"] = smoothed.format(sigma) + ", perpendicular chord"
    variants[f"smooth{ours:g}-width"] = smoothed.format(ours) + ", width across the long axis"
    variants["edges-chord"] = "pixel-edge midpoints, perpendicular chord (this project before issue 12)"
    variants["corners-chord"] = "pixel corners, perpendicular chord"
    variants["edges-width"] = "pixel-edge midpoints, width across the long axis"
    variants["corners-width"] = "pixel corners, width across the long axis"
    return variants


#: Accuracy target (issue 12), in in-plane pixels: |mean error| and |every error| at most these.
RECIST_TARGET_MEAN_PIXELS = 0.2
RECIST_TARGET_EACH_PIXELS = 1.0


def recist_accuracy(
    n_per_spacing: int = 150, seed: int = 0, sizes_mm: tuple[float, float] = (5.0, 30.0), variants: dict[str, str] | None = None
) -> list[str]:
    """Short-axis error (in pixels) on random digitised ellipsoids (sizes in ``sizes_mm``, any in-plane angle) per rule.

    Returns Markdown table rows; the long axis of the same nodes (in the same slice) is reported too.
    ``Testing/test_measure_recist.py::test_accuracy_sweep_random_ellipsoids`` uses the same draws
    as the defaults.
    """
    variants = recist_variants() if variants is None else variants
    low, high = sizes_mm
    rows = []
    for spacing in ((3.0, 0.8, 0.8), (1.0, 0.7, 0.7)):
        rng = np.random.default_rng(seed)
        errors = {name: [] for name in variants}
        for _ in range(n_per_spacing):
            short = rng.uniform(low, high)
            long = rng.uniform(short, high)
            mask, semi_z = digitised_ellipsoid(short, long, rng.uniform(0, np.pi), spacing, rng)
            for name in variants:
                best = None
                for k in np.flatnonzero(mask.any(axis=(1, 2))):  # the slice with the largest short axis
                    value = _variant_axes(mask[k], spacing[1:], name)
                    if best is None or value[0] > best[0] + 1e-9:
                        best = (*value, k)
                exact_short, exact_long = exact_section_axes(short, long, semi_z, (best[2] - mask.shape[0] // 2) * spacing[0])
                errors[name].append(((best[0] - exact_short) / spacing[1], (best[1] - exact_long) / spacing[1]))
        for name, label in variants.items():
            e = np.array(errors[name])
            s, lg = e[:, 0], e[:, 1]
            inside = abs(s.mean()) <= RECIST_TARGET_MEAN_PIXELS and np.abs(s).max() <= RECIST_TARGET_EACH_PIXELS
            rows.append(
                f"| {spacing[2]} x {spacing[1]} x {spacing[0]} | {label} | {s.min():+.2f} | {s.mean():+.2f} | {s.max():+.2f} | "
                f"{'yes' if inside else 'no'} | {lg.min():+.2f} / {lg.mean():+.2f} / {lg.max():+.2f} |"
            )
    return rows


RECIST_HEADING = "### RECIST short axis: accuracy of candidate definitions"


def recist_subsection(n_per_spacing: int, git_at_start: str | None = None) -> list[str]:
    """The RECIST subsection of the ``metrics`` section (Markdown lines), with machine, command and commit."""
    from benchmarks.results_md import command_line, machine_description

    start = time.perf_counter()
    rows = recist_accuracy(n_per_spacing)
    smoothed = {
        name: label for name, label in recist_variants().items() if name.endswith("chord") and not name.startswith("corners")
    }
    small_rows = recist_accuracy(n_per_spacing, seed=1, sizes_mm=(5.0, 7.0), variants=smoothed)
    print(f"RECIST accuracy sweep: {time.perf_counter() - start:.1f} s")
    return [
        RECIST_HEADING,
        "",
        f"Machine: {machine_description(git_at_start)}.  ",
        f"Command: `{command_line()}` (from the repository root).",
        "",
        f"{n_per_spacing} random ellipsoids per spacing (short and long axis 5-30 mm, any in-plane angle, "
        "sub-voxel in-plane position, centre on a slice), digitised at voxel centres; the node's short axis is taken "
        "in the slice where it is largest and compared with the exact cross-section of the ellipsoid in that slice. "
        f"Errors in pixels (in-plane spacing). Target (issue 12, short axis): mean error within "
        f"+/-{RECIST_TARGET_MEAN_PIXELS:g}, every error within +/-{RECIST_TARGET_EACH_PIXELS:g}. "
        "The long axis of the same nodes (same slice) is shown for information.",
        "",
        "| spacing (mm, x y z) | outline and short-axis rule | min error | mean error | max error | meets target "
        "| long axis error: min / mean / max |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Small nodes only: {n_per_spacing} other random ellipsoids per spacing (seed 1) with short and long axis 5-7 mm, "
        "where smoothing moves the outline of a curved node inwards most (about sigma^2 / 2 x curvature) and, for parts "
        "thinner than about two pixels, leaves the pixel-edge midpoints in place. Same measurement and target.",
        "",
        "| spacing (mm, x y z) | outline and short-axis rule | min error | mean error | max error | meets target "
        "| long axis error: min / mean / max |",
        "|---|---|---|---|---|---|---|",
        *small_rows,
    ]


def write_recist_subsection(lines: list[str]) -> None:
    """Replace only the RECIST subsection (from its heading to the end of the ``metrics`` section) in RESULTS.md."""
    from benchmarks.results_md import RESULTS_PATH

    text = RESULTS_PATH.read_text()
    start = text.index(RECIST_HEADING)
    end = text.index("\n<!-- END metrics -->", start)
    RESULTS_PATH.write_text(text[:start] + "\n".join(lines).strip() + text[end:])


# ---------------------------------------------------------------------------------------- report
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=4, metavar=("METHOD", "FOLDER", "REPEATS", "THREADS"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="threads allowed to every method (torch, OpenMP/MKL/BLAS, ITK); default: all cores",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; do not update RESULTS.md")
    parser.add_argument("--small", action="store_true", help="smoke test on a 40 x 256 x 256 case (implies --no-write)")
    parser.add_argument(
        "--recist-only",
        action="store_true",
        help="run only the RECIST accuracy comparison and rewrite only its subsection of RESULTS.md",
    )
    args = parser.parse_args()
    if args.worker:
        method, folder, repeats, threads = args.worker
        print(json.dumps(worker(method, Path(folder), int(repeats), int(threads))))
        return 0

    from benchmarks.results_md import (
        command_line,
        format_times,
        git_state,
        load_average,
        machine_description,
        time_summary,
        update_section,
    )

    git_at_start = git_state()

    if args.recist_only:
        lines = recist_subsection(30 if args.small else 150, git_at_start)
        print("\n".join(lines))
        if not (args.no_write or args.small):
            write_recist_subsection(lines)
            print("updated benchmarks/RESULTS.md (RECIST subsection of section 'metrics')")
        return 0

    load_at_start = load_average()
    print(f"1-minute load average at the start: {load_at_start:.2f}")
    start = time.perf_counter()
    shape = (40, 256, 256) if args.small else SHAPE_ZYX
    args.no_write = args.no_write or args.small
    prediction, reference, info = build_case(shape_zyx=shape)
    print(f"case built in {time.perf_counter() - start:.1f} s: {info}")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        np.save(Path(folder) / "prediction.npy", prediction)
        np.save(Path(folder) / "reference.npy", reference)
        for method in METHODS:
            results[method] = run_method(method, Path(folder), args.threads)
            print(method, results[method])

    for required in ("ours", "challenge"):
        if "skipped" in results[required]:
            print(f"cannot compare: {required} {results[required]['skipped']}", file=sys.stderr)
            return 1
    ours = results["ours"]
    load_at_end = load_average()
    ours_time = float(np.median(ours["times_s"]))
    challenge = results["challenge"]
    difference = abs(ours["value"] - challenge["value"])
    agree = difference <= AGREEMENT_MM
    labels = {
        "ours": "this project: `surface_distances` (bounding box + KD-tree)",
        "ours_evaluate_case": "this project: full `evaluate_case` (Dice, ASSD, HD95, detection)",
        "challenge": "challenge-style SimpleITK (LabelContour + SignedMaurerDistanceMap, whole volume)",
        "medpy": "medpy 0.5.2 `metric.binary.assd`",
        "monai": "MONAI `compute_average_surface_distance(symmetric=True)`",
    }
    lines = [
        "## ASSD: speed and agreement (`benchmarks/metrics_bench.py`)",
        "",
        f"Machine: {machine_description(git_at_start)}.  ",
        f"Command: `{command_line()}` (from the repository root). 1-minute load average {load_at_start:.2f} at the start "
        f"and {load_at_end:.2f} at the end (the machine is shared; above ~1 on 2 cores, other work competed).",
        "",
        f"Case: synthetic chest CT grid {shape[0]} x {shape[1]} x {shape[2]} voxels (z, y, x) at "
        f"{SPACING_ZYX_MM[1]} x {SPACING_ZYX_MM[2]} x {SPACING_ZYX_MM[0]} mm, {info['reference_nodes']} reference nodes "
        f"({info['reference_voxels']} voxels), prediction = nodes grown/shrunk/shifted, one missed, two false positives "
        f"({info['prediction_voxels']} voxels). Each method runs in its own fresh process on the same arrays, after one untimed "
        f"call on a tiny case (imports, lazy initialisation), then {min(REPEATS.values())} to {max(REPEATS.values())} timed "
        f"calls; every worker gets the same {args.threads} thread(s) (torch, OpenMP/MKL/BLAS and ITK pinned; the KD-tree "
        "query and scipy's distance transform are single-threaded); times are median (min-max) of the repeats, and "
        "'slower than ours' is the ratio of medians; peak RSS = the worker process's peak resident set (VmHWM: Python, libraries and the two uint8 input arrays "
        "included); peak added = that peak minus the resident set just before the timed calls.",
        "",
        "| method | ASSD (mm) | time (s): median (min-max) | repeats | slower than ours (x, medians) | peak RSS (MiB) | peak added by the computation (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, result in results.items():
        if "skipped" in result:
            lines.append(f"| {labels[method]} | skipped: {result['skipped']} | | | | | |")
            continue
        summary = time_summary(result["times_s"])
        lines.append(
            f"| {labels[method]} | {result['value']:.6f} | {format_times(summary, 3)} | {summary['n']} | "
            f"{summary['median'] / ours_time:.1f} | "
            f"{result['peak_rss_mb']:.0f} | {result['peak_increase_mb']:.0f} |"
        )
    lines += [
        "",
        f"Agreement with the challenge-style computation: |difference| = {difference:.2e} mm "
        f"({'within' if agree else 'NOT within'} the {AGREEMENT_MM:g} mm tolerance; SimpleITK's distance map is float32).",
        f"Speed-up over the challenge-style computation: **{float(np.median(challenge['times_s'])) / ours_time:.0f}x** "
        f"(ratio of medians; {min(challenge['times_s']) / max(ours['times_s']):.0f}x slowest of ours against fastest "
        f"challenge-style; target >= 20x); peak memory of ours: **{ours['peak_rss_mb']:.0f} MiB** for the whole process, "
        f"{ours['peak_increase_mb']:.0f} MiB added by the computation (target < 1024 MiB).",
        "medpy and MONAI compute a different number by design: both average the pooled distances of the two directions "
        "(weighting the larger surface more) instead of taking the mean of the two directed means as LNQ2023 did; "
        "medpy also counts voxels on the image border as surface (no node touches the border here).",
    ]
    lines += ["", *recist_subsection(30 if args.small else 150, git_at_start)]
    markdown = "\n".join(lines)
    print(markdown)
    if not args.no_write:
        update_section("metrics", markdown)
        print("updated benchmarks/RESULTS.md (section 'metrics')")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
