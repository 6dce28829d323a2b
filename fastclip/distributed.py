"""What fastclip-train and fastclip-eval share about running under torchrun: the rank predicates of a world, the
process-group join (env:// rendezvous; NCCL on CUDA, gloo on the CPU) and the collectives both jobs call.

A neutral module, so that eval does not import train (DESIGN: nothing imports train). Each job keeps its own world
type, built on RankPredicates: fastclip.train.distributed.World (with the device), fastclip.eval.distributed.EvalWorld.
"""

from __future__ import annotations

import os

import torch.distributed as dist


class RankPredicates:
    """`distributed` and `is_main` for a world dataclass with `rank` and `world_size` fields."""

    rank: int
    world_size: int

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_int(name: str, default: int) -> int:
    """An integer torchrun sets in the environment (RANK, LOCAL_RANK, WORLD_SIZE), or the default without it."""
    return int(os.environ.get(name, default))


def join_process_group(device_type: str, *, rank: int = -1, world_size: int = -1, backend: str | None = None) -> None:
    """Join torchrun's process group unless this process already has: env:// rendezvous (rank and world size read
    from the environment unless given), NCCL for a CUDA device and gloo otherwise unless `backend` says."""
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend or ("nccl" if device_type == "cuda" else "gloo"),
            init_method="env://",
            rank=rank,
            world_size=world_size,
        )


def barrier(world: RankPredicates) -> None:
    if world.distributed:
        dist.barrier()


def shutdown(world: RankPredicates) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
