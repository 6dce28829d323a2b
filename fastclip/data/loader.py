"""The training-data interface: every source (toy world, CSV, later webdataset / folders / DALI) yields the same
`Batch`es through one `TrainData` object built by `build_train_data`.

Contract of a `TrainData` (the training loop relies on nothing else):
- `num_samples`: images in one epoch over all ranks (an epoch is a sample budget, as in open_clip);
- `num_batches`: batches per rank per epoch, the same on every rank (CLIP gathers features across ranks, so
  every rank must run the same number of equal-shape steps);
- `batches(epoch)`: yields exactly `num_batches` `Batch`es of `batch_size` samples; the order depends only on
  (seed, epoch, rank, world_size), so a run resumed at epoch N sees the data it would have seen;
- `skip_counts` / `epoch_skip_counts`: samples this rank dropped, by reason, over the run / in the epoch being read
  (they are replaced, so batch shapes stay equal); `skipped` is their run total;
- `Batch.num_pads`: how many samples at the end of a batch repeat earlier ones (not counted as samples seen);
- `batches_from(epoch, start_batch, position)`: the same epoch's batches from `start_batch` on, for a run resumed
  in the middle of an epoch; `position()` is what a checkpoint keeps for it after each batch. Sources that can seek
  override both; the default reads and drops the first batches. Sources never draw from the global random-number
  generators (their randomness is seeded by (seed, epoch, rank, sample)), so a resumed run draws what it would have.

A new source adds one builder to `SOURCES`; its key becomes a `--dataset-type` choice.
"""

from __future__ import annotations

import abc
import itertools
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch


@dataclass
class Batch:
    images: torch.Tensor  # float (B, 3, S, S), normalised with the model's mean/std, on the training device
    texts: torch.Tensor  # long (B, context_length) token ids, on the training device
    keys: torch.Tensor | list[str]  # which samples these are: toy-world sample ids, CSV row numbers, shard keys
    num_pads: int = 0  # the last num_pads samples repeat earlier ones (FILL): not counted in samples_seen


class TrainData(abc.ABC):
    num_samples: int
    num_batches: int
    # Samples skipped by this rank, by reason (fastclip.data.skips.SKIP_REASONS): over the run, and in the epoch
    # being read. Sources that skip assign their own Counters in __init__; these empty ones are never written.
    skip_counts: Counter = Counter()
    epoch_skip_counts: Counter = Counter()

    @property
    def skipped(self) -> int:
        return sum(self.skip_counts.values())

    @abc.abstractmethod
    def batches(self, epoch: int) -> Iterator[Batch]:
        """The `num_batches` batches of this rank for `epoch` (0-based)."""

    def batches_from(self, epoch: int, start_batch: int, position: Any = None) -> Iterator[Batch]:
        """Batches `start_batch`... of `epoch`; `position` is what position() returned after batch start_batch - 1
        (None when the batch layout changed). This default is exact for any source, at the cost of loading the
        dropped batches."""
        return itertools.islice(self.batches(epoch), start_batch, None)

    def position(self) -> Any:
        """Where this rank's stream stands after the last batch yielded, as plain data for a checkpoint (None: the
        batch count says it all)."""
        return None


class ImageNormalizer:
    """[0,1] images -> the model's normalised input, on the training device."""

    def __init__(self, mean, std, device: torch.device):
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        return (images - self.mean) / self.std


def batches_per_rank(num_samples: int, batch_size: int, world_size: int, *, source: str) -> int:
    """open_clip's drop-last accounting; an epoch without a single full batch is an error, not a silent no-op."""
    num_batches = num_samples // (batch_size * world_size)
    if num_batches == 0:
        raise ValueError(
            f"{source}: an epoch of {num_samples} samples holds no full batch of --batch-size {batch_size} on "
            f"{world_size} rank(s); raise --train-num-samples or lower --batch-size"
        )
    return num_batches


class ToyWorldTrainData(TrainData):
    """The embedded toy world: scenes rendered on the training device, every epoch a fresh set of sample ids."""

    def __init__(self, args, bundle, *, device, rank: int, world_size: int):
        from fastclip.data.toyworld import ToyWorldData
        from fastclip.data.toyworld_knobs import knobs_of_config

        if args.train_num_samples is None:
            raise ValueError("--dataset-type toyworld needs --train-num-samples (the images in one epoch)")
        self.num_samples = int(args.train_num_samples)
        self.batch_size = int(args.batch_size)
        self.rank, self.world_size = rank, world_size
        batches_per_rank(self.num_samples, self.batch_size, world_size, source="--dataset-type toyworld")
        # The world's seed is the same on every rank, so the ranks read disjoint shares of one epoch.
        self.world = ToyWorldData(self.num_samples, image_size=bundle.image_size, seed=args.seed, device=device,
                                  world=knobs_of_config(args))  # fmt: skip
        self.num_batches = self.world.num_batches(self.batch_size, world_size)
        self.normalize = ImageNormalizer(bundle.image_mean, bundle.image_std, device)
        self.tokenizer = bundle.tokenizer
        self.device = torch.device(device)

    def batches(self, epoch: int) -> Iterator[Batch]:
        return self.batches_from(epoch, 0)

    def batches_from(self, epoch: int, start_batch: int, position: Any = None) -> Iterator[Batch]:
        """Scenes are a function of their sample id, so seeking is slicing the epoch's ids."""
        sample_ids = self.world.sample_ids(epoch, self.batch_size, rank=self.rank, world_size=self.world_size)
        for ids in sample_ids[start_batch:]:
            images, captions, ids = self.world.render(ids)
            yield Batch(
                images=self.normalize(images),
                texts=self.tokenizer(captions).to(self.device, non_blocking=True),
                keys=ids,
            )


def _build_toyworld(args, bundle, *, device, rank, world_size) -> TrainData:
    return ToyWorldTrainData(args, bundle, device=device, rank=rank, world_size=world_size)


def _build_csv(args, bundle, *, device, rank, world_size) -> TrainData:
    from fastclip.data.csv_dataset import CsvTrainData

    return CsvTrainData(args, bundle, device=device, rank=rank, world_size=world_size)


def _build_webdataset(args, bundle, *, device, rank, world_size) -> TrainData:
    from fastclip.data.streaming import build_streaming_train_data

    return build_streaming_train_data(args, bundle, kind="webdataset", device=device, rank=rank, world_size=world_size)


def _build_folder(args, bundle, *, device, rank, world_size) -> TrainData:
    from fastclip.data.streaming import build_streaming_train_data

    return build_streaming_train_data(args, bundle, kind="folder", device=device, rank=rank, world_size=world_size)


def _build_synthetic(args, bundle, *, device, rank, world_size) -> TrainData:
    from fastclip.data.synthetic import SyntheticTrainData

    return SyntheticTrainData(args, bundle, device=device, rank=rank, world_size=world_size)


def _build_auto(args, bundle, *, device, rank, world_size) -> TrainData:
    """open_clip's `auto`: the type follows --train-data (.csv/.tsv, .tar shards, a folder of class folders)."""
    from fastclip.data.sources import detect_dataset_type

    if not args.train_data:
        raise ValueError("--dataset-type auto needs --train-data (a .csv/.tsv, .tar shards or an image folder)")
    kind = detect_dataset_type(args.train_data)
    return SOURCES[kind](args, bundle, device=device, rank=rank, world_size=world_size)


SOURCES: dict[str, Callable[..., TrainData]] = {
    "toyworld": _build_toyworld, "csv": _build_csv, "webdataset": _build_webdataset, "folder": _build_folder,
    "auto": _build_auto, "synthetic": _build_synthetic,
}
DATASET_TYPES = tuple(SOURCES)


def build_train_data(args, bundle, *, device, rank: int = 0, world_size: int = 1) -> TrainData:
    """The training data named by `args.dataset_type`, normalised and tokenised for `bundle`'s model.

    `args` carries open_clip's data flags (train_data, train_num_samples, batch_size, seed, workers, csv_*).
    """
    if args.dataset_type not in SOURCES:
        raise ValueError(f"--dataset-type must be one of {DATASET_TYPES}, got {args.dataset_type!r}")
    return SOURCES[args.dataset_type](args, bundle, device=torch.device(device), rank=rank, world_size=world_size)
