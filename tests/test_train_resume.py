"""Mid-epoch checkpoints and exact resume: a run stopped at any step and resumed ends with the weights (and the
optimizer state, and every logged loss) of the uninterrupted run, bit for bit on the CPU in fp32; the learning-rate
schedule is a function of samples seen; open_clip checkpoints get an honest samples_seen.

The model is a micro CLIP with patch dropout, so that every training step draws from torch's global generator and
a resume that lost the random-number state would differ (test_the_micro_model_draws_random_numbers proves it).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastclip.data.loader import build_train_data
from fastclip.models import create_model, load_checkpoint, resumable_checkpoints
from fastclip.train.checkpoints import Checkpointer
from fastclip.train.cli import train
from fastclip.train.config import parse_args
from fastclip.train.distributed import World
from fastclip.train.optim import create_optimizer
from fastclip.train.schedule import cosine_lr
from fastclip.train.state import restore
from tests.helpers import REPO_ROOT
from tests.wds_fixtures import write_good_shards

MICRO_MODEL = "fc-test-micro"
MICRO_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8, "patch_dropout": 0.25},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
# 12 samples in batches of 4: 3 steps per epoch, 6 steps in 2 epochs.
TINY = ["--model", MICRO_MODEL, "--batch-size", "4", "--epochs", "2", "--warmup", "2", "--lr", "2e-3",
        "--log-every-n-steps", "1", "--seed", "3"]
STEPS = 6

pytestmark = pytest.mark.slow


def register_micro_model(folder: Path) -> None:
    import open_clip

    path = folder / f"{MICRO_MODEL}.json"
    path.write_text(json.dumps(MICRO_CONFIG))
    open_clip.add_model_config(path)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, list[str]]:
    """The flags of each data source: the toy world, a CSV with an unreadable image read by 2 workers, shards."""
    root = tmp_path_factory.mktemp("resume_data")
    register_micro_model(root)
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for index in range(12):
        Image.fromarray(rng.integers(0, 255, (40 + index, 36, 3), dtype=np.uint8)).save(images / f"{index}.png")
        rows.append(f"images/{index}.png\tpicture number {index}")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a picture")
    rows.insert(5, "images/broken.png\tbroken")
    csv_path = root / "pairs.csv"
    csv_path.write_text("filepath\ttitle\n" + "\n".join(rows) + "\n")
    write_good_shards(root / "shards", [7, 7])
    return {
        "toyworld": ["--train-num-samples", "12", "--workers", "0"],
        "csv": ["--dataset-type", "csv", "--train-data", str(csv_path), "--train-num-samples", "12", "--workers", "2"],
        "shards": ["--dataset-type", "webdataset", "--train-data", str(root / "shards" / "{00000..00001}.tar"),
                   "--train-num-samples", "12", "--workers", "2", "--data-backend", "torch"],
    }


@pytest.fixture(scope="module")
def uninterrupted(sources, tmp_path_factory) -> dict[str, Path]:
    """One uninterrupted run per source (lazily: run_dir(source))."""
    logs = tmp_path_factory.mktemp("uninterrupted")
    runs: dict[str, Path] = {}

    def run_dir(source: str) -> Path:
        if source not in runs:
            train(parse_args([*TINY, *sources[source], "--logs", str(logs), "--name", source]))
            runs[source] = logs / source
        return runs[source]

    return run_dir


class Killed(Exception):
    """Stands for the process dying right after a step checkpoint was written."""


def train_until_killed(argv: list[str], kill_after_step: int, monkeypatch) -> None:
    write_step_checkpoint = Checkpointer.after_step

    def after_step(self, progress, data):
        write_step_checkpoint(self, progress, data)
        if progress.step == kill_after_step:
            raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(Checkpointer, "after_step", after_step)
        with pytest.raises(Killed):
            train(parse_args(argv))


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_training(resumed: Path, original: Path) -> None:
    """Same final weights and optimizer state (torch.equal), and the same loss at every step."""
    final = f"checkpoints/epoch_{2}.pt"
    got, want = load_checkpoint(resumed / final), load_checkpoint(original / final)
    assert got["state_dict"].keys() == want["state_dict"].keys()
    for key, value in want["state_dict"].items():
        assert torch.equal(got["state_dict"][key], value), f"{key} differs after the resume"
    for index, state in want["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(got["optimizer"]["state"][index][name], value), f"optimizer {index}.{name} differs"
    assert got["samples_seen"] == want["samples_seen"] and got["train_state"]["step"] == want["train_state"]["step"]
    assert [(r["step"], r["samples_seen"], r["loss"], r["lr"]) for r in metrics(resumed)] == [
        (r["step"], r["samples_seen"], r["loss"], r["lr"]) for r in metrics(original)]


def test_the_micro_model_draws_random_numbers(sources):
    """Patch dropout: the same batch gives other features under another generator state, the same under the same."""
    bundle = create_model(MICRO_MODEL)
    bundle.model.train()
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    texts = bundle.tokenizer(["a red circle", "a blue square"])
    torch.manual_seed(0)
    first = bundle.model(images, texts)[0]
    torch.manual_seed(1)
    assert not torch.equal(first, bundle.model(images, texts)[0])
    torch.manual_seed(0)
    assert torch.equal(first, bundle.model(images, texts)[0])


@pytest.mark.parametrize("source, kill_after_step", [
    ("toyworld", 2),  # mid epoch 1: no epoch checkpoint yet
    ("toyworld", 4),  # mid epoch 2: the step checkpoint is newer than epoch_1.pt
    ("csv", 4),  # 2 workers, an unreadable image whose refill shifts the stream position
    ("shards", 2),  # webdataset shards, 2 workers: the source without a seek, read up to the position
])
def test_a_run_killed_mid_epoch_and_resumed_equals_the_uninterrupted_run(
        source, kill_after_step, sources, uninterrupted, tmp_path, monkeypatch):
    argv = [*TINY, *sources[source], "--logs", str(tmp_path), "--name", "cut", "--save-every-n-steps", "1"]
    train_until_killed(argv, kill_after_step, monkeypatch)
    run = tmp_path / "cut"
    epochs_done = kill_after_step // 3
    assert [p.name for p in resumable_checkpoints(run / "checkpoints")] == [
        *(f"epoch_{e}.pt" for e in range(1, epochs_done + 1)), f"epoch_{epochs_done}_step_{kill_after_step}.pt"]

    train(parse_args([*argv, "--resume", "latest"]))
    log = (run / "out.log").read_text()
    assert f"step {kill_after_step}, {4 * kill_after_step} samples seen; continuing at epoch {epochs_done + 1}, " \
           f"batch {kill_after_step % 3 + 1} of 3" in log
    assert_same_training(run, uninterrupted(source))
    assert [p.name for p in resumable_checkpoints(run / "checkpoints")] == ["epoch_1.pt", "epoch_2.pt"]


# fastclip-train in a fresh process, with the micro model registered; KILL_AFTER_STEP=k makes every rank exit right
# after the step-k checkpoint (a crash that every rank sees at the same point).
DRIVER = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    import open_clip
    from fastclip.train.checkpoints import Checkpointer
    from fastclip.train.cli import main

    path = Path(sys.argv[1]) / "{model}.json"
    path.write_text(json.dumps({config!r}))
    open_clip.add_model_config(path)
    kill_after_step = int(os.environ.get("KILL_AFTER_STEP", "0"))
    write_step_checkpoint = Checkpointer.after_step

    def after_step(self, progress, data):
        write_step_checkpoint(self, progress, data)
        if progress.step == kill_after_step:
            raise SystemExit(3)

    Checkpointer.after_step = after_step
    sys.exit(main(sys.argv[2:]))
""").format(model=MICRO_MODEL, config=MICRO_CONFIG)


def write_driver(folder: Path) -> list[str]:
    """The driver's command-line prefix (script and the folder for the model config)."""
    driver = folder / "driver.py"
    driver.write_text(DRIVER)
    return [str(driver), str(folder)]


def test_sigkill_after_a_step_checkpoint_then_resume_latest(sources, tmp_path):
    """A real SIGKILL of a training process, right after its first step checkpoint appears. The uninterrupted run
    is a fresh process too: the in-process one would inherit whatever global torch settings earlier tests left."""
    driver = write_driver(tmp_path)
    whole = [*TINY, *sources["toyworld"], "--logs", str(tmp_path), "--name", "whole"]
    done = subprocess.run([sys.executable, *driver, *whole], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    argv = [*TINY, *sources["toyworld"], "--logs", str(tmp_path), "--name", "killed", "--save-every-n-steps", "1"]
    checkpoints = tmp_path / "killed" / "checkpoints"
    process = subprocess.Popen([sys.executable, *driver, *argv], cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not list(checkpoints.glob("epoch_0_step_*.pt")):
            assert process.poll() is None, f"training ended before its first step checkpoint: {process.stderr.read()}"
            assert time.monotonic() < deadline, "no step checkpoint within 300 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (checkpoints / "epoch_2.pt").exists()

    done = subprocess.run([sys.executable, *driver, *argv, "--resume", "latest"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "continuing at" in (tmp_path / "killed" / "out.log").read_text()
    assert_same_training(tmp_path / "killed", tmp_path / "whole")


def test_two_ranks_stopped_mid_epoch_resume_exactly(sources, tmp_path):
    """torchrun, 2 CPU ranks (gloo) on the CSV with an unreadable image: each rank's stream position and generator
    state differ, and each comes back from the checkpoint rank 0 wrote."""
    driver = write_driver(tmp_path)
    # 12 samples, 2 per rank: 3 steps per epoch, 6 in all; stopped after step 4, in the middle of epoch 2.
    flags = [*TINY, *sources["csv"], "--batch-size", "2", "--workers", "0", "--device", "cpu", "--logs",
             str(tmp_path), "--save-every-n-steps", "2"]

    def torchrun(name: str, *extra: str, kill_after_step: int = 0) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *driver,
                   "--", *flags, "--name", name, *extra]
        return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "KILL_AFTER_STEP": str(kill_after_step)})

    done = torchrun("whole")
    assert done.returncode == 0, done.stderr[-3000:]
    stopped = torchrun("cut", kill_after_step=4)
    assert stopped.returncode != 0
    state = load_checkpoint(tmp_path / "cut" / "checkpoints" / "epoch_1_step_4.pt")["train_state"]
    assert [rank["data"] for rank in state["ranks"]][0] != [rank["data"] for rank in state["ranks"]][1]
    assert not torch.equal(state["ranks"][0]["rng"]["torch"], state["ranks"][1]["rng"]["torch"])
    done = torchrun("cut", "--resume", "latest")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "continuing at epoch 2, batch 2 of 3" in (tmp_path / "cut" / "out.log").read_text()
    assert_same_training(tmp_path / "cut", tmp_path / "whole")


def test_lr_is_continuous_when_the_batch_size_changes_on_resume(sources, tmp_path, monkeypatch):
    """Killed at step 4 with batch 4 (16 samples, a batch into epoch 2), resumed with batch 2: every step's lr is the
    one the batch-4 schedule gives at the samples seen when the step starts."""
    argv = [*TINY, *sources["toyworld"], "--logs", str(tmp_path), "--name", "bs", "--save-every-n-steps", "2"]
    train_until_killed(argv, 4, monkeypatch)
    before = metrics(tmp_path / "bs")
    train(parse_args([*argv, "--batch-size", "2", "--resume", "latest"]))
    records = metrics(tmp_path / "bs")
    assert records[:4] == before
    # Epoch 2 goes on at batch 3 of the 6 batches of 2, the share of the epoch that 1 batch of 4 covered.
    assert [r["samples_seen"] for r in records] == [4, 8, 12, 16, 18, 20, 22, 24]
    # Warmup 2 steps of 4 samples, then the cosine to 2 epochs x 3 steps of 4 samples.
    for record, batch in zip(records, [4, 4, 4, 4, 2, 2, 2, 2]):
        start = record["samples_seen"] - batch
        assert record["lr"] == cosine_lr(start / 4, base_lr=2e-3, warmup_steps=2, total_steps=6), record
    log = (tmp_path / "bs" / "out.log").read_text()
    assert "the batch size or world size changed in the middle of epoch 2" in log
    assert load_checkpoint(tmp_path / "bs" / "checkpoints" / "epoch_2.pt")["train_state"]["schedule"] == {
        "samples_per_step": 4, "steps_per_epoch": 3}


def fake_open_clip_run(tmp_path: Path, params: str | None, fastclip_checkpoint: Path) -> Path:
    """An open_clip_train run folder: params.txt (if given) and checkpoints/epoch_2.pt with open_clip's keys only."""
    run = tmp_path / "open_clip_run"
    (run / "checkpoints").mkdir(parents=True)
    if params is not None:
        (run / "params.txt").write_text(params)
    state = load_checkpoint(fastclip_checkpoint)
    open_clip_state = {key: state[key] for key in ("epoch", "name", "state_dict", "optimizer")}
    torch.save(open_clip_state, run / "checkpoints" / "epoch_2.pt")
    return run / "checkpoints" / "epoch_2.pt"


@pytest.mark.parametrize("params, samples_seen, units, note", [
    # webdataset: 1000 samples over 2 ranks x 16, 4 workers: ceil(1000 / 32) = 32 batches, per worker 8 -> 32
    ("batch_size: 16\nworld_size: 2\naccum_freq: 1\nworkers: 4\ndataset_type: webdataset\n"
     "train_data: s/{0..9}.tar\ntrain_num_samples: 1000\ndataset_resampled: False\n",
     2 * 32 * 32, {"samples_per_step": 32, "steps_per_epoch": 32}, "2 epoch(s) x 32 steps x 32 samples = 2048"),
    (None, 2 * 3 * 4, None, "no open_clip params.txt beside it"),
])
def test_open_clip_checkpoint_samples_seen_comes_from_its_own_run(
        params, samples_seen, units, note, sources, uninterrupted, tmp_path):
    path = fake_open_clip_run(tmp_path, params, uninterrupted("toyworld") / "checkpoints" / "epoch_2.pt")
    args = parse_args([*TINY, *sources["toyworld"]])
    bundle = create_model(MICRO_MODEL)
    data = build_train_data(args, bundle, device="cpu")
    optimizer = create_optimizer(bundle.model, args, torch.device("cpu"))
    world = World(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    point = restore(path, args, model=bundle.model, optimizer=optimizer, scaler=None, data=data, world=world)
    assert (point.progress.epoch, point.progress.samples_seen, point.start_batch) == (2, samples_seen, 0)
    assert point.schedule_units == units and point.rng_state is None
    assert note in " ".join(point.notes)


def test_an_open_clip_csv_run_is_counted_from_its_csv(sources, uninterrupted, tmp_path):
    csv_path = sources["csv"][sources["csv"].index("--train-data") + 1]  # 13 rows
    params = f"batch_size: 2\nworld_size: 2\naccum_freq: 2\ndataset_type: auto\ntrain_data: {csv_path}\n" \
             "train_num_samples: None\ncsv_separator: \t\n"
    path = fake_open_clip_run(tmp_path, params, uninterrupted("toyworld") / "checkpoints" / "epoch_2.pt")
    args = parse_args([*TINY, *sources["toyworld"]])
    bundle = create_model(MICRO_MODEL)
    world = World(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    point = restore(path, args, model=bundle.model, optimizer=create_optimizer(bundle.model, args, world.device),
                    scaler=None, data=build_train_data(args, bundle, device="cpu"), world=world)
    # ceil(13 / 2) // 2 = 3 batches per rank, accum 2: 1 step of 2 x 2 x 2 = 8 samples per epoch
    assert point.progress.samples_seen == 2 * 8
    assert point.schedule_units == {"samples_per_step": 8, "steps_per_epoch": 1}


def test_an_older_fastclip_checkpoint_resumes_at_its_epoch_with_its_samples_seen(sources, uninterrupted, tmp_path):
    """Checkpoints written before train_state existed carry samples_seen but no step position or RNG state."""
    state = load_checkpoint(uninterrupted("toyworld") / "checkpoints" / "epoch_1.pt")
    del state["train_state"]
    path = tmp_path / "epoch_1.pt"
    torch.save(state, path)
    args = parse_args([*TINY, *sources["toyworld"], "--batch-size", "2"])
    bundle = create_model(MICRO_MODEL)
    world = World(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    point = restore(path, args, model=bundle.model, optimizer=create_optimizer(bundle.model, args, world.device),
                    scaler=None, data=build_train_data(args, bundle, device="cpu"), world=world)
    assert (point.progress.epoch, point.progress.samples_seen, point.progress.step) == (1, 12, 6)  # 12 / batch 2
    assert (point.start_batch, point.rng_state, point.schedule_units) == (0, None, None)
    assert "no step position or random-number state" in point.notes[0]


@pytest.mark.parametrize("source", ["toyworld", "csv", "shards"])
def test_sources_continue_from_a_position_and_leave_the_global_generators_alone(source, sources):
    args = parse_args([*TINY, *sources[source]])
    data = build_train_data(args, create_model(MICRO_MODEL), device="cpu")
    torch.manual_seed(7)
    random.seed(7)
    np.random.seed(7)
    generators = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    full, positions = [], []
    for batch in data.batches(1):
        full.append(batch)
        positions.append(data.position())
    assert torch.equal(torch.get_rng_state(), generators[0]) and random.getstate() == generators[1]
    assert np.array_equal(np.random.get_state()[1], generators[2])
    for start in range(1, data.num_batches):
        tail = list(data.batches_from(1, start, positions[start - 1]))
        assert len(tail) == data.num_batches - start
        for got, want in zip(tail, full[start:]):
            assert torch.equal(got.images, want.images) and torch.equal(got.texts, want.texts)
            assert list(map(str, got.keys)) == list(map(str, want.keys))
