"""BAPPS 2AFC (Zhang et al. 2018, PerceptualSimilarity) in its official layout, and the 2AFC triplets it shares
with NIGHTS.

    dataset/2afc/{train,val}/<subset>/
      ref/000000.png   p0/000000.png   p1/000000.png   judge/000000.npy

`judge/*.npy` holds one float: the fraction of observers who judged p1 closer to ref (0: all chose p0). The
official loader sorts each folder on its own and pairs files by position, so one missing file silently shifts
every later triplet; here files are paired by name and a name missing from any folder is an error.

The 2AFC score of a distance d (reference/eval.md §3; PerceptualSimilarity, pyiqa, dreamsim): per triplet
    s = (d0 < d1) (1 - p) + (d1 < d0) p + 0.5 (d0 == d1),    p = fraction preferring the second image,
and the dataset's score is the mean of s: the expected agreement with a random observer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fastclip.eval.datasets.layout import Layout, files_by_stem, require_same_stems

SPLITS = ("train", "val")
SUBSETS = {
    "train": ("traditional", "cnn", "mix"),
    "val": ("traditional", "cnn", "superres", "deblur", "color", "frameinterp"),
}
IMAGE_ROLES = ("ref", "p0", "p1")

LAYOUT = Layout(
    "BAPPS 2AFC",
    "PerceptualSimilarity's scripts/download_dataset.sh: twoafc_val.tar.gz, twoafc_train.tar.gz",
    """\
  dataset/                                 (or the 2afc folder itself)
    2afc/
      val/                                 splits: train, val
        traditional/                       val subsets: traditional cnn superres deblur color frameinterp
          ref/000000.png ...               train subsets: traditional cnn mix
          p0/000000.png ...
          p1/000000.png ...                the same file names in ref/, p0/, p1/ and judge/
          judge/000000.npy ...             one float: the fraction of observers who chose p1
        cnn/
        ...""",
)


@dataclass(frozen=True)
class TwoAFCTriplets:
    """Reference, left and right images, and how many observers found the right one closer (BAPPS, NIGHTS)."""

    name: str  # e.g. "bapps/val/cnn", "nights/test_imagenet"
    root: Path
    references: tuple[Path, ...]
    left: tuple[Path, ...]  # BAPPS p0, NIGHTS left
    right: tuple[Path, ...]  # BAPPS p1, NIGHTS right
    p_right: torch.Tensor  # float64 (N,) in [0, 1]: fraction of observers who judged `right` closer to `reference`

    def __len__(self) -> int:
        return len(self.references)


def two_afc_scores(d_left: torch.Tensor, d_right: torch.Tensor, p_right: torch.Tensor) -> torch.Tensor:
    """Per-triplet 2AFC agreement (module docstring) of distances to the left and right images; ties score 0.5."""
    if not (d_left.shape == d_right.shape == p_right.shape) or d_left.dim() != 1:
        raise ValueError(
            f"d_left, d_right and p_right must be 1-D and of one length, got {tuple(d_left.shape)}, "
            f"{tuple(d_right.shape)}, {tuple(p_right.shape)}"
        )
    p = p_right.to(torch.float64)
    left_closer, right_closer = d_left < d_right, d_right < d_left
    return left_closer * (1.0 - p) + right_closer * p + (d_left == d_right) * 0.5


def _read_judge(path: Path) -> float:
    try:
        value = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise LAYOUT.error(path, f"cannot read the judgement ({exc})") from exc
    if value.size != 1 or not np.issubdtype(value.dtype, np.number) or not 0.0 <= float(value.reshape(-1)[0]) <= 1.0:
        raise LAYOUT.error(path, f"expected one number in [0, 1], found {value.dtype} array of shape {value.shape}: "
                           f"{value.reshape(-1)[:3]}")  # fmt: skip
    return float(value.reshape(-1)[0])


def _split_folder(root: Path, split: str) -> Path:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = LAYOUT.require_dir(root, "BAPPS folder")
    base = root / "2afc" if (root / "2afc").is_dir() else root
    return LAYOUT.require_dir(base / split, f"2afc/{split} folder")


def bapps_subsets(root: str | os.PathLike, split: str = "val") -> list[str]:
    """The subsets present under 2afc/<split>, sorted."""
    folder = _split_folder(Path(root), split)
    subsets = sorted(path.name for path in folder.iterdir() if path.is_dir() and not path.name.startswith("."))
    if not subsets:
        raise LAYOUT.error(folder, "no subset folders (e.g. cnn/, traditional/) in it")
    return subsets


def load_bapps_subset(root: str | os.PathLike, split: str, subset: str) -> TwoAFCTriplets:
    """One subset's triplets, paired by file name, in name order."""
    folder = LAYOUT.require_dir(_split_folder(Path(root), split) / subset, f"subset folder {subset!r}")
    by_role = {role: files_by_stem(folder / role, LAYOUT) for role in IMAGE_ROLES}
    by_role["judge"] = files_by_stem(folder / "judge", LAYOUT, (".npy",))
    stems = require_same_stems(LAYOUT, by_role, folder)
    if not stems:
        raise LAYOUT.error(folder, "ref/, p0/, p1/ and judge/ are empty")
    return TwoAFCTriplets(
        name=f"bapps/{split}/{subset}", root=folder,
        references=tuple(by_role["ref"][stem] for stem in stems),
        left=tuple(by_role["p0"][stem] for stem in stems),
        right=tuple(by_role["p1"][stem] for stem in stems),
        p_right=torch.tensor([_read_judge(by_role["judge"][stem]) for stem in stems], dtype=torch.float64),
    )  # fmt: skip


def load_bapps(
    root: str | os.PathLike, split: str = "val", subsets: tuple[str, ...] | list[str] | None = None
) -> dict[str, TwoAFCTriplets]:
    """{subset: triplets} for the given subsets (default: every subset present under 2afc/<split>)."""
    chosen = list(subsets) if subsets is not None else bapps_subsets(root, split)
    return {subset: load_bapps_subset(root, split, subset) for subset in chosen}
