"""The CUDA architectures fastclip's extension is built for, and the rule that says which of them runs on a GPU.

Standard library only: setup.py executes this file before fastclip is importable, and the dispatcher, `python -m
fastclip.info` and the kernel audit read the same list.

A list is written as torch's TORCH_CUDA_ARCH_LIST is: compute capabilities separated by `;`, `,` or spaces, e.g.
"8.0;8.6;9.0+PTX". Each one embeds machine code (SASS) for that capability; "+PTX" also embeds its PTX, which the
driver compiles at load time for any newer GPU, so the build still runs on GPUs released after it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A100 (8.0), RTX 30xx/A10/A40 (8.6), L4/L40/RTX 40xx (8.9), H100/H200 (9.0), B200 (10.0), plus PTX of the
# highest for anything newer. setup.py drops those the nvcc at hand cannot compile and says so.
DEFAULT_CUDA_ARCHS = "8.0;8.6;8.9;9.0;10.0+PTX"

_ARCH = re.compile(r"^(\d+)\.(\d)(\+PTX)?$", re.IGNORECASE)


@dataclass(frozen=True)
class CudaArch:
    major: int
    minor: int
    ptx: bool = False

    @property
    def capability(self) -> tuple[int, int]:
        return (self.major, self.minor)

    @property
    def number(self) -> str:
        """The number nvcc's sm_/compute_ names use: 9.0 -> "90", 10.0 -> "100"."""
        return f"{self.major}{self.minor}"

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}" + ("+PTX" if self.ptx else "")


def parse_cuda_archs(text: str, source: str = "FASTCLIP_CUDA_ARCHS") -> list[CudaArch]:
    """"8.0;8.6 9.0+PTX" -> CudaArch list, ascending, one entry per capability (PTX kept if any mention asked)."""
    by_capability: dict[tuple[int, int], bool] = {}
    for token in re.split(r"[;,\s]+", text.strip()):
        if not token:
            continue
        match = _ARCH.match(token)
        if match is None:
            raise ValueError(
                f"{source}: {token!r} is not a compute capability like 9.0 or 9.0+PTX (the list was {text!r})"
            )
        capability = (int(match.group(1)), int(match.group(2)))
        by_capability[capability] = by_capability.get(capability, False) or match.group(3) is not None
    if not by_capability:
        raise ValueError(f"{source}: no compute capability given (e.g. {DEFAULT_CUDA_ARCHS!r})")
    return [CudaArch(major, minor, ptx) for (major, minor), ptx in sorted(by_capability.items())]


def format_cuda_archs(archs: list[CudaArch] | tuple[CudaArch, ...]) -> str:
    return ";".join(map(str, archs))


def nvcc_gencode_flags(archs: list[CudaArch]) -> list[str]:
    """nvcc flags embedding SASS for every arch and PTX for those marked +PTX."""
    flags = []
    for arch in archs:
        flags.append(f"-gencode=arch=compute_{arch.number},code=sm_{arch.number}")
        if arch.ptx:
            flags.append(f"-gencode=arch=compute_{arch.number},code=compute_{arch.number}")
    return flags


def parse_nvcc_gpu_archs(text: str) -> set[tuple[int, int]]:
    """The virtual architectures `nvcc --list-gpu-arch` prints (compute_80 ... compute_121) as capabilities."""
    return {(int(number[:-1]), int(number[-1])) for number in re.findall(r"\bcompute_(\d{2,3})\b", text)}


def restrict_to_supported(
    archs: list[CudaArch], supported: set[tuple[int, int]]
) -> tuple[list[CudaArch], list[str]]:
    """The archs nvcc can compile, and one sentence per change. When the PTX-carrying arch is dropped, the highest
    one kept carries the PTX instead, so newer GPUs can still run the build."""
    kept = [arch for arch in archs if arch.capability in supported]
    dropped = [arch for arch in archs if arch.capability not in supported]
    notes = []
    if dropped:
        notes.append(
            f"this nvcc cannot compile for {format_cuda_archs(dropped)} (it lists "
            f"{', '.join(f'{major}.{minor}' for major, minor in sorted(supported))}): dropped"
        )
    if kept and any(arch.ptx for arch in dropped) and not any(arch.ptx for arch in kept):
        highest = kept[-1]
        kept[-1] = CudaArch(highest.major, highest.minor, ptx=True)
        notes.append(f"PTX embedded for {highest.major}.{highest.minor} instead")
    return kept, notes


def image_for(archs: list[CudaArch] | tuple[CudaArch, ...], capability: tuple[int, int]) -> str | None:
    """Which code of a build made for `archs` a GPU of compute `capability` runs, or None when there is none.

    SASS runs on GPUs of the same major version and an equal or higher minor one (sm_80 code runs on 8.6); PTX runs
    on any GPU at or above its capability, compiled by the driver when the library loads.
    """
    sass = [arch for arch in archs if arch.major == capability[0] and arch.minor <= capability[1]]
    if sass:
        return f"sm_{max(sass, key=lambda arch: arch.minor).number} machine code"
    ptx = [arch for arch in archs if arch.ptx and arch.capability <= capability]
    if ptx:
        return f"compute_{max(ptx, key=lambda arch: arch.capability).number} PTX, compiled by the driver at load"
    return None
