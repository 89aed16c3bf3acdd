"""``lnq segment``: find and outline the mediastinal lymph nodes of a CT with a packaged or given model."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

from .options import add_model_options, add_segmentation_options, segmentation_choices


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "segment",
        help="segment the lymph nodes of a CT (file or DICOM folder) -> .seg.nrrd (+ per-node table)",
        description="Segment mediastinal lymph nodes: crop to the mediastinum, resample to the model's spacing, "
        "sliding-window inference (Gaussian blending), resample back, threshold, drop candidates that cannot be "
        "mediastinal nodes (too small, mostly air/lung, mostly bone/contrast, outside the mediastinum). Writes a "
        "Slicer segmentation (.seg.nrrd, one segment per node) or a plain label map (.nrrd/.nii.gz), and with "
        "--table a per-node table (.csv or .json). Nothing is overwritten without --overwrite; all outputs are "
        "checked before inference starts.",
    )
    parser.add_argument("ct", help="CT volume (.nrrd, .nii.gz, .mha, ...) or a folder with one DICOM series")
    parser.add_argument("--out", help="output segmentation (default: ./<CT name>.seg.nrrd in the current folder)")
    parser.add_argument("--table", help="also write the per-node measurements to this .csv or .json")
    parser.add_argument(
        "--dicom-seg",
        metavar="FILE",
        help="also write a DICOM Segmentation (one segment per node) referencing the source series; the CT must be "
        "a DICOM series folder",
    )
    parser.add_argument(
        "--dicom-sr",
        metavar="FILE",
        help="also write a DICOM Structured Report (TID 1500) with each node's short axis, long axis and volume, "
        "referencing its segment in the --dicom-seg file (needs --dicom-seg)",
    )
    add_model_options(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_segmentation_options(parser)
    parser.add_argument(
        "--progress",
        choices=("bar", "json", "none"),
        default="bar",
        help="bar (default): a progress bar on stderr (a line every few seconds when stderr is not a terminal); "
        "json: one JSON object per line on stdout (for programs); none",
    )
    parser.set_defaults(func=run)
    return parser


def volume_stem(path: Path) -> str:
    """File name without its volume suffix (``case.nii.gz`` -> ``case``; a DICOM folder -> its name)."""
    name = path.resolve().name if path.is_dir() or path.name in ("", ".") else path.name
    for suffix in (".seg.nrrd", ".nii.gz", ".nrrd", ".nhdr", ".nii", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def format_node_table(measurements, matched: Optional[dict] = None) -> str:
    """A short human-readable table of node measurements (the CSV/JSON hold every column).

    ``matched`` ({node id: bool}) adds a column saying whether each node overlaps a reference node.
    """
    header = f"{'node':>4}  {'short mm':>8}  {'long mm':>8}  {'volume mL':>9}  {'centroid RAS mm':>24}  enlarged"
    lines = [header + ("  in reference" if matched is not None else "")]
    for m in measurements:
        r, a, s = m.centroid_ras_mm
        line = (
            f"{m.node_id:>4}  {m.short_axis_mm:8.1f}  {m.long_axis_mm:8.1f}  {m.volume_ml:9.3f}  "
            f"{f'({r:.1f}, {a:.1f}, {s:.1f})':>24}  {'yes' if m.enlarged else 'no':<8}"
        )
        if matched is not None:
            line += f"  {'yes' if matched.get(m.node_id) else 'no (false positive)'}"
        lines.append(line.rstrip())
    return "\n".join(lines)


class ProgressPrinter:
    """Progress callback for the chosen ``--progress`` mode.

    ``bar`` draws a bar when stderr is a terminal; otherwise (a log file, CI, a pipe) it prints one
    plain line per stage and at least every ``line_interval_s`` seconds, so a long run is never silent.
    """

    def __init__(self, mode: str, line_interval_s: float = 5.0, stream=None) -> None:
        self.mode = mode
        self.stream = stream if stream is not None else sys.stderr
        self.bar = None
        self.line_interval_s = line_interval_s
        self.started = time.monotonic()
        self.last_line = (-1.0, "")  # (time, stage) of the last plain line
        if mode == "bar" and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=100, file=self.stream, unit="%", bar_format="{desc:<18}{percentage:3.0f}%|{bar}| {elapsed}")

    def __call__(self, fraction: float, stage: str) -> None:
        if self.mode == "json":
            emit({"event": "progress", "fraction": round(float(fraction), 4), "stage": stage})
        elif self.bar is not None:
            self.bar.set_description_str(stage)
            self.bar.n = round(100 * fraction)
            self.bar.refresh()
        elif self.mode == "bar":
            now = time.monotonic()
            last_time, last_stage = self.last_line
            if stage != last_stage or now - last_time >= self.line_interval_s:
                self.last_line = (now, stage)
                print(f"[{now - self.started:6.1f} s] {100 * fraction:3.0f}% {stage}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def emit(event: dict) -> None:
    """One JSON object per line on stdout, flushed (a parent process reads it live)."""
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _dicom_outputs(args: argparse.Namespace, ct_path: Path) -> tuple[Optional[Path], Optional[Path]]:
    """The --dicom-seg/--dicom-sr paths, refused (before any work) when the CT is not a DICOM series folder."""
    from ..errors import InputError

    dicom_seg = Path(args.dicom_seg) if args.dicom_seg else None
    dicom_sr = Path(args.dicom_sr) if args.dicom_sr else None
    if dicom_sr is not None and dicom_seg is None:
        raise InputError("--dicom-sr refers to each node's segment in a DICOM SEG; give --dicom-seg FILE as well.")
    if dicom_seg is None:
        return None, None
    from ..dicom_export import require_dicom_folder

    require_dicom_folder(ct_path, "--dicom-seg/--dicom-sr")
    folder = ct_path.resolve()
    for path in (dicom_seg, dicom_sr):
        if path is not None and folder in path.resolve().parents:
            raise InputError(
                f"'{path}' lies inside the input DICOM folder; write DICOM outputs elsewhere (the folder must keep one series)."
            )
    return dicom_seg, dicom_sr


def _write_dicom(source, result, measurements, args: argparse.Namespace, dicom_seg: Path, dicom_sr: Optional[Path]) -> dict:
    """The DICOM SEG (and SR) of the result: one segment per node of ``measurements``, on ``source``'s instances."""
    from ..dicom_export import SegmentationAlgorithm, write_dicom_outputs

    algorithm = SegmentationAlgorithm.from_model_card(result.model_card)
    nodes_from = "components" if args.binary else "labels"
    paths = write_dicom_outputs(
        source, result.labels, measurements, algorithm, dicom_seg, dicom_sr, nodes_from=nodes_from, overwrite=args.overwrite
    )
    return {name: str(path) for name, path in paths.items()}


def run_reporting_errors(command, args: argparse.Namespace) -> int:
    """``command(args, json_mode)``; with ``--progress json`` every failure is also an ``error`` event, then
    ``main()`` handles it."""
    json_mode = args.progress == "json"
    try:
        return command(args, json_mode)
    except Exception as error:
        if json_mode:
            emit({"event": "error", "message": str(error), "type": type(error).__name__})
        raise


def run(args: argparse.Namespace) -> int:
    return run_reporting_errors(_run, args)


def _run(args: argparse.Namespace, json_mode: bool) -> int:
    from ..errors import InputError
    from ..io import check_output_path, read_volume

    say = (lambda text: print(text, file=sys.stderr)) if json_mode else print
    ct_path = Path(args.ct)
    out = Path(args.out) if args.out else Path.cwd() / f"{volume_stem(ct_path)}.seg.nrrd"
    table = Path(args.table) if args.table else None
    if table is not None and table.suffix.lower() not in (".csv", ".json"):
        raise InputError(f"--table '{table}' must end in .csv or .json.")
    dicom_seg, dicom_sr = _dicom_outputs(args, ct_path)
    outputs = [p for p in (out, table, dicom_seg, dicom_sr) if p is not None]
    for path in outputs:
        if ct_path.exists() and path.resolve() == ct_path.resolve():
            raise InputError(f"The output '{path}' is the input CT; choose another --out/--table.")
    if table is not None and table.resolve() == out.resolve():
        raise InputError("--out and --table name the same file.")
    if len({path.resolve() for path in outputs}) != len(outputs):
        raise InputError("Two of --out, --table, --dicom-seg and --dicom-sr name the same file; give each its own.")
    for path in outputs:  # before any work: never compute for nothing, never clobber
        check_output_path(path, args.overwrite)

    ct = read_volume(ct_path)
    source = None
    if dicom_seg is not None:  # map slices to DICOM instances before inference: a mismatch stops here
        from ..dicom_export import read_source_series

        source = read_source_series(ct_path, ct.geometry)
    from ..inference import segment_volume
    from ..progress import StageProgress

    printer = ProgressPrinter(args.progress)
    try:
        result = segment_volume(
            ct,
            args.model,
            args.device,
            **segmentation_choices(args),
            progress=StageProgress(printer, 0.0, 0.95),
        )
        printer(0.95, "writing")
        from ..measure import measure_nodes, write_node_table
        from ..output_files import written_together
        from ..segmentation_io import write_segmentation

        measurements = measure_nodes(result.labels, ct, nodes_from="components" if args.binary else "labels")
        with written_together():  # the segmentation and its table appear together or not at all
            written = {
                "segmentation": str(
                    write_segmentation(out, result.labels, result.model_card, overwrite=args.overwrite, binary=args.binary)
                )
            }
            if table is not None:
                metadata = {"ct": str(ct_path), "segmentation": str(out), "model": result.model_card.title}
                written["table"] = str(write_node_table(table, measurements, overwrite=args.overwrite, metadata=metadata))
            if source is not None:
                written.update(_write_dicom(source, result, measurements, args, dicom_seg, dicom_sr))
        printer(1.0, "done")
    finally:
        printer.close()

    for message in result.messages:
        say(message)
    say(f"Model {result.model_card.title} on {result.device}; {result.node_count} node(s) -> {written['segmentation']}")
    if table is not None:
        say(f"Node table -> {written['table']}")
    for name, title in (("dicom_seg", "DICOM SEG"), ("dicom_sr", "DICOM SR")):
        if name in written:
            say(f"{title} -> {written[name]}")
    if measurements and not json_mode:
        print(format_node_table(measurements))
    if json_mode:
        emit(
            {
                "event": "done",
                "outputs": written,
                "node_count": result.node_count,
                "device": result.device,
                "model": result.model_card.title,
                "messages": result.messages,
                "has_mediastinum": result.has_mediastinum,
                "anatomy_filter": result.anatomy_filter,
                "dropped_candidates": result.dropped_candidates,
            }
        )
    return 0
