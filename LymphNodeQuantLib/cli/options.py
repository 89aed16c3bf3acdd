"""Command-line options shared by the verbs that run the model (``segment``, ``batch``): defined once here."""

from __future__ import annotations

import argparse


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model`` and ``--device``."""
    parser.add_argument(
        "--model",
        default="default",
        help="installed model name (see 'lnq models'), a model folder, or an nnU-Net v2 model folder (default: default)",
    )
    parser.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto (default): CUDA when available, else CPU"
    )


def add_segmentation_options(parser: argparse.ArgumentParser) -> None:
    """How the model segments a CT: crop, anatomy filter, input checks, windows, threshold, node size, output kind."""
    parser.add_argument("--no-crop", action="store_true", help="run on the whole volume instead of the automatic mediastinum box")
    parser.add_argument(
        "--no-anatomy-filter",
        action="store_true",
        help="keep every candidate the network finds: also those outside the mediastinum, mostly air/lung "
        "or mostly bone/contrast (default: the model's setting, on), and segment scans without a mediastinum",
    )
    parser.add_argument(
        "--allow-unusual-input",
        action="store_true",
        help="segment even when the spacing, field of view or content cannot be a chest CT (refused by default)",
    )
    parser.add_argument(
        "--tta", action="store_true", help="mirroring test-time augmentation (8 passes; slower, slightly smoother)"
    )
    parser.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap in [0, 1) (default 0.5)")
    parser.add_argument("--binary", action="store_true", help="write one 'Lymph nodes' label instead of one label per node")
    parser.add_argument(
        "--min-volume-mm3", type=float, default=None, help="drop nodes smaller than this (default: the model's value)"
    )
    parser.add_argument(
        "--threshold", type=float, default=None, help="probability threshold (default: the model's value, usually 0.5)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=2,
        help="windows per network call (default 2; halved automatically on GPU out-of-memory)",
    )


def segmentation_choices(args: argparse.Namespace) -> dict:
    """The options of :func:`add_segmentation_options` as keywords of ``inference.segment_volume``."""
    from ..errors import InputError

    if not 0 <= args.overlap < 1:
        raise InputError(f"--overlap must be in [0, 1), got {args.overlap}.")
    return {
        "crop_to_mediastinum": not args.no_crop,
        "anatomy_filter": False if args.no_anatomy_filter else None,
        "overlap": args.overlap,
        "tta": args.tta,
        "min_node_volume_mm3": args.min_volume_mm3,
        "threshold": args.threshold,
        "output": "binary" if args.binary else "instances",
        "batch_size": args.batch_size,
        "allow_unusual_input": args.allow_unusual_input,
    }
