"""IQA loaders: TID2013 and KADID-10k on their real score files (../shared/data/iqa-meta) with synthetic images
written under the real names into the official layouts, and the generic CSV loader."""

from __future__ import annotations

import io
import math
import shutil

import pytest
import torch
from PIL import Image

from fastclip.eval.datasets.images import decode_images
from fastclip.eval.datasets.iqa_csv import load_iqa_csv
from fastclip.eval.datasets.kadid10k import load_kadid10k
from fastclip.eval.datasets.layout import LayoutError
from fastclip.eval.datasets.tid2013 import canonical_names, load_tid2013
from tests.conftest import shared_data


def _image_bytes(fmt: str, colour=(10, 20, 30)) -> bytes:
    """One tiny image, encoded once and written under every name: the loaders check names, not pixels."""
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), colour).save(buffer, fmt)
    return buffer.getvalue()


def _write(folder, names, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(data)


def _tid_scores():
    folder = shared_data("iqa-meta", "tid2013")
    named = [line.split() for line in (folder / "mos_with_names.txt").read_text().splitlines()]
    mos = [float(line) for line in (folder / "mos.txt").read_text().split()]
    std = [float(line) for line in (folder / "mos_std.txt").read_text().split()]
    return folder, named, mos, std


@pytest.fixture(scope="module")
def tid_root(tmp_path_factory):
    """TID2013 as it unpacks: lower-case distorted names (the score file mixes I01_11_1.BMP, i01_01_2.bmp),
    references I01.BMP ... I24.BMP and i25.bmp, and the three real score files."""
    folder, _, _, _ = _tid_scores()
    root = tmp_path_factory.mktemp("tid") / "tid2013"
    bmp = _image_bytes("BMP")
    _write(root / "distorted_images", canonical_names(), bmp)
    _write(root / "reference_images", [f"I{r:02d}.BMP" for r in range(1, 25)] + ["i25.bmp"], bmp)
    for name in ("mos_with_names.txt", "mos.txt", "mos_std.txt"):
        shutil.copy(folder / name, root / name)
    return root


def test_tid2013_real_score_files_crlf_and_mixed_case(tid_root):
    _, named, mos, std = _tid_scores()
    assert (tid_root / "mos_with_names.txt").read_bytes().count(b"\r\n") == 3000  # the real file is CRLF
    assert sum(name[0] == "I" for _, name in named) == 75 and any(name.endswith(".BMP") for _, name in named)
    pairs = load_tid2013(tid_root)
    assert len(pairs) == 3000 and pairs.higher_is_better and pairs.score_name == "mos"
    assert pairs.scores.dtype == torch.float64 and pairs.scores.tolist() == [float(score) for score, _ in named]
    assert pairs.scores.tolist() == mos and pairs.score_std.tolist() == std
    assert pairs.scores[0].item() == 5.51429 and 0.24 <= pairs.scores.min() and pairs.scores.max() <= 7.22
    # Mixed-case names resolve to the files on disk, each to its own reference.
    assert [path.name for path in pairs.distorted] == canonical_names()
    assert named[50][1] == "I01_11_1.BMP" and pairs.distorted[50].name == "i01_11_1.bmp"
    assert pairs.references[0].name == "I01.BMP" and pairs.references[-1].name == "i25.bmp"
    assert all(d.name[1:3] == r.name[1:3] for d, r in zip(pairs.distorted, pairs.references))
    references, index = pairs.unique_references()
    assert len(references) == 25 and index.tolist() == [k // 120 for k in range(3000)]
    assert torch.equal(pairs.quality_scores, pairs.scores)
    assert decode_images(pairs.distorted[:2]).shape == (2, 3, 3, 4)


def test_tid2013_from_mos_txt_alone_gives_the_same_pairs(tid_root, tmp_path):
    root = tmp_path / "tid2013"
    shutil.copytree(tid_root, root)
    (root / "mos_with_names.txt").unlink()
    (root / "mos_std.txt").unlink()
    from_mos, from_named = load_tid2013(root), load_tid2013(tid_root)
    assert torch.equal(from_mos.scores, from_named.scores) and from_mos.score_std is None
    assert [p.name for p in from_mos.distorted] == [p.name for p in from_named.distorted]


def test_tid2013_layout_errors(tid_root, tmp_path):
    root = tmp_path / "tid2013"
    shutil.copytree(tid_root, root)
    (root / "distorted_images" / "i07_13_4.bmp").unlink()
    with pytest.raises(LayoutError, match=r"1 of the 3000 images listed in .*mos_with_names.txt are missing.*i07_13_4") as caught:
        load_tid2013(root)
    assert "reference_images/" in str(caught.value) and "iRR_DD_L.bmp" in str(caught.value)
    shutil.rmtree(root / "distorted_images")
    with pytest.raises(LayoutError, match=r"distorted_images: no such folder"):
        load_tid2013(root)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LayoutError, match=r"neither mos_with_names.txt nor mos.txt is here"):
        load_tid2013(empty)
    (empty / "mos_with_names.txt").write_text("5.1 i01_01_1.bmp\r\nfive i01_01_2.bmp\r\n")
    with pytest.raises(LayoutError, match=r"line 2: the score 'five' is not a finite number"):
        load_tid2013(empty)
    (empty / "mos_with_names.txt").write_text("5.1 i01_01_1.bmp\r\n5.2 I01_01_1.BMP\r\n")
    with pytest.raises(LayoutError, match=r"names listed twice \(case ignored\): i01_01_1.bmp"):
        load_tid2013(empty)
    (empty / "mos_with_names.txt").write_text("5.1 i26_01_1.bmp\n")
    with pytest.raises(LayoutError, match=r"not TID2013 names.*i26_01_1.bmp"):
        load_tid2013(empty)
    (empty / "mos_with_names.txt").unlink()
    (empty / "mos.txt").write_text("5.1\r\n5.2\r\n")
    with pytest.raises(LayoutError, match=r"mos.txt: 2 values; TID2013's mos.txt has 3000"):
        load_tid2013(empty)


@pytest.fixture(scope="module")
def kadid_root(tmp_path_factory):
    """KADID-10k as it unpacks, with all 10,125 distorted images and 81 references named in the real scores."""
    csv_path = shared_data("iqa-meta", "kadid10k", "dmos_from_iqa_dataset.csv")
    rows = [line.split(",") for line in csv_path.read_text().splitlines()[1:]]
    root = tmp_path_factory.mktemp("kadid") / "kadid10k"
    _write(root / "images", sorted({row[0] for row in rows} | {row[1] for row in rows}), _image_bytes("PNG"))
    return root, csv_path, rows


def test_kadid10k_real_scores_without_var(kadid_root):
    root, csv_path, rows = kadid_root
    assert len(list((root / "images").iterdir())) == 10125 + 81
    pairs = load_kadid10k(root, scores_csv=csv_path)
    assert len(pairs) == 10125 and pairs.higher_is_better and pairs.score_name == "dmos" and pairs.score_std is None
    assert pairs.distorted[0].name == "I01_01_01.png" and pairs.references[0].name == "I01.png"
    assert pairs.scores[0].item() == 4.57 and pairs.scores.tolist() == [float(row[2]) for row in rows]
    assert 1.0 <= pairs.scores.min() and pairs.scores.max() <= 5.0
    assert len(pairs.unique_references()[0]) == 81
    assert decode_images(pairs.distorted[-1:]).shape == (1, 3, 3, 4)


def test_kadid10k_official_dmos_csv_with_var(kadid_root, tmp_path):
    root, _, rows = kadid_root
    copy = tmp_path / "kadid10k"
    (copy / "images").mkdir(parents=True)
    for row in rows[:3]:
        for name in row[:2]:
            shutil.copy(root / "images" / name, copy / "images" / name)
    lines = ["dist_img,ref_img,dmos,var"] + [f"{row[0]},{row[1]},{row[2]},{0.25 * (k + 1)}" for k, row in enumerate(rows[:3])]
    (copy / "dmos.csv").write_text("\r\n".join(lines) + "\r\n")
    pairs = load_kadid10k(copy)
    assert len(pairs) == 3 and pairs.score_std.tolist() == [0.5, math.sqrt(0.5), math.sqrt(0.75)]
    (copy / "dmos.csv").write_text("dist,ref,dmos\nI01_01_01.png,I01.png,4.57\n")
    with pytest.raises(LayoutError, match=r"no column\(s\) \['dist_img', 'ref_img'\]; the header has \['dist', 'ref', 'dmos'\]") as caught:
        load_kadid10k(copy)
    assert "I01_01_01.png ... I81_25_05.png" in str(caught.value)
    (copy / "dmos.csv").write_text("dist_img,ref_img,dmos\nI09_01_01.png,I09.png,4.57\n")
    with pytest.raises(LayoutError, match=r"1 of the 1 images listed in .*dmos.csv are missing \(case ignored\): I09.png"):
        load_kadid10k(copy)
    with pytest.raises(LayoutError, match=r"dmos.csv: no such CSV file"):
        load_kadid10k(tmp_path / "kadid10k" / "images")


def test_generic_iqa_csv_with_stated_direction(tmp_path):
    png = _image_bytes("PNG")
    _write(tmp_path / "ref", ["a.png"], png)
    _write(tmp_path / "dist", ["a_1.png", "a_2.png"], png)
    (tmp_path / "scores.csv").write_text("Reference,Distorted,Score\nref/a.png,dist/a_1.png,1.5\nref/a.png,dist/a_2.png,3\n")
    pairs = load_iqa_csv(tmp_path / "scores.csv", higher_is_better=False)
    assert pairs.name == "scores" and pairs.scores.tolist() == [1.5, 3.0] and not pairs.higher_is_better
    assert pairs.quality_scores.tolist() == [-1.5, -3.0] and pairs.score_name == "Score"
    assert pairs.distorted[1] == tmp_path / "dist" / "a_2.png" and len(pairs.unique_references()[0]) == 1
    (tmp_path / "other.csv").write_text("r,d,mos\nref/a.png,dist/a_1.png,2\n")
    renamed = load_iqa_csv(tmp_path / "other.csv", higher_is_better=True, image_root=tmp_path,
                           columns={"reference": "r", "distorted": "d", "score": "mos"})  # fmt: skip
    assert renamed.scores.tolist() == [2.0] and renamed.score_name == "mos"
    with pytest.raises(ValueError, match="higher_is_better must be True or False"):
        load_iqa_csv(tmp_path / "scores.csv", higher_is_better=None)
    with pytest.raises(LayoutError, match=r"no column\(s\) \['reference', 'distorted', 'score'\]; the header has \['r', 'd', 'mos'\]") as caught:
        load_iqa_csv(tmp_path / "other.csv", higher_is_better=True)
    assert "higher_is_better=True (quality, MOS)" in str(caught.value)
    (tmp_path / "missing.csv").write_text("reference,distorted,score\nref/a.png,dist/a_9.png,2\n")
    with pytest.raises(LayoutError, match=r"1 image\(s\) listed in .*missing.csv are missing: .*dist/a_9.png"):
        load_iqa_csv(tmp_path / "missing.csv", higher_is_better=True)
    (tmp_path / "nan.csv").write_text("reference,distorted,score\nref/a.png,dist/a_1.png,nan\n")
    with pytest.raises(LayoutError, match=r"row 2: the score 'nan' is not a finite number"):
        load_iqa_csv(tmp_path / "nan.csv", higher_is_better=True)
