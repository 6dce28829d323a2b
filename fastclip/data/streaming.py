"""Training data from webdataset shards or an image folder, through the DALI or the torch backend.

Both backends share the sources, the per-rank plan, the readers and the FILL policy (fastclip.data.sharding), so
they yield the same samples in the same order per (seed, epoch, world size, rank, workers); only the decoding and
resizing differ (DALI: nvImageCodec + DALI resize; torch: PIL, exactly open_clip's transforms). Reading and
tokenisation run in the DataLoader workers; on a CUDA device, batches are also assembled and decoded in a
background thread, off the training thread (on the CPU they take turns with the training step, see batches()).

Backend choice (`--data-backend auto`): DALI on a CUDA device when it imports (mixed GPU decoding); on the CPU
the backend that benchmarks/bench_data.py measured faster at equal CPU budget (CPU_DALI_OVER_TORCH below). An
explicit `dali` that cannot run is an error; under `auto` a DALI failure at start falls back to torch, logged.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from typing import Iterator

import torch
from torch.utils.data import DataLoader

from fastclip.data.captions import CaptionTokenizer
from fastclip.data.folder import FolderSource
from fastclip.data.loader import Batch, TrainData
from fastclip.data.sharding import batches_per_rank, derive_seed, fill_batches, rank_bounds
from fastclip.data.skips import format_counts
from fastclip.data.sources import WebDatasetSource
from fastclip.data.rank_stream import (
    DEFAULT_SHUFFLE_BUFFER,
    STREAMS_PER_RANK,
    ChunkProducer,
    in_stream_order,
    usable_workers,
)
from fastclip.data.webdataset import normalize_on_device

LOG = logging.getLogger("fastclip.data")

DATA_BACKENDS = ("auto", "dali", "torch")

# img/s of DALI on the CPU (decode + RandomResizedCrop + normalise, 2 threads, shards read inline) over the torch
# path (2 DataLoader workers), 256x256 JPEG shards -> 224 px, in one run of benchmarks/bench_data.py
# (test_cpu_backend_ratio) on the 2-core AMD EPYC CI VM, torch 2.14.1, DALI 2.4.0, 2026-11-28: 1.45 (220 vs
# 152 img/s; the machine was shared, earlier runs of older code gave 1.9-3.1). Above 1: `auto` picks DALI.
CPU_DALI_OVER_TORCH = 1.45


def choose_backend(requested: str, device: torch.device) -> tuple[str, str]:
    """(backend, why) for --data-backend; an explicit 'dali' without DALI raises ValueError with the install hint."""
    from fastclip.data.dali import dali_import_error

    if requested not in DATA_BACKENDS:
        raise ValueError(f"--data-backend must be one of {DATA_BACKENDS}, got {requested!r}")
    if requested == "torch":
        return "torch", "requested"
    missing = dali_import_error()
    if requested == "dali":
        if missing is not None:
            raise ValueError(f"--data-backend dali: {missing}")
        return "dali", "requested"
    if missing is not None:
        return "torch", f"auto: {missing}"
    if device.type == "cuda":
        return "dali", "auto: DALI decodes on the GPU (mixed)"
    if CPU_DALI_OVER_TORCH > 1:
        return "dali", f"auto: DALI-CPU measured {CPU_DALI_OVER_TORCH:.2f}x the torch path on the CPU"
    return "torch", f"auto: on the CPU the torch path measured {1 / max(CPU_DALI_OVER_TORCH, 1e-9):.2f}x DALI-CPU"


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch_in_thread(iterator: Iterator, depth: int, setup=None) -> Iterator:
    """Run `iterator` in a daemon thread, `depth` items ahead; its exceptions re-raise in the consumer."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            if setup is not None:
                setup()
            for item in iterator:
                if not put(item):
                    break
            else:
                put(done)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(_Failure(exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name="fastclip-data", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join()


class StreamingTrainData(TrainData):
    """fastclip.data.loader's TrainData over webdataset shards or an image folder: `num_samples`, `num_batches`
    (per rank per epoch, equal on every rank), `batches(epoch)`, `skip_counts` (this rank, by reason, cumulative)
    and `epoch_skip_counts` (this rank, the epoch being read)."""

    def __init__(
        self,
        source: WebDatasetSource | FolderSource,
        *,
        tokenizer,
        image_size: int,
        image_mean,
        image_std,
        batch_size: int,
        backend: str = "auto",
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        workers: int = 0,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        train: bool = True,
        dali_threads: int | None = None,
        hw_decoder_load: float | None = None,
        shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
        prefetch: int = 2,
    ):
        from fastclip.data.dali import DEFAULT_HW_DECODER_LOAD

        self.source = source
        self.tokenizer = tokenizer if isinstance(tokenizer, CaptionTokenizer) else CaptionTokenizer(tokenizer)
        self.image_size, self.image_mean, self.image_std = image_size, tuple(image_mean), tuple(image_std)
        self.batch_size, self.world_size, self.rank, self.seed = batch_size, world_size, rank, seed
        self.workers, self.device, self.dtype, self.train = workers, torch.device(device), dtype, train
        self.loader_workers = usable_workers(workers)
        if self.loader_workers != workers:
            LOG.info("using %d data workers instead of %d: the %d streams of a rank must share evenly",
                     self.loader_workers, workers, STREAMS_PER_RANK)
        self.dali_threads = dali_threads or max(1, workers)
        self.hw_decoder_load = DEFAULT_HW_DECODER_LOAD if hw_decoder_load is None else hw_decoder_load
        self.shuffle_buffer, self.prefetch = shuffle_buffer, prefetch
        self.num_samples = source.num_samples
        if self.num_samples > source.total_count:
            raise ValueError(
                f"--train-num-samples {self.num_samples} is more than the {source.total_count} samples of "
                f"{getattr(source, 'spec', None) or source.root}: an epoch reads each sample at most once here "
                "(leave the flag out for a full pass, or give a smaller budget)")
        self.num_batches = batches_per_rank(self.num_samples, world_size, batch_size)
        self.skip_counts: Counter = Counter()
        self.epoch_skip_counts: Counter = Counter()
        self.unread = 0  # samples of this rank's slices left unread because the epoch budget was reached
        self.dali_rebuilds = 0
        self._described = False
        self.backend, self.backend_reason = choose_backend(backend, self.device)
        self._unused_decoder = None  # (epoch, decoder) built at start to find out early whether DALI runs
        if self.backend == "dali":
            try:
                self._unused_decoder = (0, self._new_decoder(epoch=0))
            except Exception as exc:
                if backend == "dali":
                    raise
                LOG.warning("DALI failed to start (%s: %s); using the torch backend", type(exc).__name__, exc)
                self.backend, self.backend_reason = "torch", f"auto: DALI failed to start ({exc})"

    def describe(self) -> str:
        return (f"{self.source.describe()}; backend {self.backend} ({self.backend_reason}); "
                f"{self.num_batches} batches of {self.batch_size} per rank per epoch (FILL)")

    def skip_summary(self) -> str:
        return f"skipped {format_counts(self.skip_counts)}; unread past the epoch budget {self.unread}"

    def _new_decoder(self, epoch: int):
        from fastclip.data.dali import DaliDecoder

        return DaliDecoder(batch_size=self.batch_size, image_size=self.image_size, mean=self.image_mean,
                           std=self.image_std, train=self.train, device=self.device,
                           hw_decoder_load=self.hw_decoder_load, num_threads=self.dali_threads,
                           seed=derive_seed(self.seed, epoch, self.rank, "dali") % (2**31), dtype=self.dtype)

    def _take_decoder(self, epoch: int):
        """A pipeline seeded for this epoch, fresh for every pass, so a pass never depends on the one before."""
        unused, self._unused_decoder = self._unused_decoder, None
        if unused is not None and unused[0] == epoch:
            return unused[1]
        del unused
        return self._new_decoder(epoch)

    def _on_skipped(self, reason: str, count: int) -> None:
        self.skip_counts[reason] += count
        self.epoch_skip_counts[reason] += count

    def _note_damaged_tars(self, chunks: Iterator, epoch: int) -> Iterator:
        """Log each damaged tar once per epoch (its rank's streams each meet it and count their own share)."""
        seen: set[str] = set()
        for chunk in chunks:
            for tar, problem in chunk.damaged.items():
                if tar not in seen:
                    seen.add(tar)
                    LOG.warning("data rank %d epoch %d: %s is damaged (%s); its unread samples are counted as "
                                "skipped", self.rank, epoch + 1, tar, problem)
            yield chunk

    def batches(self, epoch: int) -> Iterator[Batch]:
        if not self._described:
            LOG.info("data: %s", self.describe())
            self._described = True
        dali = self.backend == "dali"
        producer = ChunkProducer(self.source, mode="encoded" if dali else "decode", world_size=self.world_size,
                                 rank=self.rank, seed=self.seed, epoch=epoch, tokenizer=self.tokenizer,
                                 image_size=self.image_size, batch_size=self.batch_size, train=self.train,
                                 shuffle_buffer=self.shuffle_buffer)
        # An explicit generator: the loader's worker seeds must not draw from the global one, which training owns.
        loader = DataLoader(producer, batch_size=None, num_workers=self.loader_workers,
                            pin_memory=self.device.type == "cuda" and not dali,
                            generator=torch.Generator().manual_seed(derive_seed(self.seed, epoch, self.rank, "loader")))
        # Workers fork here, on the calling thread, never from the background thread.
        chunks = self._note_damaged_tars(in_stream_order(iter(loader), producer), epoch)
        if dali:
            from fastclip.data.dali import decoded_chunks

            decoder = self._take_decoder(epoch)
            chunks = decoded_chunks(chunks, decoder, self.batch_size)
        self.epoch_skip_counts = Counter()
        filled = fill_batches(chunks, batch_size=self.batch_size, num_batches=self.num_batches,
                              on_skipped=self._on_skipped, rank_name=f"data rank {self.rank} epoch {epoch + 1}")
        device = self.device

        def to_device() -> Iterator[Batch]:
            pads = produced = 0
            try:
                for batch in filled:
                    images = batch.images if dali else normalize_on_device(
                        batch.images, self.image_mean, self.image_std, device=device, dtype=self.dtype)
                    pads += batch.num_pads
                    produced += 1
                    yield Batch(images, batch.texts.to(device, non_blocking=True), batch.keys, batch.num_pads)
            except (Exception, GeneratorExit):  # a data error here, or the consumer stopped (its own error)
                if produced < self.num_batches:
                    self._log_epoch(epoch, None, pads, ended_early=True)
                raise
            if dali:
                self.dali_rebuilds += decoder.rebuilds
            used = self.num_batches * self.batch_size - pads
            lo, hi = rank_bounds(self.source.total_count, self.world_size, self.rank)
            unread = max(0, (hi - lo) - used - sum(self.epoch_skip_counts.values()))
            self.unread += unread
            self._log_epoch(epoch, unread, pads)

        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            yield from prefetch_in_thread(to_device(), self.prefetch, lambda: torch.cuda.set_device(index))
        else:
            # On the CPU, decoding beside the training step only makes the two fight for the same cores: torch's
            # OpenMP team then waits at every barrier for a thread the scheduler gave to DALI or the normaliser,
            # which measured 3-4x slower end to end on 2 cores. Inline, they take turns.
            yield from to_device()

    def _log_epoch(self, epoch: int, unread: int | None, pads: int, ended_early: bool = False) -> None:
        """The rank's counts for the epoch (also when it ends early on an error, before the error is raised)."""
        message = (f"data rank {self.rank} epoch {epoch + 1}{' (ended early)' if ended_early else ''}: skipped "
                   f"{format_counts(self.epoch_skip_counts)}, pads {pads}"
                   + (f", unread past the budget {unread}" if unread is not None else "")
                   + (f", DALI pipeline rebuilds {self.dali_rebuilds}" if self.backend == "dali" else "")
                   + f"; run total skipped {format_counts(self.skip_counts)}")
        LOG.log(logging.WARNING if self.epoch_skip_counts or ended_early else logging.INFO, message)


def build_streaming_train_data(args, bundle, *, kind: str, device, rank: int, world_size: int) -> StreamingTrainData:
    """fastclip-train's `--dataset-type webdataset|folder`: open_clip's data flags (train_data, train_num_samples,
    batch_size, seed, workers) plus --data-backend and --hw-decoder-load."""
    from fastclip.data.folder import open_image_folder
    from fastclip.data.sources import open_webdataset

    if not args.train_data:
        raise ValueError(f"--dataset-type {kind} needs --train-data (shards such as 'shards/{{00000..00009}}.tar', "
                         "several joined with '::'; or a folder with one subfolder per class)")
    if kind == "webdataset":
        source = open_webdataset(args.train_data, num_samples=args.train_num_samples)
    else:
        source = open_image_folder(args.train_data, num_samples=args.train_num_samples)
    return StreamingTrainData(
        source, tokenizer=bundle.tokenizer, image_size=bundle.image_size, image_mean=bundle.image_mean,
        image_std=bundle.image_std, batch_size=args.batch_size, backend=getattr(args, "data_backend", "auto"),
        world_size=world_size, rank=rank, seed=args.seed, workers=args.workers, device=device,
        hw_decoder_load=getattr(args, "hw_decoder_load", None),
    )
