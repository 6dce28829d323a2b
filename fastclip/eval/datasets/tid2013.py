"""TID2013 (Ponomarenko et al. 2015) in its official layout: 25 references x 24 distortions x 5 levels = 3,000 pairs.

    tid2013/
      reference_images/I01.BMP ... I24.BMP, i25.bmp
      distorted_images/i01_01_1.bmp ... i25_24_5.bmp      iRR_DD_L: reference RR, distortion DD, level L
      mos_with_names.txt                                   "<mos> <name>" per line
      mos.txt, mos_std.txt                                 one number per line, pairs in the order RR, DD, L

The files have CRLF line endings, and the case of the names is inconsistent between the score files and the disk
(mos_with_names.txt lists I01_11_1.BMP and i01_01_2.bmp; the references are I01.BMP but i25.bmp), so names are
resolved without regard to case. MOS runs from 0 to 9, higher = better quality (reference/eval.md §2).
`mos_with_names.txt` is read when present, else `mos.txt` with the canonical order; `mos_std.txt` is optional.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import torch

from fastclip.eval.datasets.iqa_csv import IQAPairs, parse_score
from fastclip.eval.datasets.layout import CaseInsensitiveFolder, Layout, quote_some

NUM_REFERENCES, NUM_DISTORTIONS, NUM_LEVELS = 25, 24, 5
NUM_PAIRS = NUM_REFERENCES * NUM_DISTORTIONS * NUM_LEVELS
DISTORTED_NAME = re.compile(r"^i(?P<reference>\d\d)_(?P<distortion>\d\d)_(?P<level>\d)\.bmp$", re.IGNORECASE)
SCORE_FILES = ("mos_with_names.txt", "mos.txt")

LAYOUT = Layout(
    "TID2013",
    "tid2013.rar from ponomarenko.info",
    """\
  tid2013/
    reference_images/
      I01.BMP ... I24.BMP, i25.bmp       25 references (case of names varies; it is ignored)
    distorted_images/
      i01_01_1.bmp ... i25_24_5.bmp      iRR_DD_L.bmp: reference RR, distortion DD (01-24), level L (1-5)
    mos_with_names.txt                   "<mos> <name>" per line, e.g. "5.51429 i01_01_1.bmp"
    mos.txt                              (used when mos_with_names.txt is absent) 3,000 MOS, one per line,
                                         in the order i01_01_1, i01_01_2, ..., i25_24_5
    mos_std.txt                          (optional) the MOS standard deviations, in the same order as mos.txt""",
)


def canonical_names() -> list[str]:
    """The 3,000 distorted-image names in the order of mos.txt (reference, then distortion, then level)."""
    return [
        f"i{reference:02d}_{distortion:02d}_{level}.bmp"
        for reference in range(1, NUM_REFERENCES + 1)
        for distortion in range(1, NUM_DISTORTIONS + 1)
        for level in range(1, NUM_LEVELS + 1)
    ]


def _numbers(path: Path, expected: int | None) -> list[float]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    lines = [line for line in lines if line]
    if expected is not None and len(lines) != expected:
        raise LAYOUT.error(
            path, f"{len(lines)} values; TID2013's {path.name} has {expected}, one per distorted image in the order "
            "i01_01_1, i01_01_2, ..., i25_24_5"
        )  # fmt: skip
    return [parse_score(line, f"line {number}", LAYOUT, path) for number, line in enumerate(lines, start=1)]


def _named_scores(path: Path) -> tuple[list[str], list[float]]:
    names, scores = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not DISTORTED_NAME.match(fields[1]):
            raise LAYOUT.error(path, f"line {number} is {line.strip()!r}; expected '<mos> iRR_DD_L.bmp'")
        scores.append(parse_score(fields[0], f"line {number}", LAYOUT, path))
        names.append(fields[1])
    if not names:
        raise LAYOUT.error(path, "no scores in this file")
    counts = Counter(name.lower() for name in names)
    duplicates = sorted(name for name, count in counts.items() if count > 1)
    if duplicates:
        raise LAYOUT.error(path, f"names listed twice (case ignored): {quote_some(duplicates)}")
    outside = sorted(set(counts) - set(canonical_names()))
    if outside:
        raise LAYOUT.error(path, f"not TID2013 names (i01-i25, distortions 01-24, levels 1-5): {quote_some(outside)}")
    return names, scores


def load_tid2013(root: str | os.PathLike) -> IQAPairs:
    """The TID2013 pairs listed in the score file, with resolved image paths; every listed image must exist."""
    root = LAYOUT.require_dir(root, "tid2013 folder")
    score_file = next((root / name for name in SCORE_FILES if (root / name).is_file()), None)
    if score_file is None:
        raise LAYOUT.error(root, f"neither {' nor '.join(SCORE_FILES)} is here")
    if score_file.name == "mos.txt":
        names, scores = canonical_names(), _numbers(score_file, NUM_PAIRS)
    else:
        names, scores = _named_scores(score_file)
    std = None
    if (root / "mos_std.txt").is_file():
        by_name = dict(zip(canonical_names(), _numbers(root / "mos_std.txt", NUM_PAIRS)))
        std = torch.tensor([by_name[name.lower()] for name in names], dtype=torch.float64)
    distorted = CaseInsensitiveFolder(root / "distorted_images", LAYOUT).resolve(names, score_file)
    reference_names = [f"I{DISTORTED_NAME.match(name)['reference']}.BMP" for name in names]
    references = CaseInsensitiveFolder(root / "reference_images", LAYOUT).resolve(reference_names, score_file)
    return IQAPairs(
        name="tid2013", root=root, references=tuple(references), distorted=tuple(distorted),
        scores=torch.tensor(scores, dtype=torch.float64), higher_is_better=True, score_name="mos", score_std=std,
    )  # fmt: skip
