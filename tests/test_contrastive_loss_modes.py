"""Autograd modes of the fused losses: once-differentiable backwards, SigLIP without gradients or with a frozen
tower, and the matmul precision rule of the Triton tiles (the same as torch's for the backward's cuBLAS GEMMs)."""

from __future__ import annotations

import json

import pytest
import torch

from fastclip.ops import clip_loss, siglip_loss
from fastclip.ops import contrastive_loss as module
from tests.helpers import run_python
from tests.test_contrastive_loss import BIAS, features, open_clip_class

OPS = {"clip": clip_loss, "siglip": siglip_loss}


@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
def test_double_backward_raises(loss_name):
    """The backwards are not differentiable again (they run their own GEMMs outside autograd): a second-order
    gradient must fail loudly, not come back silently partial (e.g. through the upstream gradient alone)."""
    x, y = features(20, 8)
    x.requires_grad_()
    loss = OPS[loss_name](x, y, 14.29, BIAS, backend="chunked")
    upstream = torch.ones((), requires_grad=True)
    (grad_x,) = torch.autograd.grad(loss, x, grad_outputs=upstream, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad_x.sum().backward()


@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
def test_no_grad_gives_the_loss_without_a_graph(loss_name):
    x, y = features(30, 8)
    with torch.no_grad():
        loss = OPS[loss_name](x.requires_grad_(), y, 14.29, BIAS, backend="chunked")
    assert not loss.requires_grad
    want = open_clip_class(loss_name)()(x.detach().double(), y.double(), torch.tensor(14.29, dtype=torch.float64),
                                        torch.tensor(BIAS, dtype=torch.float64))
    torch.testing.assert_close(loss.double(), want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("trainable", [(True, False), (False, True)])
def test_siglip_frozen_tower_costs_no_gemm(trainable, monkeypatch):
    """A tower that needs no gradient gets no dX (or dY) GEMM, and the other gradients are unchanged."""
    gemms = []
    mm_into, add_mm = module._mm_into, module._add_mm_
    monkeypatch.setattr(module, "_mm_into", lambda *a: gemms.append("dx") or mm_into(*a))
    monkeypatch.setattr(module, "_add_mm_", lambda *a: gemms.append("dy") or add_mm(*a))
    monkeypatch.setattr(module, "CHUNK_ELEMENTS", 10 * 40)  # four chunks
    x, y = features(40, 8)
    inputs = [t.clone().requires_grad_(flag) for t, flag in zip((x, y), trainable)]
    scale = torch.tensor(10.0, requires_grad=True)
    siglip_loss(*inputs, scale, BIAS, backend="chunked").backward()
    assert gemms == (["dx"] * 4 if trainable[0] else ["dy"] * 4)
    full = [t.clone().requires_grad_() for t in (x, y)]
    full_scale = torch.tensor(10.0, requires_grad=True)
    siglip_loss(*full, full_scale, BIAS, backend="chunked").backward()
    for frozen, got, want in zip(trainable, inputs, full):
        if frozen:
            torch.testing.assert_close(got.grad, want.grad)
        else:
            assert got.grad is None
    torch.testing.assert_close(scale.grad, full_scale.grad)


# Each line sets torch's fp32 matmul precision one way a user (or open_clip's trainer) does, in a fresh process:
# the legacy and the new API must not be mixed in one process (torch then refuses to read the setting).
_PRECISION_PROBE = """
import json, sys, torch
from fastclip.kernels.contrastive_loss import _input_precision
results = []
for statement in json.loads(sys.argv[1]):
    exec(statement)
    results.append([statement, _input_precision(torch.float32), torch.backends.cuda.matmul.fp32_precision,
                    _input_precision(torch.bfloat16)])
print(json.dumps(results))
"""

_LEGACY = [
    "pass",
    "torch.backends.cuda.matmul.allow_tf32 = True",  # open_clip's and fastclip-train's setting on CUDA
    "torch.backends.cuda.matmul.allow_tf32 = False",
    "torch.set_float32_matmul_precision('high')",
    "torch.set_float32_matmul_precision('medium')",
    "torch.set_float32_matmul_precision('highest')",
]
_NEW = [
    "torch.backends.cuda.matmul.fp32_precision = 'tf32'",
    "torch.backends.cuda.matmul.fp32_precision = 'ieee'",
    "torch.backends.cuda.matmul.fp32_precision = 'none'; torch.backends.fp32_precision = 'tf32'",
    "torch.backends.fp32_precision = 'ieee'",
]


@pytest.mark.parametrize("statements", [_LEGACY, _NEW], ids=["legacy_api", "new_api"])
def test_tile_precision_follows_torchs_cublas_setting(statements):
    """fp32 tiles use TF32 exactly when torch lets cuBLAS use TF32 for fp32 matmuls (the backward's GEMMs), and
    full fp32 ("ieee") otherwise; half operands are unaffected."""
    done = run_python(["-c", _PRECISION_PROBE, json.dumps(statements)], timeout=120)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r[0] for r in results] == statements
    for statement, tile, cublas, half in results:
        assert tile == ("tf32" if cublas == "tf32" else "ieee"), (statement, tile, cublas)
        assert half == "tf32"
    tiles = {statement: tile for statement, tile, *_ in results}
    if statements is _LEGACY:
        assert tiles["pass"] == "ieee"  # torch's default: full fp32 in cuBLAS, so in the tiles
        assert tiles["torch.backends.cuda.matmul.allow_tf32 = True"] == "tf32"
        assert tiles["torch.set_float32_matmul_precision('high')"] == "tf32"
        assert tiles["torch.set_float32_matmul_precision('highest')"] == "ieee"
