"""The DALI backend on the CPU (device_id=None): transforms against the torch path, the retry that drops an
undecodable image without losing its batch, the bad-input zoo, planted corrupt images, determinism, backend choice.
The GPU (mixed decoder) test is marked needs_cuda."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest
import torch

from fastclip.data.dali import DaliDecoder, dali_import_error
from fastclip.data.sources import open_webdataset
from fastclip.data.streaming import StreamingTrainData, choose_backend
from fastclip.data.webdataset import decode_rgb, eval_transform, normalize_on_device, to_uint8_chw

if dali_import_error() is not None:
    # Before the fixtures' import: they need PIL, which a machine without DALI may lack as well.
    pytest.skip(dali_import_error(), allow_module_level=True)

from tests.wds_fixtures import (  # noqa: E402
    bad_huffman_table_jpeg,
    encode,
    jpeg,
    picture,
    write_empty_shard,
    write_good_shards,
    write_shards_with_planted_corruption,
    write_zoo_shard,
    zoo_samples,
)

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tokenizer():
    from fastclip.models import register_fastclip_configs

    register_fastclip_configs()
    import open_clip

    return open_clip.get_tokenizer("fc-tiny-vit")


def _as_arrays(images: list[bytes]) -> list[np.ndarray]:
    return [np.frombuffer(image, dtype=np.uint8) for image in images]


def _torch_eval(images: list[bytes], size: int) -> torch.Tensor:
    views = torch.stack([torch.from_numpy(to_uint8_chw(eval_transform(decode_rgb(b), size))) for b in images])
    return normalize_on_device(views, MEAN, STD, device=CPU, dtype=torch.float32)


def test_eval_transform_agrees_with_the_torch_path():
    # 96x64 -> 48x32 -> centre 32x32: an exact scale, so only the resampling filters differ.
    images = [encode(picture(i, 96, 64), "PNG") for i in range(3)] + [jpeg(i, 96, 64) for i in range(3)]
    decoder = DaliDecoder(batch_size=8, image_size=32, mean=MEAN, std=STD, train=False, device=CPU)
    out, bad = decoder.decode(_as_arrays(images))
    assert bad == [] and out.shape == (6, 3, 32, 32) and out.dtype == torch.float32
    difference = (out - _torch_eval(images, 32)).abs()
    # One grey level is 1 / 255 / 0.27 = 0.0145 after normalisation.
    assert difference[:3].mean() < 0.01 and difference[3:].mean() < 0.03 and difference.max() < 0.5


def test_train_transform_normalises_with_the_models_mean_and_std():
    from PIL import Image

    colour = (200, 120, 40)
    solid = encode(Image.new("RGB", (57, 41), colour), "PNG")
    decoder = DaliDecoder(batch_size=4, image_size=24, mean=MEAN, std=STD, train=True, device=CPU,
                          dtype=torch.bfloat16, seed=3)
    out, bad = decoder.decode(_as_arrays([solid] * 3))
    assert bad == [] and out.shape == (3, 3, 24, 24) and out.dtype == torch.bfloat16
    expected = ((torch.tensor(colour) / 255 - torch.tensor(MEAN)) / torch.tensor(STD)).view(1, 3, 1, 1)
    torch.testing.assert_close(out.float(), expected.expand_as(out), atol=0.02, rtol=0.01)


def test_train_crops_are_random_and_seeded():
    images = _as_arrays([jpeg(i, 57, 41) for i in range(4)])

    def crops(seed):
        decoder = DaliDecoder(batch_size=4, image_size=24, mean=MEAN, std=STD, train=True, device=CPU, seed=seed)
        return decoder.decode(images)[0]

    assert torch.equal(crops(1), crops(1))
    assert not torch.equal(crops(1), crops(2))


def test_an_undecodable_image_costs_only_itself():
    good = [jpeg(i, 57, 41) for i in range(7)]
    decoder = DaliDecoder(batch_size=8, image_size=32, mean=MEAN, std=STD, train=False, device=CPU)
    clean, _ = decoder.decode(_as_arrays(good))
    batch = good[:3] + [bad_huffman_table_jpeg(5)] + good[3:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, bad = decoder.decode(_as_arrays(batch))
    assert bad == [3] and decoder.rebuilds >= 1
    torch.testing.assert_close(out, clean)  # the seven good images, untouched, in order
    again, bad_again = decoder.decode(_as_arrays(good))  # the rebuilt pipeline keeps working
    assert bad_again == [] and torch.equal(again, clean)


def test_a_failing_dali_is_an_error_not_a_batch_of_skips(monkeypatch):
    from fastclip.data.dali import decoded_chunks
    from fastclip.data.rank_stream import EncodedChunk

    decoder = DaliDecoder(batch_size=4, image_size=16, mean=MEAN, std=STD, train=False, device=CPU)

    def broken(images):
        raise RuntimeError("Critical error in pipeline:\nout of memory")

    monkeypatch.setattr(decoder, "_run", broken)
    monkeypatch.setattr(decoder, "_rebuild", lambda: None)
    images = [jpeg(i) for i in range(16)]
    offsets = torch.tensor([0] + [len(b) for b in images]).cumsum(0)
    chunk = EncodedChunk(torch.frombuffer(bytearray(b"".join(images)), dtype=torch.uint8), offsets,
                         torch.zeros(16, 2, dtype=torch.long), [str(i) for i in range(16)])
    with pytest.raises(RuntimeError, match="DALI failed on every image of a group of 4 .*out of memory"):
        list(decoded_chunks([chunk], decoder, batch_size=16))


def test_dali_backend_survives_the_zoo(tmp_path, tokenizer):
    write_zoo_shard(tmp_path)
    write_good_shards(tmp_path, [5], first_shard=1)
    write_empty_shard(tmp_path, "00002.tar")
    source = open_webdataset(f"{tmp_path}/{{00000..00002}}.tar")
    data = StreamingTrainData(source, tokenizer=tokenizer, image_size=24, image_mean=MEAN, image_std=STD,
                              batch_size=4, backend="dali")
    assert data.backend == "dali"
    batches = list(data.batches(0))
    kept = {stem for stem, _, outcome in zoo_samples() if outcome == "kept"}
    real = [key for b in batches for key in b.keys[: len(b.keys) - b.num_pads]]
    assert len(batches) == data.num_batches == 5
    assert len(real) == len(set(real)) == len(kept) + 5
    assert dict(data.skip_counts) == {"unreadable_image": 2, "missing_caption": 1, "missing_image": 1}
    for batch in batches:
        assert batch.images.shape == (4, 3, 24, 24) and torch.isfinite(batch.images).all()


@pytest.mark.parametrize("backend", ["dali", "torch"])
def test_planted_corrupt_images_are_all_counted_and_no_good_sample_is_lost(tmp_path, tokenizer, backend):
    sizes = [110, 95, 95]
    planted = [7, 50, 111, 180, 233, 260, 277, 299]  # 2.7% of 300, every damage kind twice
    write_shards_with_planted_corruption(tmp_path, sizes, planted)
    source = open_webdataset(f"{tmp_path}/{{00000..00002}}.tar")
    data = StreamingTrainData(source, tokenizer=tokenizer, image_size=16, image_mean=MEAN, image_std=STD,
                              batch_size=16, backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(data.batches(0))
    real = [key for b in batches for key in b.keys[: len(b.keys) - b.num_pads]]
    assert len(batches) == data.num_batches == 19
    assert data.skipped == len(planted)
    assert len(real) == len(set(real)) == 300 - len(planted)
    assert dict(data.skip_counts) == {"unreadable_image": len(planted)}  # the same count on both backends
    if backend == "dali":
        assert data.dali_rebuilds >= 2  # two of them only a decoder can find: DALI failed on them and retried


def _order_and_pixel_hash(data, epoch: int) -> tuple[list[str], str]:
    keys, digest = [], hashlib.sha256()
    for batch in data.batches(epoch):
        keys.extend(batch.keys)
        digest.update(batch.images.float().numpy().tobytes())
    return keys, digest.hexdigest()


def test_determinism_across_runs_and_dali_threads(tmp_path, tokenizer):
    write_good_shards(tmp_path, [9, 12, 6])
    source = open_webdataset(f"{tmp_path}/{{00000..00002}}.tar")

    def run(seed=0, epoch=0, threads=1):
        data = StreamingTrainData(source, tokenizer=tokenizer, image_size=16, image_mean=MEAN, image_std=STD,
                                  batch_size=4, backend="dali", seed=seed, dali_threads=threads)
        return _order_and_pixel_hash(data, epoch)

    first = run()
    assert run() == first
    assert run(threads=2) == first
    assert run(seed=1)[0] != first[0]
    assert run(epoch=1)[0] != first[0]


def test_choose_backend(monkeypatch):
    import fastclip.data.dali as dali_module
    import fastclip.data.streaming as streaming

    assert choose_backend("torch", CPU) == ("torch", "requested")
    assert choose_backend("dali", CPU)[0] == "dali"
    expected_cpu = "dali" if streaming.CPU_DALI_OVER_TORCH > 1 else "torch"
    assert choose_backend("auto", CPU)[0] == expected_cpu
    assert choose_backend("auto", torch.device("cuda", 0))[0] == "dali"
    monkeypatch.setattr(dali_module, "dali_import_error", lambda: "NVIDIA DALI is not importable; pip install x")
    fallback = choose_backend("auto", torch.device("cuda", 0))
    assert fallback == ("torch", "auto: NVIDIA DALI is not importable; pip install x")
    with pytest.raises(ValueError, match="--data-backend dali: NVIDIA DALI is not importable; pip install"):
        choose_backend("dali", CPU)
    with pytest.raises(ValueError, match="--data-backend must be one of"):
        choose_backend("fastest", CPU)


@pytest.mark.needs_cuda
def test_mixed_gpu_decoding_matches_the_cpu_pipeline():
    images = [jpeg(i, 96, 64) for i in range(6)] + [encode(picture(1, 96, 64), "PNG")]
    cpu = DaliDecoder(batch_size=8, image_size=32, mean=MEAN, std=STD, train=False, device=CPU)
    gpu = DaliDecoder(batch_size=8, image_size=32, mean=MEAN, std=STD, train=False,
                      device=torch.device("cuda", 0), hw_decoder_load=0.65)
    on_cpu, _ = cpu.decode(_as_arrays(images))
    on_gpu, bad = gpu.decode(_as_arrays(images))
    assert bad == [] and on_gpu.device.type == "cuda"
    # nvJPEG skips libjpeg's fancy upsampling, so chroma differs slightly from the CPU decoder.
    assert (on_gpu.cpu() - on_cpu).abs().mean() < 0.05
