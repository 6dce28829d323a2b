"""One rank's samples for one epoch, produced in chunks by DataLoader workers (or inline without workers).

The rank's slice (fastclip.data.sharding) is cut into STREAMS_PER_RANK contiguous streams. Each stream shuffles
its samples through a small buffer seeded from (seed, epoch, rank, stream) and is consumed in rounds of
`chunk_size` positions; the rank's sample order is round 0 of all streams (in an order seeded per round), then
round 1, and so on. Workers only decide who computes a stream (worker w runs streams w, w+W, ... and ships each
round of its streams as one RoundBundle), so the order, like the pixels (the random crop of a sample is drawn
from (seed, epoch, sample key)), does not depend on the number of workers or threads. A batch of B samples mixes
about min(B, STREAMS_PER_RANK) regions of the rank's data.

Chunks hold, by mode:
- "decode" (torch backend): images decoded with PIL and transformed with open_clip's geometry, uint8 NCHW;
- "encoded" (DALI backend): the encoded bytes packed in one uint8 tensor with offsets, after the structural
  check of webdataset.looks_complete (a PIL decode gives a second opinion), so that DALI batches rarely meet
  an undecodable image and never a garbled JPEG header (which can crash DALI 2.4.0).
Unreadable samples are skipped; every chunk carries the skip counts of its stream's round and the damaged tars
it met (each stream counts the samples of its own share that a damaged tar lost, so each is counted once).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from fastclip.data.captions import CaptionTokenizer
from fastclip.data.folder import FolderSource
from fastclip.data.sharding import Chunk, derive_seed, piece_length, rank_bounds, rank_pieces, split_pieces
from fastclip.data.sources import WebDatasetSource
from fastclip.data.webdataset import (
    RawSample,
    SkippedSample,
    UnreadableImageError,
    decode_rgb,
    eval_transform,
    iter_tar_samples,
    looks_complete,
    pil_decodes,
    to_uint8_chw,
    train_transform,
)

# Divisible by 1, 2, 3, 4, 6, 8, 12, 16, 24 and 48: the worker counts that can share the streams evenly.
STREAMS_PER_RANK = 48
# Samples held in the shuffle buffers of one rank, all streams together (~40 MB of 256-px JPEGs).
DEFAULT_SHUFFLE_BUFFER = 2048
_END = object()


def usable_workers(requested: int, streams: int = STREAMS_PER_RANK) -> int:
    """The largest worker count <= requested that divides the streams evenly (0 stays 0: read inline)."""
    if requested <= 0:
        return 0
    return max(count for count in range(1, min(requested, streams) + 1) if streams % count == 0)


@dataclass
class EncodedChunk:
    """Encoded images packed end to end (`encoded[offsets[i]:offsets[i+1]]` is image i), for the DALI path."""

    encoded: torch.Tensor
    offsets: torch.Tensor
    texts: torch.Tensor
    keys: list[str]
    skipped: dict[str, int] = field(default_factory=dict)
    damaged: dict[str, str] = field(default_factory=dict)  # tar -> what is wrong with it

    def __len__(self) -> int:
        return len(self.keys)

    def select(self, start: int, stop: int) -> "EncodedChunk":
        """Samples [start, stop), sharing the packed bytes (offsets stay absolute)."""
        return EncodedChunk(self.encoded, self.offsets[start:stop + 1], self.texts[start:stop], self.keys[start:stop])

    def images(self) -> list[np.ndarray]:
        flat, bounds = self.encoded.numpy(), self.offsets.tolist()
        return [flat[bounds[i]:bounds[i + 1]] for i in range(len(self.keys))]


def shuffled(samples: Iterable, buffer_size: int, rng: random.Random) -> Iterator:
    """A shuffle buffer: fill, then emit a random element for each new one (skips pass straight through)."""
    buffer: list = []
    for sample in samples:
        if isinstance(sample, SkippedSample) or buffer_size <= 1:
            yield sample
            continue
        if len(buffer) < buffer_size:
            buffer.append(sample)
            continue
        index = rng.randrange(len(buffer))
        yield buffer[index]
        buffer[index] = sample
    rng.shuffle(buffer)
    yield from buffer


class ChunkProducer(IterableDataset):
    def __init__(
        self,
        source: WebDatasetSource | FolderSource,
        *,
        mode: str,
        world_size: int,
        rank: int,
        seed: int,
        epoch: int,
        tokenizer: CaptionTokenizer,
        image_size: int,
        batch_size: int,
        train: bool = True,
        streams: int = STREAMS_PER_RANK,
        shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    ):
        if mode not in ("decode", "encoded"):
            raise ValueError(f"mode must be 'decode' or 'encoded', got {mode!r}")
        self.source, self.mode = source, mode
        self.world_size, self.rank, self.seed, self.epoch = world_size, rank, seed, epoch
        self.tokenizer, self.image_size, self.train = tokenizer, image_size, train
        self.streams = streams
        self.chunk_size = max(1, math.ceil(batch_size / streams))
        self.stream_buffer = max(1, shuffle_buffer // streams)

    def _stream_plan(self, stream: int):
        """(samples of the stream, its length by metadata)."""
        source = self.source
        if isinstance(source, FolderSource):
            order = source.rank_order(world_size=self.world_size, rank=self.rank, seed=self.seed, epoch=self.epoch)
            lo, hi = rank_bounds(len(order), self.streams, stream)
            return source.iter_samples(order[lo:hi], seed=self.seed, epoch=self.epoch), hi - lo
        pieces = rank_pieces(source.counts, world_size=self.world_size, rank=self.rank, seed=self.seed,
                             epoch=self.epoch)
        share = split_pieces(pieces, source.counts, self.streams, stream)
        samples = (sample for piece in share
                   for sample in iter_tar_samples(source.shards[piece.unit], piece.start, piece.stop,
                                                  expected=source.counts[piece.unit]))
        rng = random.Random(derive_seed(self.seed, self.epoch, self.rank, stream, "sample-shuffle"))
        length = sum(piece_length(piece, source.counts) for piece in share)
        return shuffled(samples, self.stream_buffer, rng), length

    def _decode(self, sample: RawSample) -> np.ndarray:
        image = decode_rgb(sample.image)
        if self.train:
            rng = random.Random(derive_seed(self.seed, self.epoch, sample.key, "crop"))
            image = train_transform(image, self.image_size, rng)
        else:
            image = eval_transform(image, self.image_size)
        return to_uint8_chw(image)

    def _prepare(self, samples: list[RawSample | SkippedSample], images: list, captions: list[str],
                 keys: list[str], damaged: dict[str, str]) -> dict[str, int]:
        """Decode (or check) the samples of one stream's round into the lists; returns its skip counts and notes
        the damaged tars (path -> error) in `damaged`."""
        skipped: Counter = Counter()
        for sample in samples:
            if isinstance(sample, SkippedSample):
                skipped[sample.reason] += sample.count
                if sample.detail:
                    damaged[sample.key.rsplit(":", 1)[0]] = sample.detail
                continue
            if self.mode == "decode":
                try:
                    images.append(self._decode(sample))
                except UnreadableImageError:
                    skipped["unreadable_image"] += 1
                    continue
            elif looks_complete(sample.image) or pil_decodes(sample.image):
                images.append(sample.image)
            else:
                skipped["unreadable_image"] += 1
                continue
            captions.append(sample.caption)
            keys.append(sample.key)
        return dict(skipped)

    def _bundle(self, round_index: int, entries: list[tuple[int, list, bool]]) -> "RoundBundle":
        """One worker's round, all its streams in one tensor (one shared-memory transfer, one tokenizer call)."""
        images, captions, keys, parts = [], [], [], []
        for stream, samples, last in entries:
            before, damaged = len(keys), {}
            skipped = self._prepare(samples, images, captions, keys, damaged)
            parts.append((stream, round_index, last, len(keys) - before, skipped, damaged))
        texts = self.tokenizer(captions)
        if self.mode == "decode":
            stacked = torch.from_numpy(np.stack(images) if images
                                       else np.zeros((0, 3, self.image_size, self.image_size), dtype=np.uint8))
            return RoundBundle(Chunk(stacked, texts, keys), parts)
        encoded = torch.empty(sum(map(len, images)), dtype=torch.uint8)
        offsets = torch.tensor([0] + [len(image) for image in images], dtype=torch.long).cumsum(0)
        flat = encoded.numpy()
        for image, start in zip(images, offsets.tolist()):
            flat[start:start + len(image)] = np.frombuffer(image, dtype=np.uint8)
        return RoundBundle(EncodedChunk(encoded, offsets, texts, keys), parts)

    def _stream_rounds(self, stream: int) -> Iterator[tuple[list, bool]]:
        """(samples, last) per round: the next chunk_size positions of the stream. A stream that runs dry before
        its metadata length still takes part (empty) in its remaining rounds, so all workers keep the same pace;
        one that holds more (a stale count) goes on with further rounds."""
        samples, length = self._stream_plan(stream)
        rounds = max(1, math.ceil(length / self.chunk_size))
        samples = iter(samples)
        lookahead = next(samples, _END)
        round_index = 0
        while True:
            taken = []
            while lookahead is not _END and len(taken) < self.chunk_size:
                taken.append(lookahead)
                lookahead = next(samples, _END)
            last = lookahead is _END and round_index + 1 >= rounds
            yield taken, last
            if last:
                return
            round_index += 1

    def round_order(self, round_index: int, active: list[int]) -> list[int]:
        """The streams of a round in a seeded order, so that a batch mixes streams differently every round."""
        order = list(active)
        random.Random(derive_seed(self.seed, self.epoch, self.rank, round_index, "round-order")).shuffle(order)
        return order

    def __iter__(self):
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        active = {stream: self._stream_rounds(stream) for stream in range(worker, self.streams, num_workers)}
        round_index = 0
        while active:
            entries = []
            for stream in list(active):
                samples, last = next(active[stream])
                entries.append((stream, samples, last))
                if last:
                    del active[stream]
            yield self._bundle(round_index, entries)
            round_index += 1


@dataclass
class RoundBundle:
    """The samples of one round of one worker's streams, stream after stream; parts[i] = (stream, round, last,
    number of samples kept, skip counts, damaged tars)."""

    chunk: Chunk | EncodedChunk
    parts: list[tuple[int, int, bool, int, dict]]

    def pin_memory(self) -> "RoundBundle":
        return RoundBundle(self.chunk.pin_memory(), self.parts)

    def split(self) -> Iterator[tuple[tuple[int, int, bool], Chunk | EncodedChunk]]:
        start = 0
        for stream, round_index, last, count, skipped, damaged in self.parts:
            piece = self.chunk.select(start, start + count)
            piece.skipped, piece.damaged = skipped, damaged
            yield (stream, round_index, last), piece
            start += count


def in_stream_order(bundles: Iterable[RoundBundle], producer: ChunkProducer) -> Iterator[Chunk | EncodedChunk]:
    """Per-stream chunks in the rank's order: round by round, the streams of a round in the order
    producer.round_order gives, whatever order the workers delivered them in (about a round is held)."""
    bundles = iter(bundles)
    waiting: dict[tuple[int, int], tuple[bool, object]] = {}
    active = list(range(producer.streams))
    round_index = 0
    while active:
        for stream in producer.round_order(round_index, active):
            while (stream, round_index) not in waiting:
                try:
                    bundle = next(bundles)
                except StopIteration:
                    raise RuntimeError(f"the data workers stopped before stream {stream} round {round_index}") from None
                for (part_stream, part_round, last), chunk in bundle.split():
                    waiting[part_stream, part_round] = (last, chunk)
            last, chunk = waiting.pop((stream, round_index))
            if last:
                active.remove(stream)
            yield chunk
        round_index += 1
