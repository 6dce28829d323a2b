"""Training-data throughput: DALI on the CPU vs the torch path at an equal CPU budget, and caption tokenisation.

Shards: 256 x 256 JPEGs at quality 95 with captions, img2dataset's defaults (image_size=256, resize_mode=border,
encode_quality=95), made from the 50 MIT1003 photographs of ../shared/data when present (else textured synthetic
pictures). Transform: open_clip's training transform to 224 px (RandomResizedCrop scale 0.9-1.0, bicubic, normalise).
Equal CPU budget: the torch path runs WORKERS DataLoader worker processes; DALI runs WORKERS decoding threads with
the shards read inline (its reading and tokenising thread is the same Python thread the torch path also has).

    pytest benchmarks/bench_data.py --benchmark-only --benchmark-group-by=group

`test_cpu_backend_ratio` times both backends alternately in one run and records `dali_over_torch`: the figure
behind fastclip.data.streaming.CPU_DALI_OVER_TORCH (what `--data-backend auto` uses on the CPU).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from conftest import Timing, timed, timed_pair  # benchmarks/conftest.py (pytest puts benchmarks/ on sys.path)
from fastclip.data.dali import dali_import_error
from fastclip.data.shard_writer import caption_sample, sample_key, write_shard
from fastclip.data.sources import open_webdataset
from fastclip.data.streaming import StreamingTrainData

REPO_ROOT = Path(__file__).resolve().parents[1]
PHOTOS = REPO_ROOT.parent / "shared" / "data" / "mit1003-subset" / "stimuli"
IMAGE_SIZE = 224
SHARD_IMAGE_SIZE = 256
BATCH_SIZE = 64
IMAGES = 512
WORKERS = 2  # the CPU budget of both backends on the 2-core CI machine
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
CAPTION = "a photograph of {} taken on a bright afternoon, seen from across the street, with people walking by"


def _border_resize(image, size: int):
    """img2dataset's resize_mode=border: fit the longer side, pad to a square with black."""
    from PIL import Image

    image = image.convert("RGB")
    scale = size / max(image.size)
    resized = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BICUBIC)
    canvas = Image.new("RGB", (size, size))
    canvas.paste(resized, ((size - resized.width) // 2, (size - resized.height) // 2))
    return canvas


def _source_pictures(count: int, size: int):
    from PIL import Image, ImageFilter

    photos = sorted(PHOTOS.glob("*.jpg")) if PHOTOS.is_dir() else []
    rng = np.random.default_rng(0)
    for index in range(count):
        if photos:
            image = _border_resize(Image.open(photos[index % len(photos)]), size)
            if index // len(photos) % 2:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
            yield image
        else:
            noise = Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8))
            yield noise.filter(ImageFilter.GaussianBlur(1.5 + index % 3))


def make_benchmark_shards(folder: Path, images: int = IMAGES, per_shard: int = 128,
                          size: int = SHARD_IMAGE_SIZE) -> str:
    """img2dataset-style shards of `images` size x size JPEGs (quality 95); returns the brace spec."""
    folder.mkdir(parents=True, exist_ok=True)
    pictures = _source_pictures(images, size)
    shards = (images + per_shard - 1) // per_shard
    for shard in range(shards):
        samples = []
        for index in range(min(per_shard, images - shard * per_shard)):
            buffer = io.BytesIO()
            next(pictures).save(buffer, "JPEG", quality=95)
            key = sample_key(shard, index)
            samples.append((key, caption_sample(buffer.getvalue(), CAPTION.format(key), key=key)))
        write_shard(folder / f"{shard:05d}.tar", samples)
    return f"{folder}/{{00000..{shards - 1:05d}}}.tar"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_benchmark_shards(tmp_path_factory.mktemp("bench_shards"))


@pytest.fixture(scope="module")
def tokenizer():
    from fastclip.models import register_fastclip_configs

    register_fastclip_configs()
    import open_clip

    return open_clip.get_tokenizer("ViT-B-32")


def _loader(spec: str, tokenizer, backend: str) -> StreamingTrainData:
    threads = {"dali_threads": WORKERS, "workers": 0} if backend == "dali" else {"workers": WORKERS}
    return StreamingTrainData(open_webdataset(spec), tokenizer=tokenizer, image_size=IMAGE_SIZE, image_mean=MEAN,
                              image_std=STD, batch_size=BATCH_SIZE, backend=backend, **threads)


def _one_epoch(data: StreamingTrainData) -> int:
    count = 0
    for batch in data.batches(0):
        count += batch.images.shape[0] - batch.num_pads
    return count


def _skip_without_dali(backend: str) -> None:
    if backend == "dali" and dali_import_error() is not None:
        pytest.skip(dali_import_error())


@pytest.mark.benchmark(group="train-transform img/s (256 px JPEG -> 224)")
@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_train_images_per_second(benchmark, bench_info, shards, tokenizer, backend):
    _skip_without_dali(backend)
    data = _loader(shards, tokenizer, backend)
    images = timed(benchmark, _one_epoch, Timing(rounds=3, warmup=1), data)
    assert images == IMAGES
    bench_info.update(backend=backend, cpu_budget=WORKERS, images=IMAGES, photos=PHOTOS.is_dir(),
                      images_per_second=IMAGES / benchmark.stats.stats.median)


@pytest.mark.benchmark(group="cpu backend ratio")
def test_cpu_backend_ratio(benchmark, bench_info, shards, tokenizer):
    """Both backends, alternately, in one run: the ratio that `--data-backend auto` relies on."""
    _skip_without_dali("dali")
    loaders = {backend: _loader(shards, tokenizer, backend) for backend in ("torch", "dali")}
    bench_info.update(provider="dali vs torch DataLoader", cpu_budget=WORKERS, images=IMAGES)
    # Interleaved epochs, medians (benchmarks/conftest.py timed_pair): the torch path's epoch, then DALI's.
    result = timed_pair(benchmark, lambda: _one_epoch(loaders["dali"]), lambda: _one_epoch(loaders["torch"]), Timing(3, 1))
    if result:
        ratio = result["ratio"]  # img/s of DALI over img/s of torch
        bench_info.update(dali_over_torch=round(ratio, 3),
                          torch_images_per_second=round(IMAGES / result["baseline"]["median"], 1),
                          dali_images_per_second=round(IMAGES / result["fast"]["median"], 1))  # fmt: skip
        print(f"\nDALI-CPU / torch at {WORKERS} threads vs {WORKERS} workers: {ratio:.3f}")


@pytest.mark.benchmark(group="tokenisation captions/s")
def test_tokenisation_throughput(benchmark, bench_info, tokenizer):
    from fastclip.data.captions import CaptionTokenizer

    captions = [CAPTION.format(f"street number {i}") for i in range(2048)]
    tokenize = CaptionTokenizer(tokenizer)
    tokens = timed(benchmark, tokenize, Timing(rounds=3, warmup=1), captions)
    assert tokens.shape == (2048, 77)
    bench_info.update(captions=len(captions), captions_per_second=len(captions) / benchmark.stats.stats.median)
