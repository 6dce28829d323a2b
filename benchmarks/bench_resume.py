"""Resuming in the middle of an epoch: time to the first batch after batch 24 of 32, for the sources that seek
(`batches_from` with the position a checkpoint kept: the toy world slices its sample ids, the CSV restarts its
stream at the position) against reading and dropping the first 24 batches (TrainData's default, what a source
without a seek does, and what a resume without a data position would have to do).

    pytest benchmarks/bench_resume.py --benchmark-only --benchmark-group-by=param:source
Quote the ratio of the two providers of one source within one run.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fastclip.data.loader import TrainData, build_train_data
from fastclip.models import create_model
from fastclip.train.config import parse_args

BATCH, ROWS, RESUME_AT = 8, 256, 24


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_resume")
    rng = np.random.default_rng(0)
    for index in range(ROWS):
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(root / f"{index}.jpg")
    path = root / "pairs.csv"
    path.write_text("filepath\ttitle\n" + "".join(f"{i}.jpg\tpicture {i}\n" for i in range(ROWS)))
    return path


@pytest.mark.parametrize("provider", ["seek", "read_and_drop"])
@pytest.mark.parametrize("source", ["csv", "toyworld"])
def test_first_batch_after_a_mid_epoch_resume(benchmark, bench_info, csv_file, source, provider):
    flags = {"csv": ["--dataset-type", "csv", "--train-data", str(csv_file), "--workers", "0"],
             "toyworld": ["--train-num-samples", str(ROWS)]}[source]
    data = build_train_data(parse_args([*flags, "--batch-size", str(BATCH)]), create_model("fc-tiny-vit"),
                            device="cpu")
    positions = []
    for _ in data.batches(0):
        positions.append(data.position())
    bench_info.update(source=source, provider=provider, resume_at=RESUME_AT, num_batches=data.num_batches)

    def first_batch():
        if provider == "seek":
            return next(iter(data.batches_from(0, RESUME_AT, positions[RESUME_AT - 1])))
        return next(iter(TrainData.batches_from(data, 0, RESUME_AT)))

    batch = benchmark.pedantic(first_batch, rounds=5, warmup_rounds=1)
    assert batch.images.shape[0] == BATCH
