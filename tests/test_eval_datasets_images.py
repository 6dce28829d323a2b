"""The shared layout error and image decoding of fastclip.eval.datasets (layout.py, images.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fastclip.eval.datasets.cue_conflict import CueConflictLayoutError, scan_cue_conflict_folder
from fastclip.eval.datasets.images import ImageDecodeError, decode_image, decode_images, decode_map, decode_maps
from fastclip.eval.datasets.layout import (
    CaseInsensitiveFolder, Layout, LayoutError, files_by_stem, require_same_stems, unrecognised_layout_error,
)  # fmt: skip
from fastclip.eval.errors import InputError
from tests.conftest import shared_data

TOY = Layout("toy", "a test", "  DIR/\n    a.png   the only file")


def _gradient(height: int, width: int) -> np.ndarray:
    """An RGB image whose pixels tell their position: R = row, G = column, B = 7."""
    rows, columns = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([rows, columns, np.full_like(rows, 7)], axis=-1).astype(np.uint8)


def test_layout_error_names_the_path_the_problem_and_prints_the_tree(tmp_path):
    error = TOY.error(tmp_path / "x", "something is off")
    assert isinstance(error, LayoutError) and isinstance(error, InputError)
    assert str(error) == f"{tmp_path / 'x'}: something is off\nexpected the toy layout (a test):\n  DIR/\n    a.png   the only file"
    with pytest.raises(LayoutError, match="no such folder"):
        TOY.require_dir(tmp_path / "absent")
    (tmp_path / "file").write_text("")
    with pytest.raises(LayoutError, match="not a folder"):
        TOY.require_dir(tmp_path / "file")
    with pytest.raises(LayoutError, match="no such scores file"):
        TOY.require_file(tmp_path / "absent.csv", "scores file")
    several = unrecognised_layout_error(tmp_path, "nothing known", [TOY, Layout("other", "b", "  OTHER/")])
    assert "- toy (a test):\n  DIR/" in str(several) and "- other (b):\n  OTHER/" in str(several)


def test_cue_conflict_errors_use_the_shared_layout_error(tmp_path):
    with pytest.raises(CueConflictLayoutError) as caught:
        scan_cue_conflict_folder(tmp_path / "absent")
    assert isinstance(caught.value, LayoutError)
    assert "expected the Geirhos cue-conflict layout (texture-vs-shape, model-vs-human):" in str(caught.value)


def test_case_insensitive_lookup_and_missing_names(tmp_path):
    for name in ("I01.BMP", "i25.bmp", "i01_11_1.bmp"):
        (tmp_path / name).write_bytes(b"")
    folder = CaseInsensitiveFolder(tmp_path, TOY)
    assert [path.name for path in folder.resolve(["i01.bmp", "I25.BMP", "I01_11_1.BMP"], "list.txt")] == [
        "I01.BMP", "i25.bmp", "i01_11_1.bmp",
    ]  # fmt: skip
    with pytest.raises(LayoutError, match=r"2 of the 3 images listed in list.txt are missing \(case ignored\): a.bmp, b.bmp"):
        folder.resolve(["a.bmp", "i01.bmp", "b.bmp"], "list.txt")


def test_pairing_by_stem_reports_what_each_folder_lacks(tmp_path):
    for role, stems in {"ref": "abc", "p0": "abd", "judge": "ab"}.items():
        (tmp_path / role).mkdir()
        for stem in stems:
            (tmp_path / role / f"{stem}.{'npy' if role == 'judge' else 'png'}").write_bytes(b"")
    by_role = {role: files_by_stem(tmp_path / role, TOY, (".png", ".npy")) for role in ("ref", "p0", "judge")}
    with pytest.raises(LayoutError) as caught:
        require_same_stems(TOY, by_role, tmp_path)
    message = str(caught.value)
    assert "ref/ lacks 1 of them: d" in message and "p0/ lacks 1 of them: c" in message
    assert "judge/ lacks 2 of them: c, d" in message and "DIR/" in message
    (tmp_path / "ref" / "a.jpg").write_bytes(b"")
    with pytest.raises(LayoutError, match="a.jpg and a.png share the name 'a'"):
        files_by_stem(tmp_path / "ref", TOY)


def test_decode_native_resized_and_cropped(tmp_path):
    Image.fromarray(_gradient(6, 10)).save(tmp_path / "a.png")
    Image.fromarray(_gradient(6, 10)[::-1].copy()).save(tmp_path / "b.png")
    native = decode_images([tmp_path / "a.png", tmp_path / "b.png"])
    assert native.shape == (2, 3, 6, 10) and native.dtype == torch.uint8
    assert torch.equal(native[0].permute(1, 2, 0), torch.from_numpy(_gradient(6, 10)))
    assert torch.equal(native[1], native[0].flip(1))
    assert torch.equal(decode_image(tmp_path / "a.png"), native[0])
    # int: the shorter side to 3, then a centre crop, as open_clip's eval transform does.
    from torchvision.transforms import CenterCrop, InterpolationMode, Resize

    expected = CenterCrop(3)(Resize(3, interpolation=InterpolationMode.BICUBIC)(Image.open(tmp_path / "a.png")))
    assert torch.equal(decode_images([tmp_path / "a.png"], 3)[0].permute(1, 2, 0), torch.from_numpy(np.array(expected)))
    assert decode_images([tmp_path / "a.png"], (4, 5)).shape == (1, 3, 4, 5)
    grey = decode_maps([tmp_path / "a.png"])
    assert grey.shape == (1, 6, 10) and torch.equal(grey[0], decode_map(tmp_path / "a.png"))
    assert torch.equal(grey[0], torch.from_numpy(np.array(Image.open(tmp_path / "a.png").convert("L"))))


def test_decode_errors_name_the_file(tmp_path):
    Image.fromarray(_gradient(6, 10)).save(tmp_path / "a.png")
    Image.fromarray(_gradient(5, 10)).save(tmp_path / "small.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageDecodeError, match=r"broken.png: cannot decode the image"):
        decode_images([tmp_path / "a.png", tmp_path / "broken.png"])
    with pytest.raises(ImageDecodeError, match=r"absent.png: no such file"):
        decode_images([tmp_path / "absent.png"])
    with pytest.raises(ImageDecodeError, match=r"small.png: 5x10 pixels, but .*a.png has 6x10.*pass size="):
        decode_images([tmp_path / "a.png", tmp_path / "small.png"])
    assert decode_images([tmp_path / "a.png", tmp_path / "small.png"], 4).shape == (2, 3, 4, 4)
    for bad in (0, -1, (3,), (2, 0), 2.5, True):
        with pytest.raises(ValueError, match="size must be"):
            decode_images([tmp_path / "a.png"], bad)


def test_decode_real_cue_conflict_subset_matches_pil():
    folder = shared_data("texture-vs-shape", "cue-conflict-subset")
    paths = sorted((folder / "cat").glob("*.png"))[:4]
    images = decode_images(paths)
    assert images.shape == (4, 3, 224, 224)
    assert torch.equal(images[2].permute(1, 2, 0), torch.from_numpy(np.array(Image.open(paths[2]).convert("RGB"))))
