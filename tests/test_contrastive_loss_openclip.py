"""open_clip's own tests of ClipLoss / SigLipLoss, transcribed with fastclip's FusedClipLoss / FusedSigLipLoss.

Sources, all in mlfoundations/open_clip (the installed open_clip 3.3.0, tag v3.3.0, ships no loss tests; these are
on main after it):
- tests/test_siglip_chunked_loss.py @ 89fb801 (main, 2026-06-27): forward, backward, uneven chunks, chunk_size 0;
  and its later version @ 69ffec0: all gradients with frozen towers, autocast with an optional bias, no_grad,
  saved-activation memory.
- tests/test_siglip_loss_precision.py @ 2d53460: half inputs give a finite fp32 loss and finite gradients.
- tests/test_factory_loss.py @ 51ed1fb: the "clip" and "siglip" rows of
  test_standalone_loss_matches_constructor_forward_and_backward (float64, options of the trainer).
- tests/test_grad_accum.py @ 12f8719: the cached-feature gradient accumulation equals the full batch (written
  here at the loss level with open_clip 3.3's CLIP model, since CLIPTask / _train_step_eager are main-only).
Not transcribed, and why: tests/test_loss.py @ a2ad82c tests open_clip's all-gather helper, not a loss class;
negative_only=True cases call a private argument of open_clip's `_loss` for remote blocks (fastclip computes those
blocks inside its strip; tests/test_contrastive_loss_distributed.py checks them under gloo against open_clip);
test_chunked_distributed_blocks monkeypatches open_clip's exchange functions; image/text counts that differ
(19 vs 11) are refused by fastclip's loss, which takes one text per image.

Where open_clip compares its chunked SigLIP with its reference (SigLipLoss()._loss with chunk_size 0, which is
open_clip 3.3's SigLipLoss), fastclip's module takes the chunked path's place, with fastclip's rows per chunk set to
open_clip's chunk_size. Every test runs at three precisions: "fp32", open_clip's assertion and tolerance as written;
"fp16" and "bf16", CPU autocast, where open_clip's reference under the same autocast is ref_lowp and a comparison
becomes the low-precision rule of DESIGN.md (see tests/test_contrastive_loss_autocast.py):
|fast - ref64| <= 2·|ref_lowp - ref64| + |rounded64 - ref64| + 1e-6 in relative L2 per tensor, with ref64 the
reference in float64 and rounded64 the same on the features rounded to the autocast dtype. (open_clip's tolerance
of 1e-5 for the loss under autocast assumes that its chunked path rounds the logits exactly as its reference does;
fastclip never rounds them.)
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastclip.nn import FusedClipLoss, FusedSigLipLoss
from fastclip.ops import contrastive_loss as module
from tests.test_contrastive_loss import open_clip_class

PRECISIONS = ["fp32", "fp16", "bf16"]
AUTOCAST = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def _autocast(precision):
    dtype = AUTOCAST[precision]
    return torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def _outputs(fn, inputs, requires, precision, dtype=None, round_features_to=None):
    """[fn(*inputs), gradients of the inputs that require one], inputs cloned, optionally rounded and cast."""
    leaves = []
    for t, flag in zip(inputs, requires):
        if t is None:
            leaves.append(None)
            continue
        t = t.detach().clone()
        if round_features_to is not None and t.dim() == 2:
            t = t.to(round_features_to)
        leaves.append(t.to(dtype or t.dtype).requires_grad_(flag))
    with _autocast(precision):
        loss = fn(*leaves)
    wanted = [t for t in leaves if t is not None and t.requires_grad]
    grads = torch.autograd.grad(loss, wanted) if wanted and loss.requires_grad else ()
    return [loss.detach(), *grads]


def _error(got, want) -> float:
    scale = float(want.double().norm())
    return float((got.double() - want.double()).norm()) / (scale if scale > 1e-12 else 1.0)


def assert_like_open_clip(fast, reference, inputs, requires, precision, rtol, atol):
    """fast against open_clip's reference: open_clip's tolerance in fp32, the low-precision rule under autocast."""
    got = _outputs(fast, inputs, requires, precision)
    want = _outputs(reference, inputs, requires, precision)
    assert len(got) == len(want)
    if AUTOCAST[precision] is None:
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=rtol, atol=atol)
        return
    ref64 = _outputs(reference, inputs, requires, "fp32", torch.float64)
    rounded64 = _outputs(reference, inputs, requires, "fp32", torch.float64, round_features_to=AUTOCAST[precision])
    for index, (g, lowp, r64, rounded) in enumerate(zip(got, want, ref64, rounded64)):
        fast_error, open_clip_error, rounding_error = _error(g, r64), _error(lowp, r64), _error(rounded, r64)
        assert fast_error <= 2 * open_clip_error + rounding_error + 1e-6, (index, fast_error, open_clip_error)


def _make_inputs(B=64, D=32, seed=0, dtype=torch.float32):
    """open_clip's _make_inputs: normalised features, logit_scale 10, logit_bias -10."""
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(B, D, generator=g, dtype=dtype)
    img = img / img.norm(dim=-1, keepdim=True)
    txt = torch.randn(B, D, generator=g, dtype=dtype)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    return img, txt, torch.tensor(10.0, dtype=dtype), torch.tensor(-10.0, dtype=dtype)


def _reference_loss(img, txt, ls, lb=None):
    return open_clip_class("siglip")()._loss(img, txt, ls, lb)


@pytest.fixture
def fused_siglip(monkeypatch):
    """FusedSigLipLoss(chunk_size=c) with fastclip's chunked backend processing c rows of B columns per chunk."""

    def make(chunk_size, batch):
        monkeypatch.setattr(module, "CHUNK_ELEMENTS", max(1, chunk_size) * batch)
        return FusedSigLipLoss(chunk_size=chunk_size, backend="chunked")

    return make


# ------------------------------------------------------------------- tests/test_siglip_chunked_loss.py @ 89fb801


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("chunk_size", [64, 32, 8, 1])
def test_chunked_matches_reference_forward(chunk_size, precision, fused_siglip):
    inputs = _make_inputs(B=64)
    fused = fused_siglip(chunk_size, 64)
    assert_like_open_clip(fused, _reference_loss, inputs, (False,) * 4, precision, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("chunk_size", [32, 8])
def test_chunked_matches_reference_backward(chunk_size, precision, fused_siglip):
    inputs = _make_inputs(B=64)
    fused = fused_siglip(chunk_size, 64)
    assert_like_open_clip(fused, _reference_loss, inputs, (True, False, False, False), precision, 1e-5, 1e-5)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_chunked_handles_uneven_chunks(precision, fused_siglip):
    inputs = _make_inputs(B=70)  # 70 = 8*8 + 6, so the last chunk has 6 rows
    fused = fused_siglip(8, 70)
    assert_like_open_clip(fused, _reference_loss, inputs, (False,) * 4, precision, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_chunk_size_zero_skips_chunked_path(precision):
    """open_clip: chunk_size 0 is its original implementation, bit for bit. fastclip's counterpart of that
    implementation is the reference backend."""
    img, txt, ls, lb = _make_inputs(B=32)
    with _autocast(precision):
        ref = _reference_loss(img, txt, ls, lb)
        explicit = FusedSigLipLoss(chunk_size=0, backend="reference")(img, txt, ls, lb)
    assert torch.equal(ref, explicit)


# ------------------------------------------------------------------- tests/test_siglip_chunked_loss.py @ 69ffec0


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("trainable", [(True, True, True, True), (False, True, True, True),
                                       (True, False, True, True), (False, False, True, True)])
@pytest.mark.parametrize("chunk_size", [1, 7, 32])
def test_chunked_all_gradients(chunk_size, trainable, precision, fused_siglip):
    """Chunk offsets and frozen towers preserve all feature and scalar gradients (batch 19 = text 19)."""
    inputs = _make_inputs(B=19)
    fused = fused_siglip(chunk_size, 19)

    def reference(img, txt, ls, lb):
        logits = (ls * img @ txt.T + lb).float()
        labels = -torch.ones_like(logits)
        labels.diagonal().fill_(1)
        return -F.logsigmoid(labels * logits).sum() / img.shape[0]

    assert_like_open_clip(fused, reference, inputs, trainable, precision, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("precision", PRECISIONS)  # open_clip's autocast_enabled: False = fp32, True = bf16
@pytest.mark.parametrize("with_bias", [False, True])
def test_chunked_autocast_and_optional_bias(with_bias, precision, fused_siglip):
    inputs = _make_inputs(B=35)
    inputs = inputs if with_bias else (*inputs[:3], None)
    fused = fused_siglip(8, 35)
    requires = (True, True, True, with_bias)
    # open_clip's tolerance for the gradients under its own autocast is 2e-2 / 2e-3; in fp32, 1e-5 throughout.
    assert_like_open_clip(fused, _reference_loss, inputs, requires, precision, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_chunked_no_grad(requires_grad, precision):
    """Evaluation keeps the same scalar and dictionary outputs without a graph."""
    inputs = [value.requires_grad_(requires_grad) for value in _make_inputs(B=19)]
    with torch.no_grad(), _autocast(precision):
        actual = FusedSigLipLoss(chunk_size=7)(*inputs, output_dict=True)["contrastive_loss"]
        reference = open_clip_class("siglip")()(*inputs)
    assert not actual.requires_grad
    if AUTOCAST[precision] is None:
        torch.testing.assert_close(actual, reference)
    else:
        assert_like_open_clip(
            lambda *a: FusedSigLipLoss(chunk_size=7)(*a), open_clip_class("siglip")(), inputs, (False,) * 4,
            precision, 0, 0,
        )


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("loss_name", ["siglip", "clip"])  # open_clip's test is SigLIP's; fastclip's CLIP too
@pytest.mark.parametrize("trainable", [(True, True, True, True), (False, False, True, True),
                                       (False, False, True, False), (False, False, False, True)])
def test_chunked_saved_activation_memory(trainable, loss_name, precision, monkeypatch):
    """Backward must not retain every chunk's pairwise activation matrix."""
    batch_size, feature_dim, chunk_size = 256, 16, 16
    monkeypatch.setattr(module, "CHUNK_ELEMENTS", chunk_size * batch_size)
    inputs = [value.requires_grad_(enabled)
              for value, enabled in zip(_make_inputs(B=batch_size, D=feature_dim), trainable)]
    input_storage = {value.untyped_storage().data_ptr() for value in inputs}
    saved_storage = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in input_storage:
            saved_storage[storage.data_ptr()] = storage.nbytes()
        return tensor

    fused = FusedSigLipLoss(chunk_size=chunk_size) if loss_name == "siglip" else FusedClipLoss()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), _autocast(precision):
        loss = fused(*inputs)

    # Count unique storage, not tensor numel: feature views share the input storage.
    # Allow feature-sized intermediates and two chunks, but not the full B x B matrix.
    memory_budget = 2 * (batch_size * feature_dim + chunk_size * batch_size) * inputs[0].element_size()
    saved_bytes = sum(saved_storage.values())
    assert saved_bytes <= memory_budget, f"saved {saved_bytes} activation bytes; budget is {memory_budget}"
    gradients = torch.autograd.grad(loss, [value for value in inputs if value.requires_grad])
    assert all(torch.isfinite(gradient).all() for gradient in gradients)


# -------------------------------------------------------------------- tests/test_siglip_loss_precision.py @ 2d53460


def _constant_logits_inputs(batch_size=256, dtype=torch.float16):
    """Finite, deliberately large pair logits without a large GEMM."""
    image = torch.zeros(batch_size, 4, dtype=dtype)
    text = torch.zeros(batch_size, 4, dtype=dtype)
    return image, text, torch.ones((), dtype=dtype), torch.full((), 10, dtype=dtype)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("chunk_size", [0, 16])
def test_siglip_large_low_precision_reduction_is_finite(chunk_size, precision, fused_siglip):
    """The B x B reduction must not overflow when each pair loss is finite."""
    fused = fused_siglip(chunk_size, 256)
    with _autocast(precision):
        loss = fused(*_constant_logits_inputs())
    reference = _reference_loss(*_constant_logits_inputs(dtype=torch.float32))
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)
    assert torch.allclose(loss, reference, rtol=2e-4, atol=2e-3)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_siglip_chunked_low_precision_gradients_are_finite(dtype, precision, fused_siglip):
    """The fp32 loss path should preserve a finite feature gradient under AMP dtypes."""
    generator = torch.Generator().manual_seed(17)
    image = torch.randn(96, 8, generator=generator, dtype=dtype, requires_grad=True)
    text = torch.randn(96, 8, generator=generator, dtype=dtype)
    scale = torch.tensor(10, dtype=dtype)
    bias = torch.tensor(10, dtype=dtype)
    fused = fused_siglip(8, 96)
    with _autocast(precision):
        loss = fused(image, text, scale, bias)
    loss.backward()
    assert torch.isfinite(loss)
    assert image.grad is not None
    assert torch.isfinite(image.grad).all()


# ---------------------------------------------------------------------------- tests/test_factory_loss.py @ 51ed1fb


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("loss_type, fused_class, options", [
    ("clip", FusedClipLoss, dict(local_loss=True, gather_with_grad=True, cache_labels=True)),
    ("siglip", FusedSigLipLoss, dict(dist_impl="gather", chunk_size=2, cache_labels=True)),
])
def test_standalone_loss_matches_constructor_forward_and_backward(loss_type, fused_class, options, precision):
    """The loss with the trainer's options equals open_clip's, value and every gradient, in float64 (which
    autocast leaves alone, so the fp16/bf16 rows must give the same)."""
    generator = torch.Generator().manual_seed(12)
    inputs = dict(
        image_features=torch.randn(3, 4, generator=generator, dtype=torch.float64),
        text_features=torch.randn(3, 4, generator=generator, dtype=torch.float64),
        logit_scale=torch.tensor(2.0, dtype=torch.float64),
    )
    if loss_type == "siglip":
        inputs["logit_bias"] = torch.tensor(-1.0, dtype=torch.float64)

    def run(loss):
        batch = {key: value.clone().requires_grad_(value.is_floating_point()) for key, value in inputs.items()}
        with _autocast(precision):
            losses = loss(**batch, output_dict=True)
        sum(value for key, value in losses.items() if key.endswith("_loss")).backward()
        return losses, {key: value.grad for key, value in batch.items()}

    open_clip_options = {k: v for k, v in options.items() if k != "chunk_size"}  # chunk_size is main-only
    expected, expected_grads = run(open_clip_class(loss_type)(**open_clip_options))
    actual, actual_grads = run(fused_class(**options))
    torch.testing.assert_close(actual, expected)
    torch.testing.assert_close(actual_grads, expected_grads)


# ------------------------------------------------------------------------------ tests/test_grad_accum.py @ 12f8719

ACCUM_FREQ = 4
MICRO_BS = 2


def _tiny_clip():
    from open_clip.model import CLIP

    torch.manual_seed(0)
    return CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=32, layers=2, width=64, patch_size=16),
        text_cfg=dict(context_length=8, vocab_size=64, width=32, heads=2, layers=2),
        output_dict=True,
    ).double()


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("precision", PRECISIONS)
def test_grad_accum_matches_full_batch(precision):
    """open_clip's accumulation: every step computes the loss over the whole effective batch with only that step's
    micro-batch features live; the accumulated gradient equals the full-batch one, with no 1/accum_freq, and
    logit_scale (live on every step) counted once (its gradient taken on the last step only)."""
    model = _tiny_clip()
    loss_fn = FusedClipLoss()
    torch.manual_seed(1)
    images = torch.randn(ACCUM_FREQ * MICRO_BS, 3, 32, 32, dtype=torch.float64)
    texts = torch.randint(1, 60, (ACCUM_FREQ * MICRO_BS, 8))

    model.zero_grad()
    with _autocast(precision):
        out = model(images, texts)
        loss_fn(out["image_features"], out["text_features"], out["logit_scale"]).backward()
    grads_full = _grads(model)

    model.zero_grad()
    micro = [slice(j * MICRO_BS, (j + 1) * MICRO_BS) for j in range(ACCUM_FREQ)]
    with torch.no_grad(), _autocast(precision):
        cached = [model(images[rows], texts[rows]) for rows in micro]
    for j, rows in enumerate(micro):
        with _autocast(precision):
            out = model(images[rows], texts[rows])
            features = {
                key: torch.cat([c[key] for c in cached[:j]] + [out[key]] + [c[key] for c in cached[j + 1:]])
                for key in ("image_features", "text_features")
            }
            scale = out["logit_scale"] if j == ACCUM_FREQ - 1 else out["logit_scale"].detach()
            loss_fn(features["image_features"], features["text_features"], scale).backward()
    grads_accum = _grads(model)

    assert grads_full.keys() == grads_accum.keys()
    for name in grads_full:
        g_full, g_accum = grads_full[name], grads_accum[name]
        ratio = (g_accum.norm() / g_full.norm()).item()
        assert torch.allclose(g_accum, g_full, rtol=1e-9, atol=1e-12), (
            f"{name}: accumulated gradient diverges from full-batch gradient (norm ratio {ratio:.4f})"
        )
