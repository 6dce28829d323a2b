"""`fastclip-train --eval-every N --eval-suite SUITE`: the evaluation suite run in-process every N epochs on the
model being trained (no checkpoint reloaded), results in RUN/eval as fastclip-eval writes them.

The suite's datasets are loaded when training starts (a wrong path fails before the first step) and decoded once
for the whole run. The model is switched to eval mode for the evaluation and back afterwards. Under torchrun only
rank 0 evaluates; the other ranks wait at their next collective, so a suite that takes longer than the process
group's timeout is better run beside training with `fastclip-eval RUN --follow`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fastclip.eval.context import options_for_suite
from fastclip.eval.figure import write_figure
from fastclip.eval.provenance import IN_MEMORY, checkpoint_identity
from fastclip.eval.runner import Evaluator
from fastclip.eval.suite import load_suite
from fastclip.models import ModelBundle

EVAL_DIR = "eval"


class TrainingEvaluation:
    def __init__(self, suite: str, run_dir: str | Path, *, every: int, device: torch.device, precision: str):
        if every < 1:
            raise ValueError(f"--eval-every must be >= 1 to evaluate, got {every}")
        self.every = every
        self.out_dir = Path(run_dir) / EVAL_DIR
        options = options_for_suite(load_suite(suite), torch.device(device), precision=precision)
        self.evaluator = Evaluator(self.out_dir, options)

    def due(self, epoch: int) -> bool:
        return epoch % self.every == 0

    def __call__(
        self, bundle: ModelBundle, run: str, epoch: int, samples_seen: int | None, checkpoint: Path | None = None
    ) -> None:
        """Evaluate the model in memory; `checkpoint` is the file just written of it, if any, so that a later
        fastclip-eval of that file finds these rows current instead of measuring them again."""
        model = bundle.model
        was_training = model.training
        model.eval()
        identity = IN_MEMORY if checkpoint is None else checkpoint_identity(checkpoint)
        try:
            self.evaluator.evaluate_bundle(bundle, run, epoch, samples_seen, checkpoint=identity)
        finally:
            model.train(was_training)
        write_figure(self.evaluator.report.table.rows, self.out_dir / "figure.png")
