"""Which samples each rank reads in an epoch, and how every rank ends up with the same number of equal batches.

Policy (the FILL of DALI's `pad_last_batch=True` + `LastBatchPolicy.FILL`, without DALI's global sample index):

- Each epoch the shard order is shuffled with a seed derived from (seed, epoch), identically on every rank. The
  shards are laid end to end (by their sample counts from metadata) and cut into `world_size` contiguous slices
  whose sizes differ by at most one sample; a shard may be split between two ranks (the later rank skips the
  first samples by reading tar headers only). Every sample belongs to exactly one rank, and a rank holds
  O(number of shards) integers, never per-sample metadata.
- Batches per rank = ceil(num_samples / (world_size * batch_size)), computed from metadata, so every rank agrees.
- A rank whose readable samples fall short (its slice is one smaller, or unreadable samples were skipped) fills
  its last batch(es) by repeating its most recent samples (newest first, so a batch never holds a single sample
  repeated); repeats are flagged as pads. A rank that has more (the epoch
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
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import torch

from fastclip.data.skips import NoReadableSamplesError, no_samples_message


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
    damaged: dict[str, str] = field(default_factory=dict)  # tar -> what is wrong with it

    def __len__(self) -> int:
        return len(self.keys)

    def select(self, start: int, stop: int) -> "Chunk":
        return Chunk(self.images[start:stop], self.texts[start:stop], self.keys[start:stop])

    def pin_memory(self) -> "Chunk":
        return Chunk(self.images.pin_memory(), self.texts.pin_memory(), self.keys, self.skipped, self.damaged)


@dataclass
class FilledBatch:
    """Exactly batch_size samples; the last `num_pads` repeat earlier real samples of the rank (FILL)."""

    images: torch.Tensor
    texts: torch.Tensor
    keys: list[str]
    num_pads: int


def _concat(chunks: Sequence[Chunk]) -> Chunk:
    if len(chunks) == 1:
        return chunks[0]
    return Chunk(torch.cat([c.images for c in chunks]), torch.cat([c.texts for c in chunks]),
                 [key for c in chunks for key in c.keys])


def _pads(pool: Chunk, count: int) -> Chunk:
    """`count` samples from the end of `pool` backwards, cycling: the most recent first, all different while
    count <= len(pool)."""
    index = [len(pool) - 1 - (i % len(pool)) for i in range(count)]
    positions = torch.tensor(index, dtype=torch.long, device=pool.images.device)
    return Chunk(pool.images.index_select(0, positions), pool.texts.index_select(0, positions.to(pool.texts.device)),
                 [pool.keys[i] for i in index])


def fill_batches(chunks: Iterable[Chunk], *, batch_size: int, num_batches: int,
                 on_skipped=lambda reason, count: None, rank_name: str = "this rank") -> Iterator[FilledBatch]:
    """Regroup chunks into exactly `num_batches` batches of `batch_size` (the FILL policy of the module docstring).

    Pads repeat the rank's most recent real samples, newest first (the previous batch; before any full batch, the
    real samples of the batch being filled), so a batch holds at least min(2, batch_size) different samples: a
    contrastive step over one repeated sample has no gradient but would still move the optimizer. A rank with
    fewer usable samples than that raises NoReadableSamplesError with its skip counts.
    `on_skipped(reason, n)` receives the skip counts the chunks carry. Stops reading after the last batch.
    """
    parts: list[Chunk] = []
    pending = 0
    produced = 0
    readable = 0
    skipped: Counter = Counter()
    recent: Chunk | None = None  # the last full batch of real samples

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
        return _concat(taken)

    for chunk in chunks:
        for reason, count in chunk.skipped.items():
            if count:
                skipped[reason] += count
                on_skipped(reason, count)
        if len(chunk) == 0:
            continue
        parts.append(chunk)
        pending += len(chunk)
        readable += len(chunk)
        while pending >= batch_size and produced < num_batches:
            recent = take(batch_size)
            produced += 1
            yield FilledBatch(recent.images, recent.texts, recent.keys, 0)
        if produced == num_batches:
            return
    if produced < num_batches and readable < min(2, batch_size):
        raise NoReadableSamplesError(no_samples_message(rank_name, readable, batch_size, skipped))
    while produced < num_batches:
        real = take(pending) if pending else None
        pool = recent if recent is not None else real
        pads = _pads(pool, batch_size - (len(real) if real is not None else 0))
        batch = pads if real is None else _concat([real, pads])
        if real is not None:
            recent = real if recent is None else _concat([recent, real]).select(len(real), len(recent) + len(real))
        produced += 1
        yield FilledBatch(batch.images, batch.texts, batch.keys, len(pads))
