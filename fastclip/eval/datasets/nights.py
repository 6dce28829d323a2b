"""NIGHTS (Fu et al. 2023, dreamsim) in its official layout: 20,019 triplets of Stable Diffusion images.

    nights/
      ref/000/000.png ...          directories 000-099, sparse file numbers
      distort/000/000_0.png, 000_1.png ...
      data.csv                     id,left_vote,right_vote,votes,ref_path,left_path,right_path,...,split,is_imagenet

As dreamsim's TwoAFCDataset reads it: keep rows with votes >= 6, then select the split (train, val; test_imagenet and
test_no_imagenet are the test rows with is_imagenet true / false). Columns are found by name. The fraction of
observers who chose the right image is right_vote / (left_vote + right_vote), which is right_vote itself in the
released file (votes are 0/1 per side there) and the right fraction if a copy stores counts. Scoring is the 2AFC rule
of datasets.bapps with left = d(ref, left), right = d(ref, right).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from fastclip.eval.datasets.bapps import TwoAFCTriplets
from fastclip.eval.datasets.iqa_csv import column_indices, parse_score, read_csv_rows
from fastclip.eval.datasets.layout import Layout, quote_some

SPLITS = ("train", "val", "test_imagenet", "test_no_imagenet", "test", "all")
MIN_VOTES = 6
COLUMNS = {
    "left_vote": "left_vote", "right_vote": "right_vote", "votes": "votes", "ref_path": "ref_path",
    "left_path": "left_path", "right_path": "right_path", "split": "split", "is_imagenet": "is_imagenet",
}  # fmt: skip

LAYOUT = Layout(
    "NIGHTS",
    "dreamsim's dataset/download_dataset.sh: nights.zip",
    """\
  nights/
    ref/000/000.png ...                    ref/NNN/MMM.png (NNN 000-099)
    distort/000/000_0.png, 000_1.png ...   distort/NNN/MMM_0.png, MMM_1.png
    data.csv                               columns (by name) left_vote, right_vote, votes, ref_path, left_path,
                                           right_path, split (train/val/test), is_imagenet (True/False);
                                           paths relative to nights/""",
)


def _truth(text: str, where: str, path: Path) -> bool:
    value = text.strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise LAYOUT.error(path, f"{where}: is_imagenet is {text!r}; expected True or False")


def _selected(split: str, row_split: str, is_imagenet: bool) -> bool:
    if split == "all":
        return True
    if split in ("train", "val", "test"):
        return row_split == split
    return row_split == "test" and is_imagenet == (split == "test_imagenet")


def load_nights(root: str | os.PathLike, split: str = "test", *, min_votes: int = MIN_VOTES) -> TwoAFCTriplets:
    """The triplets of one split with at least `min_votes` votes; every listed image must exist."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = LAYOUT.require_dir(root, "nights folder")
    csv_path = root / "data.csv"
    header, rows = read_csv_rows(csv_path, LAYOUT)
    at = column_indices(header, COLUMNS, csv_path, LAYOUT)
    references, left, right, p_right = [], [], [], []
    for line, row in enumerate(rows, start=2):
        if len(row) < len(header):
            raise LAYOUT.error(csv_path, f"row {line} has {len(row)} fields, the header {len(header)}")
        where = f"row {line}"
        if parse_score(row[at["votes"]], f"{where}, votes", LAYOUT, csv_path) < min_votes:
            continue
        if not _selected(split, row[at["split"]].strip(), _truth(row[at["is_imagenet"]], where, csv_path)):
            continue
        left_vote = parse_score(row[at["left_vote"]], f"{where}, left_vote", LAYOUT, csv_path)
        right_vote = parse_score(row[at["right_vote"]], f"{where}, right_vote", LAYOUT, csv_path)
        if left_vote < 0 or right_vote < 0 or left_vote + right_vote == 0:
            raise LAYOUT.error(csv_path, f"{where}: left_vote {left_vote} and right_vote {right_vote} give no vote")
        p_right.append(right_vote / (left_vote + right_vote))
        references.append(root / row[at["ref_path"]].strip())
        left.append(root / row[at["left_path"]].strip())
        right.append(root / row[at["right_path"]].strip())
    if not references:
        raise LAYOUT.error(csv_path, f"no triplets with votes >= {min_votes} in the split {split!r}")
    missing = sorted({os.path.relpath(path, root) for path in references + left + right if not path.is_file()})
    if missing:
        raise LAYOUT.error(root, f"{len(missing)} image(s) listed in data.csv are missing: {quote_some(missing)}")
    return TwoAFCTriplets(
        name=f"nights/{split}", root=root, references=tuple(references), left=tuple(left), right=tuple(right),
        p_right=torch.tensor(p_right, dtype=torch.float64),
    )  # fmt: skip
