"""Per-rank plans and the FILL policy: exactly-once over real gloo process groups of 1, 2 and 3 ranks for two
epochs through both backends, determinism across workers, epoch accounting from _stats.json, and the memory bound
of listing + planning 10^6 samples (RSS measured in a subprocess)."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from fastclip.data.sharding import (
    Chunk,
    NoReadableSamplesError,
    Piece,
    batches_per_rank,
    derive_seed,
    fill_batches,
    piece_length,
    rank_bounds,
    rank_pieces,
    shard_order,
    split_pieces,
)
from fastclip.data.sources import open_webdataset
from fastclip.data.streaming import StreamingTrainData
from fastclip.data.webdataset import iter_tar_samples, RawSample
from tests.wds_fixtures import write_empty_shard, write_good_shards

REPO_ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
UNEVEN_SIZES = [7, 3, 11, 1, 6]  # 28 samples, plus an empty shard among them


class CountTokenizer:
    """A stand-in tokenizer (the real one is tested elsewhere): keeps the rank processes light to start."""

    context_length = 4

    def __call__(self, captions):
        return torch.tensor([[len(c), 0, 0, 0] for c in captions], dtype=torch.long)


def _samples_of(pieces, counts):
    return [(p.unit, i) for p in pieces for i in range(p.start, p.stop if p.stop is not None else counts[p.unit])]


@pytest.mark.parametrize("world_size", [1, 2, 3, 5, 8])
def test_rank_pieces_partition_every_epoch(world_size):
    rng = random.Random(world_size)
    for trial in range(20):
        counts = [rng.choice([0, 1, 2, 5, 13, 40]) for _ in range(rng.randint(1, 9))]
        if sum(counts) == 0:
            continue
        for epoch in range(2):
            per_rank = [_samples_of(rank_pieces(counts, world_size=world_size, rank=r, seed=trial, epoch=epoch), counts)
                        for r in range(world_size)]
            everything = [s for samples in per_rank for s in samples]
            assert sorted(everything) == [(u, i) for u in range(len(counts)) for i in range(counts[u])]
            sizes = [len(samples) for samples in per_rank]
            assert max(sizes) - min(sizes) <= 1


def test_shard_order_depends_on_seed_and_epoch_only():
    counts = [5] * 12
    plan = lambda seed, epoch: rank_pieces(counts, world_size=2, rank=0, seed=seed, epoch=epoch)  # noqa: E731
    assert plan(0, 0) == plan(0, 0)
    assert plan(0, 0) != plan(0, 1) and plan(0, 0) != plan(1, 0)


def test_the_last_piece_of_a_shard_reads_to_its_end():
    first, second = shard_order(2, seed=0, epoch=0)
    # 20 samples over 3 ranks: [0, 7), [7, 14), [14, 20); rank 1 takes the tail of one shard, the head of the other.
    assert rank_pieces([10, 10], world_size=3, rank=1, seed=0, epoch=0) == [Piece(first, 7, None), Piece(second, 0, 4)]


def test_split_pieces_partitions_a_ranks_slice():
    counts = [9, 4, 13]
    pieces = [Piece(0, 2, None), Piece(2, 0, 7), Piece(1, 0, None)]
    for parts in (1, 2, 3, 48):
        shares = [_samples_of(split_pieces(pieces, counts, parts, i), counts) for i in range(parts)]
        assert [s for share in shares for s in share] == _samples_of(pieces, counts)
    assert sum(piece_length(p, counts) for p in pieces) == 7 + 7 + 4


def test_rank_bounds_and_batches_per_rank():
    assert [rank_bounds(10, 3, r) for r in range(3)] == [(0, 4), (4, 7), (7, 10)]
    assert batches_per_rank(28, 3, 4) == 3 and batches_per_rank(24, 3, 4) == 2
    with pytest.raises(ValueError):
        batches_per_rank(0, 1, 4)
    with pytest.raises(ValueError, match="rank 3"):
        rank_bounds(10, 3, 3)
    assert derive_seed(1, "a") == derive_seed(1, "a") != derive_seed(1, "b")


def _chunk(keys, skipped=None):
    n = len(keys)
    return Chunk(torch.arange(n, dtype=torch.float32).view(n, 1) + float(keys[0] if keys else 0),
                 torch.zeros(n, 2, dtype=torch.long), [str(k) for k in keys], skipped or {})


def test_fill_batches_pads_with_the_most_recent_samples_never_one_repeated():
    skipped = Counter()
    batches = list(fill_batches([_chunk([0, 1, 2]), _chunk([], {"x": 2}), _chunk([3, 4])], batch_size=4,
                                num_batches=3, on_skipped=lambda r, n: skipped.update({r: n})))
    # The old policy gave ["4", "4", "4", "4"] twice: one sample repeated, a step with no contrastive gradient.
    assert [b.keys for b in batches] == [["0", "1", "2", "3"], ["4", "3", "2", "1"], ["4", "3", "2", "1"]]
    assert [b.num_pads for b in batches] == [0, 3, 4] and skipped == {"x": 2}
    assert all(b.images.shape == (4, 1) for b in batches)
    for batch in batches:  # the pads carry their own samples' pixels, not the last sample's
        assert batch.images[:, 0].tolist() == [float(key) for key in batch.keys]


def test_fill_batches_before_any_full_batch_cycles_through_the_real_samples():
    batches = list(fill_batches([_chunk([0, 1])], batch_size=4, num_batches=2))
    assert [b.keys for b in batches] == [["0", "1", "1", "0"], ["1", "0", "1", "0"]]
    assert [b.num_pads for b in batches] == [2, 4]
    assert all(len(set(b.keys)) == 2 for b in batches)


def test_fill_batches_refuses_a_rank_with_a_single_usable_sample():
    with pytest.raises(NoReadableSamplesError, match=r"rank 1 read only 1 usable sample of its 4.*2 different"
                                                     r".*skipped 3 \(unreadable_image 3\)"):
        list(fill_batches([_chunk([5], {"unreadable_image": 3})], batch_size=4, num_batches=1, rank_name="rank 1"))
    batches = list(fill_batches([_chunk([5])], batch_size=1, num_batches=2))  # batch size 1 is the user's choice
    assert [b.keys for b in batches] == [["5"], ["5"]]


def test_fill_batches_stops_reading_at_the_budget():
    def chunks():
        yield _chunk(list(range(6)))
        raise AssertionError("read past the budget")

    batches = list(fill_batches(chunks(), batch_size=4, num_batches=1))
    assert len(batches) == 1 and batches[0].keys == ["0", "1", "2", "3"]


def test_fill_batches_without_any_sample_is_an_error_with_the_counts_and_the_fix():
    with pytest.raises(NoReadableSamplesError, match=r"^rank 2 read no usable sample of its 3; skipped 3 "
                                                     r"\(unreadable_image 3\): no image decodes"):
        list(fill_batches([_chunk([], {"unreadable_image": 3})], batch_size=4, num_batches=1, rank_name="rank 2"))


def test_prefetch_thread_keeps_order_reraises_and_stops_early():
    import threading

    from fastclip.data.streaming import prefetch_in_thread

    assert list(prefetch_in_thread(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(prefetch_in_thread(failing(), depth=2))
    produced = []

    def endless():
        while True:
            produced.append(len(produced))
            yield produced[-1]

    stream = prefetch_in_thread(endless(), depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()  # the consumer stops early: the thread ends instead of producing forever
    assert not any(t.name == "fastclip-data" for t in threading.enumerate())
    assert len(produced) <= 3 + 2 + 1


def _write_uneven_shards(folder: Path) -> set[str]:
    members = write_good_shards(folder, UNEVEN_SIZES, width=24, height=20)
    write_empty_shard(folder, "00005.tar")
    return set(members)


def test_epoch_accounting_from_img2dataset_stats(tmp_path):
    members = _write_uneven_shards(tmp_path)
    source = open_webdataset(f"{tmp_path}/{{00000..00005}}.tar")
    read = [s for shard in source.shards for s in iter_tar_samples(shard) if isinstance(s, RawSample)]
    assert source.num_samples == sum(UNEVEN_SIZES) == len(read) == len(members)
    for world_size in (1, 2, 3):
        per_rank = [StreamingTrainData(source, tokenizer=CountTokenizer(), image_size=8, image_mean=MEAN,
                                       image_std=STD, batch_size=4, backend="torch", world_size=world_size, rank=r)
                    for r in range(world_size)]
        assert {d.num_batches for d in per_rank} == {-(-28 // (4 * world_size))}


def test_an_epoch_budget_below_the_data_stops_every_rank_at_the_same_step(tmp_path):
    _write_uneven_shards(tmp_path)
    source = open_webdataset(f"{tmp_path}/{{00000..00005}}.tar", num_samples=16)
    for rank in range(2):
        data = StreamingTrainData(source, tokenizer=CountTokenizer(), image_size=8, image_mean=MEAN, image_std=STD,
                                  batch_size=4, backend="torch", world_size=2, rank=rank)
        batches = list(data.batches(0))
        assert len(batches) == data.num_batches == 2 and all(b.num_pads == 0 for b in batches)
        assert data.unread == 14 - 8  # each rank's slice holds 14; the budget gives it 8
    with pytest.raises(ValueError, match="--train-num-samples 40 is more than the 28 samples"):
        StreamingTrainData(open_webdataset(f"{tmp_path}/{{00000..00005}}.tar", num_samples=40),
                           tokenizer=CountTokenizer(), image_size=8, image_mean=MEAN, image_std=STD, batch_size=4,
                           backend="torch")


def _order_and_pixels(data, epoch):
    keys, pixels = [], []
    for batch in data.batches(epoch):
        keys.extend(batch.keys)
        pixels.append(batch.images)
    return keys, torch.cat(pixels)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 3 workers on the 2-core CI machine
@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_order_and_pixels_do_not_depend_on_workers(tmp_path, backend):
    _write_uneven_shards(tmp_path)
    source = open_webdataset(f"{tmp_path}/{{00000..00005}}.tar")
    runs = {workers: _order_and_pixels(StreamingTrainData(
        source, tokenizer=CountTokenizer(), image_size=8, image_mean=MEAN, image_std=STD, batch_size=4,
        backend=backend, workers=workers, world_size=2, rank=1, seed=5), epoch=1) for workers in (0, 2, 3)}
    keys, pixels = runs[0]
    for workers in (2, 3):
        assert runs[workers][0] == keys
        assert torch.equal(runs[workers][1], pixels)
    torch.set_num_threads(1)
    try:
        single = _order_and_pixels(StreamingTrainData(
            source, tokenizer=CountTokenizer(), image_size=8, image_mean=MEAN, image_std=STD, batch_size=4,
            backend=backend, world_size=2, rank=1, seed=5), epoch=1)
    finally:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    assert single[0] == keys and torch.equal(single[1], pixels)


# ---- exactly once over real process groups ------------------------------------------------------------------

def _rank_main(data_folder: str, out_path: str) -> None:
    """One rank of a gloo group started like torchrun (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    source = open_webdataset(f"{data_folder}/{{00000..00005}}.tar")
    results = {}
    for backend in ("torch", "dali"):
        data = StreamingTrainData(source, tokenizer=CountTokenizer(), image_size=8, image_mean=MEAN,
                                  image_std=STD, batch_size=4, backend=backend, world_size=world_size, rank=rank,
                                  seed=11)
        for epoch in (0, 1):
            batches = [(b.keys, b.num_pads, list(b.images.shape), list(b.texts.shape)) for b in data.batches(epoch)]
            gathered = [None] * world_size
            dist.all_gather_object(gathered, batches)
            results[f"{backend}/{epoch}"] = gathered
    if rank == 0:
        Path(out_path).write_text(json.dumps(results))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def process_groups(tmp_path_factory):
    """Start gloo groups of 1, 2 and 3 ranks at once; returns {world_size: (results, member names)}."""
    folder = tmp_path_factory.mktemp("uneven")
    members = _write_uneven_shards(folder)
    launched = {}
    for world_size in (1, 2, 3):
        out = folder / f"group{world_size}.json"
        env_base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
                    "WORLD_SIZE": str(world_size), "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
        launched[world_size] = (out, [subprocess.Popen(
            [sys.executable, "-m", "tests.test_data_sharding", str(folder), str(out)],
            env={**env_base, "RANK": str(rank), "LOCAL_RANK": str(rank)}, cwd=REPO_ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in range(world_size)])
    results = {}
    for world_size, (out, processes) in launched.items():
        logs = [p.communicate(timeout=240)[0] for p in processes]
        assert all(p.returncode == 0 for p in processes), "\n".join(logs)[-4000:]
        results[world_size] = json.loads(out.read_text())
    return results, members


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_every_sample_exactly_once_per_epoch_over_ranks(process_groups, world_size, backend):
    results, members = process_groups
    orders = []
    for epoch in (0, 1):
        per_rank = results[world_size][f"{backend}/{epoch}"]
        expected_batches = -(-len(members) // (4 * world_size))
        assert [len(batches) for batches in per_rank] == [expected_batches] * world_size
        real = []
        for batches in per_rank:
            rank_real = []
            for keys, num_pads, image_shape, text_shape in batches:
                assert image_shape == [4, 3, 8, 8] and text_shape == [4, 4]
                rank_real.extend(keys[: len(keys) - num_pads])
                assert set(keys[len(keys) - num_pads:]) <= set(rank_real)  # pads repeat the rank's samples
                assert len(set(keys)) >= 2
            assert sum(n for _, n, _, _ in batches) <= 4  # at most one batch of pads per rank
            real.extend(rank_real)
        names = [key.rsplit(":", 1)[-1] for key in real]
        assert len(names) == len(set(names)) and set(names) == members
        orders.append(real)
    assert orders[0] != orders[1]  # another epoch, another order


def test_both_backends_read_the_same_order(process_groups):
    results, _ = process_groups
    for world_size in (1, 2, 3):
        for epoch in ("0", "1"):
            torch_keys = [[b[0] for b in rank] for rank in results[world_size][f"torch/{epoch}"]]
            dali_keys = [[b[0] for b in rank] for rank in results[world_size][f"dali/{epoch}"]]
            assert torch_keys == dali_keys


# ---- memory bound -------------------------------------------------------------------------------------------

MEMORY_PROBE = r"""
import json, resource, sys
from pathlib import Path
folder = Path(sys.argv[1])
from fastclip.data.sources import open_webdataset
from fastclip.data.sharding import rank_pieces, split_pieces
from fastclip.data.rank_stream import ChunkProducer, STREAMS_PER_RANK
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
source = open_webdataset(f"{folder}/{{00000..00999}}.tar")
plans = 0
for epoch in range(2):
    pieces = rank_pieces(source.counts, world_size=8, rank=3, seed=0, epoch=epoch)
    plans += sum(len(split_pieces(pieces, source.counts, STREAMS_PER_RANK, s)) for s in range(STREAMS_PER_RANK))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"samples": source.total_count, "kib": after - before, "pieces": plans}))
"""
RSS_BUDGET_KIB = 4 * 1024  # 4 MiB per rank for 10^6 samples (DALI's global index: ~350 MB, data.md)


def test_listing_and_planning_a_million_samples_stays_small(tmp_path):
    """1,000 img2dataset shards of 1,000 samples (stats files; the tars are placeholders never opened)."""
    for shard in range(1000):
        (tmp_path / f"{shard:05d}.tar").write_bytes(b"")
        (tmp_path / f"{shard:05d}_stats.json").write_text('{"successes": 1000}')
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(tmp_path)], capture_output=True, text=True,
                         cwd=REPO_ROOT, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["samples"] == 10**6
    assert report["kib"] < RSS_BUDGET_KIB, report


if __name__ == "__main__":
    _rank_main(sys.argv[1], sys.argv[2])
