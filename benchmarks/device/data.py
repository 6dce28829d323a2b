"""GPU data-path check and timing (a step of run.py; an H200 with 16 CPU cores).

Providers, all on the same img2dataset-style shards (256 x 256 JPEG, quality 95) with open_clip's training
transform to 224 px, batches of 256:
  dali_hw0 / dali_hw0.65 / dali_hw0.9   fastclip's DALI backend, mixed decoder, hw_decoder_load 0 / 0.65 / 0.9
  torch_16w                             fastclip's torch backend, DataLoader with 16 workers, PIL decoding
  tv_nvjpeg                             torchvision.io.decode_jpeg on the GPU (nvJPEG) + resized crop per image
A provider whose package is missing (DALI, PIL, torchvision) is left out and the output says so: on a machine
without DALI the decode is measured through torchvision's nvJPEG path. Reported: img/s, host CPU use (cores busy:
process + reaped workers), GPU memory growth (device-wide free memory, so DALI's own allocations count) over
--memory-batches batches of the DALI 0.65 provider (tv_nvjpeg without DALI). Correctness first: DALI mixed output
against the DALI CPU pipeline, torchvision's nvJPEG against libjpeg-turbo on the CPU (torchvision's CPU decoder).
The test images are smooth random colour fields, made with torch and encoded by torchvision (no PIL needed).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from fastclip.data.dali import dali_import_error  # noqa: E402
from fastclip.data.shard_writer import caption_sample, sample_key, write_shard  # noqa: E402
from fastclip.data.sources import open_webdataset  # noqa: E402
from fastclip.data.streaming import StreamingTrainData  # noqa: E402

from _common import Figures, print_markdown_table, require_cuda, skip_step  # noqa: E402

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
SIZE, SHARD_SIZE = 224, 256


class ByteTokenizer:
    """open_clip is not installed on the device machine; tokenisation is measured on the CPU by bench_data.py."""

    context_length = 77

    def __call__(self, captions):
        out = torch.zeros((len(captions), 77), dtype=torch.long)
        for row, caption in enumerate(captions):
            data = caption.encode()[:77]
            out[row, : len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
        return out


def smooth_images(start: int, count: int) -> torch.Tensor:
    """`count` uint8 (3, 256, 256) images of smooth random colour with fine grain (so JPEG has work to do), from a
    generator seeded by `start`: the same shards on every machine."""
    generator = torch.Generator().manual_seed(start)
    coarse = torch.rand(count, 3, 8, 8, generator=generator)
    fields = F.interpolate(coarse, size=(SHARD_SIZE, SHARD_SIZE), mode="bicubic", align_corners=False)
    grain = 0.08 * torch.rand(count, 3, SHARD_SIZE, SHARD_SIZE, generator=generator)
    return ((fields + grain).clamp(0, 1) * 255).to(torch.uint8)


def make_shards(folder: Path, images: int, per_shard: int = 1024) -> str:
    from torchvision.io import encode_jpeg

    folder.mkdir(parents=True, exist_ok=True)
    shards = math.ceil(images / per_shard)
    if not (folder / f"{shards - 1:05d}_stats.json").exists():
        for shard in range(shards):
            first = shard * per_shard
            pixels = smooth_images(first, min(images, first + per_shard) - first)
            jpegs = [bytes(encode_jpeg(image, quality=95).numpy()) for image in pixels]
            write_shard(folder / f"{shard:05d}.tar",
                        [(sample_key(shard, i), caption_sample(jpeg, f"a photo number {first + i} of a surface"))
                         for i, jpeg in enumerate(jpegs)])
    return f"{folder}/{{00000..{shards - 1:05d}}}.tar"


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def device_used_bytes() -> int:
    free, total = torch.cuda.mem_get_info()
    return total - free


def stream_batches(make_iterator, batches: int):
    """Yield `batches` batches, restarting the epoch iterator as needed."""
    epoch = 0
    produced = 0
    while produced < batches:
        for images in make_iterator(epoch):
            yield images
            produced += 1
            if produced == batches:
                return
        epoch += 1


def measure(name: str, make_iterator, batches: int, batch_size: int, warmup: int = 5) -> dict:
    iterator = stream_batches(make_iterator, batches + warmup)
    for _ in range(warmup):
        next(iterator)
    torch.cuda.synchronize()
    start_wall, start_cpu, start_memory = time.perf_counter(), cpu_seconds(), device_used_bytes()
    for images in iterator:
        pass
    torch.cuda.synchronize()
    wall = time.perf_counter() - start_wall
    del iterator
    return {"provider": name, "img_s": batches * batch_size / wall, "cpu_cores": (cpu_seconds() - start_cpu) / wall,
            "gpu_growth_mib": (device_used_bytes() - start_memory) / 2**20, "batches": batches}


def streaming_provider(spec: str, backend: str, batch_size: int, **options):
    data = StreamingTrainData(open_webdataset(spec), tokenizer=ByteTokenizer(), image_size=SIZE, image_mean=MEAN,
                              image_std=STD, batch_size=batch_size, backend=backend, device="cuda", **options)
    return lambda epoch: (batch.images for batch in data.batches(epoch))


def nvjpeg_provider(spec: str, batch_size: int, workers: int):
    """Reads with fastclip's producer (encoded bytes), decodes with torchvision on the GPU."""
    import random

    import torchvision.transforms.v2.functional as F
    from torchvision.io import decode_jpeg
    from torch.utils.data import DataLoader

    from fastclip.data.captions import CaptionTokenizer
    from fastclip.data.rank_stream import ChunkProducer, in_stream_order
    from fastclip.data.webdataset import random_resized_crop_box

    source = open_webdataset(spec)
    mean = torch.tensor(MEAN, device="cuda").view(1, 3, 1, 1)
    std = torch.tensor(STD, device="cuda").view(1, 3, 1, 1)

    def epoch_images(epoch: int):
        producer = ChunkProducer(source, mode="encoded", world_size=1, rank=0, seed=0, epoch=epoch,
                                 tokenizer=CaptionTokenizer(ByteTokenizer()), image_size=SIZE, batch_size=batch_size)
        rng = random.Random(epoch)
        pending = []
        for chunk in in_stream_order(DataLoader(producer, batch_size=None, num_workers=workers), producer):
            pending.extend(torch.from_numpy(image) for image in chunk.images())
            while len(pending) >= batch_size:
                group, pending = pending[:batch_size], pending[batch_size:]
                decoded = decode_jpeg(group, device="cuda")
                crops = []
                for image in decoded:
                    top, left, h, w = random_resized_crop_box(image.shape[2], image.shape[1], rng)
                    crops.append(F.resized_crop(image, top, left, h, w, [SIZE, SIZE], antialias=True))
                yield (torch.stack(crops).float().div_(255) - mean) / std

    return epoch_images


def check_correctness(spec: str, figures: Figures, have_torchvision: bool) -> bool:
    from fastclip.data.webdataset import iter_tar_samples

    ok = True
    encoded = [s.image for s, _ in zip(iter_tar_samples(open_webdataset(spec).shards[0]), range(16))]
    if dali_import_error() is None:
        from fastclip.data.dali import DaliDecoder

        arrays = [np.frombuffer(b, dtype=np.uint8) for b in encoded]
        options = dict(batch_size=16, image_size=SIZE, mean=MEAN, std=STD, train=False)
        on_cpu, _ = DaliDecoder(device=torch.device("cpu"), **options).decode(arrays)
        on_gpu, bad = DaliDecoder(device=torch.device("cuda"), **options).decode(arrays)
        difference = (on_gpu.cpu() - on_cpu).abs().mean().item()
        passed = difference < 0.05 and not bad
        ok &= passed
        print(f"DALI mixed vs DALI cpu (eval transform): mean |diff| {difference:.4f} (normalised units), "
              f"bad {bad} -> {'OK' if passed else 'FAIL'}")
        figures.add("DALI mixed vs DALI cpu: mean |diff|", difference, "normalised units", "< 0.05", passed,
                    "ok" if passed else "MISMATCH")
    if have_torchvision:
        from torchvision.io import decode_jpeg

        tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in encoded]
        gpu = decode_jpeg(tensors, device="cuda")
        cpu = decode_jpeg(tensors)
        difference = float(np.mean([(g.cpu().float() - c.float()).abs().mean().item() for g, c in zip(gpu, cpu)]))
        passed = difference < 3
        ok &= passed
        print(f"torchvision nvJPEG vs libjpeg-turbo (CPU): mean |diff| {difference:.2f} grey levels -> "
              f"{'OK' if passed else 'FAIL'}")
        figures.add("nvJPEG vs CPU decode: mean |diff|", difference, "grey levels", "< 3", passed,
                    "ok" if passed else "MISMATCH")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", default="/tmp/fastclip_bench_shards", help="folder for the generated shards")
    parser.add_argument("--images", type=int, default=16384, help="64 batches of 256: timed runs stay in one epoch")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=60, help="timed batches per throughput provider")
    parser.add_argument("--memory-batches", type=int, default=5000, help="batches of the memory-growth run")
    parser.add_argument("--memory-batch-size", type=int, default=64)
    parser.add_argument("--read-workers", type=int, default=8, help="DataLoader workers reading for DALI/nvJPEG")
    parser.add_argument("--dali-threads", type=int, default=8)
    args = parser.parse_args()
    require_cuda("data")
    missing_dali = dali_import_error()
    have_torchvision = importlib.util.find_spec("torchvision") is not None
    have_pil = importlib.util.find_spec("PIL") is not None
    if not have_torchvision:
        skip_step("torchvision is not installed: it makes the test JPEGs and is the decode path without DALI")
    figures = Figures()
    decoder = "DALI" if missing_dali is None else "torchvision nvJPEG (DALI is not installed)"
    figures.fact("decoder", decoder)
    print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; CPU cores {os.cpu_count()}; "
          f"GPU decode measured through {decoder}")
    start = time.perf_counter()
    spec = make_shards(Path(args.shards), args.images)
    print(f"shards: {spec} ({args.images} images, made in {time.perf_counter() - start:.0f} s)")
    correct = check_correctness(spec, figures, have_torchvision)

    results = []

    def record(result: dict) -> None:
        results.append(result)
        print(result, flush=True)
        figures.add(f"{result['provider']}: throughput", result["img_s"], "img/s",
                    ">= 10,000 img/s" if result["provider"] == "dali_hw0.65" else "",
                    result["img_s"] >= 10_000 if result["provider"] == "dali_hw0.65" else None)

    if missing_dali is None:
        for load in (0.0, 0.65, 0.9):
            record(measure(f"dali_hw{load:g}", streaming_provider(
                spec, "dali", args.batch_size, workers=args.read_workers, dali_threads=args.dali_threads,
                hw_decoder_load=load), args.batches, args.batch_size))
    else:
        print(f"DALI providers skipped: {missing_dali}")
    if have_pil:
        record(measure("torch_16w", streaming_provider(spec, "torch", args.batch_size, workers=16), args.batches,
                       args.batch_size))
    else:
        print("torch_16w skipped: fastclip's torch backend decodes with PIL, which is not installed")
    record(measure("tv_nvjpeg", nvjpeg_provider(spec, args.batch_size, args.read_workers), args.batches,
                   args.batch_size))

    if missing_dali is None:
        memory_name, memory_provider = "dali_hw0.65", streaming_provider(
            spec, "dali", args.memory_batch_size, workers=args.read_workers, dali_threads=args.dali_threads)
    else:
        memory_name, memory_provider = "tv_nvjpeg", nvjpeg_provider(spec, args.memory_batch_size, args.read_workers)
    memory = measure(f"{memory_name} x{args.memory_batches}", memory_provider, args.memory_batches,
                     args.memory_batch_size, warmup=20)
    figures.add(f"{memory['provider']}: GPU memory growth", memory["gpu_growth_mib"], "MiB", "flat (a few MiB)",
                abs(memory["gpu_growth_mib"]) <= 8)

    baseline = next((r for r in results if r["provider"] == "torch_16w"), None)
    print()
    print_markdown_table(
        ["provider", "img/s", "vs torch_16w", "host CPU (cores)", "GPU memory growth (MiB)"],
        [
            [row["provider"], f"{row['img_s']:.0f}",
             "-" if baseline is None else f"{row['img_s'] / baseline['img_s']:.2f}x", f"{row['cpu_cores']:.1f}",
             f"{row['gpu_growth_mib']:+.0f}"]
            for row in results + [memory]
        ],
    )
    print(f"\ngoals: DALI >= 10,000 img/s at 224 px, >= 3x torch_16w, flat GPU memory over {args.memory_batches} "
          "batches (growth within a few MiB of allocator rounding)")
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
