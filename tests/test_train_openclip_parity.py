"""Parity with open_clip's own trainer: the training command lines of open_clip's README, reduced to a tiny model,
two one-step epochs and generated data, parsed by open_clip_train's parser and by fastclip-train's, then run.

For every line fastclip either trains (or, as open_clip, only evaluates) or refuses with its documented reason.
Where open_clip_train can run the line here, it runs in-process on the same data in fp32 with its loss swapped for
fastclip's (the same class fastclip trains with), and both give the same loss at every step and the same
validation metrics, to 1e-5. The data make the comparison exact despite the two data orders and random crops:
every image is one colour (any crop resizes to the same image) and a batch holds the whole epoch (CLIP's loss is
invariant to the order of the pairs in a batch).
"""

from __future__ import annotations

import io
import json
import logging
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from PIL import Image

from fastclip.train.cli import main as fastclip_main
from fastclip.train.config import parse_args as fastclip_parse_args
from fastclip.train.openclip_flags import CONFIG_FIELD, OPEN_CLIP_FLAGS

pytestmark = pytest.mark.slow

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 40), "blue": (30, 40, 230), "yellow": (240, 230, 30),
           "cyan": (20, 230, 230), "magenta": (230, 30, 220), "grey": (128, 128, 128), "navy": (20, 30, 90)}
SAMPLES = len(COLOURS)

# Appended to every README line (argparse keeps the last value): the tiny model, one batch per epoch holding every
# sample, two epochs, the CPU, fp32, no worker processes, a log line per step.
REDUCTION = ["--model", "fc-tiny-vit", "--batch-size", str(SAMPLES), "--epochs", "2", "--warmup", "1",
             "--workers", "0", "--device", "cpu", "--precision", "fp32", "--log-every-n-steps", "1"]


@dataclass
class Line:
    """One open_clip README command line (its arguments after `open_clip_train.main`), and what fastclip does."""

    argv: list[str]
    refused: str | None = None  # the pattern of fastclip's one-line refusal
    compare: bool = True  # run open_clip_train on it too and compare losses / metrics
    env: dict = field(default_factory=dict)
    why_not_compared: str = ""
    after_reduction: list[str] = field(default_factory=list)  # what the line needs to keep over REDUCTION


LINES = {
    # "Sample single-process running code" without --imagenet-val (the README says it is optional)
    "single-process-csv": Line(
        ["--save-frequency", "1", "--zeroshot-frequency", "1", "--report-to", "tensorboard",
         "--train-data=train.csv", "--val-data=val.csv", "--csv-img-key", "filepath", "--csv-caption-key", "title",
         "--warmup", "10000", "--batch-size=128", "--lr=1e-3", "--wd=0.1", "--epochs=30", "--workers=8",
         "--model", "RN50"]),
    # the same with ImageNet zero-shot, which fastclip leaves to fastclip-eval
    "single-process-csv-imagenet": Line(
        ["--save-frequency", "1", "--zeroshot-frequency", "1", "--report-to", "tensorboard",
         "--train-data=train.csv", "--val-data=val.csv", "--imagenet-val=imagenet/val/", "--warmup", "10000",
         "--batch-size=128", "--lr=1e-3", "--wd=0.1", "--epochs=30", "--workers=8", "--model", "RN50"],
        refused=r"--imagenet-val: not supported: .*fastclip-eval"),
    # "Multi-GPU": torchrun's per-process arguments (one process here)
    "torchrun-webdataset": Line(
        ["--train-data", "shards/{00000..00001}.tar", "--train-num-samples", "10968539", "--dataset-type",
         "webdataset", "--batch-size", "320", "--precision", "amp", "--workers", "4", "--train-num-samples",
         str(SAMPLES)]),
    # "SLURM": srun's variables for one task, local loss with gathered gradients
    "slurm": Line(
        ["--save-frequency", "1", "--report-to", "tensorboard", "--train-data=shards/{00000..00001}.tar",
         "--train-num-samples", str(SAMPLES), "--warmup", "2000", "--batch-size=256", "--epochs=32", "--workers=8",
         "--model", "ViT-B-32", "--name", "ViT-B-32-Vanilla", "--seed", "0", "--local-loss", "--gather-with-grad"],
        env={"SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NTASKS": "1"}),
    # "Resuming from a checkpoint" (the checkpoint after epoch 1 of the single-process line)
    "resume": Line(["--train-data=train.csv", "--val-data=val.csv", "--resume", "{checkpoint}"]),
    # "Fine-tuning CoCa"
    "coca": Line(
        ["--dataset-type", "csv", "--train-data", "train.csv", "--warmup", "1000", "--batch-size", "128", "--lr",
         "1e-5", "--wd", "0.1", "--epochs", "1", "--workers", "3", "--model", "coca_ViT-L-14", "--report-to",
         "wandb", "--coca-contrastive-loss-weight", "0", "--coca-caption-loss-weight", "1", "--log-every-n-steps",
         "100"], refused=r"--coca-caption-loss-weight: not supported: CoCa"),
    # "Training with pre-trained language models as text encoder" (its RoBERTa tower would need a download, so
    # the tiny model's own text tower is locked instead; local shards stand in for `pipe:aws s3 cp`)
    "lock-text": Line(
        ["--train-data=shards/{00000..00001}.tar", "--train-num-samples", "3000000",
         "--val-data=shards/{00000..00001}.tar",
         "--val-num-samples", "10000", "--dataset-type", "webdataset", "--batch-size", "256", "--warmup", "2000",
         "--epochs", "10", "--lr", "5e-4", "--precision", "amp", "--workers", "6", "--model", "roberta-ViT-B-32",
         "--lock-text", "--lock-text-unlocked-layers", "10", "--name", "10_unfrozen", "--report-to", "tensorboard",
         "--train-num-samples", str(SAMPLES), "--lock-text-unlocked-layers", "1"],
        compare=False, why_not_compared="open_clip 3.3 asserts --lock-text-freeze-layer-norm for its own text towers"),
    "lock-text-freeze-layer-norm": Line(
        ["--train-data=shards/{00000..00001}.tar", "--train-num-samples", str(SAMPLES), "--dataset-type",
         "webdataset", "--lock-text", "--lock-text-unlocked-layers", "1", "--lock-text-freeze-layer-norm"]),
    "remote-text-tower-data": Line(
        ["--train-data=pipe:aws s3 cp s3://s-mas/cc3m/{00000..00329}.tar -", "--train-num-samples", "3000000",
         "--dataset-type", "webdataset"], refused=r"--train-data 'pipe:aws .*remote sources are not supported"),
    # "Evaluating local checkpoint": no training data, so open_clip (and fastclip) only evaluate
    "evaluate-local-checkpoint": Line(["--val-data=val.csv", "--model", "RN101", "--pretrained", "{checkpoint}"]),
    # "Evaluating hosted pretrained checkpoint on ImageNet zero-shot prediction"
    "evaluate-hosted-pretrained": Line(
        ["--imagenet-val", "imagenet/validation", "--model", "ViT-B-32-quickgelu", "--pretrained", "laion400m_e32"],
        refused=r"--imagenet-val: not supported"),
    "hosted-pretrained-tag": Line(
        ["--train-data=train.csv", "--model", "ViT-B-32-quickgelu", "--pretrained", "laion400m_e32"],
        refused=r"--pretrained laion400m_e32: .*would need a download"),
    # "Model distillation"
    "distillation": Line(["--train-data=train.csv", "--distill-model", "ViT-L-14", "--distill-pretrained", "openai"],
                         refused=r"--distill-model: not supported"),
    # "Gradient accumulation", with the memory savers the README recommends first
    "accum-freq": Line(["--train-data=train.csv", "--accum-freq", "2"],
                       after_reduction=["--batch-size", str(SAMPLES // 2)]),
    "accum-freq-memory-savers": Line(
        ["--train-data=train.csv", "--grad-checkpointing", "--local-loss", "--gather-with-grad", "--accum-freq", "2"],
        after_reduction=["--batch-size", str(SAMPLES // 2)]),
    # "Int8 Support"
    "int8": Line(["--train-data=train.csv", "--use-bnb-linear", "SwitchBackLinearGlobal"],
                 refused=r"--use-bnb-linear: not supported"),
    # "Support for remote loading/training"
    "remote-sync": Line(["--train-data=train.csv", "--logs", "/scratch", "--remote-sync", "s3://bucket"],
                        refused=r"--remote-sync: not supported"),
    "remote-resume": Line(["--train-data=train.csv", "--resume", "s3://bucket/epoch_3.pt"],
                          refused=r"--resume 's3://.*remote sources are not supported"),
    # "Data sources with sampling with replacement"
    "upsampled-sources": Line(
        ["--train-data=shards/{00000..00000}.tar::shards/{00001..00001}.tar", "--train-data-upsampling-factors=1::10",
         "--dataset-resampled"], refused=r"--train-data-upsampling-factors: not supported"),
    # open_clip's --siglip, with its distributed implementation named
    "siglip": Line(["--train-data=train.csv", "--siglip", "--loss-dist-impl", "bidir"]),
}


def reduced(line: Line, checkpoint: Path) -> list[str]:
    return [arg.replace("{checkpoint}", str(checkpoint)) for arg in line.argv] + REDUCTION + line.after_reduction


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """train.csv / val.csv with image paths relative to this folder (open_clip opens them from the working
    directory) and two tar shards of the same pairs, as img2dataset writes them."""
    root = tmp_path_factory.mktemp("parity")
    (root / "images").mkdir()
    rows = []
    for name, colour in COLOURS.items():
        Image.new("RGB", (40, 30), colour).save(root / "images" / f"{name}.png")
        rows.append((f"images/{name}.png", f"a {name} rectangle"))
    (root / "train.csv").write_text("filepath\ttitle\n" + "".join(f"{p}\t{c}\n" for p, c in rows))
    (root / "val.csv").write_text("filepath\ttitle\n" + "".join(f"{p}\t{c}\n" for p, c in reversed(rows)))
    (root / "shards").mkdir()
    for shard in range(2):
        with tarfile.open(root / "shards" / f"{shard:05d}.tar", "w") as tar:
            for index, (path, caption) in enumerate(rows[shard * 4:(shard + 1) * 4]):
                key = f"{shard:05d}{index:04d}"
                for member, payload in ((f"{key}.png", (root / path).read_bytes()), (f"{key}.txt", caption.encode())):
                    info = tarfile.TarInfo(member)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return root


@pytest.fixture
def in_data_dir(data_dir, monkeypatch):
    monkeypatch.chdir(data_dir)
    return data_dir


@dataclass
class RunOutput:
    losses: list[float]
    validation: list[dict]


def run_fastclip(argv: list[str], logs: Path) -> RunOutput:
    assert fastclip_main([*argv, "--logs", str(logs), "--name", "fastclip"]) == 0
    records = [json.loads(line) for line in (logs / "fastclip" / "metrics.jsonl").read_text().splitlines()]
    return RunOutput([r["loss"] for r in records if "split" not in r], [r for r in records if r.get("split") == "val"])


def run_open_clip(argv: list[str], logs: Path, monkeypatch) -> RunOutput:
    """open_clip_train.main in-process, its loss swapped for fastclip's (recording every loss value)."""
    import open_clip_train.main as open_clip_main

    from fastclip.models import register_fastclip_configs
    from fastclip.nn import FusedClipLoss, FusedSigLipLoss

    register_fastclip_configs()
    losses: list[float] = []

    def create_loss(args):
        if args.siglip:
            base = FusedSigLipLoss(rank=args.rank, world_size=args.world_size, dist_impl=args.loss_dist_impl)
        else:
            base = FusedClipLoss(local_loss=args.local_loss, gather_with_grad=args.gather_with_grad, cache_labels=True,
                                 rank=args.rank, world_size=args.world_size)

        def recording(*inputs, **options):
            out = base(*inputs, **options)
            losses.append(float(out["contrastive_loss"].detach()))
            return out

        return recording

    monkeypatch.setattr(open_clip_main, "create_loss", create_loss)
    # open_clip's setup_logging adds handlers to the root logger and sets every logger's level: undo both after.
    root = logging.getLogger()
    handlers = list(root.handlers)
    levels = {name: logger.level for name, logger in logging.root.manager.loggerDict.items()
              if isinstance(logger, logging.Logger)}
    root_level = root.level
    try:
        assert open_clip_main.main([*argv, "--logs", str(logs), "--name", "open_clip"]) is None
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(root_level)
        for name, logger in logging.root.manager.loggerDict.items():
            if isinstance(logger, logging.Logger):
                logger.setLevel(levels.get(name, logging.NOTSET))
    results = logs / "open_clip" / "checkpoints" / "results.jsonl"
    validation = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    return RunOutput(losses, validation)


@pytest.fixture(scope="module")
def checkpoint(data_dir, tmp_path_factory) -> Path:
    """The checkpoint after epoch 1 of the single-process line, written by fastclip-train (open_clip loads it)."""
    import os

    logs = tmp_path_factory.mktemp("reference_logs")
    previous = Path.cwd()
    os.chdir(data_dir)
    try:
        run_fastclip(reduced(LINES["single-process-csv"], Path()), logs)
    finally:
        os.chdir(previous)
    return logs / "fastclip" / "checkpoints" / "epoch_1.pt"


def test_the_lines_cover_at_least_ten_readme_examples():
    assert len(LINES) >= 10
    assert sum(line.refused is None for line in LINES.values()) >= 5
    assert all(line.compare or line.why_not_compared for line in LINES.values() if line.refused is None)


@pytest.mark.parametrize("name", LINES)
def test_both_parsers_read_the_line_with_the_same_meanings(name, checkpoint):
    """Every flag the line uses parses to the same value in open_clip_train's parser and fastclip-train's."""
    from open_clip_train.params import parse_args as open_clip_parse_args

    argv = reduced(LINES[name], checkpoint)
    ours, theirs = fastclip_parse_args(argv), open_clip_parse_args(argv)
    used = {arg.split("=")[0][2:].replace("-", "_") for arg in argv if arg.startswith("--")}
    assert used <= set(OPEN_CLIP_FLAGS), used - set(OPEN_CLIP_FLAGS)
    for dest in used:
        expected = getattr(theirs, dest)
        if dest == "force_image_size" and len(expected) == 1:
            expected = expected[0]  # open_clip_train.main makes a single size an int, as fastclip's parser does
        assert getattr(ours, CONFIG_FIELD.get(dest, dest)) == expected, dest


@pytest.mark.parametrize("name", LINES)
def test_fastclip_trains_or_refuses_each_line_as_open_clip_would(name, checkpoint, in_data_dir, tmp_path, monkeypatch):
    line = LINES[name]
    for variable, value in line.env.items():
        monkeypatch.setenv(variable, value)
    argv = reduced(line, checkpoint)
    if line.refused is not None:
        with pytest.raises(SystemExit) as refusal:
            fastclip_main([*argv, "--logs", str(tmp_path), "--name", "refused"])
        message = str(refusal.value)
        assert message.startswith("fastclip-train: error: ") and "\n" not in message
        assert re.search(line.refused, message), message
        assert not (tmp_path / "refused").exists()  # nothing written for a refused start
        return

    ours = run_fastclip(argv, tmp_path / "fastclip_logs")
    given = {arg.split("=")[0] for arg in argv}
    steps = 0 if "--train-data" not in given else (1 if "--resume" in given else 2)  # no data: evaluation only
    assert len(ours.losses) == steps and all(torch.isfinite(torch.tensor(ours.losses)))
    validations = max(steps, 1) if "--val-data" in given else 0  # after each epoch trained, or the one evaluation
    assert len(ours.validation) == validations
    if not line.compare:
        return
    theirs = run_open_clip(argv, tmp_path / "open_clip_logs", monkeypatch)
    accum_freq = int(argv[argv.index("--accum-freq") + 1]) if "--accum-freq" in argv else 1
    assert theirs.losses[accum_freq - 1::accum_freq] == pytest.approx(ours.losses, abs=1e-5)
    assert len(theirs.validation) == len(ours.validation)
    for mine, reference in zip(ours.validation, theirs.validation):
        for key, value in reference.items():
            assert mine[key] == pytest.approx(value, abs=1e-5), key
