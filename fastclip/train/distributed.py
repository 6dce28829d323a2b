"""Process-group set-up from the launcher's environment, and the few collective helpers training needs.

One process per device. torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; srun sets SLURM_PROCID, SLURM_LOCALID and
SLURM_NTASKS, which are read as open_clip_train.distributed reads them (with the MPI/PMI names as fallbacks) and
copied to RANK/LOCAL_RANK/WORLD_SIZE. On CUDA each rank takes cuda:LOCAL_RANK (unless --no-set-device-rank) and
the nccl backend; on CPU the gloo backend, and DDP must get device_ids=None (open_clip passes [device], which DDP
refuses for a CPU module, so open_clip_train cannot run multi-process on CPU).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

from fastclip.distributed import RankPredicates, barrier, env_int, shutdown


@dataclass(frozen=True)
class World(RankPredicates):
    rank: int
    local_rank: int
    world_size: int
    device: torch.device


# open_clip_train.distributed.world_info_from_env: the first variable present wins.
LOCAL_RANK_VARIABLES = ("LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK")
RANK_VARIABLES = ("RANK", "PMI_RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK")
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


def _first_env_int(names: tuple[str, ...], default: int) -> int:
    for name in names:
        if name in os.environ:
            return env_int(name, default)
    return default


def world_info_from_env() -> tuple[int, int, int]:
    """(local_rank, rank, world_size) from torchrun's, SLURM's or MPI's variables, as open_clip reads them."""
    return (_first_env_int(LOCAL_RANK_VARIABLES, 0), _first_env_int(RANK_VARIABLES, 0),
            _first_env_int(WORLD_SIZE_VARIABLES, 1))


def launched_distributed() -> bool:
    """open_clip's is_using_distributed: WORLD_SIZE > 1, else SLURM_NTASKS > 1."""
    if "WORLD_SIZE" in os.environ:
        return env_int("WORLD_SIZE", 1) > 1
    return env_int("SLURM_NTASKS", 1) > 1


def choose_device(requested: str | None, local_rank: int, distributed: bool, *, set_device_rank: bool = True
                  ) -> torch.device:
    if requested is None:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"--device {requested}: torch sees no CUDA device (torch.cuda.is_available() is False; torch "
                f"{torch.__version__}, built for CUDA {torch.version.cuda}); use --device cpu"
            )
        if distributed and set_device_rank:
            device = torch.device("cuda", local_rank)  # one process per GPU, as torchrun launches them
        elif device.index is None:
            device = torch.device("cuda", 0)
        torch.cuda.set_device(device)
    return device


def init_distributed(requested_device: str | None = None, backend: str | None = None, *, dist_url: str | None = None,
                     set_device_rank: bool = True) -> World:
    """The World of this process; joins the process group when the launcher started more than one process."""
    distributed = launched_distributed()
    local_rank, rank, world_size = world_info_from_env() if distributed else (0, 0, 1)
    device = choose_device(requested_device, local_rank, distributed, set_device_rank=set_device_rank)
    if distributed:
        if "SLURM_PROCID" in os.environ:  # srun: torch.distributed reads these names
            os.environ.update(LOCAL_RANK=str(local_rank), RANK=str(rank), WORLD_SIZE=str(world_size))
        init_method = dist_url or "env://"
        if init_method == "env://":
            missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
            if missing:
                raise ValueError(f"{world_size} processes launched, but {' and '.join(missing)} is not set: export "
                                 "MASTER_ADDR (the first node) and MASTER_PORT, or pass --dist-url tcp://HOST:PORT")
        if not dist.is_initialized():
            dist.init_process_group(backend=backend or ("nccl" if device.type == "cuda" else "gloo"),
                                    init_method=init_method, rank=rank, world_size=world_size)
    return World(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def wrap_model(model: torch.nn.Module, world: World, *, static_graph: bool = False, sync_batchnorm: bool = False
               ) -> torch.nn.Module:
    """DDP for more than one process (optionally with SyncBatchNorm and a static graph); the bare model otherwise."""
    if not world.distributed:
        return model
    if sync_batchnorm:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [world.device.index] if world.device.type == "cuda" else None
    extra = {"static_graph": True} if static_graph else {}
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids, **extra)


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
    "world_info_from_env",
    "wrap_model",
]
