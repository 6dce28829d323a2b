"""open_clip's learning-rate schedules (linear warmup, then cosine, constant, or constant with a cooldown), as a
function of the samples seen.

open_clip computes the learning rate of optimizer step s from --warmup and total_steps = steps per epoch x
--epochs. fastclip keeps those formulas but feeds them s = samples_seen / samples_per_step, where samples_per_step
is the global batch the run *started* with (kept in its checkpoints). With an unchanged batch size s is exactly the
step, so the schedule is open_clip's; a run resumed with another batch size or world size evaluates the same curve
at the same samples seen, instead of jumping (a step count rebuilt from the new batch would move it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LR_SCHEDULERS = ("cosine", "const", "const-cooldown")


def warmup_lr(step: float, *, base_lr: float, warmup_steps: int) -> float:
    return base_lr * (step + 1) / warmup_steps


def cosine_lr(step: float, *, base_lr: float, warmup_steps: int, total_steps: int) -> float:
    """The learning rate of `step` (0-based), exactly as open_clip_train.scheduler.cosine_lr.

    Warmup rises linearly to base_lr, reaching it at step warmup_steps - 1; then half a cosine falls to 0 at
    total_steps and stays there (open_clip would rise again past total_steps, which only a resumed run with a larger
    batch can reach; it divides by zero when warmup_steps >= total_steps, here the decay is then a single step).
    """
    if step < warmup_steps:
        return warmup_lr(step, base_lr=base_lr, warmup_steps=warmup_steps)
    decay_steps = max(1, total_steps - warmup_steps)
    elapsed = min(step - warmup_steps, decay_steps)
    return 0.5 * (1 + math.cos(math.pi * elapsed / decay_steps)) * base_lr


def const_lr(step: float, *, base_lr: float, warmup_steps: int) -> float:
    """open_clip_train.scheduler.const_lr: warmup, then base_lr."""
    if step < warmup_steps:
        return warmup_lr(step, base_lr=base_lr, warmup_steps=warmup_steps)
    return base_lr


def const_cooldown_lr(step: float, *, base_lr: float, warmup_steps: int, total_steps: int, cooldown_steps: int,
                      cooldown_power: float = 1.0, cooldown_end_lr: float = 0.0) -> float:
    """open_clip_train.scheduler.const_lr_cooldown: warmup, base_lr, then a polynomial decay over the last
    cooldown_steps to cooldown_end_lr (held there past total_steps)."""
    if step < warmup_steps:
        return warmup_lr(step, base_lr=base_lr, warmup_steps=warmup_steps)
    start_cooldown = total_steps - cooldown_steps
    if step < start_cooldown:
        return base_lr
    elapsed = min(step - start_cooldown, cooldown_steps)
    decay = (1 - elapsed / max(1, cooldown_steps)) ** cooldown_power
    return decay * (base_lr - cooldown_end_lr) + cooldown_end_lr


@dataclass(frozen=True)
class LrSchedule:
    """The learning rate as a function of samples seen (see the module docstring).

    Step counts are in units of `samples_per_step` samples: warmup_steps is open_clip's --warmup, total_steps is
    --epochs x steps_per_epoch, both counted in the steps of the batch the run started with.
    """

    base_lr: float
    warmup_steps: int
    samples_per_step: int
    steps_per_epoch: int
    epochs: int
    kind: str = "cosine"
    cooldown_epochs: int = 0
    cooldown_power: float = 1.0
    cooldown_end_lr: float = 0.0
    skip: bool = False  # --skip-scheduler: open_clip never calls its scheduler, the optimizer keeps --lr

    def __post_init__(self):
        if self.kind not in LR_SCHEDULERS:
            raise ValueError(f"--lr-scheduler must be one of {LR_SCHEDULERS}, got {self.kind!r}")
        if self.samples_per_step <= 0 or self.steps_per_epoch <= 0:
            raise ValueError(f"a schedule needs positive samples_per_step and steps_per_epoch, got {self}")

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def step_of(self, samples_seen: int) -> float:
        """The (fractional) schedule step at `samples_seen`: exactly the optimizer step while the batch is unchanged."""
        return samples_seen / self.samples_per_step

    def __call__(self, samples_seen: int) -> float:
        """The learning rate of the step that starts after `samples_seen` samples."""
        if self.skip:
            return self.base_lr
        step = self.step_of(samples_seen)
        if self.kind == "cosine":
            return cosine_lr(step, base_lr=self.base_lr, warmup_steps=self.warmup_steps, total_steps=self.total_steps)
        if self.kind == "const":
            return const_lr(step, base_lr=self.base_lr, warmup_steps=self.warmup_steps)
        return const_cooldown_lr(
            step, base_lr=self.base_lr, warmup_steps=self.warmup_steps, total_steps=self.total_steps,
            cooldown_steps=self.cooldown_epochs * self.steps_per_epoch, cooldown_power=self.cooldown_power,
            cooldown_end_lr=self.cooldown_end_lr,
        )

    def units(self) -> dict:
        """What a checkpoint keeps so that a resumed run measures steps in the same units."""
        return {"samples_per_step": self.samples_per_step, "steps_per_epoch": self.steps_per_epoch}


def schedule_from_args(args, *, samples_per_step: int, steps_per_epoch: int, stored_units: dict | None = None
                       ) -> LrSchedule:
    """The run's schedule: open_clip's flags (--lr, --warmup, --epochs, --lr-scheduler and its cooldown flags where
    the parser has them), in the step units of `stored_units` (a resumed run's checkpoint) or of this run's batch."""
    units = stored_units or {"samples_per_step": samples_per_step, "steps_per_epoch": steps_per_epoch}
    return LrSchedule(
        base_lr=float(args.lr),
        warmup_steps=int(args.warmup),
        samples_per_step=int(units["samples_per_step"]),
        steps_per_epoch=int(units["steps_per_epoch"]),
        epochs=int(args.epochs),
        kind=getattr(args, "lr_scheduler", "cosine"),
        cooldown_epochs=int(getattr(args, "epochs_cooldown", None) or 0),
        cooldown_power=float(getattr(args, "lr_cooldown_power", 1.0)),
        cooldown_end_lr=float(getattr(args, "lr_cooldown_end", 0.0)),
        skip=bool(getattr(args, "skip_scheduler", False)),
    )


def assign_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
