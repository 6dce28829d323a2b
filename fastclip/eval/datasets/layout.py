"""The layout error every loader raises, and the path checks the loaders share.

A user points fastclip-eval at a dataset as it lies on their disk. When the folder is not in the official layout the
loader expects, the error names the path, says what is wrong, and prints the expected tree, so that the user can see
at once whether they pointed at the wrong level or their copy is incomplete.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from fastclip.eval.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_SHOWN = 5  # offending names quoted in a message; the rest are counted


class LayoutError(InputError):
    """A path that is not in the layout a loader reads; the message names it and prints the expected tree."""


@dataclass(frozen=True)
class Layout:
    """The official on-disk layout of one dataset: its name, where it comes from, and the tree a loader expects."""

    name: str  # e.g. "TID2013"
    source: str  # where this layout comes from, e.g. "tid2013.rar from ponomarenko.info"
    tree: str  # the expected tree, indented by two spaces

    def error(self, path: str | os.PathLike, problem: str, error_class: type[LayoutError] = LayoutError):
        return error_class(f"{path}: {problem}\nexpected the {self.name} layout ({self.source}):\n{self.tree}")

    def require_dir(self, path: str | os.PathLike, what: str = "folder") -> Path:
        path = Path(path)
        if not path.is_dir():
            raise self.error(path, f"no such {what}" if not path.exists() else f"not a folder (expected the {what})")
        return path

    def require_file(self, path: str | os.PathLike, what: str = "file") -> Path:
        path = Path(path)
        if not path.is_file():
            raise self.error(path, f"no such {what}" if not path.exists() else f"not a file (expected the {what})")
        return path


def unrecognised_layout_error(path: str | os.PathLike, problem: str, layouts: Sequence[Layout]) -> LayoutError:
    """For a loader that recognises one of several layouts: the error prints every tree it accepts."""
    trees = "\n".join(f"- {layout.name} ({layout.source}):\n{layout.tree}" for layout in layouts)
    return LayoutError(f"{path}: {problem}\nexpected one of these layouts:\n{trees}")


def quote_some(names: Sequence) -> str:
    """The first few names, comma-separated, with ', ...' when there are more."""
    return ", ".join(str(name) for name in names[:_SHOWN]) + (", ..." if len(names) > _SHOWN else "")


def is_image(path: Path) -> bool:
    """An image file by its suffix; hidden files (macOS ._x.jpg) and others (Thumbs.db) are not."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


class CaseInsensitiveFolder:
    """File names of one folder, looked up without regard to case (TID2013 mixes I01.BMP, i25.bmp, I01_11_1.BMP)."""

    def __init__(self, folder: Path, layout: Layout):
        self.folder = layout.require_dir(folder)
        self.layout = layout
        self._by_lower: dict[str, Path] = {}
        for entry in os.scandir(folder):
            previous = self._by_lower.setdefault(entry.name.lower(), Path(entry.path))
            if previous.name != entry.name:
                raise layout.error(
                    folder, f"{previous.name} and {entry.name} differ only in case; keep one of them"
                )

    def resolve(self, names: Iterable[str], listed_in: str | os.PathLike) -> list[Path]:
        """The files with these names, case ignored; a layout error counts and quotes the missing ones."""
        names = list(names)
        found = [self._by_lower.get(name.lower()) for name in names]
        missing = [name for name, path in zip(names, found) if path is None]
        if missing:
            raise self.layout.error(
                self.folder, f"{len(missing)} of the {len(names)} images listed in {listed_in} are missing "
                f"(case ignored): {quote_some(missing)}"
            )  # fmt: skip
        return found  # type: ignore[return-value]


def files_by_stem(folder: Path, layout: Layout, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> dict[str, Path]:
    """{stem: path} of the files in `folder` with one of `suffixes`; two files sharing a stem are an error."""
    layout.require_dir(folder)
    by_stem: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in suffixes or not path.is_file():
            continue
        previous = by_stem.setdefault(path.stem, path)
        if previous != path:
            raise layout.error(folder, f"{previous.name} and {path.name} share the name {path.stem!r}; keep one")
    return by_stem


def require_same_stems(layout: Layout, folders: dict[str, dict[str, Path]], where: Path) -> list[str]:
    """Sorted stems present in every folder; a layout error names the stems each folder lacks.

    `folders` maps a folder's role (e.g. "ref", "p0") to {stem: path}. Pairing by name, not by position, is what
    makes a missing or extra file an error instead of a silent shift of every later pair.
    """
    union = set().union(*(stems.keys() for stems in folders.values()))
    problems = []
    for role, stems in folders.items():
        lacking = sorted(union - stems.keys())
        if lacking:
            problems.append(f"{role}/ lacks {len(lacking)} of them: {quote_some(lacking)}")
    if problems:
        raise layout.error(
            where, f"the folders {', '.join(f'{role}/' for role in folders)} must hold the same file names; "
            + "; ".join(problems)
        )  # fmt: skip
    return sorted(union)
