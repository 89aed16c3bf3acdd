"""Write one benchmark's section of ``benchmarks/RESULTS.md`` without touching the others.

Each benchmark script owns a section delimited by ``<!-- BEGIN name -->`` / ``<!-- END name -->``
and calls :func:`update_section` with its Markdown (which should state machine, date, git state and
the command that produced it; :func:`machine_description` gives the first three). Timing helpers
shared by the benchmarks live here too: one thread count pinned for every method
(:func:`pinned_thread_env` for worker processes, :func:`pin_threads` inside them), min/median/max
of repeats (:func:`time_summary`) and the machine's load (:func:`load_average`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
REPO_ROOT = RESULTS_PATH.parents[1]
HEADER = "# Benchmark results\n\nEvery number here is written by a script in `benchmarks/`; rerun the command quoted in a section to reproduce it.\n"

#: Environment variables that cap the threads of OpenMP, MKL, OpenBLAS, ITK (SimpleITK) and nnU-Net v2
#: (``nnUNet_def_n_proc``: the thread count nnU-Net sets for itself while resampling its output).
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
    "nnUNet_def_n_proc",
)


def git_state() -> str:
    """``git commit <short hash>``, then ``clean`` or ``dirty (...)`` when tracked files differ from that commit.

    Untracked files are not counted. A dirty tree names the top-level folders with changes (so a
    reader sees whether the engine itself, ``LymphNodeQuantLib/``, differed from the commit) and a
    hash of the uncommitted diff (so two states can be told apart).
    """

    def git(*arguments):
        return subprocess.run(["git", *arguments], capture_output=True, cwd=REPO_ROOT, check=True).stdout

    try:
        commit = git("rev-parse", "--short", "HEAD").decode().strip()
        status = git("status", "--porcelain", "--untracked-files=no").decode()
        changed = [line[3:].split(" -> ")[-1].strip('"') for line in status.splitlines() if line.strip()]
        diff_hash = hashlib.sha256(git("diff", "HEAD", "--binary")).hexdigest()[:12] if changed else ""
    except (OSError, subprocess.CalledProcessError):
        return "git commit unknown (not a git checkout)"
    if not changed:
        return f"git commit {commit}, clean"
    places = sorted({path.split("/")[0] + ("/" if "/" in path else "") for path in changed})
    return (
        f"git commit {commit}, dirty (uncommitted changes to {len(changed)} tracked file(s) in {', '.join(places)}; "
        f"diff sha256 {diff_hash})"
    )


def machine_description(git_at_start: str | None = None) -> str:
    """Machine, library versions, date and git state: the provenance line of every section.

    Pass ``git_at_start`` (:func:`git_state` taken when the run began) to have the line say whether
    the checkout changed while the benchmark ran; without it, the git state now.
    """
    import numpy

    try:
        import torch

        torch_text = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
        if torch.cuda.is_available():
            torch_text += f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:  # pragma: no cover
        torch_text = "torch not installed"
    now = git_state()
    if git_at_start is None:
        git_text = now
    elif git_at_start == now:
        git_text = f"{now}, the same at the start and at the end of the run"
    else:
        git_text = f"at the start {git_at_start}; CHANGED while it ran, at the end {now}"
    cpu = platform.processor() or platform.machine()
    return (
        f"{platform.system()} {platform.machine()} ({cpu}), {os.cpu_count()} CPU cores, Python "
        f"{platform.python_version()}, numpy {numpy.__version__}, {torch_text}; "
        f"{_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; {git_text}"
    )


def load_average() -> float:
    """The machine's 1-minute load average (NaN where the system does not report one)."""
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):  # pragma: no cover
        return float("nan")


def pinned_thread_env(threads: int) -> dict:
    """A copy of the environment with every thread cap in :data:`THREAD_ENV_VARS` set to ``threads`` (for workers)."""
    env = dict(os.environ)
    env.update({name: str(int(threads)) for name in THREAD_ENV_VARS})
    return env


def pin_threads(threads: int):
    """Inside a worker, after its imports: torch and SimpleITK, where already imported, use ``threads`` threads.

    Libraries not imported yet are left alone (importing torch just to pin it would add its memory to
    a worker that does not use it); the environment of :func:`pinned_thread_env` caps them anyway.
    Returns torch's thread count afterwards (None without torch).
    """
    if "SimpleITK" in sys.modules:
        sys.modules["SimpleITK"].ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
    if "torch" not in sys.modules:
        return None
    torch = sys.modules["torch"]
    torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def time_summary(times) -> dict:
    """min / median / max (seconds) of repeated timings, and how many."""
    import numpy

    values = numpy.asarray(list(times), dtype=float)
    return {"min": float(values.min()), "median": float(numpy.median(values)), "max": float(values.max()), "n": int(values.size)}


def format_times(summary: dict, digits: int = 1) -> str:
    """``median (min-max)`` of :func:`time_summary`."""
    return f"{summary['median']:.{digits}f} ({summary['min']:.{digits}f}-{summary['max']:.{digits}f})"


def command_line() -> str:
    return "python " + " ".join(
        [Path(sys.argv[0]).as_posix().split("/benchmarks/")[-1] if "/benchmarks/" in sys.argv[0] else sys.argv[0]] + sys.argv[1:]
    )


def update_section(name: str, markdown: str, path: Path = RESULTS_PATH) -> Path:
    """Replace (or append) the section ``name`` of RESULTS.md with ``markdown``."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    text = path.read_text() if path.exists() else HEADER
    block = f"{begin}\n{markdown.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), flags=re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
    return path
