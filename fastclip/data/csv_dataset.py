"""Image-caption pairs listed in a CSV file in open_clip's layout, read through a torch DataLoader.

Layout: a text file with a header row and columns separated by `--csv-separator` (a tab by default); the column
`--csv-img-key` (default `filepath`) holds image paths, and
`--csv-caption-key` (default `title`) holds captions. An empty caption is an empty text (open_clip reads the file
with pandas, which turns it into NaN and trains on the word "nan").

Relative image paths resolve as open_clip resolves them, against the working directory; when none of the first
rows' images exists there but they do exist beside the CSV, they resolve against the CSV's folder instead (a CSV
written next to its images trains from any working directory). The choice is made once per file, from a sample
of rows, so that a CSV of millions of rows does not cost a file-system lookup per row before training.

Unreadable images (missing, truncated, not an image) are skipped, not fatal: the dataset returns an `Unreadable`
marker instead of raising, the collate keeps markers apart from the readable samples, and `CsvTrainData` logs and
counts them and refills its batches from the rank's continuing sample stream, so every batch keeps `batch_size`
samples and every rank still runs the same number of steps. (Chosen over a validation pass before training, which
would decode every image one extra time.)
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import itertools
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import torch

from fastclip.data.loader import Batch, TrainData, batches_per_rank
from fastclip.data.skips import NoReadableSamplesError
from fastclip.data.webdataset import UnreadableImageError, decode_rgb_file

_log = logging.getLogger(__name__)


class CsvFormatError(ValueError):
    """A CSV file that does not fit open_clip's layout; the message names the file and what was found."""


class TooFewReadableImagesError(CsvFormatError, NoReadableSamplesError):
    """The CSV's rows do not hold enough readable images to fill a rank's batches."""


def _separator_name(separator: str) -> str:
    return {"\t": "tab", ",": "comma", ";": "semicolon", " ": "space"}.get(separator, repr(separator))


@dataclass
class CsvTable:
    path: Path
    image_paths: list[str]
    captions: list[str]

    def __len__(self) -> int:
        return len(self.image_paths)


def read_csv_table(path: str | Path, *, img_key: str = "filepath", caption_key: str = "title", separator: str = "\t") -> CsvTable:
    """Read the image paths and captions of an open_clip CSV; errors name the file, the columns and the layout."""
    path = Path(path)
    layout = (
        f"open_clip's CSV layout: a header row, {_separator_name(separator)}-separated columns "
        f"{img_key!r} (image path) and {caption_key!r} (caption)"
    )
    if not path.is_file():
        raise FileNotFoundError(f"--train-data {path}: no such CSV file (expected {layout})")
    # utf-8-sig: Excel and PowerShell start UTF-8 files with a byte-order mark, which would otherwise become part
    # of the first column's name. newline="" lets the csv module take CRLF line ends and quoted separators.
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, delimiter=separator)
        columns = reader.fieldnames
        if not columns:
            raise CsvFormatError(f"{path}: the file is empty (expected {layout})")
        missing = [key for key in (img_key, caption_key) if key not in columns]
        if missing:
            hint = ""
            if len(columns) == 1 and separator not in columns[0] and any(s in columns[0] for s in ",;\t"):
                hint = "; the header has a single column: is the file separated by another character (--csv-separator)?"
            raise CsvFormatError(
                f"{path}: no column {' or '.join(map(repr, missing))} (--csv-img-key / --csv-caption-key); "
                f"the columns found are {columns}{hint}"
            )
        rows = list(reader)
    if not rows:
        raise CsvFormatError(f"{path}: the header is there but no rows follow")
    # A short row gives None for absent fields: a missing image path is an unreadable image, a missing caption empty.
    listed = [row[img_key] or "" for row in rows]
    base = relative_path_base(path, listed)
    image_paths = [str(base / image) if image and base is not None else image for image in listed]
    captions = [row[caption_key] or "" for row in rows]
    return CsvTable(path=path, image_paths=image_paths, captions=captions)


# Relative image paths probed to choose where they resolve (see the module docstring).
RESOLUTION_SAMPLE = 64
# Passes over the rows a rank may spend refilling batches before it gives up on an epoch.
REFILL_PASSES = 8


def relative_path_base(csv_path: Path, image_paths: list[str]) -> Path | None:
    """None (the working directory, as open_clip) unless the sampled relative paths exist only beside the CSV."""
    relative = [image for image in image_paths if image and not Path(image).is_absolute()][:RESOLUTION_SAMPLE]
    if not relative or any(Path(image).exists() for image in relative):
        return None
    folder = csv_path.parent
    if any((folder / image).exists() for image in relative):
        _log.info("%s: image paths resolve against the CSV's folder %s (not found in the working directory %s)",
                  csv_path, folder, Path.cwd())
        return folder
    return None


@dataclass
class Unreadable:
    row: int
    image_path: str
    reason: str


@contextlib.contextmanager
def seeded_cpu_generator(seed: int) -> Iterator[None]:
    """torch's global CPU generator (torchvision's random transforms draw from it) seeded with `seed` for the block,
    then put back as it was. The generator's own methods: torch.random.fork_rng + torch.manual_seed cost ~250 us a
    sample here (they visit every backend), these ~4 us."""
    generator = torch.default_generator
    saved = generator.get_state()
    generator.manual_seed(seed)
    try:
        yield
    finally:
        generator.set_state(saved)


class SampleRef(NamedTuple):
    """One sample of an epoch's stream: its row, its position in the epoch's global stream, and the seed of its
    augmentation (so that its random crop depends on neither the worker that loads it nor what was loaded before)."""

    row: int
    position: int
    seed: int | None


class CsvDataset(torch.utils.data.Dataset):
    """Row i (or a SampleRef) -> (image tensor after `transform`, caption, row, position), or Unreadable(row, path,
    reason). A SampleRef's transform draws from a generator seeded with its seed, leaving the global one as it was."""

    def __init__(self, table: CsvTable, transform: Callable):
        self.table = table
        self.transform = transform

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int | SampleRef):
        ref = index if isinstance(index, SampleRef) else SampleRef(index, index, None)
        image_path = self.table.image_paths[ref.row]
        try:
            image = decode_rgb_file(image_path)  # as the shard readers and DALI: EXIF applied, 16-bit scaled
        except UnreadableImageError as exc:
            return Unreadable(ref.row, image_path, str(exc))
        if ref.seed is None:
            image = self.transform(image)
        else:
            with seeded_cpu_generator(ref.seed):
                image = self.transform(image)
        return image, self.table.captions[ref.row], ref.row, ref.position


@dataclass
class CsvChunk:
    """One DataLoader batch with the unreadable samples taken out (so it may hold fewer than batch_size)."""

    images: list[torch.Tensor]
    captions: list[str]
    rows: list[int]
    positions: list[int]
    unreadable: list[Unreadable]


def collate_readable(items: list) -> CsvChunk:
    chunk = CsvChunk(images=[], captions=[], rows=[], positions=[], unreadable=[])
    for item in items:
        if isinstance(item, Unreadable):
            chunk.unreadable.append(item)
        else:
            image, caption, row, position = item
            chunk.images.append(image)
            chunk.captions.append(caption)
            chunk.rows.append(row)
            chunk.positions.append(position)
    return chunk


def _mixed_seed(*parts: int) -> int:
    """A stable 63-bit seed from several integers (Python's hash() is not stable across processes for strings)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def rank_samples(num_rows: int, *, seed: int, epoch: int, rank: int, world_size: int, start: int = 0
                 ) -> Iterator[SampleRef]:
    """This rank's endless stream of samples for `epoch`, from global stream position `start` on.

    One global stream per epoch, the same on every rank (permutations of all rows seeded by (seed, epoch, k),
    one after another); rank r takes the positions p with p % world_size == r. An epoch consumes the first
    num_batches * batch_size of them; the rest refill batches that lost unreadable images. A sample's
    augmentation seed comes from (seed, epoch, p), so a stream resumed at `start` continues bit for bit.
    """
    for round_index in itertools.count(start // num_rows):
        generator = torch.Generator().manual_seed(_mixed_seed(seed, epoch, round_index))
        first = round_index * num_rows
        for offset, row in enumerate(torch.randperm(num_rows, generator=generator).tolist()):
            position = first + offset
            if position >= start and position % world_size == rank:
                yield SampleRef(row, position, _mixed_seed(seed, epoch, position, 2))


def rank_order(num_rows: int, *, seed: int, epoch: int, rank: int, world_size: int) -> Iterator[int]:
    """The rows of rank_samples: this rank's endless stream of row indices for `epoch`."""
    return (ref.row for ref in rank_samples(num_rows, seed=seed, epoch=epoch, rank=rank, world_size=world_size))


class CsvTrainData(TrainData):
    """open_clip's CSV source behind fastclip's TrainData interface (see fastclip.data.loader)."""

    def __init__(self, args, bundle, *, device, rank: int, world_size: int):
        from open_clip.transform import image_transform

        if not args.train_data:
            raise ValueError("--dataset-type csv needs --train-data PATH: a CSV file in open_clip's layout")
        self.table = read_csv_table(
            args.train_data, img_key=args.csv_img_key, caption_key=args.csv_caption_key, separator=args.csv_separator
        )
        self.num_samples = int(args.train_num_samples or len(self.table))
        self.batch_size = int(args.batch_size)
        self.num_batches = batches_per_rank(self.num_samples, self.batch_size, world_size, source=f"--train-data {self.table.path}")
        self.dataset = CsvDataset(
            self.table, image_transform(bundle.image_size, is_train=True, mean=bundle.image_mean, std=bundle.image_std)
        )
        self.tokenizer = bundle.tokenizer
        self.device = torch.device(device)
        self.seed, self.rank, self.world_size = int(args.seed), rank, world_size
        self.workers = int(args.workers)
        self.skip_counts: Counter = Counter()
        self.epoch_skip_counts: Counter = Counter()
        self._next_position = 0  # global stream position where this rank's next batch starts

    def _loader(self, epoch: int, start: int) -> torch.utils.data.DataLoader:
        sampler = rank_samples(len(self.table), seed=self.seed, epoch=epoch, rank=self.rank,
                               world_size=self.world_size, start=start)
        return torch.utils.data.DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.workers,
            collate_fn=collate_readable,
            # Seeds the workers without drawing from the global generator (the augmentation has its own seeds).
            generator=torch.Generator().manual_seed(_mixed_seed(self.seed, epoch, self.rank, 1)),
        )

    def _too_few_readable(self, unreadable_rows: dict[int, Unreadable], epoch: int) -> TooFewReadableImagesError:
        example = next(iter(unreadable_rows.values()))
        return TooFewReadableImagesError(
            f"{self.table.path}: {len(unreadable_rows)} of its {len(self.table)} rows have unreadable images (e.g. "
            f"line {example.row + 2}, {example.image_path or '(empty path)'}: {example.reason.splitlines()[0]}), too "
            f"few readable ones to fill {self.num_batches} batch(es) of {self.batch_size} in epoch {epoch + 1}; "
            f"relative paths resolve against the working directory {Path.cwd()}, then the CSV's folder"
        )

    def position(self) -> int:
        return self._next_position

    def batches(self, epoch: int) -> Iterator[Batch]:
        return self.batches_from(epoch, 0)

    def batches_from(self, epoch: int, start_batch: int, position: int | None = None) -> Iterator[Batch]:
        """Seeks to `position` (the stream position after batch start_batch - 1); without one, reads up to it."""
        if start_batch and position is None:
            return super().batches_from(epoch, start_batch)
        return self._batches(epoch, start_batch, position or 0)

    def _batches(self, epoch: int, emitted: int, start: int) -> Iterator[Batch]:
        images: list[torch.Tensor] = []
        captions: list[str] = []
        rows: list[int] = []
        positions: list[int] = []
        skipped_this_epoch = 0
        self.epoch_skip_counts = Counter()
        unreadable_rows: dict[int, Unreadable] = {}  # distinct rows: the stream revisits rows when it refills
        self._next_position = start
        for chunk in self._loader(epoch, start):
            for bad in chunk.unreadable:
                self.skip_counts["unreadable_image"] += 1
                self.epoch_skip_counts["unreadable_image"] += 1
                skipped_this_epoch += 1
                unreadable_rows.setdefault(bad.row, bad)
                _log.warning(
                    "%s: skipped unreadable image %s (line %d): %s", self.table.path, bad.image_path or "(empty path)",
                    bad.row + 2, bad.reason,
                )
            all_unreadable = len(unreadable_rows) == len(self.table)
            if all_unreadable or skipped_this_epoch > REFILL_PASSES * len(self.table):
                raise self._too_few_readable(unreadable_rows, epoch)
            images += chunk.images
            captions += chunk.captions
            rows += chunk.rows
            positions += chunk.positions
            while len(rows) >= self.batch_size and emitted < self.num_batches:
                size = self.batch_size
                self._next_position = positions[size - 1] + 1
                yield Batch(
                    images=torch.stack(images[:size]).to(self.device, non_blocking=True),
                    texts=self.tokenizer(captions[:size]).to(self.device, non_blocking=True),
                    keys=torch.tensor(rows[:size], dtype=torch.long),
                )
                del images[:size], captions[:size], rows[:size], positions[:size]
                emitted += 1
            if emitted == self.num_batches:
                return
