"""Per-item values kept per (run, epoch, benchmark, dataset), so that `fastclip-eval report` can test, paired over
the same items, whether a metric at its peak epoch differs from the last epoch.

    OUT/items/<benchmark>/<dataset>/<run>_epoch<N>.npz

Two kinds:
- "correlation": rows of model values per item (e.g. the distance of every TID2013 pair, one row per layer and
  distance) and the human `target` per item; the row's metric is the correlation of orientation * values with the
  target (orientation -1 turns a distance into a similarity, so +1 is perfect alignment);
- "mean": rows of per-item values (a 2AFC score per triplet, a saliency metric per image, a shape decision per
  trial with NaN for trials that do not count); the row's metric is the mean of the non-NaN items.
`metrics[r]` and `variants[r]` name the results-table row that row r reproduces.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fastclip.io import atomic_path

ITEMS_DIR = "items"
KINDS = ("correlation", "mean")


@dataclass
class ItemValues:
    kind: str
    metrics: list[str]
    variants: list[str]
    values: torch.Tensor  # (rows, items)
    target: torch.Tensor | None = None  # (items,) for "correlation"
    orientation: float = 1.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if not (len(self.metrics) == len(self.variants) == self.values.shape[0]):
            raise ValueError("metrics, variants and the rows of values must have one length")
        if (self.kind == "correlation") != (self.target is not None):
            raise ValueError("a correlation needs a target, a mean has none")

    def row(self, metric: str, variant: str) -> int | None:
        for index, (m, v) in enumerate(zip(self.metrics, self.variants)):
            if (m, v) == (metric, variant):
                return index
        return None


def items_path(folder: str | Path, benchmark: str, dataset: str, run: str, epoch: int) -> Path:
    return Path(folder) / ITEMS_DIR / benchmark / dataset / f"{run}_epoch{epoch}.npz"


def save_items(path: str | Path, items: ItemValues) -> None:
    arrays = {
        "kind": np.array(items.kind),
        "metrics": np.array(items.metrics, dtype=str),
        "variants": np.array(items.variants, dtype=str),
        "values": items.values.detach().cpu().double().numpy(),
        "orientation": np.array(items.orientation),
    }
    if items.target is not None:
        arrays["target"] = items.target.detach().cpu().double().numpy()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    with atomic_path(path) as temporary:
        temporary.write_bytes(buffer.getvalue())


def load_items(path: str | Path) -> ItemValues:
    with np.load(path, allow_pickle=False) as data:
        return ItemValues(
            kind=str(data["kind"]),
            metrics=[str(m) for m in data["metrics"]],
            variants=[str(v) for v in data["variants"]],
            values=torch.from_numpy(data["values"]),
            target=torch.from_numpy(data["target"]) if "target" in data else None,
            orientation=float(data["orientation"]),
        )
