"""FusedClipLoss / FusedSigLipLoss under torch.distributed (gloo, CPU): per-rank losses and gradients against open_clip.

Each world size runs in one group of spawned processes that checks every case and raises on the first mismatch
(mp.spawn re-raises it here with the worker's traceback). The gloo timeout turns a hang into an error.
"""

from __future__ import annotations

import datetime
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

B_LOCAL = 5
DIM = 12
MODES = [(True, True), (False, True), (False, False), (True, False)]  # (local_loss, gather_with_grad)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _global_inputs(world: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(world * B_LOCAL, DIM, generator=generator, dtype=torch.float64), dim=-1)
    y = F.normalize(torch.randn(world * B_LOCAL, DIM, generator=generator, dtype=torch.float64), dim=-1)
    y[3] = y[1]  # a duplicate text across the rows of rank 0
    return x, y


def _run(loss_module, x, y, scale, bias, weight, dtype):
    """Per-rank loss and gradients of weight·loss (a non-uniform upstream gradient across ranks)."""
    x = x.detach().clone().to(dtype).requires_grad_()
    y = y.detach().clone().to(dtype).requires_grad_()
    scale = torch.tensor(scale, dtype=dtype, requires_grad=True)
    bias = torch.tensor(bias, dtype=dtype, requires_grad=True)
    loss = loss_module(x, y, scale, bias)
    (loss * weight).backward()
    return [loss.detach().double(), x.grad.double(), y.grad.double(), scale.grad.double(), bias.grad]


def _assert_close(ours, oracle, what, loss_tol, grad_tol):
    loss, *grads = ours
    oracle_loss, *oracle_grads = oracle
    assert abs(float(loss - oracle_loss)) <= loss_tol * (1 + abs(float(oracle_loss))), (what, float(loss), float(oracle_loss))
    for name, got, want in zip(("dx", "dy", "ds"), grads[:3], oracle_grads[:3]):
        error = float((got - want).norm() / want.norm().clamp_min(1e-300))
        assert error <= grad_tol, (what, name, error)


def _worker(rank: int, world: int, port: int) -> None:
    import warnings

    from fastclip.nn import FusedClipLoss, FusedSigLipLoss
    from tests.test_contrastive_loss import open_clip_class

    ClipLoss, SigLipLoss = open_clip_class("clip"), open_clip_class("siglip")
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.distributed.nn.all_gather, used by open_clip
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
        timeout=datetime.timedelta(seconds=30),
    )
    try:
        x_all, y_all = _global_inputs(world, seed=world)
        rows = slice(rank * B_LOCAL, (rank + 1) * B_LOCAL)
        x, y = x_all[rows], y_all[rows]
        weight = float(rank + 1)
        scale, bias = 14.29, -2.0

        for local_loss, gather_with_grad in MODES:
            kwargs = dict(local_loss=local_loss, gather_with_grad=gather_with_grad, rank=rank, world_size=world)
            oracle = _run(ClipLoss(**kwargs), x, y, scale, bias, weight, torch.float64)
            for backend in ("chunked", "reference"):
                ours = _run(FusedClipLoss(**kwargs, backend=backend), x, y, scale, bias, weight, torch.float64)
                _assert_close(ours, oracle, (backend, local_loss, gather_with_grad), 1e-12, 1e-10)
                assert float(ours[4].abs()) < 1e-12, "the CLIP logit_bias gradient must be 0"
            ours32 = _run(FusedClipLoss(**kwargs), x, y, scale, bias, weight, torch.float32)
            _assert_close(ours32, oracle, ("float32", local_loss, gather_with_grad), 1e-5, 5e-3)

        # local_loss + gather_with_grad with a unit upstream gradient: W x the global gradients, Σ ds = W·ds,
        # mean of the per-rank losses = the global loss.
        glob = _run(ClipLoss(), x_all, y_all, scale, bias, 1.0, torch.float64)
        ours = _run(FusedClipLoss(True, True, rank=rank, world_size=world), x, y, scale, bias, 1.0, torch.float64)
        torch.testing.assert_close(ours[1], world * glob[1][rows], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(ours[2], world * glob[2][rows], rtol=1e-10, atol=1e-12)
        totals = torch.stack([ours[0], ours[3]])
        dist.all_reduce(totals)
        torch.testing.assert_close(totals[0] / world, glob[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(totals[1], world * glob[3], rtol=1e-10, atol=1e-12)

        siglip_oracle = _run(SigLipLoss(rank=rank, world_size=world), x, y, 10.0, -10.0, weight, torch.float64)
        for backend in ("chunked", "reference"):
            ours = _run(FusedSigLipLoss(rank=rank, world_size=world, backend=backend), x, y, 10.0, -10.0, weight, torch.float64)
            _assert_close(ours, siglip_oracle, ("siglip", backend), 1e-12, 1e-10)
            assert abs(float(ours[4] - siglip_oracle[4])) <= 1e-10 * (1 + abs(float(siglip_oracle[4])))

        # Unequal per-rank batches: the same clear error on every rank, no hang.
        short = slice(0, B_LOCAL - 1 if rank == world - 1 else B_LOCAL)
        for module in (FusedClipLoss(True, True, rank=rank, world_size=world), FusedSigLipLoss(rank=rank, world_size=world)):
            with pytest.raises(ValueError, match="same batch|equal"):
                module(x[short], y[short], torch.tensor(scale), torch.tensor(bias))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 3])
def test_fused_losses_match_open_clip_per_rank(world):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(world, _free_port()), nprocs=world, join=True)
