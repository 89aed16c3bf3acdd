"""``lnq followup``: track the nodes from a baseline CT to a follow-up CT and assess the response."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "followup",
        help="compare a baseline and a follow-up CT: match nodes, per-node change, RECIST 1.1 / Lugano response",
        description="Register the follow-up CT to the baseline (rigid, then affine, optionally B-spline; on the chest "
        "only), match the nodes one to one (centroid distance after registration, gated by distance and overlap), "
        "and report every node's short axis, long axis and volume at both examinations with their change "
        "(matched / new / disappeared), the registration residual, and the overall response. Segmentations not "
        "given are made with the packaged model. Nodes keep their baseline numbers; new nodes are numbered after "
        "them. Nothing is overwritten without --overwrite.",
    )
    parser.add_argument("--baseline", required=True, help="baseline CT (file or DICOM series folder)")
    parser.add_argument("--baseline-seg", help="baseline node segmentation on the baseline CT's grid (default: segment it)")
    parser.add_argument("--followup", required=True, help="follow-up CT")
    parser.add_argument("--followup-seg", help="follow-up node segmentation (default: segment it)")
    parser.add_argument("--nadir", help="CT of the examination with the smallest tumour burden so far (RECIST nadir)")
    parser.add_argument("--nadir-seg", help="node segmentation of the nadir CT (default: segment it)")
    parser.add_argument("--criteria", choices=("recist", "lugano"), default="recist", help="RECIST 1.1 (default) or Lugano 2014")
    parser.add_argument("--out", required=True, help="report: .json (everything) or .csv (the per-node table)")
    parser.add_argument("--waterfall", help="also draw a waterfall plot of the per-node change to this .png (needs matplotlib)")
    parser.add_argument("--followup-seg-out", help="write the follow-up nodes renumbered to the baseline numbers (.seg.nrrd)")
    parser.add_argument(
        "--baseline-seg-out", help="write the baseline nodes with their numbers (.seg.nrrd), e.g. when segmented here"
    )
    parser.add_argument("--targets", help="comma-separated baseline node numbers to use as target nodes (default: automatic)")
    parser.add_argument(
        "--non-target-progression",
        action="store_true",
        help="the reader judges the non-target nodes to have progressed unequivocally (counts as PD)",
    )
    parser.add_argument("--deformable", action="store_true", help="add a coarse B-spline stage to the registration (slower)")
    parser.add_argument("--max-distance-mm", type=float, default=15.0, help="largest centroid distance for a match (default 15)")
    parser.add_argument(
        "--residual-warning-mm", type=float, default=5.0, help="warn when the registration residual exceeds this (default 5)"
    )
    parser.add_argument("--model", default="default", help="model for segmentations not given (default: default)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device for the model")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument(
        "--progress",
        choices=("bar", "json", "none"),
        default="bar",
        help="bar (default): progress on stderr; json: one JSON object per line on stdout (for programs, as lnq segment); none",
    )
    parser.set_defaults(func=run)
    return parser


def _targets(text):
    from ..errors import InputError

    if text is None:
        return None
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError as error:
        raise InputError(f"--targets '{text}' must be node numbers separated by commas, e.g. --targets 1,3.") from error


def _outputs(args) -> dict[str, Path]:
    """Every output path, checked before any work (suffixes, no clash with an input or each other, writable)."""
    from ..errors import InputError
    from ..output_files import check_output_path

    outputs = {"report": Path(args.out)}
    if outputs["report"].suffix.lower() not in (".json", ".csv"):
        raise InputError(f"--out '{args.out}' must end in .json or .csv.")
    if args.waterfall:
        outputs["waterfall"] = Path(args.waterfall)
        if outputs["waterfall"].suffix.lower() != ".png":
            raise InputError(f"--waterfall '{args.waterfall}' must end in .png.")
        from ..followup.report import require_matplotlib

        require_matplotlib()
    for key in ("followup_seg_out", "baseline_seg_out"):
        if getattr(args, key):
            outputs[key] = Path(getattr(args, key))
    inputs = [
        Path(p).resolve()
        for p in (args.baseline, args.baseline_seg, args.followup, args.followup_seg, args.nadir, args.nadir_seg)
        if p
    ]
    resolved = [p.resolve() for p in outputs.values()]
    for path in outputs.values():
        if path.resolve() in inputs:
            raise InputError(f"The output '{path}' is one of the inputs; choose another output path.")
    if len(set(resolved)) != len(resolved):
        raise InputError("Two outputs name the same file; give each output its own path.")
    for path in outputs.values():
        check_output_path(path, args.overwrite)
    return outputs


def run(args: argparse.Namespace) -> int:
    from .segment import run_reporting_errors

    return run_reporting_errors(_run, args)


def _run(args: argparse.Namespace, json_mode: bool) -> int:
    import sys

    from ..errors import InputError
    from ..io import read_label_map, read_volume

    if args.nadir_seg and not args.nadir:
        raise InputError("--nadir-seg needs --nadir (the nadir CT).")
    outputs = _outputs(args)
    targets = _targets(args.targets)
    volumes = {
        "baseline_ct": read_volume(args.baseline),
        "followup_ct": read_volume(args.followup),
        "baseline_labels": read_label_map(args.baseline_seg) if args.baseline_seg else None,
        "followup_labels": read_label_map(args.followup_seg) if args.followup_seg else None,
        "nadir_ct": read_volume(args.nadir) if args.nadir else None,
        "nadir_labels": read_label_map(args.nadir_seg) if args.nadir_seg else None,
    }
    from .segment import ProgressPrinter

    printer = ProgressPrinter(args.progress)
    try:
        result = _compare(args, volumes, targets, printer)
        printer(0.97, "writing")
        _write(args, outputs, result)
        printer(1.0, "done")
    finally:
        printer.close()
    from ..followup.report import format_summary, format_table

    stream = sys.stderr if json_mode else sys.stdout  # in json mode stdout carries only the events
    print(format_table(result), file=stream)
    print(format_summary(result), file=stream)
    for name, path in outputs.items():
        print(f"{name.replace('_', ' ')} -> {path}", file=stream)
    if json_mode:
        from .segment import emit

        emit(_done_event(result, outputs))
    return 0


def _done_event(result, outputs: dict[str, Path]) -> dict:
    """The ``done`` event: the outputs, the overall response with its reasons, the warnings and messages."""
    from ..table_format import json_safe

    examinations = [e for e in (result.baseline, result.followup, result.nadir) if e is not None]
    return json_safe(
        {
            "event": "done",
            "outputs": {name: str(path) for name, path in outputs.items()},
            "criteria": result.response.criteria,
            "overall_response": result.response.overall_response,
            "reasons": list(result.response.reasons),
            "warnings": list(result.warnings),
            "messages": [message for examination in examinations for message in examination.messages],
            "node_count": len(result.nodes),
            "statuses": {
                status: sum(1 for n in result.nodes if n.status == status) for status in ("matched", "new", "disappeared")
            },
            "segmented_by_model": {e.name: e.segmented_by_model for e in examinations},
        }
    )


def _compare(args, volumes: dict, targets, printer):
    from ..followup.compare import FollowupSettings, compare_examinations
    from ..followup.matching import MatchSettings
    from ..followup.registration import RegistrationSettings
    from ..progress import StageProgress

    settings = FollowupSettings(
        registration=RegistrationSettings(deformable=args.deformable, residual_warning_mm=args.residual_warning_mm),
        matching=MatchSettings(max_distance_mm=args.max_distance_mm),
    )
    return compare_examinations(
        **volumes,
        criteria=args.criteria,
        target_node_ids=targets,
        non_target_progression=args.non_target_progression,
        settings=settings,
        model=args.model,
        device=args.device,
        progress=StageProgress(printer, 0.0, 0.97) if args.progress != "none" else None,
    )


def _write(args, outputs: dict[str, Path], result) -> None:
    from ..followup.report import write_report, write_waterfall
    from ..output_files import written_together
    from ..segmentation_io import write_segmentation

    metadata = {
        "inputs": {
            "baseline": args.baseline,
            "baseline_seg": args.baseline_seg,
            "followup": args.followup,
            "followup_seg": args.followup_seg,
            "nadir": args.nadir,
            "nadir_seg": args.nadir_seg,
        }
    }
    with written_together():  # the report, plot and segmentations appear together or not at all
        write_report(outputs["report"], result, args.overwrite, metadata)
        if "waterfall" in outputs:
            write_waterfall(outputs["waterfall"], result, args.overwrite)
        if "followup_seg_out" in outputs:
            write_segmentation(outputs["followup_seg_out"], result.followup_labels, overwrite=args.overwrite, binary=False)
        if "baseline_seg_out" in outputs:
            write_segmentation(outputs["baseline_seg_out"], result.baseline_labels, overwrite=args.overwrite, binary=False)
