"""fastclip-train end to end on the toy world (tiny sizes): files, checkpoints, resume, bad checkpoints."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from fastclip.data.loader import build_train_data
from fastclip.models import load_checkpoint, load_model_from_checkpoint
from fastclip.train.cli import main
from fastclip.train.config import TrainConfig, parse_args

# 32 images per epoch in batches of 16: 2 steps per epoch, 6 steps in 3 epochs.
TINY = ["--train-num-samples", "32", "--batch-size", "16", "--warmup", "3", "--log-every-n-steps", "1", "--lr", "2e-3"]
EPOCHS = 3


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    assert main([*TINY, "--epochs", str(EPOCHS), "--logs", str(logs), "--name", "tiny"]) == 0
    return logs / "tiny"


def test_run_writes_open_clip_checkpoints_every_epoch(run):
    paths = sorted((run / "checkpoints").iterdir())
    assert [p.name for p in paths] == ["epoch_1.pt", "epoch_2.pt", "epoch_3.pt"]
    for epoch, path in enumerate(paths, start=1):
        state = load_checkpoint(path)
        assert set(state) == {"epoch", "name", "state_dict", "optimizer", "model_name", "model_cfg", "samples_seen",
                              "toyworld", "train_state"}
        assert (state["epoch"], state["name"], state["model_name"]) == (epoch, "tiny", "fc-tiny-vit")
        assert state["samples_seen"] == 32 * epoch
        assert not any(key.startswith("module.") for key in state["state_dict"])
    bundle, meta = load_model_from_checkpoint(paths[-1])  # fastclip-eval's path: no flags needed
    assert meta == {"epoch": 3, "name": "tiny", "samples_seen": 96, "model_name": "fc-tiny-vit"}
    first, last = (load_checkpoint(p)["state_dict"] for p in (paths[0], paths[-1]))
    assert not torch.equal(first["visual.conv1.weight"], last["visual.conv1.weight"])  # it trained
    assert 0 <= last["logit_scale"].item() <= math.log(100)


def test_run_writes_params_metrics_and_log(run):
    params = json.loads((run / "params.json").read_text())
    assert set(params) == set(TrainConfig.__dataclass_fields__)
    assert (params["precision"], params["train_num_samples"], params["device"], params["name"]) == (
        "fp32", 32, "cpu", "tiny")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["epoch"] for r in records] == [1, 1, 2, 2, 3, 3]
    assert [r["samples_seen"] for r in records] == [16, 32, 48, 64, 80, 96]
    for record in records:
        assert set(record) >= {"step", "epoch", "loss", "lr", "logit_scale", "images_per_s", "samples_seen", "skipped"}
        assert math.isfinite(record["loss"]) and record["images_per_s"] > 0 and record["skipped"] == 0
    assert [r["lr"] for r in records[:3]] == pytest.approx([2e-3 / 3, 2e-3 * 2 / 3, 2e-3])  # 3-step warmup
    assert records[5]["lr"] < records[4]["lr"] < records[3]["lr"] == pytest.approx(2e-3)  # then the cosine decay
    log = (run / "out.log").read_text()
    assert "epoch 3/3" in log and "saved" in log and "epoch_3.pt" in log


def test_ranks_read_disjoint_shares_of_the_toy_world():
    from fastclip.models import create_model

    bundle = create_model("fc-tiny-vit")
    args = parse_args(["--train-num-samples", "64", "--batch-size", "8"])
    shares = []
    for rank in range(2):
        data = build_train_data(args, bundle, device="cpu", rank=rank, world_size=2)
        batches = list(data.batches(0))
        assert data.num_batches == len(batches) == 4
        assert all(b.images.shape == (8, 3, 64, 64) and b.texts.shape == (8, 24) for b in batches)
        shares.append({int(k) for b in batches for k in b.keys})
    assert len(shares[0]) == len(shares[1]) == 32 and not shares[0] & shares[1]
    assert shares[0] | shares[1] == set(range(64))


def test_resume_latest_continues_where_the_run_stopped(run, tmp_path):
    """Cut the run after epoch 2 and resume: epoch 3 must come out as in the uninterrupted run."""
    copy = tmp_path / "tiny"
    shutil.copytree(run, copy)
    (copy / "checkpoints" / "epoch_3.pt").unlink()  # the metrics of epoch 3 stay, as after a crash in epoch 3

    assert main([*TINY, "--epochs", str(EPOCHS), "--logs", str(tmp_path), "--name", "tiny", "--resume", "latest"]) == 0
    resumed = load_checkpoint(copy / "checkpoints" / "epoch_3.pt")
    original = load_checkpoint(run / "checkpoints" / "epoch_3.pt")
    assert (resumed["epoch"], resumed["samples_seen"]) == (3, 96)
    for key, value in original["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    records = [json.loads(line) for line in (copy / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]  # epoch 3's lines from before the cut are replaced
    assert "resumed from" in (copy / "out.log").read_text()


def test_resume_latest_without_a_checkpoint_starts_from_scratch_with_a_message(tmp_path):
    """As open_clip: `--resume latest` on a run that has no checkpoint yet trains it from the start."""
    assert main([*TINY, "--epochs", "1", "--logs", str(tmp_path), "--name", "fresh", "--resume", "latest"]) == 0
    assert (tmp_path / "fresh" / "checkpoints" / "epoch_1.pt").is_file()
    assert "--resume latest: no checkpoint in" in (tmp_path / "fresh" / "out.log").read_text()
    assert "starting from scratch" in (tmp_path / "fresh" / "out.log").read_text()
    with pytest.raises(SystemExit, match="--resume latest needs --name"):
        main([*TINY, "--logs", str(tmp_path), "--resume", "latest"])


def test_truncated_checkpoint_is_a_clear_error(run, tmp_path):
    data = (run / "checkpoints" / "epoch_1.pt").read_bytes()
    truncated = tmp_path / "epoch_1.pt"
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(SystemExit, match=rf"{truncated}: not a readable PyTorch checkpoint.*truncated"):
        main([*TINY, "--logs", str(tmp_path), "--name", "r", "--resume", str(truncated)])
    assert not (tmp_path / "r").exists()  # nothing written for a refused start
    # --resume latest skips the damaged file; when every file is damaged it says so
    only_damaged = tmp_path / "damaged" / "checkpoints"
    only_damaged.mkdir(parents=True)
    shutil.copy(truncated, only_damaged / "epoch_1.pt")
    with pytest.warns(UserWarning, match="skipping damaged"), pytest.raises(SystemExit, match="every .* is damaged"):
        main([*TINY, "--logs", str(tmp_path), "--name", "damaged", "--resume", "latest"])


def test_an_existing_run_is_not_overwritten(run):
    with pytest.raises(SystemExit, match="already holds a run.*--resume latest"):
        main([*TINY, "--logs", str(run.parent), "--name", run.name])


def _write_open_clip_csv(folder, rows: int):
    """An open_clip CSV: a tab-separated filepath/title table whose image paths are relative to `folder`."""
    from PIL import Image

    (folder / "images").mkdir(parents=True)
    lines = ["filepath\ttitle"]
    for row in range(rows):
        Image.new("RGB", (24, 20), (row * 37 % 256, row * 91 % 256, 120)).save(folder / "images" / f"{row}.png")
        lines.append(f"images/{row}.png\tpicture {row}")
    (folder / "x.csv").write_text("\n".join(lines) + "\n")
    return folder / "x.csv"


def test_train_data_csv_trains_on_it_with_paths_relative_to_the_working_directory(tmp_path, monkeypatch):
    """`fastclip-train --train-data x.csv`: auto detects the CSV (no toy world), and paths resolve as open_clip's."""
    csv_path = _write_open_clip_csv(tmp_path / "data", 8)
    monkeypatch.chdir(tmp_path / "data")
    assert main(["--train-data", "x.csv", "--model", "fc-tiny-vit", "--batch-size", "4", "--epochs", "1",
                 "--workers", "0", "--logs", str(tmp_path / "logs"), "--name", "csv"]) == 0
    run = tmp_path / "logs" / "csv"
    params = json.loads((run / "params.json").read_text())
    assert (params["dataset_type"], params["warmup"], params["lr"]) == ("auto", 10000, 5e-4)  # open_clip's
    assert "dataset_type: auto\n" in (run / "params.txt").read_text()  # open_clip's params.txt layout
    assert "auto data, 8 images/epoch, 2 steps/epoch" in (run / "out.log").read_text()
    keys = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert keys["samples_seen"] == 8 and keys["skipped"] == 0
    # from another working directory the same relative paths resolve beside the CSV (the documented fallback)
    monkeypatch.chdir(tmp_path)
    assert main(["--train-data", str(csv_path), "--model", "fc-tiny-vit", "--batch-size", "4", "--epochs", "1",
                 "--workers", "0", "--logs", str(tmp_path / "logs"), "--name", "fallback"]) == 0


def test_a_csv_whose_images_cannot_be_read_is_a_one_line_error_with_true_counts(tmp_path, monkeypatch, capsys):
    """The issue's case: 64 rows, none readable from where fastclip runs: one line naming the file, 64 (not 96)."""
    csv_path = _write_open_clip_csv(tmp_path / "data", 64)
    for image in (tmp_path / "data" / "images").iterdir():
        image.write_bytes(b"not an image")
    monkeypatch.chdir(tmp_path / "data")
    with pytest.raises(SystemExit) as failure:
        main(["--train-data", "x.csv", "--model", "fc-tiny-vit", "--batch-size", "16", "--workers", "0",
              "--logs", str(tmp_path / "logs"), "--name", "bad"])
    message = str(failure.value)
    assert "\n" not in message and message.startswith("fastclip-train: error: x.csv: 64 of its 64 rows have "
                                                      "unreadable images")
    assert "too few readable ones to fill 4 batch(es) of 16" in message and str(csv_path.parent) in message


def test_open_clip_run_flags_on_synthetic_data(tmp_path, monkeypatch):
    """open_clip's synthetic data, --torchcompile (the eager dynamo backend, to stay fast on the CPU), --log-local,
    --debug, --copy-codebase, --report-to tensorboard, --save-most-recent and --delete-previous-checkpoint."""
    compiled = []
    real_compile = torch.compile

    def compile_eagerly(model, **options):
        compiled.append(model)
        return real_compile(model, backend="eager", **options)

    monkeypatch.setattr(torch, "compile", compile_eagerly)
    argv = ["--dataset-type", "synthetic", "--train-num-samples", "8", "--batch-size", "4", "--epochs", "3",
            "--model", "fc-tiny-vit", "--workers", "0", "--log-every-n-steps", "1", "--torchcompile", "--log-local",
            "--debug", "--copy-codebase", "--report-to", "tensorboard", "--save-most-recent",
            "--delete-previous-checkpoint", "--logs", str(tmp_path), "--name", "synthetic"]
    assert main(argv) == 0
    run = tmp_path / "synthetic"
    assert len(compiled) == 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_3.pt", "epoch_latest.pt"]
    state = load_checkpoint(run / "checkpoints" / "epoch_latest.pt")
    assert state["epoch"] == 3 and not any(key.startswith("_orig_mod.") for key in state["state_dict"])
    assert (run / "out-0.log").is_file() and not (run / "out.log").exists()
    assert "step 6:" in (run / "out-0.log").read_text()  # --debug lines
    assert (run / "code" / "fastclip" / "train" / "cli.py").is_file()
    assert any((run / "tensorboard").iterdir())
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    # one black image captioned "Dummy caption", repeated: every pair is the same, so the loss is log(batch)
    assert losses == pytest.approx([math.log(4)] * 6, rel=1e-5)
