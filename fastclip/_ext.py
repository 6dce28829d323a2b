"""Loads the compiled extension fastclip._C once, on first use, and remembers why it failed.

Never raises at import. Ops ask `kernel_unavailable(op, device)` whether fastclip::<op> has a kernel that runs on a
device, and get a sentence saying what is missing and how to get it when it does not. For a CUDA device that means
a kernel registered for CUDA *and* machine code or PTX in the build for that GPU's compute capability: the build
records the archs it compiled (setup.py -> build_info.h -> fastclip._C.cuda_archs).
"""

from __future__ import annotations

import functools
import importlib
import sys
import threading

import torch

from fastclip.cuda_archs import CudaArch, format_cuda_archs, image_for, parse_cuda_archs

BUILD_HINT = "build it with `pip install --no-build-isolation -e .` from the fastclip checkout (needs g++; nvcc for CUDA)"



class NoImageForDevice(str):
    """A kernel_unavailable() reason meaning "the kernel is built, but not for this GPU". Auto dispatch falls back
    past such a backend with a warning (warn_on_fallback): quietly taking a slower path would hide a build that
    misses the user's GPU."""

    warn_on_fallback = True


_lock = threading.Lock()
_loaded = False
_error: str | None = None


def load() -> bool:
    """Import fastclip._C (which registers the torch.ops.fastclip operators). Returns whether it loaded."""
    global _loaded, _error
    with _lock:
        if _loaded or _error is not None:
            return _loaded
        try:
            importlib.import_module("fastclip._C")
            _loaded = True
        except Exception as exc:  # an ImportError, or an OSError from a missing shared library
            _error = f"{type(exc).__name__}: {exc}"
        return _loaded


def load_error() -> str | None:
    """Why the extension did not load, or None when it loaded."""
    load()
    return _error


def has_kernel(op: str, device_type: str) -> bool:
    """Whether fastclip::<op> has a compiled kernel for `device_type` ("cpu" or "cuda")."""
    if not load():
        return False
    qualified = f"fastclip::{op}"
    if not torch._C._dispatch_has_kernel(qualified):
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(qualified, device_type.upper())


def _build_attribute(name: str) -> str | None:
    """An attribute fastclip._C carries about its build; None when not loaded or built before it was recorded."""
    if not load():
        return None
    return getattr(sys.modules["fastclip._C"], name, None)


def built_cuda_archs() -> tuple[CudaArch, ...] | None:
    """The CUDA archs the loaded extension was compiled for: () for a CPU-only build, None when unknown (not
    loaded, or built before fastclip recorded them)."""
    text = _build_attribute("cuda_archs")
    return None if text is None else _parse_built_archs(text)


@functools.lru_cache(maxsize=2)
def _parse_built_archs(text: str) -> tuple[CudaArch, ...]:
    """Parsed once: the dispatcher asks on every call of an op on a GPU."""
    return tuple(parse_cuda_archs(text, "fastclip._C.cuda_archs")) if text else ()


def built_cuda_version() -> str | None:
    """The CUDA toolkit version the extension's CUDA code was compiled with; None for a CPU-only or older build."""
    return _build_attribute("cuda_version") or None


def cpu_only_reason() -> str | None:
    """Why the build left the CUDA part out (as setup.py said it), when it did and recorded why."""
    return _build_attribute("cuda_note") or None


def rebuild_hint(capability: tuple[int, int]) -> str:
    archs = built_cuda_archs() or ()
    wanted = format_cuda_archs(sorted({*archs, CudaArch(*capability)}, key=lambda arch: arch.capability))
    return f'rebuild with FASTCLIP_CUDA_ARCHS="{wanted}" pip install --no-build-isolation -e . (or setup.py build_ext)'


def _resolve_cuda(device: torch.device) -> torch.device:
    return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())


def _gpu_name(device: torch.device) -> str:
    try:
        return torch.cuda.get_device_name(device)
    except Exception:  # names are a courtesy in a message; never let one hide the real answer
        return "GPU"


def cuda_image_missing(device: torch.device | str) -> str | None:
    """None when the extension's CUDA code has machine code or PTX that runs on `device` (or the build predates the
    record, so nothing is known); else a sentence naming the archs built and how to rebuild."""
    archs = built_cuda_archs()
    if not archs:
        return None
    device = _resolve_cuda(torch.device(device))
    capability = tuple(torch.cuda.get_device_capability(device))
    if image_for(archs, capability) is not None:
        return None
    return NoImageForDevice(
        f"fastclip._C's CUDA kernels were built for {format_cuda_archs(archs)}, none of which runs on {device} "
        f"({_gpu_name(device)}, compute capability {capability[0]}.{capability[1]}); {rebuild_hint(capability)}"
    )


def kernel_unavailable(op: str, device: torch.device | str) -> str | None:
    """None when fastclip::<op> can run on `device` ("cpu", "cuda", "cuda:1" or a torch.device), else the reason
    and the fix."""
    device = torch.device(device)
    if not load():
        return f"fastclip's compiled extension did not load ({_error}); {BUILD_HINT}"
    if not has_kernel(op, device.type):
        if device.type == "cuda":
            why = cpu_only_reason() or "the extension was built without CUDA kernels"
            return (
                f"fastclip::{op} has no CUDA kernel ({why}); rebuild where a CUDA toolkit matching "
                f"torch.version.cuda={torch.version.cuda} is installed (set CUDA_HOME) and FASTCLIP_SKIP_CUDA is unset"
            )
        return f"fastclip::{op} has no {device.type} kernel in this build; {BUILD_HINT}"
    if device.type == "cuda" and torch.cuda.is_available():
        return cuda_image_missing(device)
    return None


def op(name: str):
    """The torch.ops.fastclip.<name> overload packet (call only after kernel_unavailable() said None)."""
    load()
    return getattr(torch.ops.fastclip, name)
