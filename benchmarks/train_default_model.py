"""Regenerate the packaged default model ``lnq-chest-unet`` with one command (seeds fixed).

    python benchmarks/train_default_model.py [--work-dir DIR] [--overwrite] [--from-scratch]

Stages 1-2 train on synthetic phantoms only (partial labels, strategy ``totalseg``); their result
is kept in ``benchmarks/pretrained/lnq-phantom-unet`` (the model this project shipped as 1.0.0) and
stage 3 starts from it, unless ``--from-scratch`` retrains stages 1-2 first (31 min on 2 cores).

Stages 3-4 (:func:`training.config.default_model_real_config`, strategy ``anatomy``, then
:func:`training.config.default_model_real_finetune_config`) train on real
chest CTs from ``shared/data/real`` with synthetic nodes implanted into their mediastinal fat
(:mod:`training.implant`; the scans' own nodes stay unlabelled: the LNQ2023 partial-label setting)
mixed with phantoms (:func:`training.config.default_model_real_dataset`). Then the model is scored
end to end on fully labelled held-out phantoms, exported into
``LymphNodeQuant/Resources/Models/lnq-chest-unet/`` (refused without ``--overwrite`` when one is
there) with MODEL_CARD.md and the LIDC-IDRI attribution. ``benchmarks/real_ct_bench.py`` scores it
on the real CTs (leave-CT-out models are trained there with :func:`train_real_stages`).

No patient labels are involved anywhere: real CTs contribute anatomy, never annotations.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

MODEL_NAME = "lnq-chest-unet"
MODEL_VERSION = "2.1.0"
MODEL_FOLDER = REPO_ROOT / "LymphNodeQuant" / "Resources" / "Models" / MODEL_NAME
PRETRAINED_FOLDER = REPO_ROOT / "benchmarks" / "pretrained" / "lnq-phantom-unet"
REAL_DATA = REPO_ROOT.parent / "shared" / "data" / "real"
ATTRIBUTION = REAL_DATA / "lidc-idri" / "ATTRIBUTION.txt"
HELDOUT_SEEDS = (950, 951, 952, 953)
HELDOUT_GRID = ((110, 512, 512), (3.0, 0.8, 0.8))
COMMAND = "python benchmarks/train_default_model.py --overwrite"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path.home() / ".cache" / "lnq" / "default-model",
        help="datasets, cache and checkpoints (default ~/.cache/lnq/default-model)",
    )
    parser.add_argument(
        "--out", type=Path, default=MODEL_FOLDER, help=f"model folder (default {MODEL_FOLDER.relative_to(REPO_ROOT)})"
    )
    parser.add_argument("--real-data", type=Path, default=REAL_DATA, help="the real CT fixtures (default ../shared/data/real)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    parser.add_argument(
        "--from-scratch",
        action="store_true",
        help=f"retrain the phantom stages 1-2 instead of starting from {PRETRAINED_FOLDER.relative_to(REPO_ROOT)}",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the config's, 2)")
    parser.add_argument("--train-only", action="store_true", help="stop after training (no evaluation/export)")
    return parser.parse_args(argv)


def make_phantom_dataset(work_dir: Path) -> Path:
    """Stages 1-2's phantoms (partial labels, TotalSegmentator-format anatomy maps)."""
    from LymphNodeQuantLib.training.config import default_model_dataset
    from LymphNodeQuantLib.training.phantom_dataset import write_phantom_dataset

    recipe = default_model_dataset()
    folder = work_dir / "dataset"
    write_phantom_dataset(
        folder,
        recipe["train_seeds"],
        recipe["validation_seeds"],
        geometries=recipe["geometries"],
        annotated_fraction=recipe["annotated_fraction"],
    )
    return folder


def make_real_dataset(work_dir: Path, real_data: Path) -> tuple[Path, dict]:
    """Stage 3's data: implanted real CTs + phantoms, one folder; returns it and its case entries."""
    from LymphNodeQuantLib.training.config import default_model_real_dataset
    from LymphNodeQuantLib.training.phantom_dataset import write_phantom_dataset
    from LymphNodeQuantLib.training.real_dataset import write_implanted_cases

    if not real_data.is_dir():
        raise SystemExit(f"The real CT fixtures are not at {real_data}; pass --real-data.")
    recipe = default_model_real_dataset()
    folder = work_dir / "dataset-real"
    manifest = write_phantom_dataset(
        folder,
        recipe["phantom_train_seeds"],
        recipe["phantom_validation_seeds"],
        geometries=recipe["geometries"],
        annotated_fraction=recipe["annotated_fraction"],
        extended_seeds=recipe["extended_phantom_seeds"],
    )
    cases = dict(manifest["cases"])
    cases.update(
        write_implanted_cases(folder, real_data, recipe["real_cts"], recipe["implant_seeds"], n_nodes=recipe["nodes_per_case"])
    )
    return folder, cases


def train_real_stages(
    folder: Path,
    cases: dict,
    out_dir: Path,
    cache_dir: Path,
    initial_weights: Path,
    threads: int | None = None,
    exclude_real: tuple[str, ...] = (),
) -> list:
    """Stages 3 and 4 on ``cases`` of ``folder`` minus the real CTs named in ``exclude_real`` (leave-CT-out).

    Returns [(config, run), ...] for both stages; each resumes if interrupted.
    """
    from dataclasses import replace

    from LymphNodeQuantLib.training.config import default_model_real_config, default_model_real_finetune_config
    from LymphNodeQuantLib.training.real_dataset import link_subset
    from LymphNodeQuantLib.training.trainer import train

    kept = {case: entry for case, entry in cases.items() if not any(case.startswith(f"real-{name}-v") for name in exclude_real)}
    dataset = link_subset(folder, out_dir / "dataset", kept) if exclude_real else folder
    # recorded relative to the repository (the command runs from its root), so model cards name no local paths
    weights = Path(initial_weights)
    weights = weights.relative_to(REPO_ROOT) if weights.is_relative_to(REPO_ROOT) else weights
    runs = []
    for make_config, name in ((default_model_real_config, "training"), (default_model_real_finetune_config, "training-finetune")):
        config = make_config(str(weights))
        if threads:
            config = replace(config, num_threads=threads)
        run = train(config, dataset, out_dir / name, cache_dir=cache_dir, resume=True)
        runs.append((config, run))
        weights = run.checkpoint
    return runs


def phantom_stages(work_dir: Path):
    """Stages 1-2 (phantoms only); returns [(config, run), ...]."""
    from LymphNodeQuantLib.training.config import default_model_config, default_model_finetune_config
    from LymphNodeQuantLib.training.trainer import train

    dataset = make_phantom_dataset(work_dir)
    stage1 = default_model_config()
    first = train(stage1, dataset, work_dir / "training", cache_dir=work_dir / "cache", resume=True)
    stage2 = default_model_finetune_config(str(first.checkpoint))
    second = train(stage2, dataset, work_dir / "training-finetune", cache_dir=work_dir / "cache", resume=True)
    return [(stage1, first), (stage2, second)]


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
        rows.append(
            {
                "seed": seed,
                "dice": evaluation.dice,
                "assd_mm": evaluation.assd_mm,
                "sensitivity": evaluation.sensitivity,
                "precision": evaluation.precision,
                "reference_nodes": evaluation.reference_nodes,
            }
        )
        print(
            f"held-out phantom {seed}: Dice {evaluation.dice:.3f}, ASSD {evaluation.assd_mm:.2f} mm, "
            f"node sensitivity {evaluation.sensitivity:.2f}, precision {evaluation.precision:.2f}",
            flush=True,
        )
    dice = [r["dice"] for r in rows]
    assd = [r["assd_mm"] for r in rows if not math.isnan(r["assd_mm"])]
    return {
        "heldout_phantoms": {
            "description": "Fully labelled synthetic phantoms never seen in training, segmented with the lnq segment "
            "pipeline (mediastinum crop, resampling, sliding window, threshold 0.5) and scored on the CT "
            "grid with LymphNodeQuantLib.evaluate.evaluate_case (LNQ2023 Dice/ASSD rules).",
            "seeds": list(HELDOUT_SEEDS),
            "grid": {"shape_zyx": list(HELDOUT_GRID[0]), "spacing_zyx_mm": list(HELDOUT_GRID[1])},
            "dice_median": float(np.median(dice)),
            "dice_mean": float(np.mean(dice)),
            "assd_mm_median": float(np.median(assd)) if assd else None,
            "assd_mm_mean": float(np.mean(assd)) if assd else None,
            "node_sensitivity_mean": float(np.nanmean([r["sensitivity"] for r in rows])),
            "node_precision_mean": float(np.nanmean([r["precision"] for r in rows])),
            "cases": rows,
        },
        "real_data": "not evaluated: no real annotated CT is available in this project; phantom scores do not predict "
        "accuracy on patient scans.",
    }


def _stage_rows(stages) -> list[dict]:
    return [
        {
            "stage": index + 1,
            "config": config.to_dict(),
            "iterations": config.total_iterations,
            "final_validation_at_model_spacing": {key: run.metrics[-1].get(key) for key in ("val_dice", "val_assd_mm")},
            # the epochs' own wall time (optimisation + validation), whatever invocation ran them
            "training_minutes": round(sum(float(m.get("seconds") or 0.0) for m in run.metrics) / 60.0, 1),
        }
        for index, (config, run) in enumerate(stages)
    ]


def main(argv=None) -> int:
    args = parse_args(argv)
    os.chdir(REPO_ROOT)
    if (args.out / "model.json").exists() and not args.overwrite and not args.train_only:
        raise SystemExit(f"{args.out} already holds a model; pass --overwrite to replace it.")
    started = time.time()
    if args.from_scratch:
        phantom_runs = phantom_stages(args.work_dir)
        pretrained = phantom_runs[-1][1].checkpoint
        earlier = _stage_rows(phantom_runs)
    else:
        pretrained = PRETRAINED_FOLDER
        earlier = json.loads((PRETRAINED_FOLDER / "model.json").read_text())["training"]["stages"]
    folder, cases = make_real_dataset(args.work_dir, args.real_data)
    real_runs = train_real_stages(folder, cases, args.work_dir / "stage3", args.work_dir / "cache-real", pretrained, args.threads)
    stages = earlier + [dict(row, stage=len(earlier) + 1 + index) for index, row in enumerate(_stage_rows(real_runs))]
    config, result = real_runs[-1]
    train_seconds = time.time() - started
    print(f"training done in {train_seconds / 60:.1f} min", flush=True)
    if args.train_only:
        return 0
    from LymphNodeQuantLib.training.config import default_model_real_dataset
    from LymphNodeQuantLib.training.export import export_model

    recipe = default_model_real_dataset()
    training_extra = {
        "data": (
            "stages 1-2: synthetic chest CT phantoms (LymphNodeQuantLib.synthetic) with partial labels and "
            "TotalSegmentator-format anatomy maps; stages 3-4: real chest CTs (LIDC-IDRI-0001, -0002, -0314, CIP chest, "
            "TotalSegmentator example CTs) with synthetic nodes implanted into their mediastinal fat "
            "where the IASLC stations are (LymphNodeQuantLib.training.implant: centres at least 10 mm inside the mediastinum, "
            "75% in its upper two thirds beside the airways and great vessels), mixed with phantoms. No patient annotation was used: the real "
            "scans' own lymph nodes are unlabelled and left out of the loss (strategy 'anatomy')."
        ),
        "trained_on_real_patient_data": "real CT anatomy as background only (no patient labels)",
        "real_ct_backgrounds": {
            "cts": recipe["real_cts"],
            "implant_seeds": recipe["implant_seeds"],
            "nodes_per_case": recipe["nodes_per_case"],
        },
        "phantoms": {"stage3_train_seeds": recipe["phantom_train_seeds"], "validation_seeds": recipe["phantom_validation_seeds"]},
        "pretrained": "benchmarks/pretrained/lnq-phantom-unet (stages 1-2)" if not args.from_scratch else "stages 1-2 run here",
        "command": COMMAND,
        "stages": stages,
        "library": "LymphNodeQuantLib.training",
        "device": "cpu",
    }
    candidate = args.work_dir / "candidate-model"
    export_model(
        result.checkpoint, candidate, name=MODEL_NAME, version=MODEL_VERSION, training_extra=training_extra, overwrite=True
    )
    metrics = evaluate_heldout(candidate)
    description = (
        "Compact 3-D U-Net (nnU-Net PlainConvUNet) for mediastinal lymph nodes on chest CT, trained on synthetic "
        "phantoms and on real chest CTs with implanted synthetic nodes (no patient labels). Not validated on "
        "annotated patient data; not for clinical use."
    )
    out = export_model(
        result.checkpoint,
        args.out,
        name=MODEL_NAME,
        version=MODEL_VERSION,
        description=description,
        training_extra=training_extra,
        metrics=metrics,
        overwrite=args.overwrite,
    )
    if ATTRIBUTION.exists():
        shutil.copyfile(ATTRIBUTION, out / "LIDC-IDRI-ATTRIBUTION.txt")
    write_model_card_md(out, metrics, config)
    write_results_section(out, metrics, train_seconds)
    print(json.dumps(metrics["heldout_phantoms"], indent=1, default=float))
    print(f"wrote {out}")
    return 0


def heldout_table(held: dict) -> list[str]:
    """Markdown table rows of the held-out phantom scores (model card and RESULTS.md)."""
    return ["| phantom | Dice | ASSD (mm) | node sensitivity | node precision |", "|---|---|---|---|---|"] + [
        f"| {r['seed']} | {r['dice']:.3f} | {r['assd_mm']:.2f} | {r['sensitivity']:.2f} | {r['precision']:.2f} |"
        for r in held["cases"]
    ]


STAGE_DATA = {
    1: "phantoms (totalseg)",
    2: "phantoms (totalseg)",
    3: "real CTs with implanted nodes + phantoms (anatomy)",
    4: "as stage 3, 70% of patches on labelled nodes",
}
STAGE_START = {
    1: "random",
    2: "stage 1 weights",
    3: "stage 2 weights (`benchmarks/pretrained/lnq-phantom-unet`)",
    4: "stage 3 weights",
}


def stage_table(card: dict) -> list[str]:
    """Markdown rows: one per training stage (RESULTS.md and the model card)."""
    rows = [
        "| stage | data (strategy) | iterations | learning rate | seed | starts from | validation Dice at model spacing | "
        "time (min) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for stage in card["training"]["stages"]:
        number, validation = stage["stage"], stage["final_validation_at_model_spacing"]["val_dice"]
        minutes = stage.get("training_minutes")
        rows.append(
            f"| {number} | {STAGE_DATA.get(number, '')} | {stage['iterations']} | {stage['config']['learning_rate']} | "
            f"{stage['config']['seed']} | {STAGE_START.get(number, '')} | {validation:.3f} | "
            f"{'' if minutes is None else minutes} |"
        )
    return rows


def write_results_section(folder: Path, metrics: dict, train_seconds: float) -> None:
    """The ``default_model`` section of benchmarks/RESULTS.md: training stages and held-out scores."""
    from benchmarks.results_md import machine_description, update_section

    card = json.loads((folder / "model.json").read_text())
    held = metrics["heldout_phantoms"]
    lines = (
        [
            f"## The packaged default model `{MODEL_NAME}` (`benchmarks/train_default_model.py`)",
            "",
            f"Machine: {machine_description()}.  ",
            f"Command: `{COMMAND}` (from the repository root); the invocation that wrote this took {train_seconds / 60:.0f} min "
            "of wall time (a run that resumes finished stages only exports and scores). Time per stage below = the sum of its "
            "epochs' wall time, whichever invocation ran them, on the machine above (shared: other work on its 2 cores slows it). "
            "Stages 1-2 come from `benchmarks/pretrained/lnq-phantom-unet` (31 min on 2 cores); `--from-scratch` reruns them.",
            "",
        ]
        + stage_table(card)
        + [
            "",
            f"Held-out phantoms (full labels, never seen in training: seeds {held['seeds']}, 512 x 512 x 110 at 0.8 x 0.8 x 3 mm), "
            "segmented end to end with the `lnq segment` pipeline (anatomy filter on) and scored on the CT grid with LNQ2023 rules:",
            "",
        ]
        + heldout_table(held)
        + [
            "",
            f"Median Dice **{held['dice_median']:.3f}**, median ASSD **{held['assd_mm_median']:.2f} mm** "
            f"(mean node sensitivity {held['node_sensitivity_mean']:.2f}, precision {held['node_precision_mean']:.2f}). "
            'Phantom scores; real chest CT is scored in the section "Real chest CT".',
        ]
    )
    update_section("default_model", "\n".join(lines))


def write_model_card_md(folder: Path, metrics: dict, config) -> None:
    card = json.loads((folder / "model.json").read_text())
    held = metrics["heldout_phantoms"]
    real = card["training"]["real_ct_backgrounds"]
    lines = (
        [
            f"# Model card: {card['name']} {card['version']}",
            "",
            card["description"],
            "",
            "## Intended use",
            "Finding and measuring mediastinal lymph nodes on chest CT with the LymphNodeQuant pipeline (Slicer module, "
            "`lnq segment`), for research and demonstration. **Not validated on annotated patient data, not for clinical "
            "use.** For accuracy on patients, train on annotated CT (e.g. LNQ2023) with `lnq train` and load it with "
            "`--model PATH`.",
            "",
            "## Training data: what it saw",
            f"- {card['training']['data']}",
            f"- Real CTs (anatomy only, no labels): {', '.join(real['cts'])}; nodes implanted {len(real['implant_seeds'])} times "
            f"per CT ({real['nodes_per_case']} per case, seeds {real['implant_seeds']}). LIDC-IDRI scans: CC BY 3.0, see "
            "`LIDC-IDRI-ATTRIBUTION.txt` beside this card.",
            "- Synthetic phantoms (`LymphNodeQuantLib.synthetic.make_phantom`): basic and extended anatomy (ribs, sternum, "
            "clavicles, upper abdomen, neck), grids from 0.65 to 3.5 mm in-plane and 1.25 to 5 mm slices.",
            "- Never: patient annotations, real lymph-node labels, contrast phases or scanners beyond those few scans.",
            "",
            "## Training",
            f"- Network: PlainConvUNet features {config.architecture['arguments']['features_per_stage']}, patch "
            f"{list(config.patch_size_zyx)} at {list(config.spacing_zyx_mm)} mm, mediastinum crop; batch {config.batch_size}, "
            f"{config.optimizer}, poly learning rate, CPU (no GPU was available).",
            "",
        ]
        + stage_table(card)
        + [
            "",
            f"Reproduce: `{COMMAND}`",
            "",
            "## Evaluation",
            f"Held-out synthetic phantoms (seeds {held['seeds']}, 512x512x110 at 0.8x0.8x3 mm, full labels), `lnq segment` "
            "pipeline, LNQ2023 rules:",
            "",
        ]
        + heldout_table(held)
        + [
            "",
            f"Median Dice {held['dice_median']:.3f}, median ASSD {held['assd_mm_median']:.2f} mm.",
            "",
            "<!-- BEGIN real_ct -->",
            'Real chest CT: see `benchmarks/real_ct_bench.py` and the section "Real chest CT" of `benchmarks/RESULTS.md`.',
            "<!-- END real_ct -->",
            "",
            "## Not validated on",
            "Annotated patient CT (no real node labels exist in this project: real scans were scored only on implanted "
            "nodes and on predictions that are certainly not nodes), paediatric scans, scans with lung disease that removes "
            "the parenchyma's air (e.g. complete collapse or pneumonectomy, where the mediastinum cannot be found), "
            "non-axial acquisitions, MR or PET.",
            "",
        ]
    )
    (folder / "MODEL_CARD.md").write_text("\n".join(lines))


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the engine logs training progress
    sys.exit(main())
