"""The model-vs-human shape-bias rule on hand-computed trials, trials CSVs, and the Geirhos cue-conflict loader."""

from __future__ import annotations

import math

import pytest
import torch

from fastclip.eval.benchmarks.shape_bias import (
    decision_trials, shape_bias_from_trials, shape_bias_from_trials_csv, shape_bias_measurements,
    texture_category_from_imagename,
)  # fmt: skip
from fastclip.eval.datasets.cue_conflict import (
    CueConflictLayoutError, load_cue_conflict_folder, scan_cue_conflict_folder,
)  # fmt: skip
from fastclip.eval.results import ResultsFileError, read_trials_csv, write_trials_csv
from tests.conftest import shared_data

GEIRHOS_CATEGORIES = (
    "airplane", "bear", "bicycle", "bird", "boat", "bottle", "car", "cat",
    "chair", "clock", "dog", "elephant", "keyboard", "knife", "oven", "truck",
)  # fmt: skip

# (imagename, category = shape, object_response) with the decision each counts as.
HAND_TRIALS = [
    ("cat1-dog2.png", "cat", "cat"),  # shape
    ("cat2-dog1.png", "cat", "dog"),  # texture
    ("cat3-cat1.png", "cat", "cat"),  # shape == texture: left out
    ("dog1-cat2.png", "dog", "na"),  # no answer: ignored
    ("dog2-bird1.png", "dog", "dog"),  # shape
    ("dog3-bird2.png", "dog", "car"),  # neither: ignored
    ("0001_s5n_s01_0_bird_00_bird3-cat2.png", "bird", "cat"),  # human raw-data name; texture
    ("bird1-bird2.png", "bird", "bear"),  # shape == texture: left out
]


def _trials(rows=HAND_TRIALS):
    return [{"imagename": name, "category": shape, "object_response": response} for name, shape, response in rows]


def test_texture_parse_follows_model_vs_human():
    assert texture_category_from_imagename("cat1-airplane1.png") == "airplane"
    assert texture_category_from_imagename("0001_s5n_s01_0_bird_00_bird3-bird2.png") == "bird"
    assert texture_category_from_imagename("XXX_dog10-bird2.png") == "bird"
    assert texture_category_from_imagename("fc-tiny_epoch3_knife12-elephant3.png") == "elephant"


def test_shape_bias_hand_computed():
    report = shape_bias_from_trials(_trials())
    pooled = report.pooled
    assert (pooled.trials, pooled.shape_decisions, pooled.texture_decisions) == (8, 2, 2)
    assert pooled.shape_bias == 0.5
    # model-vs-human's fractions divide by all rows, the shape == texture ones included.
    assert pooled.shape_fraction == 2 / 8 and pooled.texture_fraction == 2 / 8
    assert list(report.per_category) == ["bird", "cat", "dog"]
    assert report.per_category["cat"].shape_bias == 0.5
    assert report.per_category["dog"].shape_bias == 1.0
    assert report.per_category["bird"].shape_bias == 0.0

    rows = {(m.metric, m.variant): m for m in shape_bias_measurements(report)}
    assert rows[("shape_bias", "pooled")].value == 0.5 and rows[("shape_bias", "pooled")].n == 4
    assert rows[("shape_bias", "shape_fraction")].n == 8
    assert rows[("shape_bias", "category=dog")].value == 1.0
    low, high = rows[("shape_bias", "pooled")].ci_low, rows[("shape_bias", "pooled")].ci_high
    assert 0 < low < 0.5 < high < 1


def test_shape_bias_without_conflict_decisions_is_nan():
    report = shape_bias_from_trials(_trials([("cat3-cat1.png", "cat", "cat"), ("dog1-cat2.png", "dog", "na")]))
    assert math.isnan(report.pooled.shape_bias)
    assert report.pooled.shape_fraction == 0.0
    with pytest.raises(ValueError, match="no trials"):
        shape_bias_from_trials([])


def test_trials_csv_round_trip_and_human_header(tmp_path):
    names, shapes, responses = zip(*HAND_TRIALS)
    trials = [{**t, "subj": "fc-tiny-vit_epoch3"} for t in decision_trials(list(names), list(shapes), list(responses))]
    write_trials_csv(tmp_path / "model.csv", trials)
    text = (tmp_path / "model.csv").read_text().splitlines()
    assert text[0] == "subj,session,trial,rt,object_response,category,condition,imagename"
    assert text[1] == "fc-tiny-vit_epoch3,1,1,NaN,cat,cat,NaN,cat1-dog2.png"
    assert shape_bias_from_trials_csv(tmp_path / "model.csv") == shape_bias_from_trials(_trials())
    # A human raw-data file (upper-case header as some tools write it); two files pool their trials.
    (tmp_path / "human.csv").write_text(
        "Subj,Session,Trial,RT,Object_Response,Category,Condition,Imagename\n"
        "subject-01,1,1,812,na,cat,0,0001_s5n_s01_0_cat_00_cat1-dog2.png\n"
        "subject-01,1,2,640,dog,cat,0,0002_s5n_s01_0_cat_00_cat2-dog1.png\n"
    )
    both = shape_bias_from_trials_csv(tmp_path / "model.csv", tmp_path / "human.csv").pooled
    assert (both.trials, both.shape_decisions, both.texture_decisions) == (10, 2, 3)
    (tmp_path / "bad.csv").write_text("image,response\nx.png,cat\n")
    with pytest.raises(ResultsFileError, match=r"bad.csv: not a trials CSV.*found \['image', 'response'\]"):
        read_trials_csv(tmp_path / "bad.csv")


def test_geirhos_loader_on_the_real_subset():
    folder = shared_data("texture-vs-shape", "cue-conflict-subset")
    stimuli = load_cue_conflict_folder(folder)
    assert stimuli.images.shape == (160, 3, 224, 224) and stimuli.images.dtype == torch.uint8
    assert stimuli.categories == GEIRHOS_CATEGORIES
    assert {entry.shape for entry in stimuli.entries} == set(GEIRHOS_CATEGORIES)
    assert all(entry.path.parent.name == entry.shape for entry in stimuli.entries)
    assert all(texture_category_from_imagename(entry.name) == entry.texture for entry in stimuli.entries)
    assert sum(entry.shape == entry.texture for entry in stimuli.entries) == 10
    first = stimuli.entries[0]
    assert (first.name, first.shape, first.texture) == ("airplane1-bicycle2.png", "airplane", "bicycle")
    assert stimuli.images.float().std() > 10  # decoded pixels, not a blank tensor


def _expect_layout_error(folder, match):
    with pytest.raises(CueConflictLayoutError, match=match) as caught:
        scan_cue_conflict_folder(folder)
    message = str(caught.value)
    assert str(folder) in message and "airplane1-bicycle2.png" in message and "<shape><i>-<texture><j>.png" in message


def test_layout_errors_name_the_folder_and_print_the_tree(tmp_path):
    _expect_layout_error(tmp_path / "absent", "no such folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    _expect_layout_error(empty, "no cue-conflict images found")
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "cat1-dog2.png").write_bytes(b"")
    _expect_layout_error(flat, "1 images lie directly in it")
    misnamed = tmp_path / "misnamed"
    (misnamed / "cat").mkdir(parents=True)
    (misnamed / "cat" / "dog1-cat2.png").write_bytes(b"")  # a dog shape in the cat folder
    (misnamed / "cat" / "notes.txt").write_text("ignored: not an image")
    _expect_layout_error(misnamed, r"cat/dog1-cat2.png")


def test_undecodable_image_is_named(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "cat1-dog2.png").write_bytes(b"not a png")
    with pytest.raises(CueConflictLayoutError, match=r"cat1-dog2.png: cannot decode the image"):
        load_cue_conflict_folder(tmp_path)
