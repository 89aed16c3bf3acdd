"""``lnq export``: write a model folder (weights + model.json) from an ``lnq train`` checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="export a trained checkpoint as a model folder for lnq segment and the Slicer module",
        description="Write OUT/model.json + OUT/weights.safetensors (sha256 recorded) from CHECKPOINT (a .pt file "
        "or an 'lnq train' output folder). Load it with 'lnq segment --model OUT' or copy it into "
        "LymphNodeQuant/Resources/Models/.",
    )
    parser.add_argument("checkpoint", type=Path, help="checkpoint .pt file or lnq train output folder")
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    parser.add_argument("--name", help="model name (default: the folder name)")
    parser.add_argument("--version", default="1.0.0", help="model version (default 1.0.0)")
    parser.add_argument("--description", default="", help="one-line description for model.json")
    parser.add_argument("--metrics", type=Path, help="JSON file of measured scores to record in model.json 'metrics'")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..training.export import export_model

    metrics = None
    if args.metrics is not None:
        try:
            metrics = json.loads(args.metrics.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"Cannot read --metrics '{args.metrics}': {error}.") from None
    folder = export_model(
        args.checkpoint,
        args.out,
        name=args.name,
        version=args.version,
        description=args.description,
        metrics=metrics,
        overwrite=args.overwrite,
        training_extra={"exported_with": "lnq export"},
    )
    card = json.loads((folder / "model.json").read_text())
    print(f"Wrote {folder}/ ({card['weights']['size_bytes'] / 1e6:.1f} MB, sha256 {card['weights']['sha256'][:12]}...)")
    return 0
