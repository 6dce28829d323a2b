"""An image folder with one subfolder per class (torchvision's ImageFolder layout) as image-text pairs.

The caption of an image is a template filled with its class name (the folder name, `_` read as a space), e.g.
"a photo of a golden retriever.". Which template a sample gets is drawn from (seed, epoch, file), so it varies
across epochs but not across runs or ranks. Images are found recursively, extensions case-insensitively.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from fastclip.data.sharding import derive_seed, rank_bounds
from fastclip.data.sources import DataSourceError
from fastclip.data.webdataset import IMAGE_EXTENSIONS, RawSample, SkippedSample

# A few of CLIP's ImageNet prompt templates (Radford et al. 2021, notebooks/Prompt_Engineering_for_ImageNet).
CAPTION_TEMPLATES = (
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a low resolution photo of the {}.",
    "a cropped photo of the {}.",
    "a bright photo of a {}.",
    "a close-up photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a good photo of the {}.",
)


def class_caption(classname: str, template: str) -> str:
    return template.format(classname.replace("_", " ").strip())


@dataclass(frozen=True)
class FolderSource:
    root: str
    classnames: tuple[str, ...]
    files: tuple[str, ...]  # relative to root, sorted
    labels: tuple[int, ...]
    templates: tuple[str, ...] = CAPTION_TEMPLATES
    epoch_samples: int | None = None  # --train-num-samples: the epoch budget, else every image

    @property
    def total_count(self) -> int:
        return len(self.files)

    @property
    def num_samples(self) -> int:
        return self.epoch_samples if self.epoch_samples is not None else len(self.files)

    def describe(self) -> str:
        return (f"image folder {self.root}: {len(self.files)} images in {len(self.classnames)} classes; "
                f"epoch = {self.num_samples} samples")

    def caption(self, index: int, seed: int, epoch: int) -> str:
        template = self.templates[derive_seed(seed, epoch, self.files[index]) % len(self.templates)]
        return class_caption(self.classnames[self.labels[index]], template)

    def rank_order(self, *, world_size: int, rank: int, seed: int, epoch: int) -> list[int]:
        """A full permutation from (seed, epoch), the same on every rank, cut into equal contiguous slices
        (random access makes a sample-level shuffle free; memory is one int per image, as ImageFolder's list)."""
        order = list(range(len(self.files)))
        random.Random(derive_seed(seed, epoch, "folder-order")).shuffle(order)
        lo, hi = rank_bounds(len(order), world_size, rank)
        return order[lo:hi]

    def iter_samples(self, indices: Sequence[int], *, seed: int, epoch: int) -> Iterator[RawSample | SkippedSample]:
        root = Path(self.root)
        for index in indices:
            path = root / self.files[index]
            try:
                data = path.read_bytes()
            except OSError:
                yield SkippedSample(str(path), "unreadable_image")
                continue
            yield RawSample(str(path), data, self.caption(index, seed, epoch))


def open_image_folder(root: str, templates: Sequence[str] = CAPTION_TEMPLATES, *,
                      num_samples: int | None = None) -> FolderSource:
    """List `root/<class>/**/<image>`; a missing folder, no class subfolder or no image is an error naming it."""
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataSourceError(f"--train-data {root!r}: no such folder (expected <root>/<class>/<image> files)")
    classes = sorted(entry.name for entry in base.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise DataSourceError(f"{root}: has no class subfolders (expected <root>/<class>/<image> files)")
    files, labels = [], []
    for label, classname in enumerate(classes):
        for path in sorted((base / classname).rglob("*")):
            if path.is_file() and path.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS:
                files.append(str(path.relative_to(base)))
                labels.append(label)
    if not files:
        raise DataSourceError(
            f"{root}: its {len(classes)} class folder(s) hold no images ({', '.join(IMAGE_EXTENSIONS)}, any case)"
        )
    if any("{}" not in template for template in templates):
        raise ValueError("every caption template needs a '{}' for the class name")
    if num_samples is not None and num_samples <= 0:
        raise DataSourceError(f"--train-num-samples must be positive, got {num_samples}")
    return FolderSource(str(base), tuple(classes), tuple(files), tuple(labels), tuple(templates), num_samples)
