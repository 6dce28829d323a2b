"""What produced a unit's rows in the results table: the checkpoint it was measured on and the options that change
its values. A unit in results.jsonl is skipped only when both are what the current run would use; a re-written
checkpoint or a changed option re-runs it without --force (results.ResultsTable.is_current).

  checkpoint_identity  the checkpoint file's size and modification time in nanoseconds. fastclip-train and open_clip
                       write checkpoints by rename, so a re-written file is a new one with a new time; a poll of
                       `fastclip-eval --follow` reads no weights to tell. A copy that does not keep modification
                       times (cp without -p) counts as new and is evaluated again: a wasted pass, never a stale row.
  options_digest       a hash of everything a unit's values depend on besides the weights: precision, seed,
                       resamples, templates, the toy world's size, the benchmark and its suite settings, and the
                       dataset's type, path and settings. Device and batch size are left out: they change the cost,
                       not the values a user compares.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastclip.eval.context import EvalOptions

# The identity of a model evaluated in memory by fastclip-train's --eval-every hook when no checkpoint was written
# for that epoch: a later fastclip-eval of a checkpoint file re-measures it.
IN_MEMORY = "in-memory"


def checkpoint_identity(path: str | Path) -> str:
    status = Path(path).stat()
    return f"{status.st_size}-{status.st_mtime_ns}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return repr(value)


def options_digest(options: "EvalOptions", benchmark_name: str, settings: dict, dataset: str) -> str:
    """16 hex digits of SHA-256 over the options that change the values of `benchmark_name` on `dataset`."""
    spec = options.suite.datasets.get(dataset) if options.suite is not None else None
    payload = {
        "precision": options.precision,
        "seed": options.seed,
        "resamples": options.resamples,
        "templates": options.templates,
        "toyworld_size": options.toyworld_size,
        "benchmark": benchmark_name,
        "settings": settings,
        "dataset": None if spec is None else {"name": dataset, "type": spec.type, "path": spec.path,
                                              "settings": spec.settings},  # fmt: skip
    }
    text = json.dumps(payload, sort_keys=True, default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
