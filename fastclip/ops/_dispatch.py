"""The one place where an op's backend is chosen, at call time.

Precedence: the explicit `backend=` argument, then the FASTCLIP_BACKEND environment variable (when the op has a
backend of that name), then "auto": the first usable backend in the op's preference list for the tensor's device.
An explicitly requested backend that cannot run raises with the reason; auto never picks one that cannot run. When
auto passes over a backend whose reason asks for it (`warn_on_fallback`, e.g. an extension built without code for
this GPU's architecture), it says so in a one-line BackendFallbackWarning, once per op, backend and device.
Every dispatcher registers itself so that `python -m fastclip.info` can list each op and its backend.
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

BACKEND_ENV = "FASTCLIP_BACKEND"

REGISTRY: dict[str, "OpDispatcher"] = {}


def always_available(device: torch.device) -> str | None:
    return None


@dataclass(frozen=True)
class Backend:
    name: str
    run: Callable
    # Returns None when this backend can run on the device, else a sentence saying what is missing and how to fix it.
    unavailable: Callable[[torch.device], str | None] = always_available


class BackendUnavailableError(RuntimeError):
    pass


class BackendFallbackWarning(UserWarning):
    """Auto dispatch used a slower backend because a faster one is installed but cannot serve this device."""


def _device_key(device: torch.device) -> str:
    """"cuda" and "cuda:0" are one device when 0 is the current one; warn about it once, not once per spelling."""
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


class OpDispatcher:
    def __init__(self, op: str, backends: list[Backend], auto_order: dict[str, tuple[str, ...]]):
        self.op = op
        self.backends = {b.name: b for b in backends}
        self.auto_order = auto_order
        for device_type, order in auto_order.items():
            unknown = [name for name in order if name not in self.backends]
            if unknown:
                raise ValueError(f"{op}: auto order for {device_type} names unknown backends {unknown}")
        self._warned: set[tuple[str, str]] = set()
        self._warned_lock = threading.Lock()
        REGISTRY[op] = self

    def _warn_fallback(self, skipped: str, reason: str, chosen: str, device: torch.device) -> None:
        key = (skipped, _device_key(device))
        with self._warned_lock:
            if key in self._warned:
                return
            self._warned.add(key)
        warnings.warn(f"{self.op}: using backend {chosen!r}, not {skipped!r}: {reason}", BackendFallbackWarning,
                      stacklevel=4)

    def choose(self, device: torch.device | str, backend: str = "auto") -> Backend:
        device = torch.device(device)
        requested = backend
        if requested == "auto":
            from_env = os.environ.get(BACKEND_ENV, "auto")
            if from_env in self.backends:
                requested = from_env
        if requested != "auto":
            if requested not in self.backends:
                raise ValueError(
                    f"{self.op}: backend={requested!r} is not one of {['auto', *self.backends]}"
                )
            chosen = self.backends[requested]
            reason = chosen.unavailable(device)
            if reason is not None:
                raise BackendUnavailableError(f"{self.op}: backend {requested!r} cannot run on {device}: {reason}")
            return chosen
        noticed = []
        for name in self.auto_order.get(device.type, ("reference",)):
            candidate = self.backends[name]
            reason = candidate.unavailable(device)
            if reason is None:
                for skipped, why in noticed:
                    self._warn_fallback(skipped, why, name, device)
                return candidate
            if getattr(reason, "warn_on_fallback", False):
                noticed.append((name, reason))
        raise BackendUnavailableError(f"{self.op}: no backend can run on {device}")

    def describe(self, device: torch.device | str) -> str:
        """The backend auto picks on `device`, and why each preferred one before it was passed over."""
        device = torch.device(device)
        skipped = []
        for name in self.auto_order.get(device.type, ("reference",)):
            reason = self.backends[name].unavailable(device)
            if reason is None:
                return name + (f" (skipped: {'; '.join(skipped)})" if skipped else "")
            skipped.append(f"{name}: {reason}")
        return "none: " + "; ".join(skipped)


def extension_backend(op: str, run: Callable) -> Backend:
    """A backend that runs fastclip::<op> from the compiled extension on whatever device it has a kernel for (for a
    GPU: a kernel with machine code or PTX for its architecture)."""
    from fastclip import _ext

    return Backend("extension", run, lambda device: _ext.kernel_unavailable(op, device))


def triton_unavailable(device: torch.device) -> str | None:
    """Whether Triton kernels can run on `device`: CUDA tensors with triton installed, or CPU under TRITON_INTERPRET=1."""
    from fastclip._triton import triton_unavailable_reason

    return triton_unavailable_reason(torch.device(device))
