"""Saliency maps of a tiny ViT and a tiny ResNet: the written-out attention forward equals open_clip's, rollout rows
sum to 1 (with the row normalisation jacobgil/vit-explain gets wrong), map shapes, Chefer relevance from gradients,
Grad-CAM; and shuffled-AUC negatives rescaled across image sizes."""

from __future__ import annotations

import torch

from fastclip.eval.benchmarks.saliency import other_fixations
from fastclip.eval.saliency_maps import (
    cls_attention, gradcam, relevance_matrix, rollout_matrix, tower_kind, vit_forward, vit_maps,
)  # fmt: skip
from fastclip.models import create_model

TINY_RESNET = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _vit():
    torch.manual_seed(0)
    bundle = create_model("fc-tiny-vit")
    bundle.model.eval()
    return bundle


def test_written_out_attention_forward_equals_open_clip():
    bundle = _vit()
    images = torch.randn(3, 3, 64, 64)
    embedding, attentions = vit_forward(bundle.model.visual, images)
    with torch.no_grad():
        torch.testing.assert_close(embedding, bundle.model.encode_image(images), atol=1e-5, rtol=1e-4)
    grid = bundle.model.visual.grid_size
    assert len(attentions) == 3 and attentions[0].shape == (3, 4, 1 + grid[0] * grid[1], 1 + grid[0] * grid[1])
    torch.testing.assert_close(attentions[-1].sum(-1), torch.ones(3, 4, 65))


def test_rollout_rows_sum_to_one_and_follow_the_recursion():
    torch.manual_seed(1)
    attentions = [torch.rand(2, 3, 5, 5).softmax(-1) for _ in range(3)]
    rolled = rollout_matrix(attentions)
    torch.testing.assert_close(rolled.sum(-1), torch.ones(2, 5, dtype=torch.float64))
    expected = torch.eye(5, dtype=torch.float64).expand(2, 5, 5)
    for a in attentions:
        step = (a.mean(1).double() + torch.eye(5, dtype=torch.float64)) / 2
        expected = (step / step.sum(-1, keepdim=True)) @ expected
    torch.testing.assert_close(rolled, expected)
    # Max-fused heads do not sum to 1; the keepdim normalisation still gives stochastic rows (vit-explain's
    # `a / a.sum(dim=-1)` divides column j by row j's sum instead).
    fused = attentions[0][0].amax(0).double() + torch.eye(5, dtype=torch.float64)
    assert not torch.allclose((fused / fused.sum(-1)).sum(-1), torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close((fused / fused.sum(-1, keepdim=True)).sum(-1), torch.ones(5, dtype=torch.float64))


def test_relevance_accumulates_positive_gradient_weighted_attention():
    attention = torch.tensor([[[[0.5, 0.5], [0.25, 0.75]]]])  # (B=1, heads=1, T=2, T=2)
    gradient = torch.tensor([[[[2.0, -1.0], [0.0, 4.0]]]])
    relevance = relevance_matrix([attention], [gradient])
    cam = torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=torch.float64)  # clamp(grad * attn, min=0)
    torch.testing.assert_close(relevance[0], torch.eye(2, dtype=torch.float64) + cam)


def test_vit_maps_shapes_and_cls_attention():
    bundle = _vit()
    images = torch.randn(2, 3, 64, 64)
    maps = vit_maps(bundle.model, bundle.tokenizer, images, ("cls_attention", "rollout", "relevance"), text="a photo.")
    assert tower_kind(bundle.model) == "vit"
    for method, values in maps.items():
        assert values.shape == (2, 8, 8) and torch.isfinite(values).all(), method
    _, attentions = vit_forward(bundle.model.visual, images)
    torch.testing.assert_close(maps["cls_attention"], cls_attention(bundle.model.visual, attentions).detach())
    assert (maps["relevance"] >= 0).all() and maps["relevance"].sum() > 0
    assert not any(p.grad is not None for p in bundle.model.parameters())  # only the attention's gradient is taken


def test_gradcam_on_a_tiny_resnet():
    torch.manual_seed(0)
    bundle = create_model("fc-test-tiny-rn", model_cfg=TINY_RESNET)
    bundle.model.eval()
    assert tower_kind(bundle.model) == "resnet"
    cam = gradcam(bundle.model, bundle.tokenizer, torch.randn(2, 3, 64, 64), text="a photo.")
    assert cam.shape == (2, 2, 2) and (cam >= 0).all()


def test_other_fixations_are_rescaled_to_each_image():
    small = torch.zeros(4, 4, dtype=torch.bool)
    small[1, 2] = True
    large = torch.zeros(8, 12, dtype=torch.bool)
    large[7, 0] = True
    union = other_fixations([small, large], seed=0, num_other=1)
    assert union[0].shape == (4, 4) and union[0].nonzero().tolist() == [[3, 0]]  # (7.5/8*4, 0.5/12*4)
    assert union[1].shape == (8, 12) and union[1].nonzero().tolist() == [[3, 7]]  # (1.5*2, 2.5*3)
