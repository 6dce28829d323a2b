"""Full-reference image-quality data: (reference, distorted, human score) pairs, and the generic CSV loader.

`IQAPairs` is what every IQA loader returns (TID2013, KADID-10k, this module's CSV). Human scores differ in
direction: TID2013's MOS and KADID-10k's "dmos" are both higher = better quality; a distortion score (a DMOS in the
usual sense) is higher = worse. The direction is therefore part of the data, never guessed: `quality_scores` turns
every dataset into higher = better, against which a model distance should correlate negatively.

Generic CSV layout:

    images/ref/a.png, images/dist/a_1.png, ...    anywhere; paths in the CSV are relative to image_root
    scores.csv                                    header with (case ignored) reference,distorted,score
        reference,distorted,score                 (other names: pass columns=)
        ref/a.png,dist/a_1.png,3.7

The direction (higher_is_better) must be stated by the caller.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from fastclip.eval.datasets.layout import Layout, quote_some

COLUMNS = ("reference", "distorted", "score")

LAYOUT = Layout(
    "generic IQA CSV",
    "fastclip",
    """\
  scores.csv                      a header naming the columns reference, distorted, score (case ignored;
    reference,distorted,score     other names via columns={"reference": ..., "distorted": ..., "score": ...})
    ref/a.png,dist/a_1.png,3.7    one row per pair; paths relative to image_root (default: the CSV's folder)
  IMAGE_ROOT/
    ref/a.png
    dist/a_1.png
  and the direction of the score, stated: higher_is_better=True (quality, MOS) or False (distortion, DMOS)""",
)


@dataclass(frozen=True)
class IQAPairs:
    """Reference/distorted image pairs with one human score each (paths; decode with datasets.images)."""

    name: str
    root: Path
    references: tuple[Path, ...]
    distorted: tuple[Path, ...]
    scores: torch.Tensor  # float64 (N,), as the dataset states them
    higher_is_better: bool  # whether a higher score means better quality
    score_name: str  # what the score is called in the dataset ("mos", "dmos", a CSV column)
    score_std: torch.Tensor | None = None  # float64 (N,): the spread of the observers' scores, when given

    def __len__(self) -> int:
        return len(self.distorted)

    @property
    def quality_scores(self) -> torch.Tensor:
        """Scores oriented so that higher = better quality for every dataset."""
        return self.scores if self.higher_is_better else -self.scores

    def unique_references(self) -> tuple[list[Path], torch.Tensor]:
        """The distinct reference images (in order of first use) and, per pair, the index of its reference; lets
        a benchmark encode 25 TID2013 references once instead of 3,000 times."""
        index: dict[Path, int] = {}
        ids = [index.setdefault(path, len(index)) for path in self.references]
        return list(index), torch.tensor(ids, dtype=torch.long)


def parse_score(text: str, where: str, layout: Layout, path: Path) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise layout.error(path, f"{where}: the score {text!r} is not a finite number")
    return value


def read_csv_rows(path: Path, layout: Layout) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a CSV file; header names stripped; BOM and CRLF line endings accepted."""
    layout.require_file(path, "CSV file")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        rows = [row for row in reader if any(cell.strip() for cell in row)]
    if not header:
        raise layout.error(path, "empty file: no header")
    return header, rows


def column_indices(header: list[str], wanted: Mapping[str, str], path: Path, layout: Layout) -> dict[str, int]:
    """{role: column index} for wanted {role: column name}, names matched without regard to case."""
    lowered = [name.lower() for name in header]
    missing = [name for name in wanted.values() if name.lower() not in lowered]
    if missing:
        raise layout.error(path, f"no column(s) {missing}; the header has {header}")
    return {role: lowered.index(name.lower()) for role, name in wanted.items()}


def load_iqa_csv(
    csv_path: str | os.PathLike,
    *,
    higher_is_better: bool,
    image_root: str | os.PathLike | None = None,
    columns: Mapping[str, str] | None = None,
    name: str | None = None,
) -> IQAPairs:
    """Pairs from a CSV with reference, distorted and score columns; every listed image must exist."""
    if not isinstance(higher_is_better, bool):
        raise ValueError(f"higher_is_better must be True or False (the score's direction), got {higher_is_better!r}")
    csv_path = Path(csv_path)
    wanted = {role: role for role in COLUMNS} | dict(columns or {})
    unknown = sorted(set(wanted) - set(COLUMNS))
    if unknown:
        raise ValueError(f"columns= maps the roles {list(COLUMNS)} to column names; unknown roles {unknown}")
    header, rows = read_csv_rows(csv_path, LAYOUT)
    at = column_indices(header, wanted, csv_path, LAYOUT)
    root = LAYOUT.require_dir(image_root if image_root is not None else csv_path.parent, "image root")
    references, distorted, scores = [], [], []
    for line, row in enumerate(rows, start=2):
        if len(row) < len(header):
            raise LAYOUT.error(csv_path, f"row {line} has {len(row)} fields, the header {len(header)}")
        references.append(root / row[at["reference"]].strip())
        distorted.append(root / row[at["distorted"]].strip())
        scores.append(parse_score(row[at["score"]].strip(), f"row {line}", LAYOUT, csv_path))
    if not rows:
        raise LAYOUT.error(csv_path, "no rows below the header")
    # Absolute paths in the CSV stay absolute (root / "/x" is "/x"); the message quotes them as listed.
    missing = sorted({str(path) for path in references + distorted if not path.is_file()})
    if missing:
        raise LAYOUT.error(root, f"{len(missing)} image(s) listed in {csv_path} are missing: {quote_some(missing)}")
    return IQAPairs(
        name=name or csv_path.stem, root=root, references=tuple(references), distorted=tuple(distorted),
        scores=torch.tensor(scores, dtype=torch.float64), higher_is_better=higher_is_better,
        score_name=header[at["score"]],
    )  # fmt: skip
