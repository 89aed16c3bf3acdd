"""``lnq batch`` throughput: cases per minute with 1 and 2 local Dask workers on the same cores.

The same ``--cases`` phantom CTs (``synthetic.make_phantom``, ``--shape``/``--spacing``), the packaged
default model unless ``--model``, run through :func:`LymphNodeQuantLib.batch.runner.run_batch` (what
``lnq batch`` runs) on a fresh local cluster and a fresh output folder each time, for every
``--configs`` entry ``WORKERSxTHREADS`` (default ``1x2`` and ``2x1``: both use 2 threads in all, the
cores of the project's machines). Configurations alternate within each of the ``--repeats`` rounds
(default 3), so a change in machine load hits both alike. Reported per configuration: cases per
minute over the whole run (cluster start included, what a user waits for) and over the computing
alone (first worker ready -> last case recorded), min/median/max over the repeats, the worker
processes' peak memory, and the load average during the run (other work on a shared machine slows
every number). Results go to the ``batch`` section of ``benchmarks/RESULTS.md``.

    python benchmarks/batch_bench.py                       # 6 phantom cases, 1x2 vs 2x1, 3 rounds
    python benchmarks/batch_bench.py --cases 4 --repeats 1 --no-write   # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def make_cases(folder: Path, count: int, shape_zyx, spacing_zyx_mm) -> list:
    from LymphNodeQuantLib.batch.cases import Case
    from LymphNodeQuantLib.io import write_volume
    from LymphNodeQuantLib.synthetic import make_phantom

    cases = []
    for seed in range(count):
        path = write_volume(folder / f"case{seed:03d}-ct.nii.gz", make_phantom(shape_zyx, spacing_zyx_mm, seed=seed).ct)
        cases.append(Case(f"case{seed:03d}", path))
    return cases


def one_run(cases, settings, workers: int, threads: int, out_dir: Path) -> dict:
    """One batch on a fresh local cluster: seconds in all, seconds computing, peak worker memory."""
    from dataclasses import replace

    from benchmarks.results_md import load_average
    from LymphNodeQuantLib.batch.cluster import local_client, plan_local_cluster
    from LymphNodeQuantLib.batch.runner import run_batch

    plan = plan_local_cluster(workers, threads)
    marks: dict = {}

    @contextlib.contextmanager
    def client_factory():
        with local_client(plan) as client:
            client.wait_for_workers(workers, timeout=300)
            marks["ready"] = time.perf_counter()
            yield client
            marks["done"] = time.perf_counter()
            marks["peak_rss_mib"] = max(client.run(_peak_rss_mib).values())

    load_before = load_average()
    started = time.perf_counter()
    result = run_batch(cases, out_dir, replace(settings, compute_threads=threads), client_factory)
    total = time.perf_counter() - started
    if result.failed or len(result.computed) != len(cases):
        raise RuntimeError(f"the benchmark batch did not compute every case: {result.one_line()}")
    return {
        "total_s": total,
        "compute_s": marks["done"] - marks["ready"],
        "peak_rss_mib": marks["peak_rss_mib"],
        "load": (load_before + load_average()) / 2,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--shape", type=int, nargs=3, default=(32, 80, 80), metavar=("Z", "Y", "X"))
    parser.add_argument("--spacing", type=float, nargs=3, default=(3.0, 4.0, 4.0), metavar=("Z", "Y", "X"))
    parser.add_argument("--model", default="default")
    parser.add_argument("--configs", nargs="+", default=["1x2", "2x1"], help="WORKERSxTHREADS per worker")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only; do not update RESULTS.md")
    args = parser.parse_args()

    from benchmarks.results_md import command_line, format_times, git_state, machine_description, time_summary, update_section
    from LymphNodeQuantLib.batch.run_case import settings_for_model

    git_at_start = git_state()
    configs = [tuple(int(v) for v in text.lower().split("x")) for text in args.configs]
    settings, card = settings_for_model(args.model)
    runs: dict = {config: [] for config in configs}
    with tempfile.TemporaryDirectory(prefix="lnq-batch-bench-") as folder:
        cases = make_cases(Path(folder), args.cases, tuple(args.shape), tuple(args.spacing))
        for repeat in range(args.repeats):
            for workers, threads in configs:
                run = one_run(cases, settings, workers, threads, Path(folder) / f"out-{workers}x{threads}-{repeat}")
                runs[(workers, threads)].append(run)
                print(f"round {repeat + 1}: {workers} worker(s) x {threads} thread(s): {run}", flush=True)

    lines = [
        "## Batch runs: cases per minute with 1 and 2 local Dask workers",
        "",
        f"Machine: {machine_description(git_at_start)}.  ",
        f"Command: `{command_line()}`.  ",
        f"{args.cases} phantom CTs of {' x '.join(map(str, args.shape))} voxels at {' x '.join(f'{s:g}' for s in args.spacing)} mm "
        f"(z, y, x), model {card.title}, `run_batch` as `lnq batch` runs it, a fresh local cluster and output folder per run; "
        f"{args.repeats} rounds, configurations alternating within each round. Rates are cases / minute: "
        "median (min-max) over the rounds.",
        "",
        "| workers x threads | cases/min, whole run (cluster start included) | cases/min, computing only | "
        "whole run s | worker peak memory MiB | load average |",
        "|---|---|---|---|---|---|",
    ]
    for (workers, threads), values in runs.items():
        per_minute = time_summary(60.0 * args.cases / v["total_s"] for v in values)
        computing = time_summary(60.0 * args.cases / v["compute_s"] for v in values)
        total = time_summary(v["total_s"] for v in values)
        memory = max(v["peak_rss_mib"] for v in values)
        load = time_summary(v["load"] for v in values)
        lines.append(
            f"| {workers} x {threads} | {format_times(per_minute)} | {format_times(computing)} | {format_times(total)} | "
            f"{memory:.0f} | {format_times(load)} |"
        )
    lines += [
        "",
        "Phantom CTs are far smaller than clinical CTs (about 512 x 512 x 300 voxels), so these rates are for comparing "
        "configurations, not for planning a real cohort: time one real case with `lnq segment` for that. The machine is "
        "shared with other work; the load average column says how busy it was. On a busy machine a 2-thread worker's "
        "threads wait for each other whenever one is descheduled, which favours 1-thread workers; on an idle machine the "
        "gap may be smaller.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        update_section("batch", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
