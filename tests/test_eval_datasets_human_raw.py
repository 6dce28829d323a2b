"""The human shape-bias reference from model-vs-human raw-data CSVs: hand-computed fixtures, and the 10 real
observers when FASTCLIP_HUMAN_RAW_DATA names their folder (model-vs-human raw-data/cue-conflict, or
texture-vs-shape raw-data/style-transfer-512-nomask-experiment; not shipped: the data is not ours to commit)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from fastclip.eval.datasets.human_raw import human_shape_bias, scan_human_raw_data
from fastclip.eval.datasets.layout import LayoutError

HEADER = "subj,session,trial,rt,object_response,category,condition,imagename"

# (shape, texture, response) per trial; the decision each counts as, by the model-vs-human rule.
SUBJECT_01 = [
    ("bird", "dog", "bird"),  # shape
    ("cat", "car", "car"),  # texture
    ("dog", "dog", "dog"),  # shape == texture: left out
    ("knife", "bear", "na"),  # no answer: ignored
    ("boat", "clock", "oven"),  # neither: ignored
    ("oven", "cat", "oven"),  # shape
]  # shape 2, texture 1
SUBJECT_02 = [
    ("bird", "dog", "dog"),  # texture
    ("cat", "car", "cat"),  # shape
    ("knife", "bear", "knife"),  # shape
    ("clock", "clock", "bear"),  # shape == texture: left out
    ("truck", "bird", "na"),  # ignored
    ("oven", "cat", "cat"),  # texture
]  # shape 2, texture 2


def _write_subject(folder: Path, name: str, subject: str, trials) -> None:
    lines = [HEADER]
    for index, (shape, texture, response) in enumerate(trials, start=1):
        rt = "NaN" if response == "na" else "0.8"
        lines.append(f"{subject},1,{index},{rt},{response},{shape},0,"
                     f"{index:04d}_s5n_{subject[-3:]}_0_{shape}_00_{shape}3-{texture}2.png")  # fmt: skip
    (folder / name).write_text("\n".join(lines) + "\n")


@pytest.fixture
def raw_folder(tmp_path):
    folder = tmp_path / "raw-data" / "cue-conflict"
    folder.mkdir(parents=True)
    _write_subject(folder, "cue-conflict_subject-02_session_1.csv", "subject-02", SUBJECT_02)
    _write_subject(folder, "cue-conflict_subject-01_session_1.csv", "subject-01", SUBJECT_01)
    # A model's file beside them, as in model-vs-human: not an observer, so not part of the human reference.
    _write_subject(folder, "cue-conflict_resnet50_session-1.csv", "resnet50", [("bird", "dog", "dog")] * 5)
    return folder


def test_human_reference_hand_computed(raw_folder):
    files = scan_human_raw_data(raw_folder)
    assert [(f.dataset, f.subject, f.session) for f in files] == [("cue-conflict", "subject-01", 1), ("cue-conflict", "subject-02", 1)]
    human = human_shape_bias(raw_folder)
    assert human.subject_shape_biases == {"subject-01": 2 / 3, "subject-02": 0.5}
    pooled = human.pooled.pooled
    assert (pooled.trials, pooled.shape_decisions, pooled.texture_decisions) == (12, 4, 3)
    assert pooled.shape_bias == 4 / 7
    per_category = {name: score.shape_bias for name, score in human.pooled.per_category.items()}
    assert per_category["bird"] == per_category["cat"] == per_category["oven"] == 0.5 and per_category["knife"] == 1.0
    assert all(math.isnan(per_category[name]) for name in ("dog", "clock", "boat", "truck"))


def test_human_raw_data_layout_errors(tmp_path, raw_folder):
    with pytest.raises(LayoutError, match="no such folder") as caught:
        human_shape_bias(tmp_path / "absent")
    assert "cue-conflict_subject-01_session_1.csv" in str(caught.value)
    models_only = tmp_path / "models"
    models_only.mkdir()
    (models_only / "cue-conflict_resnet50_session-1.csv").write_text(HEADER + "\n")
    with pytest.raises(LayoutError, match=r"no observer CSVs .*the CSVs found are not observers': cue-conflict_resnet50"):
        human_shape_bias(models_only)
    (raw_folder / "edge_subject-01_session_1.csv").write_text(HEADER + "\n")
    with pytest.raises(LayoutError, match=r"observer CSVs of several datasets \['cue-conflict', 'edge'\]; pass dataset="):
        human_shape_bias(raw_folder)
    assert human_shape_bias(raw_folder, dataset="cue-conflict").pooled.pooled.shape_bias == 4 / 7
    with pytest.raises(LayoutError, match=r"edge_subject-01_session_1.csv: no trials in this file"):
        human_shape_bias(raw_folder, dataset="edge")
    (raw_folder / "edge_subject-01_session_1.csv").write_text("subj,answer\nsubject-01,cat\n")
    with pytest.raises(LayoutError, match=r"edge_subject-01_session_1.csv: not a trials CSV: columns"):
        human_shape_bias(raw_folder, dataset="edge")


REAL_RAW_DATA = os.environ.get("FASTCLIP_HUMAN_RAW_DATA")


@pytest.mark.skipif(
    not (REAL_RAW_DATA and Path(REAL_RAW_DATA).is_dir()),
    reason="set FASTCLIP_HUMAN_RAW_DATA to model-vs-human's raw-data/cue-conflict folder to check the real observers",
)
def test_real_observers_pool_to_0959():
    """Geirhos et al.'s ten observers: pooled shape bias 0.959, per observer 0.919-0.987 (reference/eval.md §1)."""
    human = human_shape_bias(REAL_RAW_DATA)
    assert len(human.per_subject) == 10 and all(report.pooled.trials == 1280 for report in human.per_subject.values())
    assert round(human.pooled.pooled.shape_bias, 3) == 0.959
    biases = human.subject_shape_biases.values()
    assert round(min(biases), 3) == 0.919 and round(max(biases), 3) == 0.987
