"""Launch configurations shared by the elementwise Triton launchers, and the device capability they depend on.

Each launcher picks its configuration from the device's compute capability, so that `python -m
fastclip.kernels.audit` can compile exactly what production launches for sm_80 / sm_90 / sm_100 without a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Capability = tuple[int, int]


@dataclass(frozen=True)
class LaunchConfig:
    """BLOCK elements per program, warps per program, software-pipelining stages of the kernel's loops."""

    block: int
    num_warps: int
    num_stages: int

    def label(self) -> str:
        return f"BLOCK={self.block} w{self.num_warps} s{self.num_stages}"


def device_capability(device: torch.device) -> Capability | None:
    """(major, minor) of a CUDA device; None elsewhere (the interpreter ignores warps and stages)."""
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_capability(device)
