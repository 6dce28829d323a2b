"""First step of run.py: what this machine is (Python, torch, Triton, GPU, driver, CUDA toolkits), as facts for
device.json and the header of device.md. run.py reads `cuda_available` to decide whether the CUDA steps run."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

from _common import Figures


def _driver_version() -> str | None:
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip().splitlines()[0] if result.returncode == 0 and result.stdout.strip() else None


def main() -> None:
    figures = Figures()
    figures.fact("python", sys.version.split()[0])
    figures.fact("platform", f"{platform.machine()} {platform.system()}")
    figures.fact("cpu_cores", os.cpu_count())

    import torch

    figures.fact("torch", torch.__version__)
    figures.fact("torch_cuda", torch.version.cuda)
    try:
        import triton

        figures.fact("triton", triton.__version__)
    except Exception as exc:
        figures.fact("triton", f"not importable: {type(exc).__name__}: {exc}")
    available = torch.cuda.is_available()
    figures.fact("cuda_available", available)
    if available:
        figures.fact("gpu", torch.cuda.get_device_name(0))
        figures.fact("gpu_count", torch.cuda.device_count())
        figures.fact("capability", "{}.{}".format(*torch.cuda.get_device_capability(0)))
        figures.fact("gpu_memory_gib", round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
        figures.fact("driver", _driver_version())

    from fastclip import cuda_toolkit

    figures.fact("cuda_toolkits", [
        f"{toolkit.home} ({toolkit.version_text}, found by {toolkit.found_by})"
        + ("" if (why := cuda_toolkit.why_not_usable(toolkit, torch.version.cuda)) is None else f": not usable, {why}")
        for toolkit in cuda_toolkit.find_toolkits()
    ])
    for key, value in figures.facts.items():
        print(f"{key:15s} {value}")


if __name__ == "__main__":
    main()
