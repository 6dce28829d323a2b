"""Process-group set-up from torchrun's environment, and the few collective helpers training needs.

One process per device: torchrun sets RANK, LOCAL_RANK and WORLD_SIZE. On CUDA each rank takes cuda:LOCAL_RANK and
the nccl backend; on CPU the gloo backend, and DDP must get device_ids=None (open_clip passes [device], which DDP
refuses for a CPU module, so open_clip_train cannot run multi-process on CPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

from fastclip.distributed import RankPredicates, barrier, env_int, join_process_group, shutdown


@dataclass(frozen=True)
class World(RankPredicates):
    rank: int
    local_rank: int
    world_size: int
    device: torch.device


def choose_device(requested: str | None, local_rank: int, distributed: bool) -> torch.device:
    if requested is None:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"--device {requested}: torch sees no CUDA device (torch.cuda.is_available() is False; torch "
                f"{torch.__version__}, built for CUDA {torch.version.cuda}); use --device cpu"
            )
        if distributed:
            device = torch.device("cuda", local_rank)  # one process per GPU, as torchrun launches them
        elif device.index is None:
            device = torch.device("cuda", 0)
        torch.cuda.set_device(device)
    return device


def init_distributed(requested_device: str | None = None, backend: str | None = None) -> World:
    """The World of this process; joins the process group when torchrun started more than one process."""
    world_size = env_int("WORLD_SIZE", 1)
    rank, local_rank = env_int("RANK", 0), env_int("LOCAL_RANK", 0)
    device = choose_device(requested_device, local_rank, world_size > 1)
    if world_size > 1:
        join_process_group(device.type, rank=rank, world_size=world_size, backend=backend)
    return World(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def wrap_model(model: torch.nn.Module, world: World) -> torch.nn.Module:
    """DDP for more than one process; the bare model otherwise."""
    if not world.distributed:
        return model
    device_ids = [world.device.index] if world.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


class MainRankError(RuntimeError):
    """An error raised on rank 0 inside `on_main_then_broadcast`, re-raised on every rank."""


def on_main_then_broadcast(world: World, compute: Callable[[], Any]) -> Any:
    """Run `compute` on rank 0 and give its result to every rank.

    An exception on rank 0 is re-raised on every rank (a bare broadcast would leave the other ranks waiting).
    """
    if not world.distributed:
        return compute()
    message: list[Any] = [None]
    if world.is_main:
        try:
            message = [("ok", compute())]
        except Exception as exc:  # forwarded to every rank, then raised again below
            message = [("error", exc)]
    dist.broadcast_object_list(message, src=0)
    status, value = message[0]
    if status == "error":
        if world.is_main:
            raise value
        raise MainRankError(f"rank 0 failed: {type(value).__name__}: {value}")
    return value


def all_reduce_sum(values: list[float], world: World) -> list[float]:
    """Sums floats over ranks (one collective for all of them)."""
    if not world.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


__all__ = [
    "MainRankError",
    "World",
    "all_reduce_sum",
    "barrier",
    "choose_device",
    "init_distributed",
    "on_main_then_broadcast",
    "shutdown",
    "unwrap_model",
    "wrap_model",
]
