"""One training epoch: open_clip's step (autocast forward, loss, scaled backward, clip, step, logit_scale clamp),
with step metrics to a JSONL file (and the --report-to targets) and a progress bar on rank 0."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Iterator

import torch
from tqdm import tqdm

from fastclip.data.loader import Batch, TrainData
from fastclip.io import atomic_write_text
from fastclip.train.checkpoints import Checkpointer
from fastclip.train.data_counts import DataCounts, reduce_with_counts
from fastclip.train.distributed import World, unwrap_model
from fastclip.train.schedule import LrSchedule, assign_lr
from fastclip.train.state import Progress
from fastclip.train.step import forward_backward

MAX_LOGIT_SCALE = math.log(100)  # CLIP's cap on the learned temperature


def clamp_logit_scale(model: torch.nn.Module) -> None:
    with torch.no_grad():
        unwrap_model(model).logit_scale.clamp_(0, MAX_LOGIT_SCALE)


class MetricsLog:
    """Appends one JSON object per line; every line is flushed so a crashed run keeps its history."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def write(self, record: dict) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def drop_after(self, step: int) -> None:
        """Forget the lines of steps after `step`: a run resumed from a checkpoint repeats them."""
        if not self.path.exists():
            return
        lines = self.path.read_text().splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
        if len(kept) != len(lines):
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler, grad_clip_norm) -> None:
    """Unscale (amp), clip, step and update the scaler, as open_clip."""
    if scaler is not None:
        if grad_clip_norm is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
        scaler.step(optimizer)
        scaler.update()
    else:
        if grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
        optimizer.step()


def grouped(batches: Iterator[Batch], size: int) -> Iterator[list[Batch]]:
    """Consecutive groups of `size` micro-batches; an incomplete last group is dropped, as open_clip does."""
    group: list[Batch] = []
    for batch in batches:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []


def train_one_epoch(
    *,
    model: torch.nn.Module,
    data: TrainData,
    loss_fn: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    args,
    world: World,
    epoch: int,
    schedule: LrSchedule,
    progress: Progress,
    metrics: MetricsLog | None,
    log: logging.Logger,
    reporter=None,
    start_batch: int = 0,
    data_position: Any = None,
    checkpointer: Checkpointer | None = None,
) -> dict:
    """Trains on `data.batches(epoch)` from `start_batch` on (a resumed run: `data_position` is where the rank's
    stream stood); updates `progress`, letting `checkpointer` save after each step; returns the mean of the logged
    losses and images/s.

    An optimizer step takes --accum-freq batches of the data (fastclip.train.step), so an epoch has
    data.num_batches // accum_freq steps; `start_batch` counts batches (a multiple of --accum-freq).
    """
    model.train()
    accum_freq = args.accum_freq
    steps_per_epoch = data.num_batches // accum_freq
    start_step = start_batch // accum_freq
    images_per_step = args.batch_size * accum_freq * world.world_size
    bar = tqdm(
        total=steps_per_epoch * images_per_step, initial=start_step * images_per_step,
        desc=f"epoch {epoch + 1}/{args.epochs}", unit="img", disable=not world.is_main, dynamic_ncols=True, leave=True,
    )
    losses: list[float] = []
    epoch_start = window_start = time.perf_counter()
    window_steps = 0
    data_seconds = 0.0
    batch_ready = time.perf_counter()
    steps_done = 0
    pads = 0  # this rank's pad samples since the last logged step
    counts = DataCounts(0, {}, {})
    batches = data.batches_from(epoch, start_batch, data_position) if start_batch else data.batches(epoch)
    for micro_batches in grouped(batches, accum_freq):
        data_seconds += time.perf_counter() - batch_ready
        lr = schedule(progress.samples_scheduled)
        assign_lr(optimizer, lr)
        optimizer.zero_grad(set_to_none=True)
        output = forward_backward(model, loss_fn, micro_batches, precision=args.precision, device=world.device,
                                  scaler=scaler)
        optimizer_step(model, optimizer, scaler, args.grad_clip_norm)
        clamp_logit_scale(model)

        progress.step += 1
        progress.samples_seen += images_per_step
        progress.samples_scheduled += images_per_step
        pads += sum(batch.num_pads for batch in micro_batches)
        window_steps += 1
        steps_done += 1
        bar.update(images_per_step)
        last = start_step + steps_done == steps_per_epoch
        progress.epoch, progress.batches_in_epoch = (
            (epoch + 1, 0) if last else (epoch, (start_step + steps_done) * accum_freq)
        )
        if progress.step % args.log_every_n_steps == 0 or last:
            # Every rank takes part (the all-reduce); the step numbers are the same on every rank.
            (loss_sum,), counts = reduce_with_counts([output.loss.item()], data, pads, world)
            progress.samples_seen -= counts.pads  # real samples only
            pads = 0
            mean_loss = loss_sum / world.world_size
            if not math.isfinite(mean_loss):
                raise FloatingPointError(
                    f"the loss became {mean_loss} at step {progress.step} (epoch {epoch + 1}); lower --lr, set "
                    "--grad-clip-norm or use --precision fp32"
                )
            now = time.perf_counter()
            record = {
                "step": progress.step,
                "epoch": epoch + 1,
                "loss": mean_loss,
                "lr": lr,
                "logit_scale": float(output.logit_scale),
                "images_per_s": window_steps * images_per_step / (now - window_start),
                "data_s_per_step": data_seconds / window_steps,
                "samples_seen": progress.samples_seen,
                **counts.metrics(),
            }
            losses.append(mean_loss)
            window_start, window_steps, data_seconds = now, 0, 0.0
            if world.is_main:
                metrics.write(record)
                if reporter is not None:
                    reporter.train_step(record)
                bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", skipped=counts.metrics()["skipped"],
                                refresh=False)
                log.debug("step %d: %s", progress.step, record)
        if checkpointer is not None:
            checkpointer.after_step(progress, data)
        batch_ready = time.perf_counter()
    bar.close()
    if start_step + steps_done != steps_per_epoch:
        raise RuntimeError(
            f"the {args.dataset_type} data yielded {(start_step + steps_done) * accum_freq} batches in epoch "
            f"{epoch + 1}, not the "
            f"{data.num_batches} it announced; every rank must run the same number of steps"
        )
    seconds = time.perf_counter() - epoch_start
    summary = {
        "epoch": epoch + 1,
        "loss": sum(losses) / len(losses),
        "images_per_s": steps_done * images_per_step / seconds,
        "seconds": seconds,
    }
    log.info(
        "epoch %d/%d: loss %.4f, %.1f images/s, %.1f s, %d samples seen, %s", epoch + 1,
        args.epochs, summary["loss"], summary["images_per_s"], seconds, progress.samples_seen, counts.phrase(),
    )
    return summary
