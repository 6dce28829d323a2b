"""The training state a checkpoint carries beyond open_clip's keys, so that a run stopped at any step continues
exactly: the counters, where each rank's data stream stands, every random-number state, and the units of the
learning-rate schedule. `restore` reads it back (or, for open_clip's and older fastclip checkpoints, estimates what
it can and says what it assumed).

Checkpoint keys (open_clip's `epoch` stays the number of completed epochs, so open_clip resumes a mid-epoch
checkpoint at the start of the epoch in progress):
    epoch, samples_seen, state_dict, optimizer, [scaler], ...  as in fastclip.models.save_checkpoint
    train_state: {version, step, samples_scheduled, batches_in_epoch, batch_size, world_size, schedule: {samples_per_step,
                  steps_per_epoch}, ranks: [{rng: {...}, data: <the source's position or None>} per rank]}
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from fastclip.models import CheckpointError, load_checkpoint, load_state_dict_into
from fastclip.train.distributed import World

TRAIN_STATE_KEY = "train_state"
TRAIN_STATE_VERSION = 1
OPEN_CLIP_PARAMS_FILE = "params.txt"  # open_clip_train writes LOGS/NAME/params.txt, checkpoints in LOGS/NAME/checkpoints


@dataclass
class Progress:
    """Counters that a checkpoint carries across a resume."""

    step: int = 0  # optimizer steps done, over all epochs
    samples_seen: int = 0  # real samples over all ranks (pad samples that fill a last batch are not counted)
    samples_scheduled: int = 0  # every sample of every step, pads too: the learning-rate schedule's clock
    epoch: int = 0  # epochs completed
    batches_in_epoch: int = 0  # batches of the epoch in progress that each rank has trained on


def capture_rng_state(device: torch.device) -> dict:
    """Every random-number generator a training step or a data source in this process may draw from."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_words, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "python": {"version": py_version, "words": torch.tensor(py_words, dtype=torch.int64), "gauss_next": py_gauss},
        "numpy": {"kind": np_kind, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def apply_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    python = state["python"]
    random.setstate((python["version"], tuple(python["words"].tolist()), python["gauss_next"]))
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def gather_on_main(value: Any, world: World) -> list[Any] | None:
    """Every rank's `value`, in rank order, on rank 0 (None on the others); every rank must call it."""
    if not world.distributed:
        return [value]
    gathered = [None] * world.world_size if world.is_main else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


def capture_train_state(progress: Progress, *, data, schedule_units: dict, batch_size: int, world: World
                        ) -> dict | None:
    """The checkpoint's `train_state` on rank 0 (None on the others). A collective: every rank calls it."""
    ranks = gather_on_main({"rng": capture_rng_state(world.device), "data": data.position()}, world)
    if ranks is None:
        return None
    return {
        "version": TRAIN_STATE_VERSION,
        "step": progress.step,
        "samples_scheduled": progress.samples_scheduled,
        "batches_in_epoch": progress.batches_in_epoch,
        "batch_size": int(batch_size),
        "world_size": world.world_size,
        "schedule": dict(schedule_units),
        "ranks": ranks,
    }


@dataclass
class ResumePoint:
    """Where a resumed run starts: its counters, the batch of the epoch in progress to start from, this rank's data
    position and random-number state (None: not known), the schedule's units (None: this run's), and what was
    assumed (logged)."""

    progress: Progress = field(default_factory=Progress)
    start_batch: int = 0
    data_position: Any = None
    rng_state: dict | None = None
    schedule_units: dict | None = None
    notes: list[str] = field(default_factory=list)

    def apply_rng(self, device: torch.device) -> None:
        """Put the random-number generators where the checkpoint left them (call last, right before training)."""
        if self.rng_state is not None:
            apply_rng_state(self.rng_state, device)


def restore(path: str | Path, args, *, model, optimizer, scaler, data, world: World) -> ResumePoint:
    """Load a checkpoint into the model, optimizer and scaler; return where the run continues.

    fastclip checkpoints with a train_state continue exactly (same batch size and world size) or at the same
    samples seen (another batch size or world size). open_clip's checkpoints and older fastclip ones continue at
    the start of the epoch after their `epoch`, with samples_seen taken or estimated as `samples_seen_of` says.
    """
    checkpoint = load_checkpoint(path)
    stored_model = checkpoint.get("model_name")
    if stored_model is not None and stored_model != args.model:
        raise CheckpointError(f"{path}: holds a {stored_model!r} model, but --model is {args.model!r}")
    load_state_dict_into(model, checkpoint["state_dict"], source=path)
    if "epoch" not in checkpoint:  # as open_clip: a checkpoint without an epoch only provides weights
        return ResumePoint(notes=[f"loaded weights from {path} (it has no epoch: training starts at epoch 1)"])
    if "optimizer" in checkpoint:
        optimizer.load_state_dict(checkpoint["optimizer"])
    if scaler is not None and "scaler" in checkpoint:
        scaler.load_state_dict(checkpoint["scaler"])
    if data is None:  # an evaluation-only run (--val-data without training data): the weights and counters
        progress = Progress(samples_seen=int(checkpoint.get("samples_seen", 0)), epoch=int(checkpoint["epoch"]))
        return ResumePoint(progress=progress, notes=[f"loaded {path} ({progress.epoch} epoch(s) trained)"])
    state = checkpoint.get(TRAIN_STATE_KEY)
    if state is None:
        return _resume_at_epoch_boundary(path, checkpoint, args, data=data, world=world)
    return _resume_exactly(path, checkpoint, state, args, data=data, world=world)


def _resume_exactly(path, checkpoint: dict, state: dict, args, *, data, world: World) -> ResumePoint:
    if state.get("version") != TRAIN_STATE_VERSION:
        raise CheckpointError(f"{path}: train_state version {state.get('version')!r}; this fastclip reads version "
                              f"{TRAIN_STATE_VERSION}")
    samples_seen = int(checkpoint["samples_seen"])
    progress = Progress(step=int(state["step"]), samples_seen=samples_seen,
                        samples_scheduled=int(state.get("samples_scheduled", samples_seen)),
                        epoch=int(checkpoint["epoch"]), batches_in_epoch=int(state["batches_in_epoch"]))
    point = ResumePoint(progress=progress, schedule_units=state["schedule"])
    same_world = state["world_size"] == world.world_size
    accum = int(getattr(args, "accum_freq", 1) or 1)
    same_layout = (same_world and state["batch_size"] == args.batch_size
                   and progress.batches_in_epoch % accum == 0)  # a step boundary of this run's --accum-freq
    if same_world:
        point.rng_state = state["ranks"][world.rank]["rng"]
    else:
        point.notes.append(f"the checkpoint was written by {state['world_size']} rank(s), this run has "
                           f"{world.world_size}: random-number states start from --seed {args.seed} + rank")
    if same_layout:
        point.start_batch = progress.batches_in_epoch
        point.data_position = state["ranks"][world.rank]["data"]
    elif progress.batches_in_epoch:
        # The new batch layout orders the epoch's samples differently: skip the same share of the epoch.
        # In whole optimizer steps of the new layout (--accum-freq batches each).
        done = progress.batches_in_epoch * state["batch_size"] * state["world_size"]
        point.start_batch = math.ceil(done / (args.batch_size * world.world_size * accum)) * accum
        point.notes.append(
            f"the batch size or world size changed in the middle of epoch {progress.epoch + 1} (batch {state['batch_size']} x "
            f"{state['world_size']} rank(s) -> {args.batch_size} x {world.world_size}): the epoch continues at batch "
            f"{point.start_batch + 1} of the new layout, whose order differs, so some of its samples may repeat or be left out"
        )
    if point.start_batch >= data.num_batches // accum * accum:  # the checkpoint closed its epoch
        progress.epoch, progress.batches_in_epoch, point.start_batch, point.data_position = progress.epoch + 1, 0, 0, None
    where = (f"epoch {progress.epoch + 1}, batch {point.start_batch + 1} of {data.num_batches}" if point.start_batch
             else f"the start of epoch {progress.epoch + 1}")
    point.notes.insert(0, f"resumed from {path}: step {progress.step}, {progress.samples_seen} samples seen; "
                          f"continuing at {where}")
    return point


def _resume_at_epoch_boundary(path, checkpoint: dict, args, *, data, world: World) -> ResumePoint:
    epochs_done = int(checkpoint["epoch"])
    accum = int(getattr(args, "accum_freq", 1) or 1)
    run_samples_per_step = args.batch_size * world.world_size * accum
    point = ResumePoint()
    if "samples_seen" in checkpoint:
        samples_seen = int(checkpoint["samples_seen"])
    else:
        estimate = estimate_open_clip_progress(Path(path), epochs_done)
        if estimate.samples_seen is None:
            epoch_samples = data.num_batches // accum * run_samples_per_step
            samples_seen = epochs_done * epoch_samples
            point.notes.append(
                f"{path} has no samples_seen and {estimate.reason}: assumed {epochs_done} epoch(s) x this run's "
                f"{epoch_samples} samples per epoch = {samples_seen}")
        else:
            samples_seen = estimate.samples_seen
            point.schedule_units = estimate.schedule_units
            point.notes.append(f"{path} has no samples_seen: {estimate.reason}")
    step = round(samples_seen / run_samples_per_step)
    point.progress = Progress(step=step, samples_seen=samples_seen, samples_scheduled=samples_seen, epoch=epochs_done)
    point.notes.insert(0, f"resumed from {path}: {epochs_done} epoch(s) done, {samples_seen} samples seen (the "
                          "checkpoint has no step position or random-number state: the run continues at an epoch start)")
    return point


@dataclass
class OpenClipEstimate:
    samples_seen: int | None
    schedule_units: dict | None
    reason: str  # how the figure was obtained, or why it could not be


def read_open_clip_params(path: Path) -> dict[str, str]:
    """open_clip_train's params.txt: one `name: value` line per flag (values as Python printed them)."""
    params = {}
    for line in path.read_text(encoding="utf-8", errors="replace").split("\n"):
        name, sep, value = line.partition(": ")
        if sep:
            params[name.strip()] = value
    return params


def _optional_int(text: str | None) -> int | None:
    return None if text in (None, "None", "") else int(text)


def _csv_rows(path: Path, separator: str) -> int:
    import csv

    with path.open(newline="", encoding="utf-8") as handle:
        return sum(1 for _ in csv.DictReader(handle, delimiter=separator))


def open_clip_epoch_size(params: dict[str, str], params_path: Path) -> tuple[int, int, str]:
    """(samples per optimizer step, optimizer steps per epoch, how) of the open_clip run that `params` describes,
    following open_clip_train.data: webdataset rounds the batches up to whole batches per worker; CSV drops the
    last partial batch of each rank's DistributedSampler share."""
    batch_size, world_size = int(params["batch_size"]), int(params.get("world_size", "1"))
    accum = int(params.get("accum_freq", "1"))
    global_batch = batch_size * world_size
    train_data = params.get("train_data", "None")
    dataset_type = params.get("dataset_type", "auto")
    if dataset_type == "auto":
        dataset_type = {"csv": "csv", "tsv": "csv", "tar": "webdataset"}.get(train_data.split(".")[-1], dataset_type)
    num_samples = _optional_int(params.get("train_num_samples"))
    if dataset_type == "webdataset" and num_samples is not None:
        round_fn = math.floor if params.get("dataset_resampled") == "True" else math.ceil
        workers = max(1, int(params.get("workers", "1")))
        batches = round_fn(round_fn(num_samples / global_batch) / workers) * workers
        how = f"--train-num-samples {num_samples} in batches of {batch_size} x {world_size} rank(s), {workers} worker(s)"
    elif dataset_type == "csv":
        csv_path = Path(train_data)
        if not csv_path.is_file():
            raise FileNotFoundError(f"its CSV {train_data} is not there to count")
        rows = _csv_rows(csv_path, params.get("csv_separator", "\t"))
        batches = math.ceil(rows / world_size) // batch_size
        how = f"{rows} rows of {train_data} in batches of {batch_size} x {world_size} rank(s)"
    else:
        raise ValueError(f"its dataset type {dataset_type} has no size open_clip records (--train-num-samples "
                         f"{num_samples})")
    steps = batches // accum
    return global_batch * accum, steps, f"{how}, accum-freq {accum} (read from {params_path})"


def estimate_open_clip_progress(checkpoint_path: Path, epochs_done: int) -> OpenClipEstimate:
    """samples_seen of an open_clip checkpoint: its `epoch` x the epoch size of the run that wrote it, from the
    params.txt open_clip_train leaves beside its checkpoints folder; the schedule then keeps that run's step units."""
    params_path = checkpoint_path.resolve().parent.parent / OPEN_CLIP_PARAMS_FILE
    if not params_path.is_file():
        return OpenClipEstimate(None, None, f"no open_clip {OPEN_CLIP_PARAMS_FILE} beside it (looked for {params_path})")
    try:
        samples_per_step, steps_per_epoch, how = open_clip_epoch_size(read_open_clip_params(params_path), params_path)
    except (KeyError, ValueError, OSError) as exc:
        return OpenClipEstimate(None, None, f"{params_path} does not give the epoch size ({exc})")
    samples_seen = epochs_done * steps_per_epoch * samples_per_step
    return OpenClipEstimate(
        samples_seen, {"samples_per_step": samples_per_step, "steps_per_epoch": steps_per_epoch},
        f"{epochs_done} epoch(s) x {steps_per_epoch} steps x {samples_per_step} samples = {samples_seen} ({how})",
    )
