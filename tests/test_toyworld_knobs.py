"""The toy world's knobs: cue predictivity and decodability, caption noise, presets, flags, params and checkpoints."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fastclip.data.toyworld import (
    NUM_CATEGORIES,
    ToyWorldData,
    heldout_set,
    natural_cue_labels,
    occlude,
    occluder_boxes,
    scenes_for_indices,
)
from fastclip.data.toyworld_knobs import KNOB_NAMES, PRESETS, WorldKnobs, knobs_from_dict, resolve_knobs
from fastclip.models import load_checkpoint
from fastclip.train.cli import main
from fastclip.train.config import parse_args, resolve_defaults

SAMPLE = 32_000


def within_binomial_error(hits: torch.Tensor, p: float) -> None:
    """The share of hits is p within 4.5 standard errors (a false alarm about once in 150,000 runs)."""
    n = hits.numel()
    share = hits.double().mean().item()
    assert abs(share - p) <= 4.5 * math.sqrt(p * (1 - p) / n) + 1e-12, (share, p)


@pytest.mark.parametrize("p", [0.0, 0.25, 0.6, 1.0])
def test_texture_predictivity_is_the_share_of_images_whose_texture_is_the_captions_category(p):
    world = WorldKnobs(texture_predictivity=p)
    ids = torch.arange(SAMPLE)
    caption, shape, texture = natural_cue_labels(ids, seed=7, world=world)
    assert torch.equal(caption, ids % NUM_CATEGORIES) and torch.equal(shape, caption)
    within_binomial_error(texture == caption, p)
    # The other textures spread evenly over the 15 other categories.
    offsets = (texture - caption)[texture != caption] % NUM_CATEGORIES
    if offsets.numel():
        counts = torch.bincount(offsets, minlength=NUM_CATEGORIES)[1:].double()
        expected = offsets.numel() / (NUM_CATEGORIES - 1)
        chi_square = float(((counts - expected) ** 2 / expected).sum())
        assert chi_square < 45  # 14 degrees of freedom: p < 1e-4 for a fair draw


@pytest.mark.parametrize("p", [0.3, 0.9])
def test_shape_predictivity_and_caption_noise(p):
    world = WorldKnobs(shape_predictivity=p, caption_noise=1 - p)
    ids = torch.arange(SAMPLE)
    caption, shape, texture = natural_cue_labels(ids, seed=3, world=world)
    category = ids % NUM_CATEGORIES
    within_binomial_error(shape == category, p)
    within_binomial_error(caption == category, p)
    assert torch.equal(texture, category)
    # The draws of the two cues and of the caption are independent of each other.
    both = (shape == category) & (caption == category)
    within_binomial_error(both, p * p)


def test_scenes_follow_the_cue_labels_and_differ_only_in_the_knobs_fields():
    ids = torch.arange(4000)
    world = WorldKnobs(texture_predictivity=0.5, shape_predictivity=0.7)
    plain = scenes_for_indices(ids, seed=1)
    knobbed = scenes_for_indices(ids, seed=1, world=world)
    _, shape, texture = natural_cue_labels(ids, seed=1, world=world)
    assert torch.equal(knobbed.shape_id, shape) and torch.equal(knobbed.texture_id, texture)
    for name in ("center", "scale", "rotation", "texture_colors", "background_color", "texture_phase"):
        assert torch.equal(getattr(plain, name), getattr(knobbed, name)), name


def test_the_cue_equal_preset_is_the_world_of_the_evaluation_sets():
    assert PRESETS["cue-equal"] == WorldKnobs()
    ids = torch.arange(256)
    plain, equal = scenes_for_indices(ids, seed=4), scenes_for_indices(ids, seed=4, world=PRESETS["cue-equal"])
    assert torch.equal(plain.texture_id, equal.texture_id) and torch.equal(plain.scale, equal.scale)
    assert torch.equal(plain.shape_id, ids % NUM_CATEGORIES) and torch.equal(plain.texture_id, ids % NUM_CATEGORIES)


def test_paper_preset_makes_texture_less_predictive_than_shape():
    paper = PRESETS["paper"]
    assert paper.texture_predictivity < paper.shape_predictivity
    assert 1 / NUM_CATEGORIES < paper.texture_predictivity  # texture still carries information


def test_scenes_do_not_depend_on_the_batch_split():
    world = WorldKnobs(texture_predictivity=0.4, shape_predictivity=0.8, texture_contrast=0.5, occlusion=0.3,
                       caption_noise=0.2, shape_scale_min=0.2, shape_scale_max=0.5)  # fmt: skip
    data = ToyWorldData(96, image_size=16, seed=11, world=world)
    ids = data.sample_ids(0, 8, rank=0, world_size=1).flatten()
    whole_images, whole_captions, _ = data.render(ids)
    pieces = [data.render(part) for part in ids.split(5)]
    assert torch.equal(torch.cat([images for images, _, _ in pieces]), whole_images)
    assert [c for _, captions, _ in pieces for c in captions] == whole_captions
    # Two ranks of a 2-process run render disjoint halves of the same scenes.
    rank_ids = [data.sample_ids(0, 8, rank=r, world_size=2).flatten() for r in range(2)]
    for rank in rank_ids:
        images, captions, _ = data.render(rank)
        positions = [ids.tolist().index(i) for i in rank.tolist()]
        assert torch.equal(images, whole_images[positions])
        assert captions == [whole_captions[k] for k in positions]


def test_texture_contrast_scales_the_colour_difference_about_its_midpoint():
    ids = torch.arange(500)
    full = scenes_for_indices(ids, seed=2).texture_colors
    faint = scenes_for_indices(ids, seed=2, world=WorldKnobs(texture_contrast=0.25)).texture_colors
    torch.testing.assert_close(faint[:, 0] - faint[:, 1], 0.25 * (full[:, 0] - full[:, 1]))
    torch.testing.assert_close(faint.mean(1), full.mean(1))


def test_shape_scale_range_bounds_the_silhouettes():
    scale = scenes_for_indices(torch.arange(4000), seed=2, world=WorldKnobs(shape_scale_min=0.2,
                                                                           shape_scale_max=0.3)).scale
    assert scale.min() >= 0.2 and scale.max() < 0.3 and scale.max() - scale.min() > 0.09


def test_occlusion_paints_a_square_of_background_over_the_silhouette():
    world = WorldKnobs(occlusion=0.5)
    data = ToyWorldData(64, image_size=32, seed=3, world=world)
    plain = ToyWorldData(64, image_size=32, seed=3)
    ids = torch.arange(16)
    occluded, _, _ = data.render(ids)
    clear, _, _ = plain.render(ids)
    params = scenes_for_indices(ids, seed=3, world=world)
    boxes = occluder_boxes(ids, params, seed=3, world=world)
    assert torch.allclose(boxes[:, 2], 0.5 * params.scale)  # half side = occlusion x radius
    changed = (occluded != clear).any(1)  # (N, S, S)
    painted = occlude(clear.clone(), boxes, params.background_color)
    assert torch.equal(painted, occluded)
    # About (occlusion x diameter)^2 of image area, i.e. side^2 pixels in a 32-pixel image, minus what leaves it.
    side_px = (2 * boxes[:, 2]) * 16
    assert (changed.flatten(1).sum(1) <= (side_px + 2) ** 2).all()
    assert changed.flatten(1).sum(1).float().mean() > 0.3 * (side_px**2).mean()
    flat = occluded.permute(0, 2, 3, 1)[changed]
    owners = changed.nonzero()[:, 0]
    assert torch.equal(flat, params.background_color[owners])


def test_evaluation_sets_ignore_the_training_world():
    with pytest.raises(ValueError, match="natural scenes only"):
        scenes_for_indices(torch.arange(4), seed=0, kind="cue_conflict", world=WorldKnobs())
    held = heldout_set(2, image_size=8)
    assert torch.equal(held.shape_labels, held.texture_labels)


@pytest.mark.parametrize(
    ("knob", "value", "flag"),
    [
        ("texture_predictivity", 1.5, "--texture-predictivity"),
        ("shape_predictivity", -0.1, "--shape-predictivity"),
        ("texture_contrast", 0.0, "--texture-contrast"),
        ("shape_scale_min", 0.05, "--shape-scale-min"),
        ("shape_scale_max", 0.95, "--shape-scale-max"),
        ("occlusion", 0.9, "--occlusion"),
        ("caption_noise", 1.0, "--caption-noise"),
        ("texture_predictivity", float("nan"), "--texture-predictivity"),
    ],
)
def test_out_of_range_knobs_name_their_flag(knob, value, flag):
    with pytest.raises(ValueError, match=flag):
        resolve_knobs("paper", {knob: value})
    args = parse_args([flag, str(value)])
    with pytest.raises(ValueError, match=flag):
        resolve_defaults(args, device_type="cpu")


def test_scale_bounds_must_be_ordered_and_presets_known():
    with pytest.raises(ValueError, match="--shape-scale-min"):
        WorldKnobs(shape_scale_min=0.6, shape_scale_max=0.5)
    with pytest.raises(ValueError, match="--toyworld-preset"):
        resolve_knobs("natural", {})
    with pytest.raises(ValueError, match="params.json: unknown"):
        knobs_from_dict({"texture_predictivity": 0.5, "colour": 1}, source="params.json")
    assert knobs_from_dict(PRESETS["paper"].as_dict(), source="x") == PRESETS["paper"]


def test_cli_reports_a_bad_knob_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        main(["--logs", str(tmp_path), "--name", "bad", "--texture-predictivity", "2"])
    message = str(raised.value)
    assert message.startswith("fastclip-train: error: --texture-predictivity must lie in [0, 1], got 2")
    assert "\n" not in message and not (tmp_path / "bad").exists()


def test_params_and_checkpoints_record_the_world(tmp_path):
    flags = ["--train-num-samples", "32", "--batch-size", "16", "--epochs", "1", "--logs", str(tmp_path), "--name",
             "w", "--toyworld-preset", "paper", "--texture-predictivity", "0.3", "--caption-noise", "0.1"]
    assert main(flags) == 0
    expected = resolve_knobs("paper", {"texture_predictivity": 0.3, "caption_noise": 0.1}).as_dict()
    params = json.loads((tmp_path / "w" / "params.json").read_text())
    assert params["toyworld_preset"] == "paper"
    assert {name: params[name] for name in KNOB_NAMES} == expected
    assert load_checkpoint(tmp_path / "w" / "checkpoints" / "epoch_1.pt")["toyworld"] == expected
