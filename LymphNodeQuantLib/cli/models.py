"""``lnq models``: list the installed models (the registry) or show one model's card."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "models",
        help="list installed segmentation models, or show one model's card (--show NAME|PATH)",
        description="List the models 'lnq segment --model' accepts by name: packaged ones "
        "(LymphNodeQuant/Resources/Models) and folders listed in LNQ_MODEL_PATH. --show prints a model's "
        "model.json (preprocessing, labels, training provenance, measured scores); --verify also checks its weights.",
    )
    parser.add_argument("--show", metavar="NAME|PATH", help="print this model's card")
    parser.add_argument("--verify", action="store_true", help="with --show: load the model and verify its weights' checksum")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..models.model_folder import list_models, load_model, load_model_card, packaged_models_folders

    if args.show:
        card = load_model_card(args.show)
        if args.verify:
            load_model(args.show)
        print(json.dumps(card.data, indent=2))
        if args.verify:
            print(f"weights verified: {card.weights['file']} sha256 {card.weights['sha256'][:12]}... ({card.weights['size_bytes']} bytes)")
        return 0
    models = list_models()
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    if not models:
        print("No models installed. Searched: " + ", ".join(str(p) for p in packaged_models_folders()))
        return 0
    for entry in models:
        if "error" in entry:
            print(f"{entry['name']:24s} ({entry['error']}) {entry['folder']}")
            continue
        flag = " (default)" if entry.get("default") else ""
        scores = ", ".join(f"{k} {v}" for k, v in entry.get("metrics", {}).items() if isinstance(v, (int, float)))
        print(f"{entry['name']:24s} {entry['version']:8s}{flag}  {entry['folder']}")
        if entry.get("description"):
            print(f"    {entry['description']}")
        if scores:
            print(f"    {scores}")
    return 0
