"""``lnq train``: train a lymph-node model on a dataset folder (LNQ2023 or nnU-Net raw layout)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..training.config import STRATEGIES

    parser = subparsers.add_parser(
        "train",
        help="train a model from (partially) annotated CT (LNQ2023 or nnU-Net raw layout)",
        description="Train a PlainConvUNet on DATASET ('<case>-ct.nrrd' + '<case>-seg.nrrd' pairs with an optional "
        "lnq-dataset.json manifest, or an nnU-Net raw folder). Preprocessing is cached; a checkpoint is written "
        "every epoch and an interrupted run resumes when started again with the same --out. Multi-GPU: "
        "torchrun --nproc_per_node=N -m LymphNodeQuantLib train ...",
    )
    parser.add_argument("dataset", type=Path, help="dataset folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder (checkpoints, metrics.csv, metrics.png)")
    parser.add_argument(
        "--config", default=None, help="'default' (the packaged model's settings) or a JSON file of TrainingConfig fields"
    )
    parser.add_argument(
        "--strategy", choices=list(STRATEGIES), help="what to learn from unlabelled voxels (overrides the config)"
    )
    parser.add_argument("--totalseg-dir", type=Path, help="folder of TotalSegmentator maps '<case>.nii.gz' or '<case>/'")
    parser.add_argument("--cache", type=Path, help="preprocessing cache folder (default OUT/cache)")
    parser.add_argument("--epochs", type=int, help="number of epochs (overrides the config)")
    parser.add_argument("--iterations-per-epoch", type=int, help="iterations per epoch (overrides the config)")
    parser.add_argument("--seed", type=int, help="random seed (overrides the config)")
    parser.add_argument(
        "--init-weights",
        help="start from these weights (fine-tuning): a checkpoint, a run folder "
        "or a model folder with the same architecture (overrides the config's initial_weights)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--no-resume", action="store_true", help="start over even if OUT has a checkpoint")
    parser.add_argument("--export", type=Path, help="after training, export the model folder here (lnq export)")
    parser.add_argument("--overwrite", action="store_true", help="with --export: replace an existing model folder")
    parser.set_defaults(func=run)
    return parser


def load_config(args: argparse.Namespace):
    from ..training.config import TrainingConfig, default_model_config

    if args.config in (None, ""):
        config = TrainingConfig()
    elif args.config == "default":
        config = default_model_config()
    else:
        config = TrainingConfig.from_file(Path(args.config))
    values = config.to_dict()
    for key, attribute in (
        ("strategy", "strategy"),
        ("epochs", "epochs"),
        ("iterations_per_epoch", "iterations_per_epoch"),
        ("seed", "seed"),
        ("initial_weights", "init_weights"),
    ):
        if getattr(args, attribute) is not None:
            values[key] = getattr(args, attribute)
    return TrainingConfig.from_dict(values)


def run(args: argparse.Namespace) -> int:
    from ..errors import OutputExistsError
    from ..training.trainer import train

    config = load_config(args)
    if args.export is not None and (args.export / "model.json").exists() and not args.overwrite:
        raise OutputExistsError(f"'{args.export}' already holds a model; pass --overwrite or choose another --export folder.")
    result = train(
        config,
        args.dataset,
        args.out,
        cache_dir=args.cache,
        totalseg_dir=args.totalseg_dir,
        resume=not args.no_resume,
        device=args.device,
    )
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    (args.out / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
    print(f"Checkpoint: {result.checkpoint}; metrics: {args.out / 'metrics.csv'}, {args.out / 'metrics.png'}")
    if args.export is not None and result.finished:
        from ..training.export import export_model

        folder = export_model(
            result.checkpoint,
            args.export,
            overwrite=args.overwrite,
            training_extra={"command": "lnq train " + " ".join(str(a) for a in _argv_tail())},
        )
        print(f"Exported the model to {folder}/")
    return 0


def _argv_tail() -> list[str]:
    import sys

    argv = sys.argv[1:]
    return argv[argv.index("train") + 1 :] if "train" in argv else argv
