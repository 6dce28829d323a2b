"""open_clip's cosine learning-rate schedule with linear warmup, in optimizer steps."""

from __future__ import annotations

import math

import torch


def cosine_lr(step: int, *, base_lr: float, warmup_steps: int, total_steps: int) -> float:
    """The learning rate of `step` (0-based), exactly as open_clip_train.scheduler.cosine_lr.

    Warmup rises linearly to base_lr, reaching it at step warmup_steps - 1; then half a cosine falls towards 0 at
    total_steps. (open_clip divides by zero when warmup_steps >= total_steps; here the decay is then a single step.)
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    elapsed = step - warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * elapsed / decay_steps)) * base_lr


def assign_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
