"""torchrun / DistributedDataParallel: who am I, and the few collectives training needs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes files, logs to MLflow and prints progress."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def first_process() -> bool:
    """True in a plain run and in torchrun's rank 0, known before the process group exists."""
    return os.environ.get("RANK", "0") in ("", "0")


def init_distributed(use_cuda: bool) -> DistContext:
    """Join the process group torchrun set up (NCCL on GPU, gloo on CPU); a no-op otherwise."""
    if not launched_by_torchrun():
        return DistContext()
    import torch.distributed as dist

    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        backend=backend,
    )


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.enabled:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def weights_in_sync(model: torch.nn.Module, ctx: DistContext) -> bool:
    """True when every rank holds the same parameters (DDP keeps them equal; this proves it)."""
    if not ctx.enabled:
        return True
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        flat = torch.cat([p.detach().double().flatten() for p in model.parameters()])
        checksum = torch.stack([flat.sum(), (flat * flat).sum(), flat.abs().max()])
        low, high = checksum.clone(), checksum.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
    return bool(torch.equal(low, high))


def same_on_all_ranks(value: int, ctx: DistContext) -> bool:
    """True when every rank passes the same integer (e.g. the epoch a checkpoint resumes at)."""
    if not ctx.enabled:
        return True
    import torch
    import torch.distributed as dist

    # NCCL only reduces GPU tensors; gloo takes CPU ones.
    device = torch.device("cuda", ctx.local_rank) if ctx.backend == "nccl" else torch.device("cpu")
    low = torch.tensor([value], dtype=torch.int64, device=device)
    high = low.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    return int(low.item()) == int(high.item())
