"""Step of run.py after the build: fastclip imports from the checkout with its Triton kernels (fastclip.kernels)
and its compiled extension, the extension carries code for the GPU at hand, and `python -m fastclip.info` says so."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import torch

from _common import Figures


def main() -> int:
    figures = Figures()
    problems = []

    import fastclip.kernels
    from fastclip import _ext, info
    from fastclip.cuda_archs import format_cuda_archs

    print(f"fastclip from {fastclip.__file__}; kernels from {fastclip.kernels.__path__[0]}")
    modules = [m.name for m in pkgutil.iter_modules(fastclip.kernels.__path__)]
    for name in modules:
        try:
            importlib.import_module(f"fastclip.kernels.{name}")
        except Exception as exc:
            problems.append(f"fastclip.kernels.{name} does not import: {type(exc).__name__}: {exc}")
    figures.add("Triton kernel modules imported (fastclip.kernels)", len(modules) - len(problems), "modules",
                check="ok" if not problems else "FAILED")

    error = _ext.load_error()
    if error is not None:
        problems.append(f"fastclip._C did not load: {error}")
    else:
        archs = _ext.built_cuda_archs()
        figures.fact("extension_cuda_archs", "unknown" if archs is None else format_cuda_archs(archs))
        figures.fact("extension_cuda_version", _ext.built_cuda_version())
        if torch.cuda.is_available():
            if not _ext.has_kernel("rank_average", "cuda"):
                problems.append(f"fastclip._C has no CUDA kernels: {_ext.cpu_only_reason() or 'reason not recorded'}")
            elif (missing := _ext.cuda_image_missing(torch.device("cuda", 0))) is not None:
                problems.append(missing)

    print(info.report())
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
