"""--report-to: the scalars of metrics.jsonl also go to TensorBoard (LOGS/NAME/tensorboard) and/or wandb, under
open_clip's names (train/loss, train/lr, train/scale, train/samples_per_second, ..., val/<metric>)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

TENSORBOARD_DIR = "tensorboard"
REPORT_TARGETS = ("tensorboard", "wandb")

# metrics.jsonl's training keys -> open_clip's scalar names
TRAIN_SCALARS = {
    "loss": "train/loss",
    "lr": "train/lr",
    "logit_scale": "train/scale",
    "images_per_s": "train/samples_per_second",
    "data_s_per_step": "train/data_time",
}


class ReportingError(ValueError):
    """--report-to names a target that is unknown or not installed."""


def report_targets(report_to: str) -> set[str]:
    """open_clip's parsing: 'tensorboard', 'wandb', 'wandb,tensorboard' or 'all'."""
    names = {name.strip() for name in report_to.split(",") if name.strip()}
    if "all" in names:
        return set(REPORT_TARGETS)
    unknown = names - set(REPORT_TARGETS)
    if unknown:
        raise ReportingError(f"--report-to {report_to}: unknown target(s) {sorted(unknown)}; use tensorboard, wandb, "
                             "'wandb,tensorboard' or all")
    return names


class Reporter:
    """Sends scalars to the --report-to targets (rank 0 only)."""

    def __init__(self, args, run_dir: Path):
        targets = report_targets(args.report_to)
        self.tensorboard = None
        self.wandb = None
        if "tensorboard" in targets:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ReportingError("--report-to tensorboard needs the tensorboard package: pip install "
                                     "'fastclip[report]' (or pip install tensorboard)") from exc
            self.tensorboard = SummaryWriter(str(run_dir / TENSORBOARD_DIR))
        if "wandb" in targets:
            try:
                import wandb
            except ImportError as exc:
                raise ReportingError("--report-to wandb needs the wandb package: pip install wandb") from exc
            os.environ.setdefault("WANDB_MODE", "offline")  # no network unless the user asks for it
            self.wandb = wandb.init(
                project=args.wandb_project_name, name=args.name, id=args.name, notes=args.wandb_notes,
                dir=str(run_dir), resume="auto" if args.resume == "latest" else None,
                config=dataclasses.asdict(args),
            )

    def train_step(self, record: dict) -> None:
        scalars = {TRAIN_SCALARS[key]: value for key, value in record.items() if key in TRAIN_SCALARS}
        self._log(scalars, record["step"])

    def validation(self, metrics: dict, step: int) -> None:
        self._log({f"val/{name}": value for name, value in metrics.items()}, step, epoch=metrics["epoch"])

    def _log(self, scalars: dict, step: int, epoch: int | None = None) -> None:
        if self.tensorboard is not None:
            x = step if epoch is None else epoch  # open_clip: training scalars by step, validation by epoch
            for name, value in scalars.items():
                self.tensorboard.add_scalar(name, value, x)
            self.tensorboard.flush()
        if self.wandb is not None:
            self.wandb.log({**scalars, "step": step} if epoch is None else {**scalars, "epoch": epoch}, step=step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()
