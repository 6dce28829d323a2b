"""The results table of fastclip-eval and the trials CSVs.

Results (DESIGN.md): one row per (run, epoch, benchmark, dataset, metric, variant) with the columns `COLUMNS`,
kept in `results.jsonl` (the source of truth, read back on a re-run) and mirrored in `results.csv` (and in
`results.parquet` when pyarrow is importable). They are rewritten atomically (temporary file + rename) after every
evaluated (epoch, benchmark, dataset) unit, so a crash never loses what was already measured, and a mirror left
behind by a crash between the two renames is brought up to date when the table is next loaded. A missing number (a
CI the metric has no formula for, samples_seen of an open_clip checkpoint) is `null` in JSONL and an empty cell in
the CSV; it reads back as NaN (None for samples_seen).

The last two columns say what produced a row (fastclip.eval.provenance): `checkpoint` (the file's identity) and
`options` (a digest of the options that change the value). Rows written before they existed read back with None
there, so their units are measured again once.

Trials: cue-conflict decisions in model-vs-human's raw-data schema `TRIALS_COLUMNS`, so that one shape-bias function
scores models and human observers alike.
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from fastclip.eval.errors import InputError
from fastclip.io import atomic_write_text

COLUMNS = (
    "run", "epoch", "samples_seen", "benchmark", "dataset", "metric", "variant",
    "value", "ci_low", "ci_high", "n", "seconds", "checkpoint", "options",
)  # fmt: skip
PROVENANCE_COLUMNS = ("checkpoint", "options")  # optional when read: files written before they existed lack them
FLOAT_COLUMNS = ("value", "ci_low", "ci_high", "seconds")
TRIALS_COLUMNS = ("subj", "session", "trial", "rt", "object_response", "category", "condition", "imagename")
RESULTS_JSONL = "results.jsonl"
RESULTS_CSV = "results.csv"
RESULTS_PARQUET = "results.parquet"
TRIALS_DIR = "trials"


class ResultsFileError(InputError):
    """A results or trials file that cannot be read; the message names the file and what is wrong."""


class TruncatedResultsWarning(UserWarning):
    """results.jsonl ended in a cut-off line (a write interrupted by something other than fastclip, whose writes
    are atomic): that line and the rest of its unit were dropped, so the unit is measured again."""


@dataclass(frozen=True)
class Measurement:
    """One number a benchmark reports; the runner adds run, epoch, samples_seen, benchmark, dataset and seconds."""

    metric: str
    variant: str
    value: float
    ci_low: float = math.nan
    ci_high: float = math.nan
    n: int = 0


@dataclass(frozen=True, order=True)
class UnitKey:
    """One benchmark on one dataset at one epoch of one run: the unit of work that re-runs skip."""

    run: str
    epoch: int
    benchmark: str
    dataset: str


@dataclass(frozen=True)
class Provenance:
    """What a unit's rows were measured on: the checkpoint's identity and the digest of the options."""

    checkpoint: str
    options: str


def make_rows(
    key: UnitKey, measurements: Iterable[Measurement], *, samples_seen: int | None, seconds: float,
    provenance: Provenance,
) -> list[dict]:  # fmt: skip
    return [
        {
            "run": key.run, "epoch": key.epoch, "samples_seen": samples_seen, "benchmark": key.benchmark,
            "dataset": key.dataset, "metric": m.metric, "variant": m.variant, "value": float(m.value),
            "ci_low": float(m.ci_low), "ci_high": float(m.ci_high), "n": int(m.n), "seconds": float(seconds),
            "checkpoint": provenance.checkpoint, "options": provenance.options,
        }  # fmt: skip
        for m in measurements
    ]


def row_provenance(row: Mapping) -> Provenance | None:
    if row.get("checkpoint") is None or row.get("options") is None:
        return None
    return Provenance(row["checkpoint"], row["options"])


def unit_key(row: Mapping) -> UnitKey:
    return UnitKey(row["run"], int(row["epoch"]), row["benchmark"], row["dataset"])


class ResultsTable:
    """The rows of one output folder, in memory; `save` rewrites both files atomically."""

    def __init__(self, rows: Iterable[dict] = ()):
        self.rows: list[dict] = list(rows)

    @classmethod
    def load(cls, folder: str | Path) -> "ResultsTable":
        path = Path(folder) / RESULTS_JSONL
        return cls(read_results_jsonl(path) if path.exists() else ())

    def repair_mirrors(self, folder: str | Path) -> bool:
        """Rewrite the CSV (and Parquet) mirrors when they are older than results.jsonl, as a crash between the
        renames of `save` leaves them; True when they were rewritten."""
        folder = Path(folder)
        source, mirror = folder / RESULTS_JSONL, folder / RESULTS_CSV
        if not source.exists() or (mirror.exists() and mirror.stat().st_mtime_ns >= source.stat().st_mtime_ns):
            return False
        self.save(folder)
        return True

    def has(self, key: UnitKey) -> bool:
        return any(unit_key(row) == key for row in self.rows)

    def is_current(self, key: UnitKey, provenance: Provenance) -> bool:
        """Whether the table holds the unit, every row of it measured on this checkpoint with these options."""
        rows = [row for row in self.rows if unit_key(row) == key]
        return bool(rows) and all(row_provenance(row) == provenance for row in rows)

    def replace(self, key: UnitKey, rows: list[dict]) -> None:
        """Drop the unit's old rows (a --force re-run) and add the new ones."""
        self.rows = [row for row in self.rows if unit_key(row) != key] + list(rows)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        # Stable sort: within an epoch the rows keep the order they were measured in.
        rows = sorted(self.rows, key=lambda row: (row["run"], int(row["epoch"])))
        atomic_write_text(folder / RESULTS_JSONL, "".join(json.dumps(_to_json(row)) + "\n" for row in rows))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(_to_csv(row) for row in rows)
        atomic_write_text(folder / RESULTS_CSV, buffer.getvalue())
        write_parquet_if_available(rows, folder)


def write_parquet_if_available(rows: list[dict], folder: str | Path) -> Path | None:
    """results.parquet (the same rows, typed columns) when pyarrow can be imported; None otherwise."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return None
    from fastclip.io import atomic_path

    columns = {column: [_to_json(row)[column] for row in rows] for column in COLUMNS}
    types = {"epoch": pa.int64(), "samples_seen": pa.int64(), "n": pa.int64()}
    types.update({column: pa.float64() for column in FLOAT_COLUMNS})
    table = pa.table({column: pa.array(values, type=types.get(column, pa.string())) for column, values in columns.items()})
    path = Path(folder) / RESULTS_PARQUET
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)
    return path


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _cell(row: Mapping, column: str):
    # Rows made in memory by other code (tests, scripts) may lack the provenance columns: they read as unknown.
    return row.get(column) if column in PROVENANCE_COLUMNS else row[column]


def _to_json(row: Mapping) -> dict:
    return {column: (None if _missing(_cell(row, column)) else _cell(row, column)) for column in COLUMNS}


def _to_csv(row: Mapping) -> dict:
    # str(float) is the shortest repr that reads back to the same float, so the CSV loses no precision.
    return {column: ("" if _missing(_cell(row, column)) else _cell(row, column)) for column in COLUMNS}


def _typed_row(raw: Mapping, where: str) -> dict:
    missing = [column for column in COLUMNS if column not in raw and column not in PROVENANCE_COLUMNS]
    if missing:
        raise ResultsFileError(f"{where}: missing columns {missing}; expected {list(COLUMNS)}, found {list(raw)}")
    row = {column: raw.get(column) for column in COLUMNS}
    try:
        row["epoch"] = int(row["epoch"])
        row["n"] = int(row["n"]) if row["n"] not in (None, "") else 0
        row["samples_seen"] = None if row["samples_seen"] in (None, "") else int(row["samples_seen"])
        for column in FLOAT_COLUMNS:
            row[column] = math.nan if row[column] in (None, "") else float(row[column])
    except (TypeError, ValueError) as exc:
        raise ResultsFileError(f"{where}: a value has the wrong type ({exc})") from exc
    row["variant"] = row["variant"] or ""
    for column in PROVENANCE_COLUMNS:
        row[column] = row[column] or None  # an empty CSV cell
    return row


def read_results_jsonl(path: str | Path) -> list[dict]:
    """The rows of a results.jsonl. A last line cut off mid-way (no newline, not JSON) is dropped with the rows of
    the unit it followed, with a TruncatedResultsWarning, so that no unit is left half-written and looking done;
    any other bad line is a ResultsFileError naming the file and the line."""
    path = Path(path)
    text = path.read_text()
    lines = text.splitlines()
    cut_off = bool(lines) and not text.endswith("\n") and not _parses(lines[-1])
    if cut_off:
        lines = lines[:-1]
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ResultsFileError(f"{path}, line {number}: not JSON ({exc.msg}); fix or delete the file") from exc
        rows.append(_typed_row(raw, f"{path}, line {number}"))
    if cut_off:
        dropped = unit_key(rows[-1]) if rows else None
        rows = [row for row in rows if unit_key(row) != dropped]
        warnings.warn(
            f"{path}: line {len(lines) + 1} is cut off (an interrupted write); it and the rows of "
            f"{dropped or 'its unit'} are dropped and will be evaluated again",
            TruncatedResultsWarning,
            stacklevel=2,
        )
    return rows


def _parses(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


def read_results_csv(path: str | Path) -> list[dict]:
    path = Path(path)
    with open(path, newline="") as handle:
        return [_typed_row(raw, f"{path}, row {number}") for number, raw in enumerate(csv.DictReader(handle), 2)]


def trials_csv_path(folder: str | Path, dataset: str, subj: str) -> Path:
    """TRIALS_DIR/<dataset>/<subj>.csv; subj is `<run>_epoch<N>` (model-vs-human names a CSV by its subject)."""
    return Path(folder) / TRIALS_DIR / dataset / f"{subj}.csv"


def write_trials_csv(path: str | Path, trials: Iterable[Mapping]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=TRIALS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({column: trial[column] for column in TRIALS_COLUMNS} for trial in trials)
    atomic_write_text(path, buffer.getvalue())


def read_trials_csv(path: str | Path) -> list[dict]:
    """Rows of a trials CSV as strings; column names are lower-cased as model-vs-human reads them."""
    path = Path(path)
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = [name.strip().lower() for name in next(reader, [])]
        needed = ("object_response", "category", "imagename")
        absent = [column for column in needed if column not in header]
        if absent:
            raise ResultsFileError(
                f"{path}: not a trials CSV: columns {absent} are missing (found {header}); expected the "
                f"model-vs-human schema {','.join(TRIALS_COLUMNS)}"
            )
        return [dict(zip(header, values)) for values in reader if values]
