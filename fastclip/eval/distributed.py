"""fastclip-eval under torchrun: one process per device, checkpoints split across ranks, results merged on rank 0.

    torchrun --nproc-per-node 8 -m fastclip.eval.cli RUN --suite paper

Each rank evaluates every world_size-th checkpoint that still has work, keeps its rows in OUT/parts/rank<r>/ (so a
crash loses nothing) and writes its trials and per-item files directly (their names hold the epoch, so ranks never
write one file). After every round rank 0 merges the parts into OUT/results.* and removes them; leftovers of an
interrupted run are merged first. The process group uses NCCL on CUDA and gloo on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from fastclip.distributed import RankPredicates, barrier, env_int, join_process_group, shutdown


@dataclass(frozen=True)
class EvalWorld(RankPredicates):
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def init_eval_world(device_type: str) -> EvalWorld:
    """Join torchrun's process group when WORLD_SIZE > 1 (env:// rendezvous), else a single-process world."""
    if env_int("WORLD_SIZE", 1) <= 1:
        return EvalWorld()
    join_process_group(device_type)
    return EvalWorld(dist.get_rank(), dist.get_world_size(), env_int("LOCAL_RANK", 0))


def rank_device(world: EvalWorld, requested: torch.device | None) -> torch.device:
    """--device when given (cuda means this rank's GPU), else cuda:LOCAL_RANK when CUDA is available, else cpu."""
    if requested is not None and requested.type != "cuda":
        return requested
    if requested is None and not torch.cuda.is_available():
        return torch.device("cpu")
    if world.distributed:
        return torch.device("cuda", world.local_rank)
    return requested if requested is not None else torch.device("cuda")


def broadcast(world: EvalWorld, value):
    """Rank 0's value on every rank (a decision every rank must share, e.g. whether --follow stops)."""
    if not world.distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather(world: EvalWorld, value) -> list:
    """Every rank's value, in rank order, on every rank."""
    if not world.distributed:
        return [value]
    values = [None] * world.world_size
    dist.all_gather_object(values, value)
    return values


__all__ = ["EvalWorld", "barrier", "broadcast", "gather", "init_eval_world", "rank_device", "shutdown"]
