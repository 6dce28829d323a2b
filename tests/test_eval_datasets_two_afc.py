"""BAPPS 2AFC and NIGHTS loaders on fixtures in their official layouts, and the 2AFC scoring rule by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fastclip.eval.datasets.bapps import bapps_subsets, load_bapps, load_bapps_subset, two_afc_scores
from fastclip.eval.datasets.layout import LayoutError
from fastclip.eval.datasets.nights import load_nights


def _png(path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (value, value, value)).save(path)


def _bapps(root, subsets: dict[str, list[tuple[str, float]]], split: str = "val"):
    """dataset/2afc/<split>/<subset>/{ref,p0,p1,judge}; written in reverse name order so that creation order
    cannot stand in for pairing by name. Pixel values encode (triplet, role) to check the pairing."""
    for subset, triplets in subsets.items():
        folder = root / "2afc" / split / subset
        for index, (stem, judge) in reversed(list(enumerate(triplets))):
            for offset, role in enumerate(("ref", "p0", "p1")):
                _png(folder / role / f"{stem}.png", 10 * index + offset)
            (folder / "judge").mkdir(parents=True, exist_ok=True)
            np.save(folder / "judge" / f"{stem}.npy", np.array([judge], dtype=np.float32))


def test_two_afc_score_hand_computed_with_ties():
    d_left = torch.tensor([1.0, 2.0, 3.0, 3.0, 0.5])
    d_right = torch.tensor([2.0, 1.0, 3.0, 5.0, 0.5])
    p_right = torch.tensor([0.2, 0.2, 0.7, 1.0, 0.0], dtype=torch.float64)
    # left closer: agree with the 1 - p who chose left; right closer: with the p who chose right; tie: 0.5 always.
    expected = [0.8, 0.2, 0.5, 0.0, 0.5]
    scores = two_afc_scores(d_left, d_right, p_right)
    assert scores.dtype == torch.float64 and torch.allclose(scores, torch.tensor(expected, dtype=torch.float64))
    assert scores.mean().item() == pytest.approx(0.4)
    with pytest.raises(ValueError, match="must be 1-D and of one length"):
        two_afc_scores(d_left, d_right[:3], p_right)


def test_bapps_pairs_by_name_and_reads_judge_fractions(tmp_path):
    root = tmp_path / "dataset"
    _bapps(root, {"cnn": [("000000", 0.0), ("000001", 0.6), ("000007", 1.0)], "traditional": [("000003", 0.4)]})
    assert bapps_subsets(root) == ["cnn", "traditional"]
    subsets = load_bapps(root)
    cnn = subsets["cnn"]
    assert cnn.name == "bapps/val/cnn" and len(cnn) == 3 and len(subsets["traditional"]) == 1
    assert [path.name for path in cnn.references] == ["000000.png", "000001.png", "000007.png"]
    assert [path.parent.name for path in (cnn.references[1], cnn.left[1], cnn.right[1])] == ["ref", "p0", "p1"]
    assert torch.allclose(cnn.p_right, torch.tensor([0.0, 0.6, 1.0], dtype=torch.float64))
    for index in range(3):  # each triplet's files come from the same write
        values = [np.asarray(Image.open(paths[index]))[0, 0, 0] for paths in (cnn.references, cnn.left, cnn.right)]
        assert values == [10 * index, 10 * index + 1, 10 * index + 2]
    # The 2afc folder itself works as the root, and a subset can be chosen.
    assert load_bapps(root / "2afc", subsets=["traditional"])["traditional"].p_right.tolist() == [pytest.approx(0.4)]


def test_bapps_layout_errors(tmp_path):
    root = tmp_path / "dataset"
    _bapps(root, {"cnn": [("000000", 0.5), ("000001", 0.5), ("000002", 0.5)]})
    folder = root / "2afc" / "val" / "cnn"
    (folder / "p1" / "000001.png").unlink()
    _png(folder / "p0" / "000009.png", 0)
    with pytest.raises(LayoutError) as caught:
        load_bapps_subset(root, "val", "cnn")
    message = str(caught.value)
    assert "must hold the same file names" in message and "p1/ lacks 2 of them: 000001, 000009" in message
    assert "ref/ lacks 1 of them: 000009" in message and "judge/000000.npy" in message  # the tree
    (folder / "p0" / "000009.png").unlink()
    _png(folder / "p1" / "000001.png", 0)
    np.save(folder / "judge" / "000002.npy", np.array([1.5]))
    with pytest.raises(LayoutError, match=r"000002.npy: expected one number in \[0, 1\]"):
        load_bapps_subset(root, "val", "cnn")
    np.save(folder / "judge" / "000002.npy", np.array([0.2, 0.3]))
    with pytest.raises(LayoutError, match=r"000002.npy: expected one number in \[0, 1\], found float64 array of shape \(2,\)"):
        load_bapps_subset(root, "val", "cnn")
    (folder / "judge" / "000002.npy").write_bytes(b"not npy")
    with pytest.raises(LayoutError, match=r"000002.npy: cannot read the judgement"):
        load_bapps_subset(root, "val", "cnn")
    with pytest.raises(LayoutError, match=r"2afc/train folder"):
        load_bapps(root, "train")
    with pytest.raises(LayoutError, match=r"subset folder 'deblur'"):
        load_bapps(root, subsets=["deblur"])
    with pytest.raises(ValueError, match="split must be one of"):
        load_bapps(root, "test")


NIGHTS_HEADER = "id,left_vote,right_vote,votes,ref_path,left_path,right_path,prompt,split,is_imagenet"
# (id, left_vote, right_vote, votes, split, is_imagenet)
NIGHTS_ROWS = [
    (0, 1, 0, 6, "train", "False"),
    (1, 0, 1, 7, "val", "False"),
    (2, 1, 0, 5, "val", "False"),  # too few votes: dropped
    (3, 0, 1, 8, "test", "True"),
    (4, 1, 0, 6, "test", "True"),
    (5, 2, 6, 8, "test", "False"),  # counts rather than 0/1: p_right = 6 / 8
]


def _nights(root, rows=NIGHTS_ROWS):
    lines = [NIGHTS_HEADER]
    for id_, left_vote, right_vote, votes, split, imagenet in rows:
        directory, number = f"{id_ // 3:03d}", f"{id_:03d}"
        ref, left, right = f"ref/{directory}/{number}.png", f"distort/{directory}/{number}_0.png", f"distort/{directory}/{number}_1.png"
        for offset, path in enumerate((ref, left, right)):
            _png(root / path, 3 * id_ + offset)
        lines.append(f"{id_},{left_vote},{right_vote},{votes},{ref},{left},{right},an image of a cat,{split},{imagenet}")
    (root / "data.csv").write_text("\n".join(lines) + "\n")


def test_nights_splits_votes_and_targets(tmp_path):
    root = tmp_path / "nights"
    _nights(root)
    expected = {"train": [0], "val": [1], "test_imagenet": [3, 4], "test_no_imagenet": [5], "test": [3, 4, 5],
                "all": [0, 1, 3, 4, 5]}  # fmt: skip
    for split, ids in expected.items():
        triplets = load_nights(root, split)
        assert triplets.name == f"nights/{split}" and len(triplets) == len(ids)
        assert [int(path.stem) for path in triplets.references] == ids
        assert [path.name for path in triplets.left] == [f"{i:03d}_0.png" for i in ids]
        assert [path.name for path in triplets.right] == [f"{i:03d}_1.png" for i in ids]
    assert load_nights(root, "test").p_right.tolist() == [1.0, 0.0, 0.75]
    assert [int(path.stem) for path in load_nights(root, "val", min_votes=5).references] == [1, 2]


def test_nights_layout_errors(tmp_path):
    root = tmp_path / "nights"
    _nights(root)
    (root / "distort" / "001" / "004_1.png").unlink()
    with pytest.raises(LayoutError, match=r"1 image\(s\) listed in data.csv are missing: distort/001/004_1.png") as caught:
        load_nights(root, "test")
    assert "distort/000/000_0.png, 000_1.png" in str(caught.value)
    assert len(load_nights(root, "val")) == 1  # a split that does not use the missing file loads
    (root / "data.csv").write_text("id,left,right,votes,ref_path,left_path,right_path,split,is_imagenet\n")
    with pytest.raises(LayoutError, match=r"no column\(s\) \['left_vote', 'right_vote'\]; the header has"):
        load_nights(root)
    (root / "data.csv").write_text(NIGHTS_HEADER + "\n0,1,0,6,ref/000/000.png,a,b,p,test,maybe\n")
    with pytest.raises(LayoutError, match=r"row 2: is_imagenet is 'maybe'"):
        load_nights(root)
    (root / "data.csv").write_text(NIGHTS_HEADER + "\n0,0,0,6,ref/000/000.png,a,b,p,test,True\n")
    with pytest.raises(LayoutError, match=r"row 2: left_vote 0.0 and right_vote 0.0 give no vote"):
        load_nights(root)
    (root / "data.csv").write_text(NIGHTS_HEADER + "\n0,1,0,6,ref/000/000.png,a,b,p,train,True\n")
    with pytest.raises(LayoutError, match=r"no triplets with votes >= 6 in the split 'test'"):
        load_nights(root)
    with pytest.raises(LayoutError, match=r"data.csv: no such CSV file"):
        load_nights(tmp_path)
    with pytest.raises(ValueError, match="split must be one of"):
        load_nights(root, "validation")
