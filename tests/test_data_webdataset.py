"""The tar reader, the torch path's decoding (exactly open_clip's transforms) and every bad input of the issue."""

from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pytest
import torch

from fastclip.data.captions import CaptionTokenizer
from fastclip.data.sources import open_webdataset
from fastclip.data.streaming import StreamingTrainData
from fastclip.data.webdataset import (
    RawSample,
    SkippedSample,
    UnreadableImageError,
    decode_rgb,
    eval_transform,
    iter_tar_samples,
    looks_complete,
    normalize_on_device,
    pil_decodes,
    random_resized_crop_box,
    to_uint8_chw,
    train_transform,
)
from tests.wds_fixtures import (
    bad_huffman_table_jpeg,
    encode,
    garbled_header_jpeg,
    jpeg,
    picture,
    random_bytes,
    truncated_jpeg,
    write_empty_shard,
    write_good_shards,
    write_shards_with_planted_corruption,
    write_zoo_shard,
    zoo_samples,
)

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(scope="module")
def tokenizer():
    from fastclip.models import register_fastclip_configs

    register_fastclip_configs()
    import open_clip

    return open_clip.get_tokenizer("fc-tiny-vit")


def test_reader_gives_every_zoo_input_its_outcome(tmp_path):
    shard = write_zoo_shard(tmp_path)
    outcomes = {}
    for item in iter_tar_samples(str(shard)):
        stem = item.key.rsplit(":", 1)[-1].split("/")[-1].split(".")[0]
        outcomes[stem] = item
    expected = {stem: outcome for stem, _, outcome in zoo_samples()}
    assert set(outcomes) == set(expected)
    for stem, outcome in expected.items():
        item = outcomes[stem]
        if outcome in ("missing_caption", "missing_image"):
            assert isinstance(item, SkippedSample) and item.reason == outcome
        else:  # unreadable images are found by the decoder, not the reader
            assert isinstance(item, RawSample)
    assert outcomes["000000005"].caption == ""
    assert outcomes["000000011"].caption == "upper-case extensions, caf\u00e9"
    assert outcomes["000000011"].key.endswith(":000000011.JPG")
    assert outcomes["000000000"].key.startswith(f"{shard}:")


def test_reader_slices_by_sample_index(tmp_path):
    write_good_shards(tmp_path, [7])
    keys = [s.key.rsplit(":", 1)[-1] for s in iter_tar_samples(str(tmp_path / "00000.tar"), 2, 5)]
    assert keys == ["000000002.jpg", "000000003.jpg", "000000004.jpg"]
    tail = [s.key.rsplit(":", 1)[-1] for s in iter_tar_samples(str(tmp_path / "00000.tar"), 5, None)]
    assert tail == ["000000005.jpg", "000000006.jpg"]


def test_a_damaged_tar_counts_the_samples_it_lost_and_never_raises(tmp_path):
    write_good_shards(tmp_path, [6])
    data = (tmp_path / "00000.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2 + 100])
    items = list(iter_tar_samples(str(tmp_path / "cut.tar"), expected=6))
    read = sum(isinstance(i, RawSample) for i in items)
    assert isinstance(items[-1], SkippedSample) and items[-1].reason == "unreadable_tar"
    assert 1 <= read < 6 and items[-1].count == 6 - read and "unexpected end of data" in items[-1].detail
    # Readers that split the shard count only their own share of the loss: the shares add up to it, once.
    shares = [list(iter_tar_samples(str(tmp_path / "cut.tar"), start, stop, expected=6))
              for start, stop in ((0, 2), (2, 4), (4, None))]
    lost = [item.count for share in shares for item in share if isinstance(item, SkippedSample)]
    assert sum(lost) == 6 - read and sum(isinstance(i, RawSample) for share in shares for i in share) == read


@pytest.mark.parametrize("damage", ["cut_at_a_header", "garbled_header", "zero_bytes"])
def test_tars_that_tarfile_reads_as_ending_early_are_damaged_not_short(tmp_path, damage):
    """tarfile takes a header that is cut short or garbled for the end of the archive: the reader checks for the
    end-of-archive blocks, so such a tar counts its lost samples instead of silently holding fewer."""
    import tarfile

    write_good_shards(tmp_path, [6])
    data = bytearray((tmp_path / "00000.tar").read_bytes())
    with tarfile.open(tmp_path / "00000.tar") as archive:
        fourth = [m for m in archive.getmembers() if m.name.startswith("000000003.")][0].offset  # key 3's header
    if damage == "cut_at_a_header":
        data = data[:fourth + 100]
    elif damage == "garbled_header":
        data[fourth:fourth + 512] = random_bytes(4, 512)
    else:
        data = b""
    (tmp_path / "bad.tar").write_bytes(bytes(data))
    items = list(iter_tar_samples(str(tmp_path / "bad.tar"), expected=6))
    read = sum(isinstance(i, RawSample) for i in items)
    assert read == (0 if damage == "zero_bytes" else 3)
    assert items[-1].reason == "unreadable_tar" and items[-1].count == 6 - read


def test_a_complete_tar_with_fewer_samples_than_its_metadata_counts_the_shortfall(tmp_path):
    write_good_shards(tmp_path, [4])
    items = list(iter_tar_samples(str(tmp_path / "00000.tar"), 2, None, expected=7))
    assert [type(i).__name__ for i in items] == ["RawSample", "RawSample", "SkippedSample"]
    assert (items[-1].reason, items[-1].count) == ("missing_from_tar", 3)
    assert list(iter_tar_samples(str(tmp_path / "00000.tar"), 0, 4, expected=4))[-1].key.endswith("000000003.jpg")


def test_an_empty_tar_yields_nothing(tmp_path):
    assert list(iter_tar_samples(str(write_empty_shard(tmp_path, "e.tar")))) == []


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "RGB"])
def test_decode_rgb_converts_every_mode_to_three_channels(mode):
    image = picture(3).convert(mode)
    data = encode(image, "JPEG" if mode in ("L", "CMYK", "RGB") else "PNG")
    decoded = decode_rgb(data)
    assert decoded.mode == "RGB" and decoded.size == image.size


def test_decode_rgb_rejects_truncated_and_random_bytes():
    for bad in (truncated_jpeg(1), random_bytes(2), b""):
        with pytest.raises(UnreadableImageError):
            decode_rgb(bad)


def test_structural_check_before_dali():
    image = picture(4)
    for good in (jpeg(1), encode(image, "PNG"), encode(image, "WEBP"), encode(image, "JPEG", progressive=True),
                 encode(image.convert("CMYK"), "JPEG"), encode(image.convert("L"), "JPEG"), jpeg(2) + b"\0" * 100):
        assert looks_complete(good)
    png = bytearray(encode(image, "PNG"))
    png[40] ^= 0xFF  # a flipped bit in a chunk: its CRC no longer matches
    for bad in (truncated_jpeg(1), random_bytes(2), b"", encode(image, "PNG")[:-20], bytes(png),
                garbled_header_jpeg(3), encode(image, "WEBP")[:-10]):
        assert not looks_complete(bad)
    # An impossible Huffman table in a well-formed file passes: that is what the DALI retry is for.
    assert looks_complete(bad_huffman_table_jpeg(5))
    assert pil_decodes(jpeg(1)) and not pil_decodes(random_bytes(2)) and not pil_decodes(bad_huffman_table_jpeg(5))


def test_train_transform_matches_open_clip_given_the_same_crop(monkeypatch):
    """Oracle: open_clip's own preprocess_train, with torchvision's random crop replaced by ours."""
    import open_clip
    import torchvision.transforms as T

    image = picture(9, 57, 41)
    box = random_resized_crop_box(image.width, image.height, random.Random(3))
    monkeypatch.setattr(T.RandomResizedCrop, "get_params", staticmethod(lambda img, scale, ratio: box))
    reference = open_clip.image_transform(32, is_train=True, mean=MEAN, std=STD)(image)
    crop = torch.from_numpy(to_uint8_chw(train_transform(image, 32, random.Random(3))))
    ours = normalize_on_device(crop[None], MEAN, STD, device=torch.device("cpu"), dtype=torch.float32)[0]
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_eval_transform_matches_open_clip():
    import open_clip

    image = picture(10, 57, 41)
    reference = open_clip.image_transform(32, is_train=False, mean=MEAN, std=STD)(image)
    view = torch.from_numpy(to_uint8_chw(eval_transform(image, 32)))
    ours = normalize_on_device(view[None], MEAN, STD, device=torch.device("cpu"), dtype=torch.float32)[0]
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_random_resized_crop_box_follows_torchvision_bounds():
    rng = random.Random(0)
    for width, height in ((40, 32), (256, 256), (300, 20)):
        for _ in range(50):
            top, left, h, w = random_resized_crop_box(width, height, rng)
            assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
            if width / height <= 4 / 3 and height / width <= 4 / 3:
                assert h * w >= 0.85 * width * height  # scale (0.9, 1.0), up to rounding


def test_torch_backend_survives_the_zoo(tmp_path, tokenizer):
    write_zoo_shard(tmp_path)
    write_good_shards(tmp_path, [5], first_shard=1)
    write_empty_shard(tmp_path, "00002.tar")  # an empty tar among good ones
    source = open_webdataset(f"{tmp_path}/{{00000..00002}}.tar")
    data = StreamingTrainData(source, tokenizer=tokenizer, image_size=24, image_mean=MEAN, image_std=STD,
                              batch_size=4, backend="torch", seed=0)
    kept = {stem for stem, _, outcome in zoo_samples() if outcome == "kept"}
    batches = list(data.batches(0))
    assert len(batches) == data.num_batches == 5  # ceil(18 / 4)
    real = [key for b in batches for key in b.keys[: len(b.keys) - b.num_pads]]
    assert len(real) == len(set(real)) == len(kept) + 5
    assert {k.rsplit(":", 1)[-1].split(".")[0] for k in real if "/00000.tar:" in k} == kept
    assert dict(data.skip_counts) == {"unreadable_image": 2, "missing_caption": 1, "missing_image": 1}
    assert data.skipped == 4 and "unreadable_image 2" in data.skip_summary()
    for batch in batches:
        assert batch.images.shape == (4, 3, 24, 24) and batch.images.dtype == torch.float32
        assert torch.isfinite(batch.images).all() and batch.texts.dtype == torch.long
    empty_caption = next(b.texts[i] for b in batches for i, k in enumerate(b.keys) if k.endswith("000000005.jpg"))
    expected = CaptionTokenizer(tokenizer)([""])[0]
    assert torch.equal(empty_caption, expected) and int((expected != 0).sum()) == 2  # start + end tokens only


def test_captions_utf8_and_overlong(tokenizer):
    tokens = CaptionTokenizer(tokenizer)(["caf\u00e9 \u65e5\u672c \ufffd", "word " * 200, ""])
    assert tokens.shape == (3, tokenizer.context_length) and tokens.dtype == torch.long
    assert tokens[1, -1] == tokenizer.eot_token_id  # truncated at the context length, still closed
    assert CaptionTokenizer(tokenizer)([]).shape == (0, tokenizer.context_length)


def test_folder_source_through_the_torch_backend(tmp_path, tokenizer):
    from fastclip.data.folder import open_image_folder

    for classname in ("cat", "dog"):
        (tmp_path / classname).mkdir()
        for index in range(3):
            (tmp_path / classname / f"{index}.jpg").write_bytes(jpeg(index))
    (tmp_path / "dog" / "broken.jpg").write_bytes(truncated_jpeg(1))
    source = open_image_folder(str(tmp_path))
    data = StreamingTrainData(source, tokenizer=tokenizer, image_size=16, image_mean=MEAN, image_std=STD,
                              batch_size=3, backend="torch")
    batches = list(data.batches(0))
    assert len(batches) == 3 and data.skip_counts == {"unreadable_image": 1}
    real = [k for b in batches for k in b.keys[: 3 - b.num_pads]]
    assert sorted(real) == sorted(str(tmp_path / f) for f in source.files if "broken" not in f)


def test_uint8_roundtrip_matches_pil():
    image = picture(2)
    array = to_uint8_chw(image)
    assert array.shape == (3, 32, 40) and array.dtype == np.uint8 and array.flags.c_contiguous
    assert np.array_equal(array.transpose(1, 2, 0), np.asarray(image))


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_fastclip_train_on_shards_with_one_percent_corrupt_images(tmp_path, backend):
    """fastclip-train pointed at img2dataset-style shards trains to the end; skipped == the images planted."""
    from fastclip.data.dali import dali_import_error
    from fastclip.train.cli import main

    if backend == "dali" and dali_import_error() is not None:
        pytest.skip(dali_import_error())
    planted = [37, 122]  # 1% of 200: a garbled header (stopped ahead) and a bad Huffman table (found by decoding)
    write_shards_with_planted_corruption(tmp_path / "shards", [90, 70, 40], planted, width=72, height=64,
                                         kinds=("garbled_header", "bad_huffman_table"))
    logs = tmp_path / "logs"
    argv = ["--train-data", f"{tmp_path}/shards/{{00000..00002}}.tar", "--dataset-type", "auto",
            "--model", "fc-tiny-vit", "--data-backend", backend, "--batch-size", "20", "--epochs", "1", "--workers", "2", "--warmup", "2",
            "--log-every-n-steps", "5", "--logs", str(logs), "--name", backend]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(argv) == 0
    run = logs / backend
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 10  # ceil(200 / 20) full batches
    assert records[-1]["samples_seen"] == 200 - len(planted)  # real samples: the 2 pads are not counted
    assert records[-1]["skipped"] == records[-1]["epoch_skipped"] == len(planted)
    assert records[-1]["skipped_by_reason"] == records[-1]["epoch_skipped_by_reason"] == {"unreadable_image": 2}
    log = (run / "out.log").read_text()
    assert f"backend {backend}" in log and "198 samples seen, skipped 2 (unreadable_image 2) this epoch" in log
    assert (run / "checkpoints" / "epoch_1.pt").is_file()


def test_the_epoch_counts_are_logged_when_the_epoch_ends_early(tmp_path, tokenizer, caplog):
    write_zoo_shard(tmp_path)
    source = open_webdataset(f"{tmp_path}/00000.tar")
    data = StreamingTrainData(source, tokenizer=tokenizer, image_size=16, image_mean=MEAN, image_std=STD,
                              batch_size=2, backend="torch")
    batches = data.batches(0)
    next(batches)
    batches.close()  # what a training step that raises does to the epoch's iterator
    assert "data rank 0 epoch 1 (ended early): skipped" in caplog.text
