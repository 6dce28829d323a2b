"""KADID-10k (Lin et al. 2019) in its official layout: 81 references x 25 distortions x 5 levels = 10,125 pairs.

    kadid10k/
      images/I01.png ... I81.png, I01_01_01.png ... I81_25_05.png
      dmos.csv          dist_img,ref_img,dmos,var     (copies without the var column load too)

Despite its name, "dmos" runs from 1 to 5 with higher = better quality (reference/eval.md §2). `var` is the variance
of the observers' ratings; it is kept as a standard deviation (sqrt(var)) in `score_std`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from fastclip.eval.datasets.iqa_csv import IQAPairs, column_indices, parse_score, read_csv_rows
from fastclip.eval.datasets.layout import CaseInsensitiveFolder, Layout

COLUMNS = {"distorted": "dist_img", "reference": "ref_img", "score": "dmos"}

LAYOUT = Layout(
    "KADID-10k",
    "kadid10k.zip from database.mmsp-kn.de",
    """\
  kadid10k/
    images/
      I01.png ... I81.png                  81 references
      I01_01_01.png ... I81_25_05.png      IRR_DD_LL.png: reference RR, distortion DD (01-25), level LL (01-05)
    dmos.csv                               header dist_img,ref_img,dmos,var (var optional), e.g.
                                           I01_01_01.png,I01.png,4.57,0.496""",
)


def load_kadid10k(root: str | os.PathLike, scores_csv: str | os.PathLike | None = None) -> IQAPairs:
    """The pairs listed in dmos.csv (or `scores_csv`, e.g. a copy elsewhere), with the images in root/images."""
    root = LAYOUT.require_dir(root, "kadid10k folder")
    csv_path = Path(scores_csv) if scores_csv is not None else root / "dmos.csv"
    header, rows = read_csv_rows(csv_path, LAYOUT)
    at = column_indices(header, COLUMNS, csv_path, LAYOUT)
    variance_at = next((index for index, name in enumerate(header) if name.lower() == "var"), None)
    if not rows:
        raise LAYOUT.error(csv_path, "no rows below the header")
    distorted_names, reference_names, scores, variances = [], [], [], []
    for line, row in enumerate(rows, start=2):
        if len(row) < len(header):
            raise LAYOUT.error(csv_path, f"row {line} has {len(row)} fields, the header {len(header)}")
        distorted_names.append(row[at["distorted"]].strip())
        reference_names.append(row[at["reference"]].strip())
        scores.append(parse_score(row[at["score"]].strip(), f"row {line}", LAYOUT, csv_path))
        if variance_at is not None:
            variances.append(parse_score(row[variance_at].strip(), f"row {line}, var", LAYOUT, csv_path))
    images = CaseInsensitiveFolder(root / "images", LAYOUT)
    return IQAPairs(
        name="kadid10k", root=root,
        references=tuple(images.resolve(reference_names, csv_path)),
        distorted=tuple(images.resolve(distorted_names, csv_path)),
        scores=torch.tensor(scores, dtype=torch.float64), higher_is_better=True, score_name="dmos",
        score_std=torch.tensor(variances, dtype=torch.float64).sqrt() if variance_at is not None else None,
    )  # fmt: skip
