"""Partial-label strategies compared on phantoms: which way of treating unlabelled voxels works best?

    python benchmarks/partial_label_experiments.py [--iterations 240] [--strategies noisy,masking,...]

Every strategy trains the same compact PlainConvUNet for the same number of iterations (same seed,
same patches) on phantoms whose training labels are PARTIAL (half the nodes annotated, as in
LNQ2023's training set), then the exported model segments fully labelled held-out phantoms with the
``lnq segment`` pipeline and ``LymphNodeQuantLib.evaluate`` scores them (Dice, ASSD, node
sensitivity per short-axis bin). Writes the ``partial_labels`` section of benchmarks/RESULTS.md.

The TotalSegmentator maps the ``totalseg`` strategy uses are NOT TotalSegmentator predictions:
``write_phantom_dataset`` writes each phantom's exact anatomy label map (the one its CT is painted
from) recoded to TotalSegmentator v2 ids (``phantom_anatomy_to_totalseg``), so that row is a best case.

Nothing is reused across code versions: the dataset, the preprocessing cache and each run folder
carry a fingerprint (sha256 over the sources in :data:`CODE_FILES`, plus the dataset recipe and,
for a run, its training config); a folder written with another fingerprint is deleted and rebuilt
(retrained), and the log says so. Cache building is timed apart from training.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

STRATEGIES = ("noisy", "masking", "coating", "totalseg", "dbdmp")
TRAIN_SEEDS = tuple(range(200, 212))
HELDOUT_SEEDS = (300, 301, 302, 303)
GRID = ((80, 256, 256), (3.0, 1.5, 1.5))
SIZE_BINS_MM = ((0.0, 10.0), (10.0, 20.0), (20.0, math.inf))
#: Sources that make the phantoms, the cache and the trained networks (globs, relative to the repository root).
CODE_FILES = (
    "LymphNodeQuantLib/training/*.py",
    "LymphNodeQuantLib/synthetic.py",
    "LymphNodeQuantLib/anatomy.py",
    "LymphNodeQuantLib/preprocessing.py",
    "LymphNodeQuantLib/geometry.py",
    "LymphNodeQuantLib/io.py",
    "LymphNodeQuantLib/models/networks.py",
)
FINGERPRINT_NAME = "code-fingerprint.json"
logger = logging.getLogger("partial_label_experiments")


def code_hashes() -> dict[str, str]:
    """sha256 of every file in :data:`CODE_FILES` (path relative to the repository root -> hex digest)."""
    paths = sorted({path for pattern in CODE_FILES for path in REPO_ROOT.glob(pattern) if path.is_file()})
    return {path.relative_to(REPO_ROOT).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest() for path in paths}


def fingerprint(hashes: dict[str, str], **settings) -> dict:
    """The stamp of a folder: the code's hashes, ``settings`` (JSON values) and one sha256 over both."""
    payload = {"code": hashes, **settings}
    return {"sha256": hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest(), **payload}


def ensure_current(folder: Path, stamp: dict, what: str) -> str:
    """Make ``folder`` hold only work of this code and settings: delete it when its stamp differs (or is
    missing), then write the stamp. Returns "new", "current" (same stamp: may be reused) or "rebuilt"."""
    path = folder / FINGERPRINT_NAME
    if folder.exists():
        try:
            recorded = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            recorded = None
        if recorded is not None and recorded.get("sha256") == stamp["sha256"]:
            return "current"
        if recorded is None:
            reason = "it has no code fingerprint (written by an earlier version of this script)"
        else:
            changed = sorted(
                name
                for name in set(stamp["code"]) | set(recorded.get("code", {}))
                if stamp["code"].get(name) != recorded.get("code", {}).get(name)
            )
            other = sorted(
                key for key in set(stamp) | set(recorded) if key not in ("sha256", "code") and stamp.get(key) != recorded.get(key)
            )
            reason = (
                f"it was written by other code or settings (fingerprint {recorded.get('sha256', '?')[:12]}, now "
                f"{stamp['sha256'][:12]}; changed: {', '.join(changed + other) or 'unknown'})"
            )
        logger.info(f"{what} {folder}: {reason}; deleting it and {'retraining' if what == 'run' else 'rebuilding'}.")
        shutil.rmtree(folder)
        status = "rebuilt"
    else:
        status = "new"
    folder.mkdir(parents=True)
    path.write_text(json.dumps(stamp, indent=1))
    return status


def experiment_config(strategy: str, iterations: int, seed: int):
    from LymphNodeQuantLib.models.networks import plain_unet_architecture
    from LymphNodeQuantLib.training.config import TrainingConfig

    epochs = max(1, iterations // 40)
    return TrainingConfig(
        strategy=strategy,
        spacing_zyx_mm=(3.0, 2.0, 2.0),
        patch_size_zyx=(16, 80, 80),
        architecture=plain_unet_architecture(features_per_stage=(8, 16, 32, 64)),
        epochs=epochs,
        iterations_per_epoch=max(1, iterations // epochs),
        validate_every=10**6,
        num_threads=2,
        seed=seed,
    )


def _bin_low_mm(label: str) -> float:
    return float(label[2:]) if label.startswith(">=") else float(label.split("-")[0])


def sensitivity_by_size(evaluations) -> list[tuple[int, int]]:
    """(detected, reference) node counts per SIZE_BINS_MM over all cases."""
    counts = [[0, 0] for _ in SIZE_BINS_MM]
    for evaluation in evaluations:
        for row in evaluation.detection_bins:
            low = _bin_low_mm(row["short_axis_bin_mm"])
            for index, (a, b) in enumerate(SIZE_BINS_MM):
                if a <= low < b:
                    counts[index][0] += row["true_positives"]
                    counts[index][1] += row["reference_nodes"]
    return [tuple(c) for c in counts]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=240, help="training iterations per strategy (default 240)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated strategies")
    parser.add_argument("--work-dir", type=Path, default=Path.home() / ".cache" / "lnq" / "partial-label-experiments")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-write", action="store_true", help="print the table only (do not update RESULTS.md)")
    args = parser.parse_args(argv)

    import torch

    from benchmarks.results_md import command_line, git_state, load_average, machine_description, update_section
    from LymphNodeQuantLib.evaluate import evaluate_case
    from LymphNodeQuantLib.inference import segment_volume
    from LymphNodeQuantLib.synthetic import make_phantom
    from LymphNodeQuantLib.training.cache import load_or_build_case
    from LymphNodeQuantLib.training.dataset import find_cases
    from LymphNodeQuantLib.training.export import export_model
    from LymphNodeQuantLib.training.phantom_dataset import write_phantom_dataset
    from LymphNodeQuantLib.training.trainer import train

    git_at_start = git_state()
    torch.set_num_threads(2)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    hashes = code_hashes()
    recipe = {"train_seeds": list(TRAIN_SEEDS), "grid": [list(GRID[0]), list(GRID[1])], "annotated_fraction": 0.5}
    data_stamp = fingerprint(hashes, dataset=recipe)
    logger.info(f"code fingerprint {data_stamp['sha256'][:12]} over {len(hashes)} files ({', '.join(CODE_FILES)})")
    load_at_start = load_average()
    logger.info(f"1-minute load average at the start: {load_at_start:.2f}")

    dataset, cache_dir = args.work_dir / "dataset", args.work_dir / "cache"
    started = time.perf_counter()
    dataset_status = ensure_current(dataset, data_stamp, "dataset")
    write_phantom_dataset(dataset, TRAIN_SEEDS, (), shape_zyx=GRID[0], spacing_zyx_mm=GRID[1], annotated_fraction=0.5)
    dataset_seconds = time.perf_counter() - started

    settings = {
        json.dumps(experiment_config(s, args.iterations, args.seed).preprocessing_settings(), sort_keys=True) for s in strategies
    }
    if len(settings) != 1:
        raise SystemExit(f"the strategies preprocess differently ({settings}); one shared cache cannot serve them")
    settings = json.loads(settings.pop())
    started = time.perf_counter()
    cache_status = ensure_current(cache_dir, fingerprint(hashes, dataset=recipe, preprocessing=settings), "cache")
    cases = find_cases(dataset)
    reused_cases = sum(load_or_build_case(case, cache_dir, settings)[1] for case in cases)
    built_cases = len(cases) - reused_cases
    cache_seconds = time.perf_counter() - started
    logger.info(
        f"dataset ({dataset_status}): {dataset_seconds:.0f} s; preprocessing cache ({cache_status}): {cache_seconds:.0f} s "
        f"({built_cases} case(s) preprocessed, {reused_cases} reused)"
    )

    heldout = [make_phantom(*GRID, seed=seed) for seed in HELDOUT_SEEDS]
    rows = []
    for strategy in strategies:
        config = experiment_config(strategy, args.iterations, args.seed)
        run_dir = args.work_dir / f"run-{strategy}-{config.total_iterations}"
        run_status = ensure_current(run_dir, fingerprint(hashes, dataset=recipe, config=config.to_dict()), "run")
        started = time.perf_counter()
        result = train(config, dataset, run_dir, cache_dir=cache_dir, resume=True, show_progress=False)
        train_minutes = (time.perf_counter() - started) / 60
        epoch_seconds = [float(row.get("seconds") or 0.0) for row in result.metrics]
        epoch_minutes = sum(epoch_seconds) / 60
        model = export_model(result.checkpoint, args.work_dir / f"model-{strategy}", name=f"exp-{strategy}", overwrite=True)
        evaluations = []
        for seed, phantom in zip(HELDOUT_SEEDS, heldout):
            labels = segment_volume(phantom.ct, model=str(model), device="cpu", output="binary").labels
            evaluations.append(evaluate_case(labels, phantom.full_labels, case_id=str(seed)))
        dice = [e.dice for e in evaluations]
        assd = [e.assd_mm for e in evaluations if not math.isnan(e.assd_mm)]
        by_size = sensitivity_by_size(evaluations)
        rows.append(
            {
                "strategy": strategy,
                "dice": float(np.median(dice)),
                "assd": float(np.median(assd)) if assd else math.nan,
                "empty": sum(math.isnan(e.assd_mm) for e in evaluations),
                "precision": float(np.nanmean([e.precision for e in evaluations])),
                "by_size": by_size,
                "minutes": train_minutes,
                "epoch_minutes": epoch_minutes,
                "median_epoch_s": float(np.median(epoch_seconds)) if epoch_seconds else math.nan,
                "run_status": run_status,
            }
        )
        print(
            f"{strategy}: median Dice {rows[-1]['dice']:.3f}, median ASSD {rows[-1]['assd']:.2f} mm, "
            f"sensitivity by size {by_size}, training {train_minutes:.1f} min ({epoch_minutes:.1f} min in epochs; run folder "
            f"{run_status})",
            flush=True,
        )
    load_at_end = load_average()

    def sens(detected_reference):
        detected, reference = detected_reference
        return f"{detected / reference:.2f} ({detected}/{reference})" if reference else "n/a"

    bins = ["<10 mm" if b[0] == 0 else (f">={b[0]:g} mm" if math.isinf(b[1]) else f"{b[0]:g}-{b[1]:g} mm") for b in SIZE_BINS_MM]
    dbdmp_base = experiment_config("dbdmp", args.iterations, args.seed).dbdmp_base
    users = ["totalseg"] + (["dbdmp"] if dbdmp_base == "totalseg" else [])
    reused = [r["strategy"] for r in rows if r["run_status"] == "current"]
    lines = [
        "## Partial-label strategies (synthetic phantoms)",
        "",
        f"Machine: {machine_description(git_at_start)}. Command: `{command_line()}`. 1-minute load average {load_at_start:.2f} at the "
        f"start, {load_at_end:.2f} at the end (the machine is shared).",
        "",
        f"Training: {len(TRAIN_SEEDS)} phantoms (seeds {TRAIN_SEEDS[0]}-{TRAIN_SEEDS[-1]}, {GRID[0][2]}x{GRID[0][1]}x{GRID[0][0]} at "
        f"{GRID[1][2]}x{GRID[1][1]}x{GRID[1][0]} mm) with PARTIAL labels (half the nodes annotated); each strategy trains "
        f"the same PlainConvUNet (features 8-64, model spacing 3x2x2 mm, patch 16x80x80, batch 2, AdamW, seed {args.seed}) "
        f"for {experiment_config('noisy', args.iterations, args.seed).total_iterations} iterations on CPU (2 torch threads). "
        f"Evaluation: {len(HELDOUT_SEEDS)} fully labelled held-out phantoms (seeds {list(HELDOUT_SEEDS)}), segmented with the "
        "`lnq segment` pipeline and scored on the CT grid with `LymphNodeQuantLib.evaluate` (median Dice, median ASSD over "
        "cases with a non-empty prediction; node sensitivity = reference nodes touched by the prediction, pooled over cases, "
        "by reference short axis).",
        "",
        "**The TotalSegmentator maps here are the phantoms' exact anatomy, not TotalSegmentator predictions.** Each "
        "training phantom's `<case>-totalseg.nii.gz` is its own anatomy label map (`Phantom.anatomy_labels`, the map its "
        'CT intensities are painted from, before blur and noise) recoded to TotalSegmentator v2 "total" ids by '
        "`phantom_anatomy_to_totalseg`: each lung as one lobe, the pulmonary artery as `pulmonary_vein`, the vertebrae as "
        "`vertebrae_T6`, ribs as `rib_left_5`, clavicles as `clavicula_left`, bowel as `colon`; body and lymph nodes as 0. "
        "Its borders are the true organ borders and no structure covers a node (phantom nodes are placed only in fat), "
        f"so the {' and '.join(f'`{u}`' for u in users)} row{'s are' if len(users) > 1 else ' is'} a best case: real "
        "TotalSegmentator output errs at organ borders and can include nodes. "
        f"Only {' and '.join(f'`{u}`' for u in users)} use{'' if len(users) > 1 else 's'} the maps "
        f"(`dbdmp` here builds on `{dbdmp_base}`).",
        "",
        f"No stale work: the dataset, the preprocessing cache and every run folder carry a code fingerprint (sha256 "
        f"{data_stamp['sha256'][:12]} over {len(hashes)} files: {', '.join(f'`{c}`' for c in CODE_FILES)}; plus the dataset "
        "recipe, and for a run its training config); a folder with another or no fingerprint is deleted and rebuilt or "
        "retrained. This invocation: dataset "
        f"{dataset_status}, cache {cache_status}, runs "
        + ", ".join(f"{r['strategy']} {r['run_status']}" for r in rows)
        + (
            f" ({', '.join(reused)}: trained earlier by this same code and settings; their epoch times are from that run, "
            "their training time counts only this invocation)"
            if reused
            else ""
        )
        + ". Times: writing the phantom dataset "
        f"{dataset_seconds / 60:.1f} min, building the preprocessing cache {cache_seconds / 60:.1f} min "
        f"({built_cases} cases preprocessed, {reused_cases} reused; once, shared by every strategy), "
        "both apart from training. Training time = the strategy's `train()` call with the cache built (reading it, "
        "building the strategy's targets, the optimisation); in epochs = the optimisation steps and checkpoints alone; "
        f"median epoch = the median over the {experiment_config('noisy', args.iterations, args.seed).epochs} epochs, which a "
        "spell of other work on the shared machine does not move (compare it across strategies rather than the totals).",
        "",
        "| strategy | median Dice | median ASSD (mm) | empty predictions | node precision | "
        + " | ".join(f"sensitivity {b}" for b in bins)
        + " | training time (min) | of which in epochs (min) | median epoch (s) |",
        "|---|---|---|---|---|" + "---|" * len(bins) + "---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['strategy']} | {row['dice']:.3f} | {row['assd']:.2f} | {row['empty']} | {row['precision']:.2f} | "
            + " | ".join(sens(c) for c in row["by_size"])
            + f" | {row['minutes']:.1f}{' (reused run)' if row['run_status'] == 'current' else ''} | {row['epoch_minutes']:.1f} | "
            f"{row['median_epoch_s']:.1f} |"
        )
    order = sorted(rows, key=lambda r: r["dice"])
    lines += [
        "",
        "Measured order by median Dice (worst to best): " + " < ".join(r["strategy"] for r in order) + ". "
        "The literature expects noisy < masking < TotalSegmentator pseudo-labels / DBDMP; with this small budget, "
        "few phantoms and one seed, differences of a few Dice points are within run-to-run noise.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        update_section("partial_labels", text)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the engine logs training progress
    sys.exit(main())
