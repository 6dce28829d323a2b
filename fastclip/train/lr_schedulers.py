"""open_clip's --lr-scheduler choices (cosine, const, const-cooldown) and --skip-scheduler, in optimizer steps.

The cosine schedule itself lives in fastclip.train.schedule; here each step's learning rate is chosen from the
flags, exactly as open_clip_train.scheduler computes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastclip.train.schedule import cosine_lr


def warmup_lr(step: int, base_lr: float, warmup_steps: int) -> float:
    return base_lr * (step + 1) / warmup_steps


def const_lr(step: int, *, base_lr: float, warmup_steps: int) -> float:
    return warmup_lr(step, base_lr, warmup_steps) if step < warmup_steps else base_lr


def const_cooldown_lr(step: int, *, base_lr: float, warmup_steps: int, total_steps: int, cooldown_steps: int,
                      power: float = 1.0, end_lr: float = 0.0) -> float:
    """Constant after the warmup, then (1 - progress)^power down to end_lr over the last cooldown_steps."""
    if step < warmup_steps:
        return warmup_lr(step, base_lr, warmup_steps)
    start = total_steps - cooldown_steps
    if step < start:
        return base_lr
    decay = (1 - (step - start) / (total_steps - start)) ** power
    return decay * (base_lr - end_lr) + end_lr


@dataclass(frozen=True)
class LearningRatePlan:
    """The learning rate of every optimizer step of a run."""

    scheduler: str
    base_lr: float
    warmup_steps: int
    total_steps: int
    cooldown_steps: int = 0
    cooldown_power: float = 1.0
    cooldown_end: float = 0.0
    skip: bool = False

    @classmethod
    def from_args(cls, args, steps_per_epoch: int) -> "LearningRatePlan":
        cooldown = steps_per_epoch * args.epochs_cooldown if args.epochs_cooldown else 0
        return cls(scheduler=args.lr_scheduler, base_lr=args.lr, warmup_steps=args.warmup,
                   total_steps=steps_per_epoch * args.epochs, cooldown_steps=cooldown,
                   cooldown_power=args.lr_cooldown_power, cooldown_end=args.lr_cooldown_end,
                   skip=args.skip_scheduler)

    def lr(self, step: int) -> float:
        if self.skip:  # open_clip never calls its scheduler: the optimizer keeps --lr
            return self.base_lr
        if self.scheduler == "const":
            return const_lr(step, base_lr=self.base_lr, warmup_steps=self.warmup_steps)
        if self.scheduler == "const-cooldown":
            return const_cooldown_lr(step, base_lr=self.base_lr, warmup_steps=self.warmup_steps,
                                     total_steps=self.total_steps, cooldown_steps=self.cooldown_steps,
                                     power=self.cooldown_power, end_lr=self.cooldown_end)
        return cosine_lr(step, base_lr=self.base_lr, warmup_steps=self.warmup_steps, total_steps=self.total_steps)
