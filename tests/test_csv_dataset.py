"""open_clip's CSV layout through a torch DataLoader: happy path, bad files, unreadable images, rank split."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from fastclip.data.csv_dataset import (
    CsvDataset, CsvFormatError, CsvTrainData, TooFewReadableImagesError, read_csv_table, rank_order,
)
from fastclip.data.loader import build_train_data
from fastclip.data.skips import NoReadableSamplesError
from fastclip.train.cli import main
from fastclip.train.config import parse_args


def write_images(folder, count, *, start=0):
    """Small PNG and JPEG files of different sizes and modes (RGB, grayscale, RGBA)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    names = []
    for index in range(start, start + count):
        kind = index % 3
        if kind == 0:
            image, name = Image.fromarray(rng.integers(0, 255, (40, 52, 3), dtype=np.uint8)), f"{index}.jpg"
        elif kind == 1:
            image, name = Image.fromarray(rng.integers(0, 255, (33, 30), dtype=np.uint8), "L"), f"{index}.png"
        else:
            image, name = Image.fromarray(rng.integers(0, 255, (64, 64, 4), dtype=np.uint8), "RGBA"), f"{index}.png"
        image.save(folder / name)
        names.append(name)
    return names


def write_csv(path, rows, header=("filepath", "title"), separator="\t"):
    lines = [separator.join(header)] + [separator.join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def bundle():
    from fastclip.models import create_model

    return create_model("fc-tiny-vit")


def csv_args(path, **overrides):
    args = parse_args(["--dataset-type", "csv", "--train-data", str(path), "--workers", "0", "--batch-size", "4"])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def test_table_resolves_relative_paths_and_keeps_empty_captions(tmp_path):
    names = write_images(tmp_path / "images", 3)
    absolute = tmp_path / "elsewhere.png"
    Image.new("RGB", (8, 8), "red").save(absolute)
    path = write_csv(tmp_path / "train.csv", [
        (f"images/{names[0]}", "a red circle"), (f"images/{names[1]}", ""), (f"images/{names[2]}", "nan"),
        (str(absolute), '"quoted" caption'),
    ])
    table = read_csv_table(path)
    assert table.image_paths[:3] == [str(tmp_path / "images" / name) for name in names]
    assert table.image_paths[3] == str(absolute)
    assert table.captions == ["a red circle", "", "nan", "quoted caption"]


def test_dataset_reads_png_and_jpeg_through_the_dataloader(tmp_path, bundle):
    names = write_images(tmp_path / "images", 9)
    captions = [f"caption {i}" if i % 4 else "" for i in range(9)]
    path = write_csv(tmp_path / "pairs.csv", [(f"images/{n}", c) for n, c in zip(names, captions)])
    data = build_train_data(csv_args(path, workers=1), bundle, device="cpu")
    assert (data.num_samples, data.num_batches) == (9, 2)
    batches = list(data.batches(0))
    assert len(batches) == 2 and data.skipped == 0
    size = bundle.image_size
    for batch in batches:
        assert batch.images.shape == (4, 3, size, size) and batch.images.dtype == torch.float32
        assert batch.texts.shape == (4, 24) and batch.texts.dtype == torch.long
        assert torch.isfinite(batch.images).all() and batch.images.min() < -0.5  # normalised, not [0,1]
        for row, tokens in zip(batch.keys.tolist(), batch.texts):
            assert torch.equal(tokens, bundle.tokenizer([captions[row]])[0])  # the empty caption stays empty
    rows = torch.cat([b.keys for b in batches]).tolist()
    assert len(set(rows)) == 8
    assert rows == torch.cat([b.keys for b in data.batches(0)]).tolist()  # epoch order is reproducible
    assert rows != torch.cat([b.keys for b in data.batches(1)]).tolist()


def test_ranks_read_disjoint_shares_with_equal_batch_counts():
    orders = [list(zip(range(15), rank_order(50, seed=1, epoch=2, rank=r, world_size=3))) for r in range(3)]
    shares = [{row for _, row in order} for order in orders]
    assert all(len(share) == 15 for share in shares)
    assert not (shares[0] & shares[1]) and not (shares[1] & shares[2]) and not (shares[0] & shares[2])
    stream = rank_order(4, seed=0, epoch=0, rank=0, world_size=1)
    refill = [next(stream) for _ in range(12)]
    assert sorted(refill[:4]) == sorted(refill[4:8]) == [0, 1, 2, 3]  # the stream goes on past one pass


def test_missing_csv_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "train.csv"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        read_csv_table(missing)
    with pytest.raises(SystemExit, match=f"fastclip-train: error: --train-data {missing}: no such CSV file"):
        main(["--dataset-type", "csv", "--train-data", str(missing), "--logs", str(tmp_path / "logs")])


def test_csv_without_the_caption_column_names_the_columns_found(tmp_path):
    path = write_csv(tmp_path / "pairs.csv", [("a.png", "x")], header=("filepath", "caption"))
    with pytest.raises(CsvFormatError, match=r"no column 'title'.*columns found are \['filepath', 'caption'\]"):
        read_csv_table(path)
    assert read_csv_table(path, caption_key="caption").captions == ["x"]
    comma = write_csv(tmp_path / "comma.csv", [("a.png", "x")], separator=",")
    with pytest.raises(CsvFormatError, match=r"\['filepath,title'\].*--csv-separator"):
        read_csv_table(comma)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(CsvFormatError, match="empty"):
        read_csv_table(tmp_path / "empty.csv")


def test_unreadable_images_are_skipped_counted_and_refilled(tmp_path, bundle, caplog):
    names = write_images(tmp_path / "images", 9)
    (tmp_path / "images" / "garbage.jpg").write_bytes(b"this is not a JPEG")
    truncated = (tmp_path / "images" / names[0]).read_bytes()
    (tmp_path / "images" / "truncated.jpg").write_bytes(truncated[: len(truncated) // 2])
    rows = [(f"images/{n}", "ok") for n in names]
    rows += [("images/garbage.jpg", "bad"), ("images/truncated.jpg", "bad"), ("images/missing.png", "bad")]
    path = write_csv(tmp_path / "pairs.csv", rows)
    table = read_csv_table(path)
    dataset = CsvDataset(table, transform=lambda image: image)
    assert "cannot identify" in dataset[9].reason and "truncated" in dataset[10].reason
    assert "No such file" in dataset[11].reason

    data = CsvTrainData(csv_args(path), bundle, device="cpu", rank=0, world_size=1)
    assert (data.num_samples, data.num_batches) == (12, 3)  # the epoch reaches every row, the bad ones too
    with caplog.at_level(logging.WARNING, logger="fastclip.data.csv_dataset"):
        batches = list(data.batches(0))
    assert [b.images.shape[0] for b in batches] == [4, 4, 4]
    assert all(row < 9 for b in batches for row in b.keys.tolist())
    assert data.skipped >= 3 and data.skipped == len(caplog.records)
    assert "skipped unreadable image" in caplog.text and "garbage.jpg" in caplog.text


def test_only_unreadable_images_is_an_error_not_a_hang(tmp_path, bundle):
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    path = write_csv(tmp_path / "pairs.csv", [("bad.jpg", "x")] * 6)
    data = CsvTrainData(csv_args(path), bundle, device="cpu", rank=0, world_size=1)
    # a one-line data error (the CLI reports it) with true counts: 6 distinct rows, however often the refill retried
    with pytest.raises(TooFewReadableImagesError, match=r"pairs\.csv: 6 of its 6 rows have unreadable images"):
        list(data.batches(0))


def test_training_on_a_csv_continues_past_an_unreadable_image(tmp_path):
    names = write_images(tmp_path / "data" / "images", 12)
    (tmp_path / "data" / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    rows = [(f"images/{n}", f"picture {i}") for i, n in enumerate(names)] + [("images/broken.png", "")] * 4
    path = write_csv(tmp_path / "data" / "pairs.csv", rows)
    logs = tmp_path / "logs"
    assert main(["--dataset-type", "csv", "--train-data", str(path), "--model", "fc-tiny-vit", "--batch-size", "4",
                 "--epochs", "1", "--workers", "1", "--logs", str(logs), "--name", "csv", "--log-every-n-steps", "1"]) == 0
    run = logs / "csv"
    assert (run / "checkpoints" / "epoch_1.pt").is_file()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in records)
    assert records[-1]["skipped"] >= 4  # an epoch of 16 rows reaches all four
    assert "skipped unreadable image" in (run / "out.log").read_text()
