"""Loads the compiled extension fastclip._C once, on first use, and remembers why it failed.

Never raises at import. Ops ask `kernel_unavailable(op, device_type)` whether fastclip::<op> has a kernel for a
device, and get a sentence saying what is missing and how to get it when it does not.
"""

from __future__ import annotations

import importlib
import threading

import torch

BUILD_HINT = "build it with `pip install --no-build-isolation -e .` from the fastclip checkout (needs g++; nvcc for CUDA)"

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


def kernel_unavailable(op: str, device_type: str) -> str | None:
    """None when fastclip::<op> can run on `device_type`, else the reason and the fix."""
    if not load():
        return f"fastclip's compiled extension did not load ({_error}); {BUILD_HINT}"
    if has_kernel(op, device_type):
        return None
    if device_type == "cuda":
        return (
            f"the extension was built without CUDA kernels, so fastclip::{op} has no CUDA kernel; rebuild where a "
            f"CUDA toolkit matching torch.version.cuda={torch.version.cuda} is installed (set CUDA_HOME) and "
            "FASTCLIP_SKIP_CUDA is unset"
        )
    return f"fastclip::{op} has no {device_type} kernel in this build; {BUILD_HINT}"


def op(name: str):
    """The torch.ops.fastclip.<name> overload packet (call only after kernel_unavailable() said None)."""
    load()
    return getattr(torch.ops.fastclip, name)
