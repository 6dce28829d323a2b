"""NVIDIA DALI image decoding and augmentation for training batches.

The shards are read by fastclip (fastclip.data.rank_stream), not by `fn.readers.webdataset`, and their encoded bytes
reach DALI through `fn.external_source`, for three reasons measured with DALI 2.4.0
(../shared/reference/data.md):
- the reader indexes every tar it is given when the pipeline is built (~350 B per sample), while fastclip's
  per-rank plan holds one entry per shard and a shuffle buffer;
- the reader reads whole tars, so ranks could not split a shard and pads would not stay below a batch per rank;
- one undecodable image fails the whole DALI batch and the pipeline object with it; holding the bytes lets the
  batch be retried without the bad sample, so good samples are never lost.

The pipeline: `decoders.image_random_crop` (device "mixed" on a GPU, with `hw_decoder_load` for the A100/H100/H200
hardware JPEG decoder; "cpu" without one) with open_clip's RandomResizedCrop parameters (scale 0.9-1.0, aspect
3/4-4/3) -> bicubic resize -> `crop_mirror_normalize` with the model's mean and std (x255) to NCHW. The evaluation
transform resizes the shorter side (bicubic) and centre-crops. Output: on the model's device, in the training dtype.
"""

from __future__ import annotations

import gc
import logging
from typing import Iterable, Iterator

import numpy as np
import torch

from fastclip.data.sharding import Chunk
from fastclip.data.rank_stream import EncodedChunk

LOG = logging.getLogger("fastclip.data")

DALI_INSTALL_HINT = "pip install nvidia-dali-cuda130 (Linux x86_64; pick the wheel matching your CUDA major version)"
DEFAULT_HW_DECODER_LOAD = 0.65  # DALI 2.4.0's default share of the hardware JPEG decoder


def dali_import_error() -> str | None:
    """None when DALI imports, else what is missing and how to get it."""
    try:
        import nvidia.dali  # noqa: F401
        import nvidia.dali.plugin.pytorch  # noqa: F401
    except Exception as exc:
        return f"NVIDIA DALI is not importable ({type(exc).__name__}: {exc}); {DALI_INSTALL_HINT}"
    return None


def _dali_dtype(dtype: torch.dtype):
    from nvidia.dali import types

    return types.FLOAT16 if dtype == torch.float16 else types.FLOAT


def build_pipeline(*, batch_size: int, image_size: int, mean, std, train: bool, device: torch.device,
                   hw_decoder_load: float, num_threads: int, seed: int, dtype: torch.dtype):
    from nvidia.dali import fn, pipeline_def, types

    on_gpu = device.type == "cuda"
    device_id = (device.index if device.index is not None else torch.cuda.current_device()) if on_gpu else None
    decoder_device = "mixed" if on_gpu else "cpu"
    decoder_options = {"hw_decoder_load": float(hw_decoder_load)} if on_gpu else {}

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed,
                  prefetch_queue_depth=1)
    def pipeline():
        encoded = fn.external_source(name="encoded", dtype=types.UINT8)
        if train:
            images = fn.decoders.image_random_crop(
                encoded, device=decoder_device, output_type=types.RGB, random_area=[0.9, 1.0],
                random_aspect_ratio=[3 / 4, 4 / 3], num_attempts=10, **decoder_options)
            images = fn.resize(images, resize_x=image_size, resize_y=image_size,
                               interp_type=types.INTERP_CUBIC, antialias=True)
        else:
            images = fn.decoders.image(encoded, device=decoder_device, output_type=types.RGB, **decoder_options)
            images = fn.resize(images, resize_shorter=image_size, interp_type=types.INTERP_CUBIC, antialias=True)
        return fn.crop_mirror_normalize(
            images, dtype=_dali_dtype(dtype), output_layout="CHW", crop=(image_size, image_size),
            crop_pos_x=0.5, crop_pos_y=0.5, mean=[255 * m for m in mean], std=[255 * s for s in std], mirror=0)

    pipe = pipeline()
    pipe.build()
    return pipe


class DaliDecoder:
    """Decodes lists of encoded images into one (n, 3, S, S) tensor; undecodable images are found and dropped.

    DALI gives no per-sample error and invalidates the pipeline on a failed batch, so a failure rebuilds the
    pipeline and bisects the batch: a batch with one bad image costs about log2(batch) extra small runs.
    """

    def __init__(self, *, batch_size: int, image_size: int, mean, std, train: bool, device: torch.device,
                 hw_decoder_load: float = DEFAULT_HW_DECODER_LOAD, num_threads: int = 2, seed: int = 0,
                 dtype: torch.dtype = torch.float32):
        reason = dali_import_error()
        if reason is not None:
            raise RuntimeError(f"--data-backend dali: {reason}")
        self.options = dict(batch_size=batch_size, image_size=image_size, mean=tuple(mean), std=tuple(std),
                            train=train, device=torch.device(device), hw_decoder_load=hw_decoder_load,
                            num_threads=max(1, num_threads), seed=seed, dtype=dtype)
        self.device, self.dtype, self.image_size = torch.device(device), dtype, image_size
        self.rebuilds = 0
        self.last_error = ""
        self._pipe = build_pipeline(**self.options)

    def _rebuild(self) -> None:
        del self._pipe
        gc.collect()
        self.rebuilds += 1
        self._pipe = build_pipeline(**self.options)

    def _run(self, images: list[np.ndarray]) -> torch.Tensor:
        from nvidia.dali.plugin.pytorch import feed_ndarray

        self._pipe.feed_input("encoded", images)
        (output,) = self._pipe.run()
        out = torch.empty((len(images), 3, self.image_size, self.image_size),
                          dtype=torch.float16 if self.dtype == torch.float16 else torch.float32,
                          device=self.device if self.device.type == "cuda" else "cpu")
        stream = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        feed_ndarray(output.as_tensor(), out, cuda_stream=stream)
        return out.to(self.device, self.dtype)

    def decode(self, images: list[np.ndarray]) -> tuple[torch.Tensor, list[int]]:
        """(decoded images of the good samples in order, indices of the undecodable ones)."""
        try:
            return self._run(images), []
        except RuntimeError as exc:
            self.last_error = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc).__name__
            self._rebuild()
        if len(images) == 1:
            return torch.empty((0, 3, self.image_size, self.image_size), dtype=self.dtype, device=self.device), [0]
        half = len(images) // 2
        first, bad_first = self.decode(images[:half])
        second, bad_second = self.decode(images[half:])
        bad = bad_first + [half + index for index in bad_second]
        if len(images) >= 4 and len(bad) == len(images):
            # Four or more images that passed the structural check do not all fail together: DALI itself is
            # failing (say, out of memory), so stop here instead of skipping the whole dataset.
            raise RuntimeError(f"DALI failed on every image of a group of {len(images)} ({self.last_error}); "
                               "the data backend is broken, not the data (try --data-backend torch)")
        return torch.cat([first, second]), bad


def decoded_chunks(raw: Iterable[EncodedChunk], decoder: DaliDecoder, batch_size: int) -> Iterator[Chunk]:
    """Encoded chunks -> decoded chunks of up to batch_size; undecodable samples are dropped and counted as
    `unreadable_image` (the torch path's name for the same files) in the chunk that follows them."""
    pending_images: list[np.ndarray] = []
    pending_texts: list[torch.Tensor] = []
    pending_keys: list[str] = []

    def decode_group(count: int) -> Chunk:
        nonlocal pending_images, pending_texts, pending_keys
        group, texts, keys = pending_images[:count], torch.cat(pending_texts)[:count], pending_keys[:count]
        rest_texts = torch.cat(pending_texts)[count:]
        pending_images, pending_keys = pending_images[count:], pending_keys[count:]
        pending_texts = [rest_texts] if len(rest_texts) else []
        images, bad = decoder.decode(group)
        if bad:
            LOG.warning("DALI could not decode %d image(s): %s", len(bad), ", ".join(keys[i] for i in bad[:5]))
            undecodable = set(bad)
            good = [i for i in range(len(keys)) if i not in undecodable]
            texts, keys = texts[good], [keys[i] for i in good]
        return Chunk(images, texts, keys, {"unreadable_image": len(bad)} if bad else {})

    for chunk in raw:
        if chunk.skipped:
            yield Chunk(torch.empty(0), torch.empty(0, dtype=torch.long), [], chunk.skipped)
        if len(chunk):
            pending_images.extend(chunk.images())
            pending_texts.append(chunk.texts)
            pending_keys.extend(chunk.keys)
        while len(pending_keys) >= batch_size:
            yield decode_group(batch_size)
    if pending_keys:
        yield decode_group(len(pending_keys))
