"""PyTorch DDP set-up for runs launched by ``torchrun`` (no home-made distribution).

``torchrun --nproc_per_node=N -m LymphNodeQuantLib.cli train ...`` sets RANK, WORLD_SIZE and
LOCAL_RANK; :func:`setup` then joins the process group (NCCL on GPUs, gloo on CPU). Without
those variables everything runs in one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    initialised_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def mean(self, value: float) -> float:
        """Average of ``value`` over all ranks."""
        if not self.enabled:
            return float(value)
        tensor = torch.tensor([float(value)], dtype=torch.float64)
        torch.distributed.all_reduce(tensor)
        return float(tensor.item()) / self.world_size

    def close(self) -> None:
        if self.initialised_here and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def setup(device: str = "auto", backend: str | None = None) -> DistributedContext:
    """Context for this process: rank/world size from torchrun's environment, device, process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}" if world_size > 1 else ("cuda" if device == "cuda" else device)
        torch.cuda.set_device(torch.device(device))
    context = DistributedContext(rank, world_size, local_rank, device)
    if world_size > 1 and not torch.distributed.is_initialized():
        backend = backend or ("nccl" if device.startswith("cuda") else "gloo")
        torch.distributed.init_process_group(backend=backend)
        context.initialised_here = True
    return context
