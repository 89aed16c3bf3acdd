"""``lnq evaluate``: Dice, ASSD (LNQ2023 rules), HD95 and per-node detection, one case or a folder."""

from __future__ import annotations

import argparse
import json
import math


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a segmentation (or a folder of them) against a reference: Dice, ASSD, HD95, detection",
        description="Score predictions against references exactly as the LNQ2023 challenge did (Dice and ASSD on "
        "the node voxels; ASSD = mean of the two directed mean surface distances, NaN when either side is empty), plus HD95 "
        "and per-node detection (TP/FP/FN, sensitivity and precision per 2.5 mm short-axis bin). --pred and --ref "
        "are two files (one case) or two folders (cases paired by file name: the name without suffix and "
        "without a -seg/-pred tag).",
    )
    parser.add_argument("--pred", required=True, help="predicted label map, or a folder of them")
    parser.add_argument("--ref", required=True, help="reference label map, or a folder of them")
    parser.add_argument(
        "--foreground",
        choices=("nonzero", "label1"),
        default="nonzero",
        help="nonzero (default): every node of a binary map, instance map or .seg.nrrd; label1: label 1 only "
        "(identical on LNQ2023's 0/1 files); a map with other labels gets a note saying what was scored",
    )
    parser.add_argument(
        "--resample-prediction",
        action="store_true",
        help="resample the prediction onto the reference grid (nearest neighbour) instead of refusing different grids",
    )
    parser.add_argument(
        "--detection-nodes",
        choices=("components", "labels"),
        default="components",
        help="nodes for detection: 26-connected components (default) or the label values of instance maps",
    )
    parser.add_argument(
        "--min-iou",
        type=float,
        default=0.0,
        help="IoU a predicted and a reference node must exceed to match (default 0: any overlap)",
    )
    parser.add_argument(
        "--nan-policy",
        choices=("worst", "omit"),
        default="worst",
        help="NaN ASSD/HD95 in the summary: replace by the worst finite value (default, as LNQ2023) or omit",
    )
    parser.add_argument("--pred-pattern", default="*", help="file pattern in the prediction folder (default '*')")
    parser.add_argument("--ref-pattern", default="*-seg.nrrd", help="file pattern in the reference folder (default '*-seg.nrrd')")
    parser.add_argument("--out", help="per-case CSV (folders) or result file .json/.csv (one case)")
    parser.add_argument("--summary", help="summary JSON (folders)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.set_defaults(func=run)
    return parser


def _format(value: float, unit: str = "") -> str:
    return "NaN" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}{unit}"


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import InputError
    from ..evaluate import evaluate_case, evaluate_folder, summarize, write_case_table, write_json
    from ..io import check_output_path, read_label_map

    pred, ref = Path(args.pred), Path(args.ref)
    options = dict(
        foreground=args.foreground,
        resample_prediction=args.resample_prediction,
        detection_nodes=args.detection_nodes,
        min_iou=args.min_iou,
    )
    outputs = [Path(p) for p in (args.out, args.summary) if p]
    for path in outputs:
        check_output_path(path, args.overwrite)
    if pred.is_dir() != ref.is_dir():
        raise InputError("--pred and --ref must both be files (one case) or both be folders (a cohort).")
    if not pred.is_dir():
        if args.summary:
            raise InputError("--summary is for folder evaluation; for one case use --out result.json.")
        evaluation = evaluate_case(read_label_map(pred), read_label_map(ref), case_id=pred.name, **options)
        if args.out:
            out = Path(args.out)
            if out.suffix.lower() == ".json":
                write_json(out, evaluation.to_dict(), args.overwrite)
            elif out.suffix.lower() == ".csv":
                write_case_table(out, [evaluation], args.overwrite)
            else:
                raise InputError(f"--out '{out}' must end in .json or .csv.")
        if args.json:
            print(json.dumps(evaluation.to_dict(), indent=2))
        else:
            e = evaluation
            print(f"Dice {_format(e.dice)}  ASSD {_format(e.assd_mm, ' mm')}  HD95 {_format(e.hd95_mm, ' mm')}")
            print(
                f"nodes: reference {e.reference_nodes}, predicted {e.predicted_nodes}; TP {e.true_positives} FP {e.false_positives} FN {e.false_negatives}"
            )
            for note in e.notes:
                print(f"note: {note}")
        return 0
    evaluations = evaluate_folder(pred, ref, prediction_pattern=args.pred_pattern, reference_pattern=args.ref_pattern, **options)
    summary = summarize(evaluations, nan_policy=args.nan_policy)
    if args.out:
        if Path(args.out).suffix.lower() != ".csv":
            raise InputError(f"--out '{args.out}' must be a .csv file for a folder evaluation.")
        write_case_table(args.out, evaluations, args.overwrite)
    if args.summary:
        write_json(args.summary, {"summary": summary, "cases": [e.to_dict() for e in evaluations]}, args.overwrite)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"{summary['cases']} cases: median Dice {_format(summary['dice_median'])}, median ASSD {_format(summary['assd_mm_median'], ' mm')}, "
            f"median HD95 {_format(summary['hd95_mm_median'], ' mm')}"
        )
        print(
            f"mean Dice {_format(summary['dice_mean'])}, mean ASSD {_format(summary['assd_mm_mean'], ' mm')}; "
            f"{summary['assd_mm_nan_cases']} case(s) with NaN ASSD: {summary['nan_policy_description']}"
        )
        print(
            f"detection: TP {summary['true_positives']} FP {summary['false_positives']} FN {summary['false_negatives']}, "
            f"sensitivity {_format(summary['sensitivity_pooled'])}, precision {_format(summary['precision_pooled'])}"
        )
        for e in evaluations:
            for note in e.notes:
                print(f"note: {e.case_id}: {note}")
    return 0
