"""Two CPU processes under torchrun (gloo, DDP with device_ids=None): the replicas stay identical."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from fastclip.models import load_checkpoint
REPO_ROOT = Path(__file__).resolve().parents[1]

# Runs the real training entry point, then each rank saves its final weights for the test to compare.
DRIVER = textwrap.dedent("""
    import os, sys, torch
    from fastclip.train.cli import train
    from fastclip.train.config import parse_args

    result = train(parse_args(sys.argv[1:]))
    state = {key: value.detach().cpu() for key, value in result.model.state_dict().items()}
    torch.save(state, result.run_dir / f"rank{os.environ['RANK']}_final.pt")
""")


def test_two_cpu_ranks_train_identical_replicas(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    logs = tmp_path / "logs"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(driver),
        # `--` keeps torchrun from reading --logs as its own --logs-specs
        "--", "--logs", str(logs), "--name", "ddp", "--device", "cpu", "--train-num-samples", "64",
        "--batch-size", "8", "--epochs", "1", "--warmup", "1", "--log-every-n-steps", "1",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    run = logs / "ddp"
    ranks = [torch.load(run / f"rank{r}_final.pt", weights_only=True) for r in range(2)]
    assert ranks[0].keys() == ranks[1].keys()
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), f"{key} differs between the ranks"
    checkpoint = load_checkpoint(run / "checkpoints" / "epoch_1.pt")  # written by rank 0 only
    assert torch.equal(checkpoint["state_dict"]["visual.conv1.weight"], ranks[0]["visual.conv1.weight"])
    assert checkpoint["samples_seen"] == 64
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]  # 64 images = 4 steps of 8 images on each of 2 ranks
    assert [r["samples_seen"] for r in records] == [16, 32, 48, 64]
    assert all(math.isfinite(r["loss"]) for r in records)
    assert "on cpu x 2" in (run / "out.log").read_text()
