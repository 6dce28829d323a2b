"""Classification loaders: CIFAR-10/100 pickles written in torchvision's format, image folders, the toy world."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from fastclip.eval.datasets.classification import load_cifar, load_image_folder, load_toyworld
from fastclip.eval.datasets.layout import LayoutError
from fastclip.eval.templates import CIFAR10_CLASSES, CIFAR100_CLASSES, IMAGENET_CLASSES


def _dump(path, content) -> None:
    with open(path, "wb") as handle:
        pickle.dump(content, handle, protocol=2)


def _batch(count: int, label_key: str, num_classes: int, seed: int) -> tuple[dict, np.ndarray]:
    """A batch as CIFAR's files hold it: uint8 (N, 3072), R, G, B planes of a 32 x 32 image, row-major."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
    data = images.transpose(0, 3, 1, 2).reshape(count, 3072)
    labels = [int(value) for value in rng.integers(0, num_classes, size=count)]
    return {"batch_label": "testing batch", label_key: labels, "data": data,
            "filenames": [f"img_{i}.png" for i in range(count)]}, images  # fmt: skip


def test_cifar100_test_split_from_its_pickles(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    torchvision_names = [name.replace(" ", "_") for name in CIFAR100_CLASSES]  # the meta file's spelling
    assert "aquarium_fish" in torchvision_names and sum("_" in name for name in torchvision_names) == 9
    _dump(folder / "meta", {"fine_label_names": torchvision_names, "coarse_label_names": ["aquatic_mammals"] * 20})
    test, pixels = _batch(5, "fine_labels", 100, seed=0)
    test["coarse_labels"] = [0] * 5
    _dump(folder / "test", test)
    for root in (tmp_path, folder):  # torchvision's root, or the cifar-100-python folder itself
        data = load_cifar(root, "cifar100", "test")
        assert data.name == "cifar100/test" and data.images.shape == (5, 3, 32, 32) and data.images.dtype == torch.uint8
        assert torch.equal(data.images.permute(0, 2, 3, 1), torch.from_numpy(pixels))  # HWC pixels come back
        assert data.labels.tolist() == test["fine_labels"] and data.labels.dtype == torch.long
        assert data.class_names == CIFAR100_CLASSES and data.class_names[1] == "aquarium fish"
    with pytest.raises(LayoutError, match=r"cifar-100-python.train: no such CIFAR pickle") as caught:
        load_cifar(tmp_path, "cifar100", "train")
    assert "fine_labels (CIFAR-100)" in str(caught.value)


def test_cifar10_train_batches_are_concatenated(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    _dump(folder / "batches.meta", {"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": 3})
    expected = []
    for index in range(1, 6):
        batch, pixels = _batch(3, "labels", 10, seed=index)
        _dump(folder / f"data_batch_{index}", batch)
        expected.append((pixels, batch["labels"]))
    data = load_cifar(tmp_path, "cifar10", "train")
    assert data.images.shape == (15, 3, 32, 32) and data.class_names == CIFAR10_CLASSES
    assert torch.equal(data.images.permute(0, 2, 3, 1), torch.from_numpy(np.concatenate([p for p, _ in expected])))
    assert data.labels.tolist() == sum((labels for _, labels in expected), [])


def test_cifar_refuses_foreign_pickles_and_wrong_contents(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    _dump(folder / "batches.meta", {"label_names": list(CIFAR10_CLASSES)})

    class Payload:  # unpickling this would call os.system
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    _dump(folder / "test_batch", Payload())
    with pytest.raises(LayoutError, match=r"test_batch: not a CIFAR python pickle \(refusing to load (posix|nt)\.system"):
        load_cifar(tmp_path, "cifar10")
    _dump(folder / "test_batch", {"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]})
    with pytest.raises(LayoutError, match=r"data is uint8 \(2, 100\) with 2 labels; expected uint8 \(N, 3072\)"):
        load_cifar(tmp_path, "cifar10")
    _dump(folder / "test_batch", {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]})
    with pytest.raises(LayoutError, match=r"labels outside 0..9"):
        load_cifar(tmp_path, "cifar10")
    _dump(folder / "batches.meta", {"label_names": ["cat", "dog"]})
    with pytest.raises(LayoutError, match=r"batches.meta: its label_names \(cat, dog\) are not the cifar10 classes"):
        load_cifar(tmp_path, "cifar10")
    with pytest.raises(LayoutError, match=r"cifar-100-python: no such cifar-100-python folder"):
        load_cifar(tmp_path, "cifar100")
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_cifar(tmp_path, "cifar1000")


def _png(path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (2, 2)).save(path)


def test_image_folder_labels_by_sorted_folder(tmp_path):
    for path in ("sea_lion/a.png", "sea_lion/nested/b.jpg", "cat/c.png"):
        _png(tmp_path / path)
    (tmp_path / "cat" / "notes.txt").write_text("not an image: skipped")
    data = load_image_folder(tmp_path)
    assert data.class_names == ("cat", "sea lion") and data.labels.tolist() == [0, 1, 1]
    assert [path.name for path in data.paths] == ["c.png", "a.png", "b.jpg"]
    assert load_image_folder(tmp_path, class_names=["kitty", "seal"]).class_names == ("kitty", "seal")
    with pytest.raises(ValueError, match="class_names has 1 names for the 2 class folders"):
        load_image_folder(tmp_path, class_names=["kitty"])
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(LayoutError, match=r"1 class folder\(s\) hold no images: empty_class") as caught:
        load_image_folder(tmp_path)
    assert "torchvision.datasets.ImageFolder" in str(caught.value)


def test_image_folder_of_imagenet_wordnet_ids_gets_openai_names(tmp_path):
    wnids = sorted(f"n{index * 7919 % 10**8:08d}" for index in range(1, 1001))
    assert len(set(wnids)) == 1000
    for wnid in wnids:
        (tmp_path / wnid).mkdir()
        (tmp_path / wnid / "x.JPEG").write_bytes(b"")  # listed, not decoded: any image file name counts
    data = load_image_folder(tmp_path)
    assert data.class_names == IMAGENET_CLASSES and data.class_names[404] == "airliner"
    assert data.labels.tolist() == list(range(1000))


def test_toyworld_sets_are_labelled_by_their_cue():
    heldout = load_toyworld("heldout", 2, image_size=32)
    assert heldout.name == "toyworld_heldout" and heldout.images.shape == (32, 3, 32, 32)
    assert heldout.images.dtype == torch.float32 and 0 <= heldout.images.min() and heldout.images.max() <= 1
    assert heldout.labels.tolist() == list(range(16)) * 2 and len(heldout.class_names) == 16
    assert load_toyworld("texture_only", 1, image_size=16).labels.tolist() == list(range(16))
    with pytest.raises(ValueError, match="kind must be one of"):
        load_toyworld("cue_conflict")
