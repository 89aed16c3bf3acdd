"""Where a batch runs: an embedded local Dask cluster sized to the machine, or an existing Dask scheduler.

Local cluster (:func:`plan_local_cluster`, :func:`batch_client`): worker *processes*, each running
one case at a time (a case is already parallel inside: torch and ITK threads). Without GPUs,
``workers x threads_per_worker = cores`` (the cores this process may use: its CPU affinity, which is
what SLURM and containers grant), and no more workers than memory allows (:data:`MEMORY_PER_WORKER_BYTES`
each). With GPUs (and ``device`` not ``cpu``), one worker per GPU, each seeing only its own GPU
(``CUDA_VISIBLE_DEVICES`` in that worker's environment, set before the process starts). Built on
distributed's ``SpecCluster`` (what ``LocalCluster`` is made of) so each worker can get its own
environment. Everything listens on 127.0.0.1 only; no dashboard.

A worker that dies (killed, out of memory) is restarted by its nanny and its case is given to a
worker again, up to :data:`ALLOWED_FAILURES` times; after that the case is recorded as failed.

``--scheduler ADDRESS``: connect to a running cluster (e.g. from dask-jobqueue on SLURM/PBS); its
workers must see the same file system and have LymphNodeQuantLib installed.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence

from ..errors import InputError

#: memory a worker may need for one full-size chest CT (volume, resampled copies, probabilities, anatomy)
MEMORY_PER_WORKER_BYTES = 4 * 1024**3
#: a case whose worker died this many times + 1 is recorded as failed (distributed's allowed-failures)
ALLOWED_FAILURES = 2
#: thread caps set in each worker's environment before it starts (OpenMP, MKL, OpenBLAS, ITK)
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the system has one, else all)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def visible_gpus(device: str = "auto") -> list[str]:
    """The GPU ids the workers can be given (honours an existing CUDA_VISIBLE_DEVICES); none for ``device="cpu"``."""
    if device == "cpu":
        return []
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        return []
    listed = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return listed[:count] if len(listed) >= count else [str(i) for i in range(count)]


def total_memory_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


@dataclass(frozen=True)
class ClusterPlan:
    """How many local workers, the compute threads each, and the GPU each worker sees (empty: CPU)."""

    workers: int
    threads_per_worker: int
    gpus: tuple[str, ...] = field(default_factory=tuple)
    memory_per_worker_bytes: int = MEMORY_PER_WORKER_BYTES

    def describe(self) -> str:
        where = f"one GPU each ({', '.join(self.gpus)})" if self.gpus else "CPU"
        return f"local Dask cluster: {self.workers} worker process(es) x {self.threads_per_worker} thread(s), {where}"


def plan_local_cluster(
    workers: Optional[int] = None,
    threads_per_worker: Optional[int] = None,
    *,
    cores: Optional[int] = None,
    gpus: Sequence[str] = (),
    memory_bytes: Optional[int] = None,
) -> ClusterPlan:
    """Size the local cluster: one worker per GPU, else ``workers x threads = cores`` within memory.

    Without GPUs and without ``workers``/``threads_per_worker``: one worker per core (1 thread each),
    as memory allows; the remaining cores are shared out as threads. On 2 cores two 1-thread workers
    ran more cases per minute than one 2-thread worker (benchmarks/RESULTS.md, section batch).
    """
    cores = cores or available_cores()
    memory_bytes = memory_bytes or total_memory_bytes()
    for name, value in (("--workers", workers), ("--threads-per-worker", threads_per_worker)):
        if value is not None and value < 1:
            raise InputError(f"{name} must be at least 1, got {value}.")
    if gpus:
        count = workers or len(gpus)
        threads = threads_per_worker or max(1, cores // count)
        return ClusterPlan(count, threads, tuple(gpus[i % len(gpus)] for i in range(count)), memory_bytes // count)
    if workers is None:
        threads = threads_per_worker or 1
        workers = max(1, min(cores // threads, memory_bytes // MEMORY_PER_WORKER_BYTES))
    threads = threads_per_worker or max(1, cores // workers)
    return ClusterPlan(workers, threads, (), memory_bytes // workers)


def _worker_specs(plan: ClusterPlan) -> dict:
    from distributed import Nanny

    specs = {}
    for index in range(plan.workers):
        env = {name: str(plan.threads_per_worker) for name in THREAD_ENV_VARS}
        if plan.gpus:
            env["CUDA_VISIBLE_DEVICES"] = plan.gpus[index]
        options = {
            "nthreads": 1,  # one case at a time per worker
            "env": env,
            "memory_limit": plan.memory_per_worker_bytes,
            "host": "127.0.0.1",
            "dashboard": False,
            "silence_logs": logging.ERROR,
        }
        specs[f"lnq-worker-{index}"] = {"cls": Nanny, "options": options}
    return specs


@contextlib.contextmanager
def quiet_dask_logs(level: int = logging.WARNING) -> Iterator[None]:
    """Only Dask's warnings and errors reach the user (its INFO lines are cluster chatter)."""
    dask_logger = logging.getLogger("distributed")
    previous = dask_logger.level
    dask_logger.setLevel(level)
    try:
        yield
    finally:
        dask_logger.setLevel(previous)


@contextlib.contextmanager
def _thread_caps_restored() -> Iterator[None]:
    """The nanny sets its pre-spawn environment in *this* process too; put the thread caps back afterwards."""
    saved = {name: os.environ.get(name) for name in THREAD_ENV_VARS}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def local_client(plan: ClusterPlan) -> Iterator:
    """A ``distributed.Client`` on a local cluster built from ``plan``; closed (workers stopped) on exit."""
    import dask
    from distributed import Client, Scheduler, SpecCluster

    caps = {name: plan.threads_per_worker for name in THREAD_ENV_VARS}
    scheduler = {
        "cls": Scheduler,
        "options": {
            "host": "127.0.0.1",
            "dashboard": False,
            "dashboard_address": "127.0.0.1:0",
            "allowed_failures": ALLOWED_FAILURES,
        },
    }
    with (
        quiet_dask_logs(),
        _thread_caps_restored(),
        dask.config.set({"distributed.nanny.pre-spawn-environ": {"MALLOC_TRIM_THRESHOLD_": 65536, **caps}}),
    ):
        cluster = SpecCluster(workers=_worker_specs(plan), scheduler=scheduler, silence_logs=logging.ERROR, name="lnq-batch")
        try:
            with Client(cluster) as client:
                yield client
        finally:
            cluster.close()


@contextlib.contextmanager
def remote_client(address: str, timeout_s: float = 30.0) -> Iterator:
    """A ``distributed.Client`` connected to a running scheduler at ``address``."""
    from distributed import Client

    with quiet_dask_logs():
        try:
            client = Client(address, timeout=f"{timeout_s}s")
        except (OSError, TimeoutError) as error:
            raise InputError(
                f"Cannot reach the Dask scheduler at '{address}' ({error}); start it first (dask scheduler, or a "
                "dask-jobqueue cluster: see README, 'Batch runs') or leave out --scheduler for a local cluster."
            ) from error
        try:
            yield client
        finally:
            client.close()
