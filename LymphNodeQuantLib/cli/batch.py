"""``lnq batch``: segment + measure (+ evaluate) many CTs on a Dask cluster, resumable, failures recorded."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .options import add_model_options, add_segmentation_options, segmentation_choices


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "batch",
        help="segment + measure (+ evaluate) a folder or CSV of CTs on a Dask cluster -> cohort tables",
        description="Run 'lnq segment' + measurement on every case of INPUT (a folder of CT files and DICOM series "
        "folders, or a CSV with columns case_id, ct and optionally reference), and evaluate against the reference "
        "where one is given. Runs on an embedded local Dask cluster sized to the machine (one worker per GPU where "
        "there are GPUs) or on an existing one (--scheduler). A case that fails is recorded with its error and the "
        "others go on; a rerun skips finished cases (outputs intact, inputs and settings unchanged: DIR/manifest.json). "
        "Writes DIR/cases/<case_id>/ per case and, at DIR, cohort_nodes.csv (one row per node), cases.csv (one row "
        "per case) and, with references, evaluation_cases.csv and evaluation_summary.json (LNQ2023 aggregation). "
        "Exit code 1 when any case failed.",
    )
    parser.add_argument("input", help="folder of CTs (files, DICOM series folders) or a CSV: case_id,ct[,reference]")
    parser.add_argument("--out", required=True, help="output folder (created; reused by a rerun)")
    parser.add_argument(
        "--scheduler", help="address of a running Dask scheduler (e.g. tcp://host:8786) instead of a local cluster"
    )
    parser.add_argument(
        "--workers", type=int, help="local worker processes (default: one per GPU, else cores / threads within memory)"
    )
    parser.add_argument(
        "--threads-per-worker",
        type=int,
        help="compute threads per worker (default: cores / workers; with --scheduler: each worker's cores)",
    )
    add_model_options(parser)
    parser.add_argument("--overwrite", action="store_true", help="compute every case again and replace files at the output names")
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="compute the cases that failed before again (default: skip them while unchanged)",
    )
    add_segmentation_options(parser)
    parser.add_argument(
        "--resample-prediction",
        action="store_true",
        help="evaluate against a reference on another grid by resampling the prediction",
    )
    parser.add_argument(
        "--progress",
        choices=("bar", "json", "none"),
        default="bar",
        help="bar (default): a bar over cases on stderr (a line per case when stderr is not a terminal); "
        "json: one JSON object per line on stdout; none",
    )
    parser.set_defaults(func=run)
    return parser


class CaseProgress:
    """Progress over cases: a tqdm bar on a terminal, else one line per case; or JSON lines on stdout."""

    def __init__(self, mode: str, stream=None) -> None:
        self.mode = mode
        self.stream = stream if stream is not None else sys.stderr
        self.bar = None
        self.done = self.failed = self.total = 0
        self.started = time.monotonic()

    def __call__(self, event: dict) -> None:
        if self.mode == "json":
            emit(event)
        elif self.mode == "bar":
            self._show(event)

    def _show(self, event: dict) -> None:
        if event["event"] == "start":
            self.total = event["to_compute"]
            print(
                f"{event['total']} case(s): {event['to_compute']} to compute, {event['skipped']} skipped (finished earlier)",
                file=self.stream,
                flush=True,
            )
            if self.stream.isatty() and self.total:
                from tqdm import tqdm

                self.bar = tqdm(total=self.total, file=self.stream, unit="case", desc="cases")
            return
        self.done += 1
        self.failed += event["status"] != "done"
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.failed} failed" if self.failed else "", refresh=False)
            self.bar.update(1)
            return
        text = f"[{time.monotonic() - self.started:7.1f} s] {self.done}/{self.total} {event['case_id']} {event['status']}"
        if event.get("error"):
            text += f": {event['error']['type']}: {event['error']['message']}"
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _settings(args: argparse.Namespace):
    from ..batch.run_case import settings_for_model

    choices = segmentation_choices(args)
    binary = choices.pop("output") == "binary"
    return settings_for_model(
        args.model,
        **choices,
        binary=binary,
        resample_prediction=args.resample_prediction,
        device=args.device,
        overwrite=args.overwrite,
    )


def _client(args: argparse.Namespace):
    """(factory of a context manager giving a Dask client, description, compute threads per case or None)."""
    from ..batch.cluster import local_client, plan_local_cluster, remote_client, visible_gpus
    from ..errors import InputError

    if args.scheduler:
        if args.workers is not None:
            raise InputError("--workers sizes the local cluster; with --scheduler size the cluster where it is started.")
        return lambda: remote_client(args.scheduler), f"Dask scheduler at {args.scheduler}", args.threads_per_worker
    gpus = visible_gpus(args.device)
    if args.device == "cuda" and not gpus:
        raise InputError("--device cuda was requested but no CUDA GPU is usable here; use --device auto or cpu.")
    plan = plan_local_cluster(args.workers, args.threads_per_worker, gpus=gpus)
    return lambda: local_client(plan), plan.describe(), plan.threads_per_worker


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..batch.cases import discover_cases
    from ..batch.runner import run_batch

    say = (lambda text: print(text, file=sys.stderr)) if args.progress == "json" else print
    out_dir = Path(args.out)
    cases = discover_cases(args.input, exclude=[out_dir])
    settings, card = _settings(args)
    client_factory, where, threads = _client(args)
    settings = replace(settings, compute_threads=threads)
    printer = CaseProgress(args.progress)
    say(f"lnq batch: {len(cases)} case(s) from '{args.input}', model {card.title}, {where} -> '{out_dir}'")
    try:
        result = run_batch(
            cases,
            out_dir,
            settings,
            client_factory,
            retry_failed=args.retry_failed,
            progress=printer,
            run_settings={"cluster": where, "device": args.device},
        )
    except KeyboardInterrupt:
        printer.close()
        print(
            f"lnq batch: interrupted; every case that ended is recorded in '{out_dir / 'manifest.json'}' and its outputs "
            "are complete. Run the same command again to go on.",
            file=sys.stderr,
        )
        return 130
    finally:
        printer.close()
    say(f"lnq batch: {result.one_line()}")
    for case_id, error in list(result.errors.items())[:10]:
        say(f"  failed {case_id}: {error}")
    for name, path in result.files.items():
        say(f"  {name} -> {path}")
    if args.progress == "json":
        emit(
            {
                "event": "done",
                "total": result.total,
                "computed": result.computed,
                "skipped": result.skipped,
                "failed": result.failed,
                "outputs": {name: str(path) for name, path in result.files.items()},
            }
        )
    return 1 if result.failed else 0
