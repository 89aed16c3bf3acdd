"""Regenerate the packaged default model ``lnq-phantom-unet`` with one command (seed fixed).

    python benchmarks/train_default_model.py [--work-dir DIR] [--overwrite]

1. writes the synthetic training phantoms (:func:`training.config.default_model_dataset`) in the
   LNQ2023 layout with TotalSegmentator-format anatomy maps (partial labels: half the nodes);
2. trains in two stages, each resuming if interrupted: :func:`training.config.default_model_config`
   (strategy ``totalseg``), then :func:`training.config.default_model_finetune_config` from its final
   weights (a warm restart at a lower learning rate);
3. scores the model end to end (``segment_volume``, the ``lnq segment`` pipeline, on the CT grid)
   on fully labelled held-out phantoms with ``evaluate.evaluate_case`` (Dice, ASSD, node sensitivity);
4. exports it with ``lnq export`` logic into ``LymphNodeQuant/Resources/Models/lnq-phantom-unet/``
   (refuses to replace an existing model unless ``--overwrite``) and writes MODEL_CARD.md.

No real patient data is involved anywhere.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

MODEL_NAME = "lnq-phantom-unet"
MODEL_FOLDER = REPO_ROOT / "LymphNodeQuant" / "Resources" / "Models" / MODEL_NAME
HELDOUT_SEEDS = (950, 951, 952, 953)
HELDOUT_GRID = ((110, 512, 512), (3.0, 0.8, 0.8))
COMMAND = "python benchmarks/train_default_model.py --overwrite"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", type=Path, default=Path.home() / ".cache" / "lnq" / "default-model",
                        help="phantoms, cache and checkpoints (default ~/.cache/lnq/default-model)")
    parser.add_argument("--out", type=Path, default=MODEL_FOLDER, help=f"model folder (default {MODEL_FOLDER.relative_to(REPO_ROOT)})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    parser.add_argument("--train-only", action="store_true", help="stop after training (no evaluation/export)")
    return parser.parse_args(argv)


def make_dataset(work_dir: Path) -> Path:
    from LymphNodeQuantLib.training.config import default_model_dataset
    from LymphNodeQuantLib.training.phantom_dataset import write_phantom_dataset

    recipe = default_model_dataset()
    folder = work_dir / "dataset"
    write_phantom_dataset(folder, recipe["train_seeds"], recipe["validation_seeds"], geometries=recipe["geometries"],
                          annotated_fraction=recipe["annotated_fraction"])
    return folder


def evaluate_heldout(model_folder: Path) -> dict:
    """End-to-end scores on fully labelled held-out phantoms (CT grid, the packaged pipeline)."""
    from LymphNodeQuantLib.evaluate import evaluate_case
    from LymphNodeQuantLib.inference import segment_volume
    from LymphNodeQuantLib.synthetic import make_phantom

    rows = []
    for seed in HELDOUT_SEEDS:
        phantom = make_phantom(*HELDOUT_GRID, seed=seed)
        result = segment_volume(phantom.ct, model=str(model_folder), device="cpu", output="binary")
        evaluation = evaluate_case(result.labels, phantom.full_labels, case_id=f"heldout-{seed}")
        rows.append({"seed": seed, "dice": evaluation.dice, "assd_mm": evaluation.assd_mm,
                     "sensitivity": evaluation.sensitivity, "precision": evaluation.precision,
                     "reference_nodes": evaluation.reference_nodes})
        print(f"held-out phantom {seed}: Dice {evaluation.dice:.3f}, ASSD {evaluation.assd_mm:.2f} mm, "
              f"node sensitivity {evaluation.sensitivity:.2f}, precision {evaluation.precision:.2f}", flush=True)
    dice = [r["dice"] for r in rows]
    assd = [r["assd_mm"] for r in rows if not math.isnan(r["assd_mm"])]
    return {
        "heldout_phantoms": {
            "description": "Fully labelled synthetic phantoms never seen in training, segmented with the lnq segment "
                           "pipeline (mediastinum crop, resampling, sliding window, threshold 0.5) and scored on the CT "
                           "grid with LymphNodeQuantLib.evaluate.evaluate_case (LNQ2023 Dice/ASSD rules).",
            "seeds": list(HELDOUT_SEEDS), "grid": {"shape_zyx": list(HELDOUT_GRID[0]), "spacing_zyx_mm": list(HELDOUT_GRID[1])},
            "dice_median": float(np.median(dice)), "dice_mean": float(np.mean(dice)),
            "assd_mm_median": float(np.median(assd)) if assd else None,
            "assd_mm_mean": float(np.mean(assd)) if assd else None,
            "node_sensitivity_mean": float(np.nanmean([r["sensitivity"] for r in rows])),
            "node_precision_mean": float(np.nanmean([r["precision"] for r in rows])),
            "cases": rows,
        },
        "real_data": "not evaluated: no real annotated CT is available in this project; phantom scores do not predict "
                     "accuracy on patient scans.",
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    from LymphNodeQuantLib.errors import OutputExistsError
    from LymphNodeQuantLib.training.config import default_model_config, default_model_dataset, default_model_finetune_config
    from LymphNodeQuantLib.training.trainer import train

    if (args.out / "model.json").exists() and not args.overwrite and not args.train_only:
        raise SystemExit(f"{args.out} already holds a model; pass --overwrite to replace it.")
    started = time.time()
    dataset = make_dataset(args.work_dir)
    stage1 = default_model_config()
    first = train(stage1, dataset, args.work_dir / "training", cache_dir=args.work_dir / "cache", resume=True)
    config = default_model_finetune_config(str(first.checkpoint))
    result = train(config, dataset, args.work_dir / "training-finetune", cache_dir=args.work_dir / "cache", resume=True)
    stages = [{"stage": index + 1, "config": stage.to_dict(), "iterations": stage.total_iterations,
               "final_validation_at_model_spacing": {key: run.metrics[-1].get(key) for key in ("val_dice", "val_assd_mm")}}
              for index, (stage, run) in enumerate(((stage1, first), (config, result)))]
    train_seconds = time.time() - started
    print(f"training done in {train_seconds / 60:.1f} min", flush=True)
    if args.train_only:
        return 0

    from LymphNodeQuantLib.training.export import export_model

    recipe = default_model_dataset()
    training_extra = {
        "data": ("synthetic chest CT phantoms from LymphNodeQuantLib.synthetic.make_phantom; NOT trained on real patient "
                 "data. Training labels are partial (half the nodes of each phantom annotated, as in LNQ2023's training "
                 "set); TotalSegmentator-format anatomy maps written from the phantoms' anatomy labels."),
        "trained_on_real_patient_data": False,
        "phantoms": {"train_seeds": recipe["train_seeds"], "validation_seeds": recipe["validation_seeds"],
                     "annotated_fraction": recipe["annotated_fraction"],
                     "grids": {str(seed): {"shape_zyx": list(g[0]), "spacing_zyx_mm": list(g[1])} for seed, g in recipe["geometries"].items()}},
        "command": COMMAND,
        "stages": stages,
        "library": "LymphNodeQuantLib.training",
        "device": "cpu",
    }
    candidate = args.work_dir / "candidate-model"
    export_model(result.checkpoint, candidate, name=MODEL_NAME, training_extra=training_extra, overwrite=True)
    metrics = evaluate_heldout(candidate)
    description = ("Compact 3-D U-Net (nnU-Net PlainConvUNet) for mediastinal lymph nodes on chest CT, trained on synthetic "
                   "phantoms with partial labels (TotalSegmentator pseudo-label strategy). A demonstration model: not "
                   "trained or validated on patient data; not for clinical use.")
    folder = export_model(result.checkpoint, args.out, name=MODEL_NAME, description=description,
                          training_extra=training_extra, metrics=metrics, overwrite=args.overwrite)
    write_model_card_md(folder, metrics, config)
    write_results_section(folder, metrics, train_seconds)
    print(json.dumps(metrics["heldout_phantoms"], indent=1, default=float))
    print(f"wrote {folder}")
    return 0


def heldout_table(held: dict) -> list[str]:
    """Markdown table rows of the held-out phantom scores (model card and RESULTS.md)."""
    return ["| phantom | Dice | ASSD (mm) | node sensitivity | node precision |", "|---|---|---|---|---|"] + [
        f"| {r['seed']} | {r['dice']:.3f} | {r['assd_mm']:.2f} | {r['sensitivity']:.2f} | {r['precision']:.2f} |"
        for r in held["cases"]]


def write_results_section(folder: Path, metrics: dict, train_seconds: float) -> None:
    """The ``default_model`` section of benchmarks/RESULTS.md: training stages and held-out scores."""
    from benchmarks.results_md import machine_description, update_section

    card = json.loads((folder / "model.json").read_text())
    held = metrics["heldout_phantoms"]
    lines = [
        "## The packaged default model `lnq-phantom-unet` (`benchmarks/train_default_model.py`)",
        "",
        f"Machine: {machine_description()}.  ",
        f"Command: `{COMMAND}` (from the repository root); training took {train_seconds / 60:.0f} min of wall time in all "
        "(phantom generation, preprocessing and both stages; a resumed run counts only its own part).",
        "",
        "Training on synthetic phantoms with partial labels (strategy `totalseg`); stages:",
        "",
        "| stage | iterations | learning rate | seed | starts from | validation Dice at model spacing | validation ASSD (mm) |",
        "|---|---|---|---|---|---|---|",
    ] + [
        f"| {stage['stage']} | {stage['iterations']} | {stage['config']['learning_rate']} | {stage['config']['seed']} | "
        f"{'stage 1 weights' if stage['config']['initial_weights'] else 'random'} | "
        f"{stage['final_validation_at_model_spacing']['val_dice']:.3f} | {stage['final_validation_at_model_spacing']['val_assd_mm']:.2f} |"
        for stage in card["training"]["stages"]
    ] + [
        "",
        f"Held-out phantoms (full labels, never seen in training: seeds {held['seeds']}, 512 x 512 x 110 at 0.8 x 0.8 x 3 mm), "
        "segmented end to end with the `lnq segment` pipeline and scored on the CT grid with LNQ2023 rules:",
        "",
    ] + heldout_table(held) + [
        "",
        f"Median Dice **{held['dice_median']:.3f}**, median ASSD **{held['assd_mm_median']:.2f} mm** "
        f"(mean node sensitivity {held['node_sensitivity_mean']:.2f}, precision {held['node_precision_mean']:.2f}). "
        "Phantom scores only: they say nothing about accuracy on patient CT.",
    ]
    update_section("default_model", "\n".join(lines))


def write_model_card_md(folder: Path, metrics: dict, config) -> None:
    card = json.loads((folder / "model.json").read_text())
    held = metrics["heldout_phantoms"]
    lines = [
        f"# Model card: {card['name']} {card['version']}",
        "",
        card["description"],
        "",
        "## Intended use",
        "Demonstration and testing of the LymphNodeQuant pipeline (Slicer module, `lnq segment`, `lnq demo`). "
        "**Not trained on patient data, not validated on patient data, not for clinical use.** Train your own model "
        "on annotated CT (e.g. LNQ2023) with `lnq train` and load it with `--model PATH`.",
        "",
        "## Training",
        f"- Data: {card['training']['data']}",
        f"- Phantom seeds: training {held and card['training']['phantoms']['train_seeds'][0]}-{card['training']['phantoms']['train_seeds'][-1]}, "
        f"validation {card['training']['phantoms']['validation_seeds']}; grids from 512x512x110 at 0.8x0.8x3 mm down to 96x96x40 at 3.5 mm.",
        f"- Strategy for unlabelled voxels: `{config.strategy}` (soft-tissue voxels not labelled are excluded from the loss; "
        "voxels inside TotalSegmentator-format organ/vessel/airway/bone masks are background, and so is the chest wall: "
        f"unlabelled voxels more than {config.mediastinum_margin_mm} mm outside the lungs' per-slice convex hull).",
        f"- Network: PlainConvUNet features {config.architecture['arguments']['features_per_stage']}, patch {list(config.patch_size_zyx)} "
        f"at {list(config.spacing_zyx_mm)} mm, mediastinum crop; batch {config.batch_size}, {config.optimizer}, poly learning rate, CPU.",
    ] + [
        f"- Stage {stage['stage']}: {stage['iterations']} iterations, lr {stage['config']['learning_rate']}, seed {stage['config']['seed']}"
        + (", starting from stage 1's final weights" if stage["config"]["initial_weights"] else ", from random weights")
        + f"; validation Dice at model spacing {stage['final_validation_at_model_spacing']['val_dice']:.3f}."
        for stage in card["training"]["stages"]
    ] + [
        f"- Reproduce: `{COMMAND}`",
        "",
        "## Evaluation (held-out synthetic phantoms, full labels, CT grid)",
        f"Seeds {held['seeds']} at 512x512x110, 0.8x0.8x3 mm, segmented with the `lnq segment` pipeline, scored with "
        "`LymphNodeQuantLib.evaluate` (LNQ2023 rules).",
        "",
    ] + heldout_table(held) + [
        "",
        f"Median Dice {held['dice_median']:.3f}, median ASSD {held['assd_mm_median']:.2f} mm.",
        "",
        "## Limitations",
        "Phantoms are simplified (ellipsoidal nodes in fat, idealised vessels); scores on them say nothing about "
        "performance on real CT. The model is small (CPU-friendly) and trained briefly.",
        "",
    ]
    (folder / "MODEL_CARD.md").write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
