"""Geirhos et al.'s texture-shape cue-conflict stimuli, in the layout of texture-vs-shape and model-vs-human.

    DIR/<shape>/<shape><i>-<texture><j>.png      e.g. cat/cat1-airplane1.png

The full set has 16 shape folders x 80 images (224 x 224 RGB PNG); any subset in the same layout loads too.
Images whose shape equals their texture (e.g. airplane10-airplane1.png) are kept here and left out by the
shape-bias rule, as model-vs-human does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from fastclip.eval.datasets.images import ImageDecodeError, decode_images
from fastclip.eval.datasets.layout import Layout, LayoutError

GEIRHOS_FILENAME = re.compile(r"^(?P<shape>[a-z]+)\d+-(?P<texture>[a-z]+)\d+\.(png|jpe?g)$", re.IGNORECASE)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
EXPECTED_LAYOUT = """\
  DIR/
    airplane/
      airplane1-bicycle2.png      <shape><i>-<texture><j>.png; <shape> is the folder's name
      airplane10-airplane1.png    (shape == texture: kept, but left out of the shape bias)
      ...
    bear/
      bear1-airplane3.png
      ...
    ...                           one folder per shape category (the 16 Geirhos categories in the full set)"""


LAYOUT = Layout("Geirhos cue-conflict", "texture-vs-shape, model-vs-human", EXPECTED_LAYOUT)


class CueConflictLayoutError(LayoutError):
    """A folder that is not in the Geirhos cue-conflict layout; the message names it and prints the layout."""


def _layout_error(folder: Path, problem: str) -> CueConflictLayoutError:
    return LAYOUT.error(folder, problem, CueConflictLayoutError)


@dataclass(frozen=True)
class CueConflictEntry:
    path: Path
    shape: str
    texture: str

    @property
    def name(self) -> str:
        return self.path.name


def scan_cue_conflict_folder(folder: str | Path) -> list[CueConflictEntry]:
    """The stimuli of a Geirhos-layout folder, sorted by (shape folder, file name), without decoding them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise _layout_error(folder, "no such folder" if not folder.exists() else "not a folder")
    entries, misnamed = [], []
    for shape_folder in sorted(path for path in folder.iterdir() if path.is_dir()):
        for path in sorted(shape_folder.iterdir()):
            if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            match = GEIRHOS_FILENAME.match(path.name)
            if match is None or match["shape"].lower() != shape_folder.name.lower():
                misnamed.append(path.relative_to(folder))
                continue
            entries.append(CueConflictEntry(path, match["shape"].lower(), match["texture"].lower()))
    if misnamed:
        shown = ", ".join(str(path) for path in misnamed[:5]) + (", ..." if len(misnamed) > 5 else "")
        raise _layout_error(
            folder,
            f"{len(misnamed)} image(s) are not named <shape><i>-<texture><j> inside their shape's folder: {shown}",
        )
    if not entries:
        loose = [path.name for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES]
        hint = f" ({len(loose)} images lie directly in it; they belong in per-shape subfolders)" if loose else ""
        raise _layout_error(folder, f"no cue-conflict images found{hint}")
    return entries


@dataclass
class CueConflictImages:
    root: Path
    entries: list[CueConflictEntry]
    images: torch.Tensor  # uint8 (N, 3, H, W), decoded once, native size
    categories: tuple[str, ...]  # sorted union of the shapes and textures present: the zero-shot classes

    @property
    def names(self) -> list[str]:
        return [entry.name for entry in self.entries]


def load_cue_conflict_folder(folder: str | Path) -> CueConflictImages:
    """Scan and decode a Geirhos-layout folder (RGB uint8; all images must share one size, 224 px for Geirhos')."""
    folder = Path(folder)
    entries = scan_cue_conflict_folder(folder)
    try:
        images = decode_images([entry.path for entry in entries], desc=f"decoding {folder.name}")
    except ImageDecodeError as exc:
        raise CueConflictLayoutError(str(exc)) from exc
    categories = tuple(sorted({entry.shape for entry in entries} | {entry.texture for entry in entries}))
    return CueConflictImages(folder, entries, images, categories)
