"""The Triton backend of clip_loss / siglip_loss: under TRITON_INTERPRET=1 (float32, small sizes) and on CUDA.

Oracle and tolerances as tests/test_contrastive_loss.py. The interpreter runs the very kernels that run on a GPU,
on numpy, so these tests pin the tiling, the masks, the online max and the merges; GPU-only tests (needs_cuda)
cover bf16/fp16 inputs and memory.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch
import torch.multiprocessing as mp

from fastclip.nn import FusedClipLoss, FusedSigLipLoss
from fastclip.ops import clip_loss, clip_loss_ref, siglip_loss, siglip_loss_ref
from fastclip.ops import contrastive_loss as module
from tests.test_contrastive_loss import BIAS, assert_matches, features, loss_and_grads, oracle, ours
from tests.test_contrastive_loss_distributed import _free_port

interpret = pytest.mark.triton_interpret


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 32 rows in the forward and 20 in the backward, so kernels run with a diagonal offset."""

    def set_for(batch):
        monkeypatch.setattr(module, "TRITON_STATS_BYTES", 12 * batch)
        monkeypatch.setattr(module, "TRITON_GRAD_BYTES", 4 * batch * 20)

    return set_for


@interpret
@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
@pytest.mark.parametrize("batch, dim", [(1, 16), (2, 16), (3, 96), (127, 16), (129, 96)])
def test_triton_matches_open_clip(loss_name, batch, dim):
    x, y = features(batch, dim, seed=batch)
    assert_matches(ours(loss_name, "triton", x, y, 14.29), oracle(loss_name, x, y, 14.29), loss_name)


@interpret
@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
@pytest.mark.parametrize(
    "kind, batch, dim, scale",
    [("tiny_loss", 129, 96, 100.0), ("duplicates", 127, 16, 100.0), ("unnormalised", 70, 16, 1.0)],
)
def test_triton_hard_cases_in_chunks(loss_name, kind, batch, dim, scale, small_chunks):
    small_chunks(batch)
    x, y = features(batch, dim, kind)
    assert_matches(ours(loss_name, "triton", x, y, scale), oracle(loss_name, x, y, scale), loss_name)


@interpret
def test_triton_batch_of_one_gives_exact_zeros():
    loss, dx, dy, ds, db = ours("clip", "triton", *features(1, 16), 100.0)
    assert float(loss) == 0.0
    for grad in (dx, dy, ds, db):
        assert torch.count_nonzero(grad) == 0


@interpret
@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
def test_triton_reads_bfloat16_features_in_float32_on_cpu(loss_name):
    x, y = features(40, 16, dtype=torch.bfloat16)
    assert_matches(ours(loss_name, "triton", x, y, 14.29), oracle(loss_name, x, y, 14.29), loss_name)


@interpret
@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
def test_triton_is_bitwise_deterministic(loss_name):
    x, y = features(70, 16)
    first, second = ours(loss_name, "triton", x, y, 14.29), ours(loss_name, "triton", x, y, 14.29)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@interpret
def test_forward_kernel_statistics_with_column_splits():
    from fastclip.kernels.contrastive_loss import TileConfig, clip_loss_fwd

    x, y = features(45, 20, seed=3)[0], features(47, 20, seed=4)[1]
    scale = torch.tensor([7.0])
    config = TileConfig(block_m=16, block_n=16, block_k=16, num_warps=4, num_stages=1, split_n=3)
    rows, cols = clip_loss_fwd(x, y, scale, 2, config)  # row i's diagonal is column i + 2
    assert rows.shape == (3, 3, 45) and cols.shape == (3, 3, 47)
    logits = 7.0 * x.double() @ y.double().T
    logits[torch.arange(45), torch.arange(45) + 2] = float("-inf")
    for merged, dim in ((module._merge(rows.double()), 1), (module._merge(cols.double()), 0)):
        torch.testing.assert_close(module._log_sum_exp(merged), torch.logsumexp(logits, dim), rtol=1e-6, atol=1e-6)
        mean_c = (torch.softmax(logits, dim) * (x.double() @ y.double().T)).sum(dim)
        torch.testing.assert_close(module._softmax_mean(merged), mean_c, rtol=1e-5, atol=1e-6)


@interpret
def test_triton_rejects_float64():
    x, y = features(4, 16, dtype=torch.float64)
    with pytest.raises(TypeError, match="chunked"):
        siglip_loss(x, y, 10.0, backend="triton")
    torch.testing.assert_close(clip_loss(x, y, 10.0), clip_loss(x, y, 10.0, backend="reference"))  # auto falls back


def _distributed_worker(rank: int, world: int, port: int) -> None:
    import datetime

    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        x_all, y_all = features(6 * world, 16, seed=11)
        x, y = x_all[rank * 6 : (rank + 1) * 6], y_all[rank * 6 : (rank + 1) * 6]
        for local_loss, gather_with_grad in ((True, True), (False, False)):
            modules = [
                FusedClipLoss(local_loss, gather_with_grad, rank=rank, world_size=world, backend=backend)
                for backend in ("triton", "chunked")
            ]
            got, want = (ours_module(m, x, y, 14.29, -2.0, rank + 1.0) for m in modules)
            assert_matches(got, want, "clip")
        modules = [FusedSigLipLoss(rank=rank, world_size=world, backend=backend) for backend in ("triton", "chunked")]
        got, want = (ours_module(m, x, y, 10.0, -10.0, rank + 1.0) for m in modules)
        assert_matches(got, want, "siglip")
    finally:
        dist.destroy_process_group()


def ours_module(loss_module, x, y, scale, bias, weight):
    return loss_and_grads(lambda *args: loss_module(*args) * weight, x, y, scale, bias)


@interpret
def test_triton_strips_under_gloo():
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_distributed_worker, args=(2, _free_port()), nprocs=2, join=True)


def _gpu_case(loss_name, dtype, batch=4097, dim=768, scale=14.29):
    x, y = features(batch, dim, seed=1, dtype=dtype)
    x, y = x.cuda(), y.cuda()
    if importlib.util.find_spec("open_clip") is None:  # GPU machines may lack it: the same maths, written out
        reference = {"clip": clip_loss_ref, "siglip": siglip_loss_ref}[loss_name]
        want = loss_and_grads(reference, x, y, scale, BIAS, torch.float64)
    else:
        want = oracle(loss_name, x, y, scale)
    got = ours(loss_name, "triton", x, y, scale)
    return got, want


@pytest.mark.needs_cuda
@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_cuda_triton_matches_float64(loss_name, dtype):
    got, want = _gpu_case(loss_name, dtype)
    assert_matches([t.cpu() for t in got], [t.cpu() for t in want], loss_name)


@pytest.mark.needs_cuda
@pytest.mark.parametrize("grad_chunks", [1, 4])
def test_cuda_memory_stays_linear_in_batch(grad_chunks, monkeypatch):
    """Peak extra memory of forward + backward: O(B·D) plus one G buffer, however many row chunks it takes."""
    batch, dim = 16384, 512
    if grad_chunks > 1:
        monkeypatch.setattr(module, "TRITON_GRAD_BYTES", 2 * batch * batch // grad_chunks)  # bf16 G
    x = torch.randn(batch, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    y = torch.randn(batch, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    clip_loss(x, y, torch.tensor(14.29, device="cuda"), backend="triton").backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    budget = 8 * batch * dim + 64 * batch + module.TRITON_GRAD_BYTES + module.TRITON_STATS_BYTES
    assert extra <= budget, (extra, budget)
