"""The fused losses under CPU autocast, against open_clip's ClipLoss / SigLipLoss under the same autocast.

open_clip's loss under autocast runs its logits matmul in the autocast dtype (it rounds s·X and Y to fp16/bf16 and
the B x B logits to fp16/bf16) and its cross-entropy / logsigmoid in fp32. fastclip's losses follow the same
autocast state: fp32 features are cast to the autocast dtype, then read as they are and accumulated in fp32, so
the only rounding left is the features' own (the logits are never rounded). Checked here:
- under autocast the result is, bit for bit, fastclip's on the features cast to the autocast dtype, and it matches
  open_clip in float64 on those rounded features to fastclip's usual fp32 tolerances;
- the low-precision rule of DESIGN.md against open_clip under the same autocast, for the loss, each feature
  gradient (relative L2) and the scalar gradients: |fast - ref64| <= 2·|ref_lowp - ref64| + atol, where ref64 is
  open_clip in float64 on the fp32 features and ref_lowp open_clip under the autocast. atol is the error that
  reading the features in the autocast dtype causes by itself (|ref64(rounded features) - ref64|) plus 1e-6:
  open_clip rounds s·X where fastclip rounds X, and at logit_scale 100 its loss sometimes lands closer to ref64
  than the exact loss of the rounded features does (SigLIP, fp16: 3e-6 against 1.4e-5 at B = 96, D = 64).

`python -m tests.test_contrastive_loss_autocast` prints the measured errors of every case at B = 256, D = 512.
"""

from __future__ import annotations

import pytest
import torch

from fastclip.nn import FusedClipLoss, FusedSigLipLoss
from tests.test_contrastive_loss import features, open_clip_class

AUTOCAST_DTYPES = [torch.float16, torch.bfloat16]
# Single-process constructor arguments of open_clip's trainer (--local-loss / --gather-with-grad): with
# world_size 1 they must not change anything, in open_clip or here.
CLIP_MODES = [{}, {"local_loss": True, "gather_with_grad": True}, {"local_loss": True}, {"gather_with_grad": True}]
CASES = [("clip", mode) for mode in CLIP_MODES] + [("siglip", {})]
NAMES = ("loss", "dx", "dy", "ds", "db")


def _loss_and_grads(module, x, y, scale, bias, dtype, autocast_dtype=None):
    """Loss and its gradients (dx, dy, ds, db) as float64, with the inputs in `dtype`, optionally under autocast."""
    x = x.detach().to(dtype).requires_grad_()
    y = y.detach().to(dtype).requires_grad_()
    s = torch.tensor(scale, dtype=dtype, requires_grad=True)
    b = torch.tensor(bias, dtype=dtype, requires_grad=True)
    with torch.autocast("cpu", dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        loss = module(x, y, s, b)
    loss.backward()
    return [t.detach().double() for t in (loss, x.grad, y.grad, s.grad, b.grad)], loss.dtype


def _error(got: torch.Tensor, want: torch.Tensor) -> float:
    """Relative L2 error; absolute where the reference is 0 up to rounding (CLIP's logit_bias gradient)."""
    scale = float(want.norm())
    return float((got - want).norm()) / (scale if scale > 1e-12 else 1.0)


def measure(loss_name, mode, autocast_dtype, batch=256, dim=512, scale=None, bias=-10.0, seed=0):
    """Per quantity (NAMES), the errors against open_clip in float64 on the fp32 features of: fastclip under
    autocast, open_clip under autocast, open_clip in float64 on the features rounded to the autocast dtype; then
    the difference between fastclip and open_clip under autocast, and fastclip's error against the float64 loss of
    the rounded features. Also the dtype of fastclip's loss."""
    scale = scale or (10.0 if loss_name == "siglip" else 14.29)
    oracle_class = open_clip_class(loss_name)
    fused_class = {"clip": FusedClipLoss, "siglip": FusedSigLipLoss}[loss_name]
    x, y = features(batch, dim, seed=seed)
    ref64, _ = _loss_and_grads(oracle_class(**mode), x, y, scale, bias, torch.float64)
    rounded64, _ = _loss_and_grads(
        oracle_class(**mode), x.to(autocast_dtype), y.to(autocast_dtype), scale, bias, torch.float64
    )
    ref_lowp, _ = _loss_and_grads(oracle_class(**mode), x, y, scale, bias, torch.float32, autocast_dtype)
    fast, fast_dtype = _loss_and_grads(fused_class(**mode), x, y, scale, bias, torch.float32, autocast_dtype)
    rows = {
        name: {
            "fast": _error(f, r64),
            "open_clip": _error(lowp, r64),
            "rounding": _error(rounded, r64),
            "fast_vs_open_clip": _error(f, lowp),
            "fast_vs_rounded64": _error(f, rounded),
        }
        for name, f, lowp, rounded, r64 in zip(NAMES, fast, ref_lowp, rounded64, ref64)
    }
    return rows, fast_dtype


def _rule_holds(row) -> bool:
    return row["fast"] <= 2 * row["open_clip"] + row["rounding"] + 1e-6


@pytest.mark.parametrize("autocast_dtype", AUTOCAST_DTYPES)
@pytest.mark.parametrize("loss_name, mode", CASES)
@pytest.mark.parametrize("scale", [None, 100.0])
def test_autocast_matches_open_clip_by_the_low_precision_rule(loss_name, mode, autocast_dtype, scale):
    rows, loss_dtype = measure(loss_name, mode, autocast_dtype, batch=96, dim=64, scale=scale)
    assert loss_dtype == torch.float32  # as open_clip's (fp32 cross-entropy / logsigmoid)
    for name, row in rows.items():
        assert _rule_holds(row), (name, row)
        # What fastclip reads, it computes to its fp32 tolerances (tests/test_contrastive_loss.py).
        tolerance = {"loss": 1e-5, "dx": 5e-3, "dy": 5e-3, "ds": 1e-4, "db": 1e-4}[name]
        assert row["fast_vs_rounded64"] <= tolerance, (name, row)


@pytest.mark.parametrize("autocast_dtype", AUTOCAST_DTYPES)
@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
def test_autocast_computes_from_the_autocast_dtype(loss_name, autocast_dtype):
    """Under autocast the loss and gradients are those of the features cast to the autocast dtype, bit for bit."""
    fused = {"clip": FusedClipLoss, "siglip": FusedSigLipLoss}[loss_name]()
    x, y = features(70, 24, seed=5)
    under_autocast, _ = _loss_and_grads(fused, x, y, 14.29, -10.0, torch.float32, autocast_dtype)

    def cast_first(image_features, text_features, logit_scale, logit_bias):
        return fused(image_features.to(autocast_dtype), text_features.to(autocast_dtype), logit_scale, logit_bias)

    cast_explicitly, _ = _loss_and_grads(cast_first, x, y, 14.29, -10.0, torch.float32)
    plain_float32, _ = _loss_and_grads(fused, x, y, 14.29, -10.0, torch.float32)
    for got, want in zip(under_autocast, cast_explicitly):
        assert torch.equal(got, want)
    assert not torch.equal(under_autocast[1], plain_float32[1]), "autocast should change the gradients' rounding"


@pytest.mark.triton_interpret
@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
def test_triton_follows_cpu_autocast(loss_name):
    """The Triton backend (interpreter) reads the autocast-dtype features too: equal to the chunked backend's."""
    x, y = features(40, 16, seed=2)
    results = []
    for backend in ("triton", "chunked"):
        fused = {"clip": FusedClipLoss, "siglip": FusedSigLipLoss}[loss_name](backend=backend)
        results.append(_loss_and_grads(fused, x, y, 14.29, -10.0, torch.float32, torch.bfloat16)[0])
    plain, _ = _loss_and_grads({"clip": FusedClipLoss, "siglip": FusedSigLipLoss}[loss_name](backend="triton"),
                               x, y, 14.29, -10.0, torch.float32)
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert not torch.equal(results[0][1], plain[1])


def test_float64_features_ignore_autocast():
    """Autocast leaves float64 tensors alone (open_clip's float64 loss under autocast is its float64 loss)."""
    x, y = features(40, 16, dtype=torch.float64)
    fused = FusedClipLoss()
    plain, _ = _loss_and_grads(fused, x, y, 14.29, -10.0, torch.float64)
    under_autocast, dtype = _loss_and_grads(fused, x, y, 14.29, -10.0, torch.float64, torch.bfloat16)
    assert dtype == torch.float64
    for got, want in zip(under_autocast, plain):
        assert torch.equal(got, want)


def _print_table() -> None:
    columns = ("fast", "open_clip", "rounding", "fast_vs_open_clip", "fast_vs_rounded64")
    print("| loss | mode | autocast | scale | quantity | " + " | ".join(columns) + " | rule |")
    print("|---" * (len(columns) + 6) + "|")
    for loss_name, mode in CASES:
        for autocast_dtype in AUTOCAST_DTYPES:
            for scale in (None, 100.0):
                rows, _ = measure(loss_name, mode, autocast_dtype, scale=scale)
                mode_text = ",".join(k for k, v in mode.items() if v) or "default"
                for name, row in rows.items():
                    values = " | ".join(f"{row[c]:.2e}" for c in columns)
                    print(
                        f"| {loss_name} | {mode_text} | {str(autocast_dtype)[6:]} | {scale or 'default'} | {name} "
                        f"| {values} | {'ok' if _rule_holds(row) else 'FAIL'} |"
                    )


if __name__ == "__main__":
    _print_table()
