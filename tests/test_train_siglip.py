"""--siglip trains with open_clip's SigLIP initialisation and its checkpoints rebuild with their logit_bias."""

from __future__ import annotations

import math

from fastclip.models import load_model_from_checkpoint
from fastclip.train.cli import main


def test_siglip_run_trains_and_reloads(tmp_path):
    argv = ["--siglip", "--train-num-samples", "64", "--batch-size", "32", "--epochs", "1", "--device", "cpu"]
    assert main([*argv, "--logs", str(tmp_path), "--name", "sig"]) == 0
    bundle, meta = load_model_from_checkpoint(tmp_path / "sig" / "checkpoints" / "epoch_1.pt")
    assert meta["epoch"] == 1
    bias = bundle.model.logit_bias
    assert bias is not None and bias.numel() == 1
    # open_clip's SigLIP start is b = -10, s = 10; one short epoch moves them only a little.
    assert -11 < bias.item() < -9 and bias.item() != -10.0
    assert math.isclose(bundle.model.logit_scale.exp().item(), 10.0, rel_tol=0.1)
