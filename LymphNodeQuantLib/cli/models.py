"""``lnq models``: list installed and installable models, show a card, install and remove models."""

from __future__ import annotations

import argparse
import json
import sys
import time


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "models",
        help="list installed and installable models; install (models install SOURCE), remove, or show one",
        description="Without a sub-command: list the models 'lnq segment --model' accepts by name (packaged ones, the "
        "user models folder of 'lnq models install', folders in LNQ_MODEL_PATH) and the published models that can be "
        "installed, with size and licence. --show prints a model's card; --verify also checks its weights.",
    )
    parser.add_argument("--show", metavar="NAME|PATH", help="print this model's card")
    parser.add_argument("--verify", action="store_true", help="with --show: load the model and verify its weights' checksum")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)
    actions = parser.add_subparsers(dest="models_command", metavar="{install,remove}")
    install = actions.add_parser(
        "install",
        help="install a model: published (publisher:name), zip, folder, or URL with --sha256",
        description="Install a model into the user models folder (LNQ_MODELS_DIR overrides it). SOURCE: a published "
        "model (e.g. lnq-segmenter:mediastinal-v1; see 'lnq models'), a LymphNodeQuant model folder or zip, an nnU-Net v2 "
        "results folder or zip (nnUNetv2_export_model_to_zip), or an http(s) URL of a zip with --sha256. Downloads "
        "resume after an interruption and are checked (size, sha256) before anything is unpacked; the model appears "
        "only once it is complete.",
    )
    install.add_argument("source", help="publisher:name, a folder, a .zip, or an http(s) URL")
    install.add_argument("--folds", help="nnU-Net models: install only these folds, e.g. 0,1 (default: all)")
    install.add_argument("--sha256", help="checksum of the file behind an http(s) URL (required for URLs)")
    install.add_argument("--name", help="install under this name (default: the model's own)")
    install.add_argument("--overwrite", action="store_true", help="replace an installed model of the same name")
    install.add_argument("--accept-licence", action="store_true", help="accept the model's licence (non-interactive use)")
    install.add_argument(
        "--progress",
        choices=("bar", "json", "none"),
        default="bar",
        help="bar (default): byte counts on stderr; json: one JSON object per line on stdout (for programs "
        "such as the Slicer module); none",
    )
    install.set_defaults(func=run_install)
    remove = actions.add_parser(
        "remove", help="remove an installed model", description="Remove a model from the user models folder."
    )
    remove.add_argument("name", help="installed model name (see 'lnq models')")
    remove.set_defaults(func=run_remove)
    return parser


def _folds(text):
    from ..errors import InputError

    if text is None:
        return None
    try:
        return sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError as error:
        raise InputError(f"--folds must list fold numbers like 0,1; got '{text}'.") from error


class ByteProgressPrinter:
    """Download progress: a byte-count bar on a terminal, a line every few seconds in a log."""

    def __init__(self, line_interval_s: float = 5.0) -> None:
        self.bar = None
        self.total = 0
        self.last_line = 0.0
        self.line_interval_s = line_interval_s

    def __call__(self, done: int, total: int) -> None:
        if sys.stderr.isatty():
            if self.bar is None or total != self.total:
                from tqdm import tqdm

                self.close()
                self.bar, self.total = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr), total
            self.bar.n = done
            self.bar.refresh()
        elif time.monotonic() - self.last_line >= self.line_interval_s or done >= total:
            self.last_line = time.monotonic()
            print(f"  {done / 1e6:9.1f} / {total / 1e6:.1f} MB ({100 * done / max(total, 1):.0f}%)", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _confirm_licence(model) -> bool:
    print(
        f"{model.display_name or model.key} {model.version}\n  licence: {model.licence}\n  use: {model.recommended_use}\n"
        f"  more: {model.homepage}",
        file=sys.stderr,
    )
    if not sys.stdin.isatty():
        return False
    return input("Accept this licence and install? [y/N] ").strip().lower() in ("y", "yes")


def _json_progress(done: int, total: int) -> None:
    from .segment import emit

    emit(
        {
            "event": "progress",
            "fraction": round(done / max(total, 1), 4),
            "stage": f"downloading ({done / 1e6:.0f} of {total / 1e6:.0f} MB)",
        }
    )


def run_install(args: argparse.Namespace) -> int:
    from ..model_install import LicenceNotAccepted, install_model
    from .segment import emit

    options = dict(name=args.name, folds=_folds(args.folds), sha256=args.sha256, overwrite=args.overwrite)
    json_mode = args.progress == "json"
    printer = ByteProgressPrinter() if args.progress == "bar" else None
    progress = _json_progress if json_mode else printer
    try:
        try:
            folder = install_model(args.source, accept_licence=args.accept_licence, progress=progress, **options)
        except LicenceNotAccepted as refusal:
            if json_mode or not _confirm_licence(refusal.model):
                raise
            folder = install_model(args.source, accept_licence=True, progress=progress, **options)
    except Exception as error:
        if json_mode:
            emit({"event": "error", "message": str(error), "type": type(error).__name__})
        raise
    finally:
        if printer is not None:
            printer.close()
    if json_mode:
        emit({"event": "done", "outputs": {"model": str(folder)}, "name": folder.name})
    else:
        print(f"Installed {folder.name} -> {folder}; use it with: lnq segment CT --model {folder.name}")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from ..model_install import remove_model

    print(f"Removed {remove_model(args.name)}")
    return 0


def _installable(installed_names: set) -> list[dict]:
    from ..model_install import published_models

    return [
        {
            "name": m.key,
            "version": m.version,
            "licence": m.licence,
            "size_bytes": m.size_bytes(),
            "folds": m.folds,
            "recommended_use": m.recommended_use,
        }
        for m in published_models()
        if m.name not in installed_names
    ]


def run(args: argparse.Namespace) -> int:
    from ..models.model_folder import list_models, load_model, load_model_card, packaged_models_folders

    if args.show:
        card = load_model_card(args.show)
        if args.verify:
            load_model(args.show)
        print(json.dumps(card.data, indent=2))
        if args.verify and card.weights.get("sha256"):
            print(
                f"weights verified: {card.weights['file']} sha256 {card.weights['sha256'][:12]}... ({card.weights['size_bytes']} bytes)"
            )
        return 0
    models = list_models()
    installable = _installable({m["name"] for m in models})
    if args.json:
        print(json.dumps({"installed": models, "installable": installable}, indent=2))
        return 0
    if not models:
        print("No models installed. Searched: " + ", ".join(str(p) for p in packaged_models_folders()))
    for entry in models:
        if "error" in entry:
            print(f"{entry['name']:24s} ({entry['error']}) {entry['folder']}")
            continue
        flag = " (default)" if entry.get("default") else ""
        licence = f"  licence {entry['licence']}" if entry.get("licence") else ""
        print(f"{entry['name']:24s} {entry['version']:8s}{flag}{licence}  {entry['folder']}")
        if entry.get("description"):
            print(f"    {entry['description']}")
        scores = ", ".join(f"{k} {v}" for k, v in entry.get("metrics", {}).items() if isinstance(v, (int, float)))
        if scores:
            print(f"    {scores}")
    if installable:
        print("\nInstallable (lnq models install NAME):")
        for entry in installable:
            print(
                f"{entry['name']:32s} {entry['version']:8s} {entry['size_bytes'] / 1e9:6.2f} GB ({len(entry['folds'])} folds)  "
                f"licence {entry['licence']}\n    {entry['recommended_use']}"
            )
    return 0
