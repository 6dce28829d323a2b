"""Which samples each rank reads in an epoch, and how every rank ends up with the same number of equal batches.

Policy (the FILL of DALI's `pad_last_batch=True` + `LastBatchPolicy.FILL`, without DALI's global sample index):

- Each epoch the shard order is shuffled with a seed derived from (seed, epoch), identically on every rank. The
  shards are laid end to end (by their sample counts from metadata) and cut into `world_size` contiguous slices
  whose sizes differ by at most one sample; a shard may be split between two ranks (the later rank skips the
  first samples by reading tar headers only). Every sample belongs to exactly one rank, and a rank holds
  O(number of shards) integers, never per-sample metadata.
- Batches per rank = ceil(num_samples / (world_size * batch_size)), computed from metadata, so every rank agrees.
- A rank whose readable samples fall short (its slice is one smaller, or unreadable samples were skipped) fills
  its last batch(es) by repeating its last sample; repeats are flagged as pads. A rank that has more (the epoch
  budget --train-num-samples is below the data, or the metadata undercounts) stops at the budget; the rest of
  its slice is not read that epoch (counted as unread). A budget above the data is refused: an epoch reads each
  sample at most once.
- Per rank there are therefore at most batch_size pads per epoch (more only where samples were skipped), and the
  union over ranks of the non-pad samples is the whole dataset (within the budget).
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import torch


def derive_seed(*parts) -> int:
    """A 63-bit seed from any values; unlike hash(), the same in every process and run."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass(frozen=True)
class Piece:
    """Samples [start, stop) of shard `unit` (counted in key groups); stop=None reads to the end of the shard, so
    samples beyond a stale count are still read exactly once (by the rank holding the shard's tail)."""

    unit: int
    start: int
    stop: int | None


def rank_bounds(total: int, parts: int, index: int) -> tuple[int, int]:
    """[lo, hi) of the index-th of `parts` contiguous slices of range(total); sizes differ by at most one."""
    if not 0 <= index < parts:
        raise ValueError(f"rank {index} is outside world_size {parts}")
    base, extra = divmod(total, parts)
    lo = index * base + min(index, extra)
    return lo, lo + base + (1 if index < extra else 0)


def _cut(pieces: Sequence[Piece], lengths: Sequence[int], lo: int, hi: int) -> list[Piece]:
    """The pieces covering positions [lo, hi) of `pieces` laid end to end."""
    out, offset = [], 0
    for piece, length in zip(pieces, lengths):
        first, last = max(offset, lo), min(offset + length, hi)
        if first < last:
            reaches_end = last == offset + length and piece.stop is None
            out.append(Piece(piece.unit, piece.start + first - offset,
                             None if reaches_end else piece.start + last - offset))
        offset += length
        if offset >= hi:
            break
    return out


def shard_order(num_shards: int, *, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    order = list(range(num_shards))
    if shuffle:
        random.Random(derive_seed(seed, epoch, "shard-order")).shuffle(order)
    return order


def rank_pieces(counts: Sequence[int], *, world_size: int, rank: int, seed: int, epoch: int,
                shuffle: bool = True) -> list[Piece]:
    """This rank's slice of the epoch: the same shuffled shard order on every rank, cut into equal slices."""
    order = shard_order(len(counts), seed=seed, epoch=epoch, shuffle=shuffle)
    lo, hi = rank_bounds(sum(counts), world_size, rank)
    return _cut([Piece(unit, 0, None) for unit in order], [counts[unit] for unit in order], lo, hi)


def piece_length(piece: Piece, counts: Sequence[int]) -> int:
    stop = counts[piece.unit] if piece.stop is None else piece.stop
    return max(0, stop - piece.start)


def split_pieces(pieces: Sequence[Piece], counts: Sequence[int], parts: int, index: int) -> list[Piece]:
    """The index-th of `parts` contiguous shares of a rank's pieces (DataLoader workers split a rank's slice)."""
    lengths = [piece_length(piece, counts) for piece in pieces]
    return _cut(pieces, lengths, *rank_bounds(sum(lengths), parts, index))


def batches_per_rank(num_samples: int, world_size: int, batch_size: int) -> int:
    """ceil(num_samples / (world_size * batch_size)): every rank yields this many full batches per epoch."""
    if num_samples <= 0 or world_size <= 0 or batch_size <= 0:
        raise ValueError(f"num_samples, world_size and batch_size must be positive, got {num_samples}, "
                         f"{world_size}, {batch_size}")
    return math.ceil(num_samples / (world_size * batch_size))


@dataclass
class Chunk:
    """Consecutive samples of one rank: `images` (n, ...) tensor, `texts` (n, context) int64, one key each, and
    the samples skipped (by reason) since the previous chunk of the same producer."""

    images: torch.Tensor
    texts: torch.Tensor
    keys: list[str]
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keys)

    def select(self, start: int, stop: int) -> "Chunk":
        return Chunk(self.images[start:stop], self.texts[start:stop], self.keys[start:stop])

    def pin_memory(self) -> "Chunk":
        return Chunk(self.images.pin_memory(), self.texts.pin_memory(), self.keys, self.skipped)


@dataclass
class FilledBatch:
    """Exactly batch_size samples; the last `num_pads` are repeats of the rank's last real sample."""

    images: torch.Tensor
    texts: torch.Tensor
    keys: list[str]
    num_pads: int


class NoReadableSamplesError(RuntimeError):
    pass


def fill_batches(chunks: Iterable[Chunk], *, batch_size: int, num_batches: int,
                 on_skipped=lambda reason, count: None, rank_name: str = "this rank") -> Iterator[FilledBatch]:
    """Regroup chunks into exactly `num_batches` batches of `batch_size` (the FILL policy of the module docstring).

    `on_skipped(reason, n)` receives the skip counts the chunks carry. Stops reading after the last batch.
    """
    parts: list[Chunk] = []
    pending = 0
    produced = 0
    last: Chunk | None = None

    def take(count: int) -> Chunk:
        nonlocal parts, pending
        taken, need = [], count
        while need:
            head = parts[0]
            if len(head) <= need:
                taken.append(head)
                parts.pop(0)
                need -= len(head)
            else:
                taken.append(Chunk(head.images[:need], head.texts[:need], head.keys[:need]))
                parts[0] = Chunk(head.images[need:], head.texts[need:], head.keys[need:])
                need = 0
        pending -= count
        if len(taken) == 1:
            return taken[0]
        return Chunk(torch.cat([t.images for t in taken]), torch.cat([t.texts for t in taken]),
                     [key for t in taken for key in t.keys])

    for chunk in chunks:
        for reason, count in chunk.skipped.items():
            if count:
                on_skipped(reason, count)
        if len(chunk) == 0:
            continue
        parts.append(chunk)
        pending += len(chunk)
        while pending >= batch_size and produced < num_batches:
            batch = take(batch_size)
            last = batch
            produced += 1
            yield FilledBatch(batch.images, batch.texts, batch.keys, 0)
        if produced == num_batches:
            return
    while produced < num_batches:
        real = take(pending) if pending else None
        if real is not None:
            last = real
        if last is None:
            raise NoReadableSamplesError(
                f"{rank_name} has no readable sample to fill its {num_batches} batch(es) with: its slice of the data "
                "is empty or every sample in it was skipped (see the skip counts)"
            )
        pads = batch_size - (len(real) if real is not None else 0)
        pad_images = last.images[-1:].expand(pads, *last.images.shape[1:])
        pad_texts = last.texts[-1:].expand(pads, *last.texts.shape[1:])
        images = pad_images.contiguous() if real is None else torch.cat([real.images, pad_images])
        texts = pad_texts.contiguous() if real is None else torch.cat([real.texts, pad_texts])
        keys = ([] if real is None else list(real.keys)) + [last.keys[-1]] * pads
        produced += 1
        yield FilledBatch(images, texts, keys, pads)
