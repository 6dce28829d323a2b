"""Saliency loaders: the real MIT1003 subset (../shared/data), and MIT1003, CAT2000 (.mat via scipy.io.savemat),
SALICON and generic folders as fixtures; fixation points at native and resized geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from fastclip.eval.datasets.images import ImageDecodeError, decode_images
from fastclip.eval.datasets.layout import LayoutError
from fastclip.eval.datasets.saliency import (
    decode_fixation_maps, decode_fixations, fixation_points, load_cat2000, load_mit1003, load_salicon, load_saliency,
    load_saliency_folders, resize_points,
)  # fmt: skip
from tests.conftest import shared_data

POINTS = [(1, 2), (4, 7), (5, 0)]  # (row, column) in an image of 6 rows x 8 columns


def _image(path, height=6, width=8, value=90, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (width, height), value if mode == "L" else (value, value, value)).save(path)


def _mask(height=6, width=8, points=POINTS) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    for row, column in points:
        mask[row, column] = 1
    return mask


def test_real_mit1003_subset_through_the_generic_loader():
    root = shared_data("mit1003-subset")
    for dataset in (load_saliency(root), load_saliency_folders(root / "stimuli", root / "fixation-maps")):
        assert dataset.name == "mit1003-subset" and len(dataset) == 50 and not dataset.has_fixations
        assert all(entry.image.name == entry.fixation_map.name for entry in dataset.entries)
        assert [entry.name for entry in dataset.entries] == sorted(path.stem for path in (root / "stimuli").iterdir())
    first = dataset.entries[:2]
    maps = decode_fixation_maps(first)
    images = decode_images([entry.image for entry in first])
    assert maps.dtype == torch.uint8 and maps.shape == (2, *images.shape[2:]) and max(images.shape[2:]) == 1024
    assert maps.float().std() > 1  # a real map, not a blank one
    assert decode_fixation_maps(first, 64).shape == (2, 64, 64)
    with pytest.raises(ValueError, match="has no fixation locations"):
        fixation_points(first[0])


def test_mit1003_official_layout_with_fixpts_jpegs(tmp_path):
    root = tmp_path / "MIT1003"
    for stem in ("i1", "i2"):
        _image(root / "ALLSTIMULI" / f"{stem}.jpeg")
        _image(root / "ALLFIXATIONMAPS" / f"{stem}_fixMap.jpg", mode="L")
        Image.fromarray(_mask() * 255).save(root / "ALLFIXATIONMAPS" / f"{stem}_fixPts.jpg", quality=75)
    (root / "ALLSTIMULI" / "Thumbs.db").write_bytes(b"")  # not an image: skipped
    dataset = load_saliency(root)
    assert dataset.name == "mit1003" and [entry.name for entry in dataset.entries] == ["i1", "i2"]
    assert dataset.entries[0].fixations.name == "i1_fixPts.jpg" and dataset.has_fixations
    # JPEG rings around each white pixel; only the fixated pixels stay above mid-grey.
    assert torch.equal(decode_fixations(dataset.entries), torch.from_numpy(_mask()).bool().expand(2, 6, 8))
    (root / "ALLFIXATIONMAPS" / "i2_fixPts.jpg").unlink()
    with pytest.raises(LayoutError, match=r"ALLFIXATIONMAPS: 1 map\(s\) of the stimuli are missing: i2_fixPts.jpg") as caught:
        load_mit1003(root)
    assert "ALLSTIMULI/" in str(caught.value) and "_fixMap.jpg" in str(caught.value)


def _cat2000(base, items):
    for category, stem, points in items:
        _image(base / "Stimuli" / category / f"{stem}.jpg")
        _image(base / "FIXATIONMAPS" / category / f"{stem}.jpg", mode="L")
        (base / "FIXATIONLOCS" / category).mkdir(parents=True, exist_ok=True)
        savemat(base / "FIXATIONLOCS" / category / f"{stem}.mat", {"fixLocs": _mask(points=points).astype(np.float64)})


def test_cat2000_train_set_with_fixlocs_mat(tmp_path):
    base = tmp_path / "CAT2000" / "trainSet"
    _cat2000(base, [("Action", "001", POINTS), ("Action", "002", POINTS[:1]), ("Affective", "001", POINTS[1:])])
    for root in (base, base.parent):
        dataset = load_saliency(root)
        assert dataset.name == "cat2000" and [e.name for e in dataset.entries] == ["Action/001", "Action/002", "Affective/001"]
    points = decode_fixations(dataset.entries)
    assert points.dtype == torch.bool and points.shape == (3, 6, 8)
    assert [sorted(map(tuple, p.nonzero().tolist())) for p in points] == [sorted(POINTS), POINTS[:1], sorted(POINTS[1:])]
    (base / "FIXATIONLOCS" / "Affective" / "001.mat").unlink()
    with pytest.raises(LayoutError, match=r"FIXATIONLOCS/ lacks 1 of them: 001") as caught:
        load_cat2000(base)
    assert "variable fixLocs" in str(caught.value)
    savemat(base / "FIXATIONLOCS" / "Affective" / "001.mat", {"somethingElse": np.zeros((6, 8))})
    with pytest.raises(ImageDecodeError, match=r"001.mat: no fixLocs or gaze variable \(found \['somethingElse'\]\)"):
        decode_fixations(load_cat2000(base).entries)
    savemat(base / "FIXATIONLOCS" / "Affective" / "001.mat", {"fixLocs": np.zeros((5, 8))})
    with pytest.raises(ImageDecodeError, match=r"5x8 fixation locations, but the stimulus .*001.jpg is 6x8"):
        decode_fixations(load_cat2000(base).entries)
    with pytest.raises(LayoutError, match=r"Stimuli folder"):
        load_cat2000(tmp_path)


def _gaze(subjects: list[np.ndarray]) -> np.ndarray:
    """A SALICON `gaze` struct array (one record per observer) as scipy.io.savemat writes MATLAB structs."""
    gaze = np.empty((len(subjects), 1), dtype=[("location", object), ("timestamp", object), ("fixations", object)])
    for index, fixations in enumerate(subjects):
        gaze[index, 0] = (fixations.astype(np.float64), np.arange(len(fixations), dtype=np.float64), fixations.astype(np.float64))
    return gaze


def test_salicon_images_maps_and_gaze_fixations(tmp_path):
    root = tmp_path / "salicon"
    stems = ["COCO_val2014_000000000133", "COCO_val2014_000000000164"]
    for stem in stems:
        _image(root / "images" / "val" / f"{stem}.jpg")
        _image(root / "maps" / "val" / f"{stem}.png", mode="L")
    _image(root / "images" / "train" / "COCO_train2014_000000000009.jpg")
    dataset = load_saliency(root)
    assert dataset.name == "salicon/val" and [e.name for e in dataset.entries] == stems and not dataset.has_fixations
    (root / "fixations" / "val").mkdir(parents=True)
    # 1-based (x, y) rows; (9, 1) and (1, 7) fall outside the 8 x 6 image and are dropped.
    first = np.array([[3, 2], [8, 5], [9, 1]])
    second = np.array([[1, 6], [1, 7]])
    savemat(root / "fixations" / "val" / f"{stems[0]}.mat", {"gaze": _gaze([first, second]), "image": stems[0]})
    savemat(root / "fixations" / "val" / f"{stems[1]}.mat", {"gaze": _gaze([np.zeros((0, 2))])})
    dataset = load_salicon(root, "val")
    assert dataset.has_fixations
    points = decode_fixations(dataset.entries)
    assert sorted(map(tuple, points[0].nonzero().tolist())) == [(1, 2), (4, 7), (5, 0)] and not points[1].any()
    (root / "maps" / "val" / f"{stems[1]}.png").unlink()
    with pytest.raises(LayoutError, match=r"maps/ lacks 1 of them: COCO_val2014_000000000164") as caught:
        load_salicon(root, "val")
    assert "struct array gaze" in str(caught.value)
    with pytest.raises(LayoutError, match=r"maps/train: no such folder"):
        load_salicon(root, "train")
    with pytest.raises(ValueError, match="test split has no public maps"):
        load_salicon(root, "test")


def test_generic_folders_pair_by_stem_and_take_fixation_images(tmp_path):
    _image(tmp_path / "img" / "a.jpg")
    _image(tmp_path / "img" / "b.png")
    _image(tmp_path / "sal" / "a.png", mode="L")
    _image(tmp_path / "sal" / "b.png", mode="L")
    (tmp_path / "fix").mkdir()
    Image.fromarray(_mask() * 255).save(tmp_path / "fix" / "a.png")
    savemat(tmp_path / "fix" / "b.mat", {"fixLocs": _mask(points=POINTS[:2])})
    dataset = load_saliency_folders(tmp_path / "img", tmp_path / "sal", tmp_path / "fix", name="mine")
    assert dataset.name == "mine" and [e.fixation_map.name for e in dataset.entries] == ["a.png", "b.png"]
    assert decode_fixations(dataset.entries).sum(dim=(1, 2)).tolist() == [3, 2]
    (tmp_path / "sal" / "b.png").unlink()
    _image(tmp_path / "sal" / "c.png", mode="L")
    with pytest.raises(LayoutError) as caught:
        load_saliency_folders(tmp_path / "img", tmp_path / "sal")
    message = str(caught.value)
    assert f"{tmp_path / 'sal'}/ lacks 1 of them: b" in message and f"{tmp_path / 'img'}/ lacks 1 of them: c" in message
    assert "IMAGES/a.jpg, b.png" in message
    with pytest.raises(LayoutError, match="must be in different folders"):
        load_saliency_folders(tmp_path / "img", tmp_path / "img")


def test_unrecognised_saliency_folder_prints_every_layout(tmp_path):
    (tmp_path / "pictures").mkdir()
    with pytest.raises(LayoutError) as caught:
        load_saliency(tmp_path)
    message = str(caught.value)
    assert "no saliency layout recognised (folders here: ['pictures/'])" in message
    for name in ("- MIT1003", "- CAT2000", "- SALICON", "- generic saliency folders", "ALLFIXATIONMAPS/", "fixLocs"):
        assert name in message
    with pytest.raises(LayoutError, match="no such folder"):
        load_saliency(tmp_path / "absent")


def test_resize_points_follows_the_image_geometry():
    mask = torch.zeros(6, 10, dtype=torch.bool)
    for row, column in ((0, 0), (5, 9), (2, 4), (4, 6)):
        mask[row, column] = True
    # (h, w): pixel centres scaled by (3/6, 5/10); one pixel each.
    assert sorted(map(tuple, resize_points(mask, (3, 5)).nonzero().tolist())) == [(0, 0), (1, 2), (2, 3), (2, 4)]
    assert resize_points(mask, (12, 20)).sum() == 4
    # int: the shorter side 6 -> 3 (10 -> 5), then a centre crop of 3 columns starting at column 1, as torchvision's
    # Resize(3) + CenterCrop(3) do: (0, 0) and (5, 9) fall outside.
    assert sorted(map(tuple, resize_points(mask, 3).nonzero().tolist())) == [(1, 1), (2, 2)]
    assert torch.equal(resize_points(mask, None), mask)
