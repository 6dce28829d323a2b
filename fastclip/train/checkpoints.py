"""Writing a run's checkpoints: open_clip's epoch_N.pt at the epochs --save-frequency names, and with
--save-every-n-steps N an epoch_E_step_S.pt every N optimizer steps (E epochs completed, S steps done), of which
only the newest is kept (a recovery point, as timm's recovery checkpoints; an epoch checkpoint supersedes the step
checkpoints before it). Every file carries the train_state of fastclip.train.state, so `--resume latest` continues
from the newest one exactly; rank 0 writes, atomically, after every rank has handed in its part.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from fastclip.models import (
    LATEST_CHECKPOINT_NAME,
    find_checkpoints,
    find_step_checkpoints,
    save_checkpoint,
    step_checkpoint_name,
)
from fastclip.train.distributed import World
from fastclip.train.state import TRAIN_STATE_KEY, Progress, capture_train_state

_log = logging.getLogger("fastclip.train")


class Checkpointer:
    def __init__(self, checkpoint_dir: Path, *, args, model_cfg: dict, model: torch.nn.Module, optimizer, scaler,
                 world: World, schedule_units: dict, toyworld: dict | None = None):
        self.checkpoint_dir = Path(checkpoint_dir)
        self.args, self.model_cfg, self.model, self.optimizer, self.scaler = args, model_cfg, model, optimizer, scaler
        self.world, self.schedule_units = world, schedule_units
        self.toyworld = toyworld  # the toy world's knobs, kept in every checkpoint of a toy-world run
        self.every_n_steps = int(getattr(args, "save_every_n_steps", 0) or 0)

    def epoch_due(self, completed: int) -> bool:
        args = self.args
        return completed == args.epochs or (args.save_frequency > 0 and completed % args.save_frequency == 0)

    def after_step(self, progress: Progress, data) -> None:
        """Write a step checkpoint when one is due (every rank calls this after every optimizer step)."""
        if not self.every_n_steps or progress.step % self.every_n_steps:
            return
        if progress.batches_in_epoch == 0 and self.epoch_due(progress.epoch):
            return  # the step closed an epoch whose checkpoint follows
        self._write(step_checkpoint_name(progress.epoch, progress.step), progress, data)

    def after_epoch(self, progress: Progress, data) -> Path | None:
        """Write epoch_N.pt when --save-frequency asks (and open_clip's epoch_latest.pt with --save-most-recent);
        returns epoch_N.pt's path on rank 0 when it was written."""
        completed = progress.epoch
        written = None
        if self.epoch_due(completed):
            written = self._write(f"epoch_{completed}.pt", progress, data)
            if getattr(self.args, "delete_previous_checkpoint", False) and self.world.is_main:
                # The newest older one, only once a newer one exists, so a run never holds no checkpoint (open_clip
                # deletes epoch_{N-1}.pt even in epochs that write none).
                older = [path for epoch, path in find_checkpoints(self.checkpoint_dir) if epoch < completed]
                if older:
                    older[-1].unlink(missing_ok=True)
                    _log.info("deleted the previous checkpoint %s", older[-1])
        if getattr(self.args, "save_most_recent", False):
            self._write(LATEST_CHECKPOINT_NAME, progress, data, prune=False)
        return written

    def _write(self, name: str, progress: Progress, data, *, prune: bool = True) -> Path | None:
        state = capture_train_state(progress, data=data, schedule_units=self.schedule_units,
                                    batch_size=self.args.batch_size, world=self.world)
        if not self.world.is_main:
            return None
        path = self.checkpoint_dir / name
        save_checkpoint(
            path, model=self.model, optimizer=self.optimizer, epoch=progress.epoch, name=self.args.name,
            model_name=self.args.model, model_cfg=self.model_cfg, samples_seen=progress.samples_seen,
            scaler=self.scaler, toyworld=self.toyworld, extra={TRAIN_STATE_KEY: state},
        )
        if prune:
            for step, older in find_step_checkpoints(self.checkpoint_dir):
                if older != path and step <= progress.step:
                    older.unlink(missing_ok=True)
        _log.info("saved %s", path)
        return path
