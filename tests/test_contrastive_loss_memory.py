"""Scratch memory of the fused losses' chunk loops, measured on the CPU: one set of chunk buffers, however many chunks.

torch has no max_memory_allocated for the CPU, so LiveStorage counts it itself: a dispatch mode that sees every
tensor an op allocates (an output whose storage is not one of the op's inputs) and a weakref finalizer on that
storage that sees it freed. The peak of the live bytes, and of the number of live chunk-sized buffers (G, S, C:
rows x B), is the scratch of a loss call, forward and backward. With D small, chunk buffers are the only tensors
of their size, so counting them is exact.

`python -m tests.test_contrastive_loss_memory` prints the peaks of the chunked backend (and, with
TRITON_INTERPRET=1, of the Triton backend).
"""

from __future__ import annotations

import os
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from fastclip.ops import clip_loss, siglip_loss
from fastclip.ops import contrastive_loss as module
from tests.test_contrastive_loss import features

OPS = {"clip": clip_loss, "siglip": siglip_loss}
BATCH, DIM, ROWS = 512, 8, 128  # four chunks of 128 rows; a chunk buffer (256 KiB in fp32) dwarfs a B x D tensor


class LiveStorage(TorchDispatchMode):
    """Peak bytes of the storages allocated inside the mode and alive at once, and the peak number of those of at
    least `large_bytes` (chunk buffers)."""

    def __init__(self, large_bytes: int):
        super().__init__()
        self.large_bytes = large_bytes
        self.live: dict[int, int] = {}
        self.peak_bytes = 0
        self.peak_large = 0

    def _freed(self, key: int) -> None:
        self.live.pop(key, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key in inputs or key in self.live or storage.nbytes() == 0:
                continue  # a view, an in-place or out= result, or already counted
            self.live[key] = storage.nbytes()
            weakref.finalize(storage, self._freed, key)
        self.peak_bytes = max(self.peak_bytes, sum(self.live.values()))
        self.peak_large = max(self.peak_large, sum(n >= self.large_bytes for n in self.live.values()))
        return out


def set_chunk_rows(monkeypatch, backend: str, rows: int, batch: int) -> int:
    """Make the backend process `rows` rows of a `batch`-column problem per chunk; returns a chunk's bytes."""
    if backend == "chunked":
        monkeypatch.setattr(module, "CHUNK_ELEMENTS", rows * batch)
    else:
        monkeypatch.setattr(module, "TRITON_GRAD_BYTES", 4 * rows * batch)
    return 4 * rows * batch


def scratch_peaks(loss_name, backend, *, batch=BATCH, dim=DIM, rows=ROWS, grad=True, monkeypatch):
    """(peak live chunk buffers, peak live bytes, bytes of one chunk) of one loss forward and backward."""
    chunk_bytes = set_chunk_rows(monkeypatch, backend, rows, batch)
    x, y = features(batch, dim)
    x.requires_grad_(grad)
    y.requires_grad_(grad)
    scale = torch.tensor(14.29, requires_grad=grad)
    bias = torch.tensor(-10.0, requires_grad=grad)
    # Half a chunk: the last, shorter chunk of a loop that allocated per chunk still counts as one.
    with LiveStorage(chunk_bytes // 2) as probe:
        loss = OPS[loss_name](x, y, scale, bias, backend=backend)
        if grad:
            loss.backward()
        del loss
    return probe.peak_large, probe.peak_bytes, chunk_bytes


def small_tensors_budget(batch: int, dim: int) -> int:
    """Bytes of everything but the chunk buffers: a few dozen B x D and B-long fp32/fp64 tensors."""
    return 32 * batch * dim * 8 + 64 * batch * 8


@pytest.mark.parametrize("loss_name, buffers", [("clip", 2), ("siglip", 3)])
def test_chunked_holds_one_set_of_chunk_buffers(loss_name, buffers, monkeypatch):
    # CLIP: S and G in the backward (C and its exponentials in the forward); SigLIP's forward: C, Z/G, softplus.
    assert module._ChunkedEngine.buffer_counts[{"clip": "clip_grad", "siglip": "siglip_grad"}[loss_name]] == buffers
    live, peak, chunk_bytes = scratch_peaks(loss_name, "chunked", monkeypatch=monkeypatch)
    assert live == buffers, f"{live} chunk buffers live at once; the loop should reuse {buffers}"
    assert peak <= buffers * chunk_bytes + small_tensors_budget(BATCH, DIM), (peak, chunk_bytes)


def test_chunked_scratch_does_not_grow_with_the_number_of_chunks(monkeypatch):
    one = scratch_peaks("clip", "chunked", batch=ROWS, monkeypatch=monkeypatch)
    many = scratch_peaks("clip", "chunked", batch=4 * ROWS, monkeypatch=monkeypatch)
    # Four times the columns makes each chunk 4x larger: the peak is 4x one chunk's, not more.
    assert many[0] == one[0] == 2
    assert many[1] <= 4 * one[1]


def test_chunked_siglip_without_gradients_allocates_no_g(monkeypatch):
    """Under no_grad (or with no input needing a gradient) SigLIP's forward computes the loss alone."""
    calls = []
    block = module._ChunkedEngine.siglip_block
    monkeypatch.setattr(
        module._ChunkedEngine, "siglip_block", lambda self, *a: calls.append(a[5]) or block(self, *a)
    )
    live, _, _ = scratch_peaks("siglip", "chunked", grad=False, monkeypatch=monkeypatch)
    assert calls and all(coef is None for coef in calls)
    assert live == 2  # Z and its softplus terms; no C kept for ∂L/∂s, no G
    calls.clear()
    set_chunk_rows(monkeypatch, "chunked", ROWS, BATCH)
    x, y = features(BATCH, DIM)
    x.requires_grad_()
    with torch.no_grad(), LiveStorage(4 * ROWS * BATCH // 2) as probe:
        loss = siglip_loss(x, y, 10.0, -10.0, backend="chunked")
    assert not loss.requires_grad
    assert calls and all(coef is None for coef in calls)
    assert probe.peak_large == 2


interpret = pytest.mark.triton_interpret


@interpret
@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
def test_triton_holds_one_g_buffer(loss_name, monkeypatch):
    live, peak, chunk_bytes = scratch_peaks(loss_name, "triton", monkeypatch=monkeypatch)
    assert live == 1, f"{live} G buffers live at once"
    assert peak <= chunk_bytes + small_tensors_budget(BATCH, DIM) + 12 * BATCH * BATCH // 32, (peak, chunk_bytes)


@interpret
def test_triton_siglip_without_gradients_writes_no_g(monkeypatch):
    from fastclip.kernels import contrastive_loss as kernels

    outs = []
    launcher = kernels.siglip_loss_fwd
    monkeypatch.setattr(
        kernels, "siglip_loss_fwd", lambda *a, **k: outs.append((a[5], k.get("out"))) or launcher(*a, **k)
    )
    live, _, _ = scratch_peaks("siglip", "triton", grad=False, monkeypatch=monkeypatch)
    assert outs and all(coef is None and out is None for coef, out in outs)
    assert live == 0


def _print_peaks() -> None:
    class Patch:
        def setattr(self, owner, name, value):
            setattr(owner, name, value)

    backends = ["chunked"] + (["triton"] if os.environ.get("TRITON_INTERPRET") == "1" else [])
    print(f"B = {BATCH}, D = {DIM}, {ROWS} rows per chunk ({BATCH // ROWS} chunks), fp32, forward + backward")
    print("| loss | backend | gradients | live chunk buffers (peak) | peak scratch bytes | one chunk (bytes) |")
    print("|---|---|---|---|---|---|")
    for loss_name in ("clip", "siglip"):
        for backend in backends:
            for grad in (True, False):
                live, peak, chunk = scratch_peaks(loss_name, backend, grad=grad, monkeypatch=Patch())
                print(f"| {loss_name} | {backend} | {grad} | {live} | {peak:,} | {chunk:,} |")


if __name__ == "__main__":
    _print_peaks()
