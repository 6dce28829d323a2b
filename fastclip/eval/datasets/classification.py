"""Classification data for zero-shot accuracy: CIFAR-10/100 (torchvision's python pickles), image folders, and the
embedded toy world.

CIFAR is read straight from the pickles that torchvision's CIFAR10/CIFAR100 download and unpack (never downloaded
here): `data` is uint8 (N, 3072) with the R, G and B planes of a 32 x 32 image, row-major; labels are `labels`
(CIFAR-10) or `fine_labels` (CIFAR-100). The files are Python-2 pickles, read with encoding="latin1" by an
unpickler that only rebuilds numpy arrays, lists, dicts and strings, so that a foreign file cannot run code.
Class names are OpenAI's (with spaces, "aquarium fish"), checked against the names in the `meta` file.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from fastclip.eval.datasets.layout import Layout, is_image, quote_some
from fastclip.eval.templates import CIFAR10_CLASSES, CIFAR100_CLASSES, IMAGENET_CLASSES


@dataclass
class ClassificationImages:
    """Decoded images with their labels (CIFAR, the toy world)."""

    name: str
    images: torch.Tensor  # uint8 (N, 3, H, W), or float [0, 1] for the rendered toy world
    labels: torch.Tensor  # long (N,)
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class ClassificationFiles:
    """Image files with their labels (an image folder); decode with datasets.images.decode_images."""

    name: str
    root: Path
    paths: tuple[Path, ...]
    labels: torch.Tensor  # long (N,)
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)


# --------------------------------------------------------------------------------------------------------- CIFAR


@dataclass(frozen=True)
class _CifarFormat:
    folder: str
    files: dict[str, tuple[str, ...]]  # split -> batch files
    label_key: str
    meta_file: str
    names_key: str
    class_names: tuple[str, ...]


CIFAR_FORMATS = {
    "cifar10": _CifarFormat(
        "cifar-10-batches-py", {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
        "labels", "batches.meta", "label_names", CIFAR10_CLASSES,
    ),
    "cifar100": _CifarFormat(
        "cifar-100-python", {"train": ("train",), "test": ("test",)}, "fine_labels", "meta", "fine_label_names",
        CIFAR100_CLASSES,
    ),
}  # fmt: skip

CIFAR_LAYOUT = Layout(
    "CIFAR python",
    "cifar-10-python.tar.gz / cifar-100-python.tar.gz, as torchvision.datasets.CIFAR10/CIFAR100 unpack them",
    """\
  ROOT/                          (torchvision's root=, or the cifar-*-python folder itself)
    cifar-10-batches-py/
      data_batch_1 ... data_batch_5, test_batch, batches.meta
    cifar-100-python/
      train, test, meta
  each a pickle of a dict: data (uint8 N x 3072, R, G, B planes of 32 x 32), labels (CIFAR-10) or
  fine_labels (CIFAR-100); the meta file holds label_names / fine_label_names""",
)

# What a CIFAR pickle may reference: numpy's array rebuilder (under its numpy 1 or numpy 2 module name), ndarray,
# dtype, and codecs.encode (how Python 3 pickles bytes at protocol 2).
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}  # fmt: skip


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and builtin containers only."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR pickle holds only numpy arrays")
        return _numpy_reconstruct() if name == "_reconstruct" else super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    CIFAR_LAYOUT.require_file(path, "CIFAR pickle")
    try:
        with open(path, "rb") as handle:
            content = _ArrayUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise CIFAR_LAYOUT.error(path, f"not a CIFAR python pickle ({exc})") from exc
    if not isinstance(content, dict):
        raise CIFAR_LAYOUT.error(path, f"not a CIFAR python pickle (a {type(content).__name__}, not a dict)")
    return content


def _cifar_folder(root: Path, fmt: _CifarFormat) -> Path:
    root = CIFAR_LAYOUT.require_dir(root, "CIFAR root")
    if root.name == fmt.folder:
        return root
    return CIFAR_LAYOUT.require_dir(root / fmt.folder, f"{fmt.folder} folder")


def load_cifar(root: str | os.PathLike, dataset: str = "cifar100", split: str = "test") -> ClassificationImages:
    """CIFAR-10 or CIFAR-100 (`dataset`), train or test split, as uint8 (N, 3, 32, 32) with OpenAI's class names."""
    if dataset not in CIFAR_FORMATS:
        raise ValueError(f"dataset must be one of {tuple(CIFAR_FORMATS)}, got {dataset!r}")
    fmt = CIFAR_FORMATS[dataset]
    if split not in fmt.files:
        raise ValueError(f"split must be one of {tuple(fmt.files)}, got {split!r}")
    folder = _cifar_folder(Path(root), fmt)
    meta_names = _unpickle(folder / fmt.meta_file).get(fmt.names_key)
    spaced = tuple(str(name).replace("_", " ") for name in meta_names or ())
    if spaced != fmt.class_names:
        raise CIFAR_LAYOUT.error(
            folder / fmt.meta_file, f"its {fmt.names_key} ({quote_some(list(spaced))}) are not the {dataset} classes "
            f"({quote_some(list(fmt.class_names))})"
        )  # fmt: skip
    images, labels = [], []
    for name in fmt.files[split]:
        batch = _unpickle(folder / name)
        if "data" not in batch or fmt.label_key not in batch:
            raise CIFAR_LAYOUT.error(folder / name, f"no data / {fmt.label_key} entries (found {sorted(batch)})")
        data = np.asarray(batch["data"])
        well_formed = data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3 * 32 * 32
        if not well_formed or len(batch[fmt.label_key]) != len(data):
            raise CIFAR_LAYOUT.error(
                folder / name, f"data is {data.dtype} {data.shape} with {len(batch[fmt.label_key])} labels; expected "
                "uint8 (N, 3072) and N labels"
            )  # fmt: skip
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.as_tensor(batch[fmt.label_key], dtype=torch.long))
    labels_all = torch.cat(labels)
    if labels_all.min() < 0 or labels_all.max() >= len(fmt.class_names):
        raise CIFAR_LAYOUT.error(folder, f"labels outside 0..{len(fmt.class_names) - 1}")
    return ClassificationImages(f"{dataset}/{split}", torch.cat(images), labels_all, fmt.class_names)


# --------------------------------------------------------------------------------------------------- image folder

IMAGE_FOLDER_LAYOUT = Layout(
    "image folder",
    "torchvision.datasets.ImageFolder",
    """\
  ROOT/
    <class_a>/xxx.png, nested/yyy.jpg ...    one folder per class; images at any depth below it
    <class_b>/...
  class names: the folder names with "_" read as " ", or OpenAI's ImageNet names for 1,000 WordNet-id folders
  (n01440764 ...)""",
)
WNID = re.compile(r"^n\d{8}$")


def load_image_folder(root: str | os.PathLike, class_names: Sequence[str] | None = None) -> ClassificationFiles:
    """Images in per-class folders (sorted by folder name, as torchvision's ImageFolder labels them)."""
    root = IMAGE_FOLDER_LAYOUT.require_dir(root, "image folder")
    folders = sorted(path for path in root.iterdir() if path.is_dir() and not path.name.startswith("."))
    if not folders:
        raise IMAGE_FOLDER_LAYOUT.error(root, "no class folders in it")
    if class_names is not None:
        names = tuple(class_names)
        if len(names) != len(folders):
            raise ValueError(f"class_names has {len(names)} names for the {len(folders)} class folders of {root}")
    elif len(folders) == len(IMAGENET_CLASSES) and all(WNID.match(folder.name) for folder in folders):
        names = IMAGENET_CLASSES  # sorted WordNet ids are the ImageNet-1k class order
    else:
        names = tuple(folder.name.replace("_", " ") for folder in folders)
    paths, labels, empty = [], [], []
    for label, folder in enumerate(folders):
        images = sorted(path for path in folder.rglob("*") if path.is_file() and is_image(path))
        if not images:
            empty.append(folder.name)
        paths += images
        labels += [label] * len(images)
    if empty:
        raise IMAGE_FOLDER_LAYOUT.error(root, f"{len(empty)} class folder(s) hold no images: {quote_some(empty)}")
    return ClassificationFiles(root.name, root, tuple(paths), torch.tensor(labels, dtype=torch.long), names)


# ------------------------------------------------------------------------------------------------------ toy world

TOYWORLD_SETS = ("heldout", "shape_only", "texture_only")


def load_toyworld(
    kind: str = "heldout", n_per_category: int = 8, *, image_size: int = 64, device: str | torch.device = "cpu"
) -> ClassificationImages:
    """A rendered toy-world evaluation set, labelled by the cue it shows (fastclip.data.toyworld): held-out natural
    images, silhouettes only or textures only; float [0, 1] images on `device`."""
    from fastclip.data import toyworld

    if kind not in TOYWORLD_SETS:
        raise ValueError(f"kind must be one of {TOYWORLD_SETS}, got {kind!r}")
    build = {"heldout": toyworld.heldout_set, "shape_only": toyworld.shape_only_set,
             "texture_only": toyworld.texture_only_set}[kind]  # fmt: skip
    labelled = build(n_per_category, image_size=image_size, device=device)
    return ClassificationImages(f"toyworld_{kind}", labelled.images, labelled.labels, tuple(toyworld.CATEGORIES))
