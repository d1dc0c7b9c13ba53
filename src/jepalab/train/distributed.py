"""Data-parallel training with torch.distributed (launched by torchrun; gloo on CPU, NCCL on GPU).

Every rank computes the same global batch's indices and masks from (seed, step) and takes its
contiguous slice, so the global batch — and, with the loss normalised by *global* token counts,
the gradient — equals a single-process run with the same batch size. Rank 0 alone writes
checkpoints and logs; a checkpoint carries no world size, so a run resumes at any world size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from jepalab.errors import JepalabError
from jepalab.masks.base import MaskSet


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous slice of a global batch of n (n must divide evenly)."""
        if n % self.world:
            raise JepalabError(
                f"batch_size ({n}) must be divisible by the world size ({self.world})"
            )
        per = n // self.world
        return slice(self.rank * per, (self.rank + 1) * per)


def init(device_type: str) -> Dist:
    """Join the process group if launched by torchrun (WORLD_SIZE > 1), else a 1-rank context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local)
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local)


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def global_sum(x: Tensor) -> Tensor:
    """Sum of a (detached) statistic over ranks, e.g. the number of valid target tokens."""
    if not active():
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate [b, ...] from every rank along dim 0, with gradients flowing back to each
    rank's own part (for losses that need global batch statistics: InfoNCE negatives, VICReg
    variance/covariance). A plain all_gather would silently cut the gradient."""
    if not active():
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def mean_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Average logged scalars over ranks (rank-local values otherwise)."""
    if not active() or not metrics:
        return metrics
    keys = sorted(metrics)
    t = torch.tensor([metrics[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / world_size() for k, v in zip(keys, t)}


def average_grads(params: list[Tensor]) -> None:
    """Average the gradients of `params` over ranks in place (for steps DDP does not see)."""
    if not active():
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world_size()


def barrier() -> None:
    if active():
        dist.barrier()


def shard_masks(ms: MaskSet, part: slice) -> MaskSet:
    """Rows `part` of a mask set drawn for the global batch."""
    return MaskSet(
        ms.context_idx[part], ms.context_keep[part], ms.target_idx[part], ms.target_keep[part]
    )


def gather_nograd(x: Tensor) -> Tensor:
    """Concatenate tensors of possibly different lengths from every rank (no gradient; for
    monitors computed every N steps)."""
    if not active():
        return x
    parts: list[Tensor | None] = [None] * world_size()
    dist.all_gather_object(parts, x.detach().cpu())
    return torch.cat([p for p in parts if p is not None], dim=0).to(x.device)
