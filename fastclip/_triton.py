"""Whether Triton kernels can run here. Triton is imported only when asked, never at fastclip import."""

from __future__ import annotations

import functools
import os

import torch

INSTALL_HINT = "pip install 'triton>=3.6' (Linux x86_64)"


@functools.lru_cache(maxsize=1)
def triton_import_error() -> str | None:
    try:
        import triton  # noqa: F401
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def triton_version() -> str | None:
    if triton_import_error() is not None:
        return None
    import triton

    return triton.__version__


def interpreter_enabled() -> bool:
    """TRITON_INTERPRET=1 runs Triton kernels on the CPU with numpy; Triton reads it when it is first imported."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_unavailable_reason(device: torch.device) -> str | None:
    error = triton_import_error()
    if error is not None:
        return f"triton is not importable ({error}); {INSTALL_HINT}"
    if device.type == "cuda":
        return None if torch.cuda.is_available() else "no CUDA device is visible"
    if device.type == "cpu" and interpreter_enabled():
        return None
    return (
        f"Triton kernels run on CUDA tensors (this one is on {device}); to run them on the CPU for testing, "
        "set TRITON_INTERPRET=1 before Python starts"
    )
