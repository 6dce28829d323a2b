"""Training sources on disk: which files, and how many samples they hold.

A webdataset source is one or more shard patterns joined with `::` (open_clip's syntax), each brace-expanded
(`shards/{00000..00099}.tar`, `{a,b}`); a folder in place of a pattern stands for the `*.tar` files inside it.
The epoch needs the number of samples of every shard without reading the tars, because each rank plans its own
slice of the data from these counts alone (fastclip.data.sharding). The counts come, in this order, from:

1. img2dataset's `<shard>_stats.json` (`successes`: only successful downloads are written to the tar);
2. a `sizes.json` beside the shards (shard basename -> count; open_clip's convention);
3. DALI index files (`wds2idx shard.tar shard.idx`, header `v1.2 <samples>`; only the first line is read).

`--train-num-samples` sets the epoch length (a sample budget, as in open_clip); when no metadata exists it is
also spread evenly over the shards as an estimate, which makes the per-rank split approximate.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path

SOURCE_SEPARATOR = "::"
_NUMERIC_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


class DataSourceError(ValueError):
    """A training source that cannot be used; the message names it and says what was expected."""


def split_sources(spec: str) -> list[str]:
    """open_clip joins several sources with `::`; empty parts are an error, not silently dropped."""
    parts = spec.split(SOURCE_SEPARATOR)
    if any(not part.strip() for part in parts):
        raise DataSourceError(f"--train-data {spec!r}: an empty source between '::' separators")
    return [part.strip() for part in parts]


def _find_closing_brace(pattern: str, opening: int) -> int:
    depth = 0
    for position in range(opening, len(pattern)):
        if pattern[position] == "{":
            depth += 1
        elif pattern[position] == "}":
            depth -= 1
            if depth == 0:
                return position
    return -1


def _split_top_level_commas(body: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for position, char in enumerate(body):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(body[start:position])
            start = position + 1
    parts.append(body[start:])
    return parts


def _numeric_range(first: str, last: str) -> list[str]:
    start, stop = int(first), int(last)
    step = 1 if stop >= start else -1
    # Zero padding follows the wider bound, as bash and the braceexpand package do: {00000..00099} -> 00000, ...
    width = max(len(first), len(last)) if first.lstrip("-").startswith("0") or last.lstrip("-").startswith("0") else 0
    return [str(value).zfill(width) if width else str(value) for value in range(start, stop + step, step)]


def expand_braces(pattern: str) -> list[str]:
    """Expand `{00000..00099}` ranges (zero padding kept) and `{a,b}` alternatives, nested or repeated."""
    opening = pattern.find("{")
    if opening < 0:
        return [pattern]
    closing = _find_closing_brace(pattern, opening)
    if closing < 0:
        raise DataSourceError(f"{pattern!r}: unbalanced '{{' in the shard pattern")
    head, body, tail = pattern[:opening], pattern[opening + 1:closing], pattern[closing + 1:]
    numeric = _NUMERIC_RANGE.match(body)
    if numeric:
        alternatives = _numeric_range(*numeric.groups())
    else:
        alternatives = [expanded for part in _split_top_level_commas(body) for expanded in expand_braces(part)]
        if len(alternatives) == 1 and "," not in body:
            alternatives = ["{" + body + "}"]  # a literal "{x}", as in bash
    return [head + alternative + rest for alternative in alternatives for rest in expand_braces(tail)]


def expand_shard_spec(spec: str) -> list[Path]:
    """Every tar of a `::`-joined, brace-expanded spec, in order; a missing file or an empty folder is an error."""
    shards: list[Path] = []
    missing: list[str] = []
    for source in split_sources(spec):
        for name in expand_braces(os.path.expanduser(source)):
            path = Path(name)
            if path.is_dir():
                inside = sorted(p for p in path.iterdir() if p.suffix.lower() == ".tar" and p.is_file())
                if not inside:
                    raise DataSourceError(f"{path}: a folder given as a webdataset source holds no .tar shards")
                shards.extend(inside)
            elif path.is_file():
                shards.append(path)
            else:
                missing.append(name)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataSourceError(f"--train-data {spec!r}: {len(missing)} shard(s) do not exist: {shown}")
    if not shards:
        raise DataSourceError(f"--train-data {spec!r}: names no shard")
    return shards


def stats_path(shard: Path) -> Path:
    """img2dataset writes `00000_stats.json` beside `00000.tar`."""
    return shard.with_name(shard.stem + "_stats.json")


def read_stats_successes(path: Path) -> int:
    try:
        stats = json.loads(path.read_text())
        return int(stats["successes"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataSourceError(f"{path}: not an img2dataset stats file with an integer 'successes' ({exc})") from exc


def index_candidates(shard: Path) -> tuple[Path, Path]:
    return shard.with_suffix(".idx"), shard.with_name(shard.name + ".idx")


def read_index_header(path: Path) -> int:
    """Sample count from a DALI webdataset index header (`v1.2 <n>`); the rest of the file is never read."""
    with open(path, "rb") as handle:
        header = handle.readline(256).decode("ascii", "replace").split()
    if len(header) != 2 or not header[0].startswith("v") or not header[1].isdigit():
        raise DataSourceError(f"{path}: not a DALI webdataset index (first line should be 'v1.2 <samples>')")
    return int(header[1])


def _sizes_json(folder: Path, cache: dict[Path, dict | None]) -> dict | None:
    if folder not in cache:
        path = folder / "sizes.json"
        if path.is_file():
            try:
                cache[folder] = json.loads(path.read_text())
            except ValueError as exc:
                raise DataSourceError(f"{path}: not valid JSON ({exc})") from exc
        else:
            cache[folder] = None
    return cache[folder]


def shard_count_from_metadata(shard: Path, sizes_cache: dict[Path, dict | None]) -> tuple[int, str] | None:
    stats = stats_path(shard)
    if stats.is_file():
        return read_stats_successes(stats), "img2dataset _stats.json"
    sizes = _sizes_json(shard.parent, sizes_cache)
    if sizes is not None and shard.name in sizes:
        return int(sizes[shard.name]), "sizes.json"
    for index in index_candidates(shard):
        if index.is_file():
            return read_index_header(index), "DALI index (wds2idx)"
    return None


def tar_has_members(shard: Path) -> bool:
    """Reads one header: an empty tar (all zero blocks) has none."""
    try:
        with tarfile.open(shard, "r:") as archive:
            return archive.next() is not None
    except tarfile.TarError:
        return False


@dataclass(frozen=True)
class WebDatasetSource:
    """The shards of a webdataset source and their sample counts (metadata, not a scan of the tars)."""

    spec: str
    shards: tuple[str, ...]
    counts: tuple[int, ...]
    num_samples: int  # the epoch length: --train-num-samples, else the sum of the counts
    count_origin: str  # where the counts came from, for the training log
    counts_exact: bool  # False when they are an even spread of --train-num-samples over the shards

    @property
    def total_count(self) -> int:
        return sum(self.counts)

    def describe(self) -> str:
        return (f"{len(self.shards)} shard(s), {self.total_count} samples ({self.count_origin}); "
                f"epoch = {self.num_samples} samples")


def open_webdataset(spec: str, *, num_samples: int | None = None) -> WebDatasetSource:
    """List the shards of `spec` and count their samples from metadata (see the module docstring)."""
    if num_samples is not None and num_samples <= 0:
        raise DataSourceError(f"--train-num-samples must be positive, got {num_samples}")
    shards = expand_shard_spec(spec)
    sizes_cache: dict[Path, dict | None] = {}
    found = [shard_count_from_metadata(shard, sizes_cache) for shard in shards]
    without = [shard for shard, count in zip(shards, found) if count is None]
    if not without:
        counts = [count for count, _ in found]
        origins = sorted({origin for _, origin in found})
        origin, exact = " + ".join(origins), True
    elif num_samples is not None:
        warnings.warn(
            f"{len(without)} of {len(shards)} shard(s) of {spec!r} have no sample count (e.g. {without[0]}); "
            f"spreading --train-num-samples={num_samples} evenly over all shards, so ranks get approximately, not "
            "exactly, equal slices; run `wds2idx <shard>.tar <shard>.idx` per shard for exact counts",
            stacklevel=2,
        )
        base, extra = divmod(num_samples, len(shards))
        counts = [base + (1 if i < extra else 0) for i in range(len(shards))]
        origin, exact = "--train-num-samples spread evenly", False
    else:
        raise DataSourceError(
            f"--train-data {spec!r}: cannot tell how many samples the shards hold: {without[0]} has no "
            f"img2dataset {stats_path(without[0]).name}, no entry in {without[0].parent / 'sizes.json'} and no DALI "
            f"index {index_candidates(without[0])[0].name}; pass --train-num-samples N or create indexes with "
            "`wds2idx shard.tar shard.idx` (shipped with nvidia-dali)"
        )
    if (exact and sum(counts) == 0) or (not exact and not any(tar_has_members(shard) for shard in shards)):
        raise DataSourceError(f"--train-data {spec!r}: holds no samples (every shard is empty)")
    return WebDatasetSource(
        spec=spec,
        shards=tuple(str(shard) for shard in shards),
        counts=tuple(counts),
        num_samples=num_samples if num_samples is not None else sum(counts),
        count_origin=origin,
        counts_exact=exact,
    )


DATASET_TYPES = ("toyworld", "csv", "webdataset", "folder", "auto")


def detect_dataset_type(spec: str) -> str:
    """open_clip's `--dataset-type auto`: by extension (.csv/.tsv -> csv, .tar -> webdataset); fastclip adds a
    folder of class subfolders (-> folder) and a folder of .tar files (-> webdataset)."""
    first = split_sources(spec)[0]
    candidate = expand_braces(os.path.expanduser(first))[0]
    suffix = Path(candidate).suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix == ".tar":
        return "webdataset"
    path = Path(candidate)
    if path.is_dir():
        entries = list(path.iterdir())
        if any(entry.suffix.lower() == ".tar" and entry.is_file() for entry in entries):
            return "webdataset"
        if any(entry.is_dir() for entry in entries):
            return "folder"
    raise DataSourceError(
        f"--dataset-type auto cannot tell what {spec!r} is: expected a .csv/.tsv file, .tar shards (or a folder of "
        "them) or a folder with one subfolder per class; pass --dataset-type {csv,webdataset,folder}"
    )
