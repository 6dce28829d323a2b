"""clip_loss / siglip_loss (chunked and reference backends) and the nn modules against open_clip in float64.

Oracle: fp64 autograd through open_clip's ClipLoss / SigLipLoss on the same (dtype-rounded) inputs. open_clip's
loss.py is loaded by itself (it imports only torch): importing the whole package costs seconds, which matters in
the spawned processes of the distributed tests. Tolerances
(../shared/reference/loss.md): loss |Δ| <= 1e-6 + 1e-5·|L|; feature gradients relative L2 <= 5e-3; logit_scale and
logit_bias gradients relative <= 1e-4 (the CLIP logit_bias gradient is exactly 0).
"""

from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from fastclip.nn import FusedClipLoss, FusedSigLipLoss
from fastclip.ops import clip_loss, clip_loss_ref, siglip_loss, siglip_loss_ref
from fastclip.ops import contrastive_loss as module
from fastclip.ops._dispatch import BackendUnavailableError

BIAS = -3.0


@functools.lru_cache(maxsize=1)
def open_clip_loss():
    package = importlib.util.find_spec("open_clip")
    if package is None:  # e.g. the bare GPU machine of benchmarks/device/run.sh
        pytest.skip("the float64 oracle is open_clip's loss.py, and open_clip is not installed")
    spec = importlib.util.spec_from_file_location("open_clip_loss_oracle", Path(package.origin).parent / "loss.py")
    loss_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loss_module)
    return loss_module


def open_clip_class(loss_name):
    return {"clip": open_clip_loss().ClipLoss, "siglip": open_clip_loss().SigLipLoss}[loss_name]


OPS = {"clip": clip_loss, "siglip": siglip_loss}


def features(batch, dim, kind="random", seed=0, dtype=torch.float32):
    """(image, text) features of one kind; each kind is a case of the test plan."""
    gen = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(batch, dim, generator=gen, dtype=torch.float64), dim=-1)
    y = F.normalize(torch.randn(batch, dim, generator=gen, dtype=torch.float64), dim=-1)
    if kind == "unnormalised":
        x, y = 10 * x, 10 * y
    elif kind == "tiny_loss":
        # Identical pairs, off-diagonal cosine ~0.6: at logit_scale 100 the CLIP loss is ~1e-13.
        common = F.normalize(torch.randn(1, dim, generator=gen, dtype=torch.float64), dim=-1)
        x = F.normalize(1.15 * common + x, dim=-1)
        y = x.clone()
    elif kind == "duplicates":
        x[1], y[1] = x[0], y[0]
        y[2] = y[0]
    elif kind != "random":
        raise ValueError(kind)
    return x.to(dtype), y.to(dtype)


def loss_and_grads(fn, x, y, scale, bias, dtype=None):
    """Loss and (dx, dy, ds, db) of fn on copies of the inputs, in `dtype` (default: the features' dtype)."""
    dtype = dtype or x.dtype
    x = x.detach().to(dtype).requires_grad_()
    y = y.detach().to(dtype).requires_grad_()
    scalar_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    s = torch.tensor(scale, dtype=scalar_dtype, device=x.device, requires_grad=True)
    b = torch.tensor(bias, dtype=scalar_dtype, device=x.device, requires_grad=True)
    loss = fn(x, y, s, b)
    loss.backward()
    return [loss.detach().double(), x.grad.double(), y.grad.double(), s.grad.double(), b.grad.double()]


def oracle(loss_name, x, y, scale, bias=BIAS):
    return loss_and_grads(open_clip_class(loss_name)(), x, y, scale, bias, torch.float64)


def ours(loss_name, backend, x, y, scale, bias=BIAS):
    op = OPS[loss_name]
    return loss_and_grads(lambda *args: op(*args, backend=backend), x, y, scale, bias)


def assert_matches(got, want, loss_name, loss_rtol=1e-5, grad_rtol=5e-3):
    loss, dx, dy, ds, db = got
    want_loss, want_dx, want_dy, want_ds, want_db = want
    assert abs(float(loss - want_loss)) <= 1e-6 + loss_rtol * abs(float(want_loss)), (float(loss), float(want_loss))
    for name, g, w in (("dx", dx, want_dx), ("dy", dy, want_dy)):
        error = float((g - w).norm() / w.norm()) if float(w.norm()) > 0 else float(g.norm())
        assert error <= grad_rtol, f"{name}: relative L2 error {error:.2e}"
    assert abs(float(ds - want_ds)) <= 1e-4 * abs(float(want_ds)) + 1e-12, (float(ds), float(want_ds))
    if loss_name == "clip":
        assert abs(float(db)) <= 1e-6  # exactly 0 from the fused backends (test_clip_logit_bias_cancels)
    else:
        assert abs(float(db - want_db)) <= 1e-4 * abs(float(want_db)) + 1e-12, (float(db), float(want_db))


@pytest.fixture
def chunk_rows(monkeypatch):
    """Force the chunked backend to process `rows` rows of a B-column batch at a time."""

    def set_rows(rows, batch):
        monkeypatch.setattr(module, "CHUNK_ELEMENTS", max(1, rows) * batch)

    return set_rows


@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
@pytest.mark.parametrize("dim", [16, 96, 512])
@pytest.mark.parametrize("batch", [1, 2, 3, 127, 129, 1000])
def test_chunked_matches_open_clip_across_sizes(loss_name, batch, dim, chunk_rows):
    chunk_rows(batch // 5, batch)  # about five chunks, so chunk edges and the diagonal offset are exercised
    x, y = features(batch, dim, seed=batch + dim)
    assert_matches(ours(loss_name, "chunked", x, y, 14.29), oracle(loss_name, x, y, 14.29), loss_name)


CASES = [
    # (kind, batch, dim, logit_scale)
    ("random", 129, 96, 1.0),
    ("random", 129, 96, 100.0),
    ("random", 127, 512, 100.0),  # near-orthogonal at logit_scale 100: a fixed exp shift would underflow
    ("tiny_loss", 129, 96, 100.0),
    ("duplicates", 127, 16, 14.29),
    ("duplicates", 127, 16, 100.0),
    ("unnormalised", 129, 96, 1.0),
    ("unnormalised", 129, 96, 14.29),
]


# The reference backend is fp32 log-softmax, as open_clip: at a loss of 1e-13 it has no digits left (which is why
# the fused backends use the softplus form), so the tiny-loss case runs on the chunked backend only.
BACKEND_CASES = [(backend, *case) for backend in ("chunked", "reference") for case in CASES]
BACKEND_CASES.remove(("reference", "tiny_loss", 129, 96, 100.0))


@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
@pytest.mark.parametrize("backend, kind, batch, dim, scale", BACKEND_CASES)
def test_cases_match_open_clip(loss_name, backend, kind, batch, dim, scale, chunk_rows):
    chunk_rows(40, batch)
    x, y = features(batch, dim, kind)
    assert_matches(ours(loss_name, backend, x, y, scale), oracle(loss_name, x, y, scale), loss_name)


def test_tiny_loss_keeps_relative_accuracy():
    x, y = features(129, 96, "tiny_loss")
    want = oracle("clip", x, y, 100.0)
    assert 1e-15 < float(want[0]) < 1e-10, f"the case should have a loss near 1e-13, got {float(want[0]):.1e}"
    got = ours("clip", "chunked", x, y, 100.0)
    assert abs(float(got[0] / want[0]) - 1) < 1e-3
    assert_matches(got, want, "clip")


@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
def test_bfloat16_inputs(loss_name):
    x, y = features(129, 96, dtype=torch.bfloat16)  # the oracle sees the same bf16-rounded values in fp64
    assert_matches(ours(loss_name, "chunked", x, y, 14.29), oracle(loss_name, x, y, 14.29), loss_name)


@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
def test_float64_inputs_are_exact(loss_name, chunk_rows):
    chunk_rows(7, 40)
    x, y = features(40, 24, dtype=torch.float64)
    got, want = ours(loss_name, "chunked", x, y, 30.0), oracle(loss_name, x, y, 30.0)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_negative_upstream_gradient(chunk_rows):
    """The backward folds positive weights into exponent shifts; a negative upstream gradient takes the other path."""
    chunk_rows(10, 50)
    x, y = features(50, 16)
    got = loss_and_grads(lambda *args: -2.5 * clip_loss(*args, backend="chunked"), x, y, 14.29, BIAS)
    want = loss_and_grads(lambda *args: -2.5 * open_clip_class("clip")()(*args), x, y, 14.29, BIAS, torch.float64)
    assert_matches(got, want, "clip")


@pytest.mark.parametrize("backend", ["chunked", "reference"])
def test_batch_of_one_gives_exact_zeros(backend):
    x, y = features(1, 16)
    loss, dx, dy, ds, db = ours("clip", backend, x, y, 100.0)
    assert float(loss) == 0.0
    for grad in (dx, dy, ds, db):
        assert torch.count_nonzero(grad) == 0


@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
def test_gradcheck_chunked_float64(loss_name, chunk_rows):
    chunk_rows(2, 6)
    op = OPS[loss_name]
    x, y = features(6, 5, dtype=torch.float64)
    inputs = (
        x.requires_grad_(),
        y.requires_grad_(),
        torch.tensor(3.0, dtype=torch.float64, requires_grad=True),
        torch.tensor(-1.5, dtype=torch.float64, requires_grad=True),
    )
    assert torch.autograd.gradcheck(lambda *args: op(*args, backend="chunked"), inputs)


@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
def test_chunked_is_bitwise_deterministic(loss_name, chunk_rows):
    chunk_rows(16, 100)
    x, y = features(100, 32)
    first, second = ours(loss_name, "chunked", x, y, 14.29), ours(loss_name, "chunked", x, y, 14.29)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


class LargestTensor(TorchDispatchMode):
    """Records the element count of the largest tensor any op produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
def test_chunked_never_holds_a_batch_by_batch_tensor(loss_name):
    batch, dim = 4096, 8
    x, y = features(batch, dim)
    op, ref = OPS[loss_name], {"clip": clip_loss_ref, "siglip": siglip_loss_ref}[loss_name]
    for fn, expect_square in ((lambda *a: op(*a, backend="chunked"), False), (ref, True)):
        xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
        with LargestTensor() as probe:
            fn(xs, ys, torch.tensor(14.29), torch.tensor(BIAS)).backward()
        if expect_square:
            assert probe.largest >= batch * batch  # the probe sees the reference's logits
        else:
            assert probe.largest <= module.CHUNK_ELEMENTS < batch * batch


def test_clip_logit_bias_cancels():
    x, y = features(50, 16)
    torch.testing.assert_close(clip_loss(x, y, 14.29, 5.0), clip_loss(x, y, 14.29))
    *_, grad_bias = ours("clip", "chunked", x, y, 14.29, 5.0)
    assert float(grad_bias) == 0.0


@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
def test_modules_are_drop_in_for_open_clip(loss_name):
    x, y = features(64, 32)
    fused = {"clip": FusedClipLoss, "siglip": FusedSigLipLoss}[loss_name]()
    reference = open_clip_class(loss_name)()
    scale, bias = torch.tensor(10.0), torch.tensor(-10.0)
    got = fused(x, y, scale, bias, output_dict=True)
    want = reference(x, y, scale, bias, output_dict=True)
    assert set(got) == set(want) == {"contrastive_loss"}
    torch.testing.assert_close(got["contrastive_loss"], want["contrastive_loss"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused(x, y, scale, bias), want["contrastive_loss"], rtol=1e-5, atol=1e-6)


def test_module_arguments_are_checked():
    with pytest.raises(NotImplementedError, match="use_horovod"):
        FusedClipLoss(use_horovod=True)
    with pytest.raises(ValueError, match="dist_impl"):
        FusedSigLipLoss(dist_impl="ring")
    x, y = features(4, 8)
    with pytest.raises(RuntimeError, match="init_process_group"):
        FusedClipLoss(local_loss=True, gather_with_grad=True, rank=0, world_size=2)(x, y, torch.tensor(10.0))


def test_bad_arguments_name_the_argument():
    x, y = features(8, 16)
    with pytest.raises(ValueError, match="text_features"):
        clip_loss(x, y[:7], 10.0)
    with pytest.raises(ValueError, match="image_features must be"):
        clip_loss(x[0], y[0], 10.0)
    with pytest.raises(TypeError, match="floating"):
        siglip_loss(x.long(), y.long(), 10.0)
    with pytest.raises(TypeError, match="text_features is"):
        clip_loss(x, y.double(), 10.0)
    with pytest.raises(ValueError, match="logit_scale must hold one value"):
        clip_loss(x, y, torch.ones(2))
    with pytest.raises(ValueError, match="empty"):
        clip_loss(x[:0], y[:0], 10.0)
    with pytest.raises(ValueError, match="backend="):
        clip_loss(x, y, 10.0, backend="cuda")


def test_triton_backend_says_how_to_run_on_cpu(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    x, y = features(8, 16)
    with pytest.raises(BackendUnavailableError, match="TRITON_INTERPRET=1"):
        clip_loss(x, y, 10.0, backend="triton")


def test_auto_picks_chunked_on_cpu(monkeypatch):
    monkeypatch.delenv("FASTCLIP_BACKEND", raising=False)
    assert module._CLIP_DISPATCH.choose("cpu").name == "chunked"
    assert module._SIGLIP_DISPATCH.choose("cpu").name == "chunked"


def _toy_training_curve(loss_name, backend, steps=40):
    """Two linear towers learning a shared 8-d latent from 32-d 'images' and 24-d 'texts'; the loss per step."""
    gen = torch.Generator().manual_seed(0)
    latent = torch.randn(512, 8, generator=gen)
    images = latent @ torch.randn(8, 32, generator=gen) + 0.3 * torch.randn(512, 32, generator=gen)
    texts = latent @ torch.randn(8, 24, generator=gen) + 0.3 * torch.randn(512, 24, generator=gen)
    torch.manual_seed(0)
    image_tower, text_tower = torch.nn.Linear(32, 16), torch.nn.Linear(24, 16)
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(10.0 if loss_name == "siglip" else 1 / 0.07)))
    logit_bias = torch.nn.Parameter(torch.tensor(-10.0))
    params = [*image_tower.parameters(), *text_tower.parameters(), logit_scale, logit_bias]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    op = OPS[loss_name]
    curve = []
    for step in range(steps):
        rows = slice((step % 8) * 64, (step % 8 + 1) * 64)
        image_features = F.normalize(image_tower(images[rows]), dim=-1)
        text_features = F.normalize(text_tower(texts[rows]), dim=-1)
        loss = op(image_features, text_features, logit_scale.exp(), logit_bias, backend=backend)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            logit_scale.clamp_(0, math.log(100))  # as open_clip's trainer
        curve.append(float(loss.detach()))
    return torch.tensor(curve)


@pytest.fixture
def one_thread():
    """Tiny ops pay a thread-team barrier each; on a shared 2-core machine one thread is 50x faster here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
def test_training_curves_of_reference_and_chunked_agree(loss_name, one_thread):
    """Stated tolerance: every step's loss within 1e-4 relative (fp32 rounding differences grow slowly)."""
    reference = _toy_training_curve(loss_name, "reference")
    chunked = _toy_training_curve(loss_name, "chunked")
    assert float(chunked[-8:].mean()) < 0.7 * float(chunked[:8].mean()), "the toy run should learn"
    torch.testing.assert_close(chunked, reference, rtol=1e-4, atol=1e-6)


def test_training_flags_pick_the_loss():
    from fastclip.train.config import parse_args
    from fastclip.train.distributed import World
    from fastclip.train.loss import create_loss, model_kwargs

    world = World(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    default = create_loss(parse_args([]), world)
    assert isinstance(default, FusedClipLoss) and default.backend == "auto" and model_kwargs(parse_args([])) == {}
    assert create_loss(parse_args(["--loss", "fused"]), world).backend == "triton"
    siglip_args = parse_args(["--siglip", "--loss", "reference"])
    siglip = create_loss(siglip_args, world)
    assert isinstance(siglip, FusedSigLipLoss) and siglip.backend == "reference"
    assert model_kwargs(siglip_args) == {"init_logit_scale": math.log(10), "init_logit_bias": -10.0}
    x, y = features(16, 8)
    expected = open_clip_class("siglip")()(x, y, torch.tensor(10.0), torch.tensor(-10.0))
    torch.testing.assert_close(siglip(x, y, torch.tensor(10.0), torch.tensor(-10.0)), expected)
    with pytest.raises(SystemExit):
        parse_args(["--loss", "triton"])


def test_fastclip_train_curves_with_reference_and_chunked_loss_agree(tmp_path):
    """Two toy-world fastclip-train runs (fc-tiny-vit, 4 steps), --loss reference vs --loss auto (chunked on the CPU):
    every logged loss within 1e-5 relative (measured: 3e-7; the towers see fp32 rounding through the gradients)."""
    import json

    from fastclip.train.cli import main

    tiny = ["--train-num-samples", "32", "--batch-size", "16", "--epochs", "2", "--warmup", "2",
            "--log-every-n-steps", "1", "--lr", "2e-3", "--logs", str(tmp_path), "--save-frequency", "0"]
    curves = {}
    for loss in ("reference", "auto"):
        assert main([*tiny, "--loss", loss, "--name", loss]) == 0
        lines = (tmp_path / loss / "metrics.jsonl").read_text().splitlines()
        curves[loss] = torch.tensor([json.loads(line)["loss"] for line in lines])
    assert len(curves["auto"]) == 4 and not torch.equal(curves["auto"][0], curves["auto"][-1])
    torch.testing.assert_close(curves["auto"], curves["reference"], rtol=1e-5, atol=1e-7)
