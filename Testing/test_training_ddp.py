"""Distributed training path: ``torchrun`` (torch.distributed.run) with 2 CPU processes on gloo."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch  # a hard dependency: a broken install must fail, not skip

from LymphNodeQuantLib.models.networks import plain_unet_architecture
from LymphNodeQuantLib.training.config import TrainingConfig
from LymphNodeQuantLib.training.phantom_dataset import write_phantom_dataset


def test_ddp_two_gloo_processes(tmp_path, repo_root):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed not available in this build")
    dataset = tmp_path / "data"
    write_phantom_dataset(dataset, [1, 2], [], shape_zyx=(40, 96, 96), spacing_zyx_mm=(3.0, 3.5, 3.5))
    config = TrainingConfig(
        spacing_zyx_mm=(3.0, 3.5, 3.5),
        patch_size_zyx=(16, 32, 32),
        epochs=2,
        iterations_per_epoch=2,
        batch_size=1,
        architecture=plain_unet_architecture(
            features_per_stage=(4, 8), strides=((1, 1, 1), (1, 2, 2)), kernel_sizes=((1, 3, 3), (3, 3, 3))
        ),
        num_threads=1,
        strategy="masking",
        seed=1,
    )
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config.to_dict()))
    out = tmp_path / "run"
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo_root)}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=localhost:0",
        "-m",
        "LymphNodeQuantLib",
        "train",
        str(dataset),
        "--out",
        str(out),
        "--config",
        str(config_path),
        "--device",
        "cpu",
    ]
    completed = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stderr[-3000:]
    # rank 0 alone wrote the log: one row per epoch, losses averaged over both ranks
    with open(out / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    state = torch.load(out / "checkpoint_final.pt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 1 and not any(k.startswith("module.") for k in state["network"])
    assert completed.stdout.count("Checkpoint:") == 1


def _mean_on_rank(rank: int, world_size: int, store_file: str, results) -> None:
    from LymphNodeQuantLib.training.distributed import DistributedContext

    torch.distributed.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=world_size)
    try:
        results[rank] = DistributedContext(rank, world_size).mean([1.5, 4.0, 0.25][rank])  # each rank's own loss
    finally:
        torch.distributed.destroy_process_group()


def test_logged_loss_is_the_mean_over_ranks(tmp_path):
    """DistributedContext.mean on three real gloo ranks: every rank gets the average of all ranks' values."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed not available in this build")
    import torch.multiprocessing as multiprocessing

    manager = multiprocessing.get_context("spawn").Manager()
    results = manager.dict()
    multiprocessing.spawn(_mean_on_rank, args=(3, str(tmp_path / "store"), results), nprocs=3, join=True)
    assert dict(results) == {0: pytest.approx(1.9166666667), 1: pytest.approx(1.9166666667), 2: pytest.approx(1.9166666667)}
