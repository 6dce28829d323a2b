"""fastclip-train: train a CLIP model with open_clip's flags, one process per device (torchrun for several).

    fastclip-train                                   # fc-tiny-vit on the embedded toy world, a few CPU minutes
    fastclip-train --dataset-type csv --train-data pairs.csv --model ViT-B-32 --epochs 10
    torchrun --nproc-per-node 2 -m fastclip.train.cli -- --logs runs --name ddp

A run writes LOGS/NAME/: params.json (every flag), out.log, metrics.jsonl (one line per logged step) and
checkpoints/epoch_N.pt (open_clip's keys plus model_name, model_cfg, samples_seen and the train_state that resumes
it exactly, written atomically; with --save-every-n-steps also the newest epoch_E_step_S.pt).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import random
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator, Sequence

import torch
from tqdm import tqdm

from fastclip.data.loader import build_train_data
from fastclip.eval.runner import DONE_MARKER
from fastclip.io import atomic_write_text
from fastclip.models import create_model, latest_valid_checkpoint
from fastclip.train.checkpoints import Checkpointer
from fastclip.train.config import TrainConfig, parse_args, resolve_defaults
from fastclip.train.distributed import (
    MainRankError,
    World,
    barrier,
    init_distributed,
    on_main_then_broadcast,
    shutdown,
    wrap_model,
)
from fastclip.train.loop import MetricsLog, train_one_epoch
from fastclip.train.loss import create_loss, model_kwargs
from fastclip.train.optim import create_optimizer
from fastclip.train.schedule import schedule_from_args
from fastclip.train.state import ResumePoint, restore

PARAMS_FILE, LOG_FILE, METRICS_FILE, CHECKPOINT_DIR = "params.json", "out.log", "metrics.jsonl", "checkpoints"


@dataclass
class TrainResult:
    model: torch.nn.Module  # unwrapped, on the training device
    run_dir: Path
    epochs_done: int
    samples_seen: int
    epoch_summaries: list[dict]


def default_run_name(args: TrainConfig) -> str:
    """open_clip's experiment name: the start time, then the settings that tell runs apart."""
    date = datetime.now().strftime("%Y_%m_%d-%H_%M_%S")
    return "-".join([
        date, f"model_{args.model.replace('/', '-')}", f"lr_{args.lr}", f"b_{args.batch_size}",
        f"j_{args.workers}", f"p_{args.precision}",
    ])


def check_run_dir(run_dir: Path, *, resuming: bool) -> None:
    if (run_dir / LOG_FILE).exists() and not resuming:
        raise ValueError(
            f"{run_dir} already holds a run; continue it with --resume latest, or start another with a new --name"
        )


class _TqdmHandler(logging.StreamHandler):
    """Console lines that do not break the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)


@contextlib.contextmanager
def run_logging(log_file: Path | None, world: World) -> Iterator[logging.Logger]:
    """The `fastclip` logger (training and data messages) to out.log and the console, for the duration of a run."""
    logger = logging.getLogger("fastclip")
    saved = (logger.level, logger.propagate)
    prefix = f"[rank {world.rank}] " if world.distributed else ""
    console = _TqdmHandler()
    console.setFormatter(logging.Formatter(f"{prefix}%(message)s"))
    console.setLevel(logging.INFO if world.is_main else logging.WARNING)
    handlers: list[logging.Handler] = [console]
    if log_file is not None:
        file_handler = logging.FileHandler(log_file)
        file_handler.setFormatter(logging.Formatter("%(asctime)s | %(levelname)s | %(name)s | %(message)s"))
        handlers.append(file_handler)
    for handler in handlers:
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # open_clip's logging.warning() gives the root logger a handler: no double lines
    try:
        yield logging.getLogger("fastclip.train")
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def resolve_resume(args: TrainConfig, checkpoint_dir: Path, world: World) -> str | None:
    if args.resume != "latest":
        return args.resume
    return on_main_then_broadcast(world, lambda: str(latest_valid_checkpoint(checkpoint_dir)))


def train(args: TrainConfig) -> TrainResult:
    """Run a training job as `args` describes (joins torchrun's process group when there is one)."""
    world = init_distributed(args.device, args.dist_backend)
    if world.device.type == "cuda":  # as open_clip: TF32 tensor cores for the fp32 matmuls (Ampere and later)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    try:
        return _train(args, world)
    finally:
        shutdown(world)


def _train(args: TrainConfig, world: World) -> TrainResult:
    name_given = args.name is not None
    if args.resume == "latest" and not name_given:
        raise ValueError("--resume latest needs --name NAME, the run to continue (without --name a run gets a new "
                         "timestamped name, which has no checkpoint)")
    args = dataclasses.replace(resolve_defaults(args, device_type=world.device.type), device=str(world.device))
    if not name_given:
        args = dataclasses.replace(args, name=on_main_then_broadcast(world, lambda: default_run_name(args)))
    run_dir = Path(args.logs) / args.name
    checkpoint_dir = run_dir / CHECKPOINT_DIR
    on_main_then_broadcast(world, lambda: check_run_dir(run_dir, resuming=args.resume is not None))
    resume_path = resolve_resume(args, checkpoint_dir, world)

    # Everything that can refuse the input (model name, data, checkpoint) runs before the run folder is written.
    seed_everything(args.seed)  # the same initial weights on every rank
    bundle = create_model(args.model, device=world.device, **model_kwargs(args))
    seed_everything(args.seed + world.rank)  # different augmentation per rank
    model = bundle.model
    optimizer = create_optimizer(model, args, world.device)
    scaler = torch.amp.GradScaler("cuda") if args.precision == "amp" and world.device.type == "cuda" else None
    data = build_train_data(args, bundle, device=world.device, rank=world.rank, world_size=world.world_size)
    evaluation = None
    if args.eval_every and world.is_main:
        from fastclip.eval.hook import TrainingEvaluation

        if args.eval_suite is None:
            raise ValueError("--eval-every needs --eval-suite (paper, toyworld or a suite file)")
        evaluation = TrainingEvaluation(args.eval_suite, run_dir, every=args.eval_every, device=world.device,
                                        precision=args.precision)  # fmt: skip
    point = ResumePoint()
    if resume_path is not None:
        point = restore(resume_path, args, model=model, optimizer=optimizer, scaler=scaler, data=data, world=world)
    progress, epochs_done = point.progress, point.progress.epoch
    schedule = schedule_from_args(args, samples_per_step=args.batch_size * world.world_size,
                                  steps_per_epoch=data.num_batches, stored_units=point.schedule_units)
    checkpoints = Checkpointer(checkpoint_dir, args=args, model_cfg=bundle.model_cfg, model=model,
                               optimizer=optimizer, scaler=scaler, world=world, schedule_units=schedule.units())

    if world.is_main:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / DONE_MARKER).unlink(missing_ok=True)  # training (again): the run is not done
    barrier(world)
    with run_logging(run_dir / LOG_FILE if world.is_main else None, world) as log:
        if world.is_main:
            atomic_write_text(run_dir / PARAMS_FILE, json.dumps(dataclasses.asdict(args), indent=2) + "\n")
        for note in point.notes:
            log.info(note)
        log.info(
            "run %s: %s (%.1fM parameters) on %s x %d, %s data, %d images/epoch, %d steps/epoch, precision %s",
            run_dir, args.model, sum(p.numel() for p in model.parameters()) / 1e6, world.device, world.world_size,
            args.dataset_type, data.num_samples, data.num_batches, args.precision,
        )
        trained = wrap_model(model, world)
        loss_fn = create_loss(args, world)
        metrics = MetricsLog(run_dir / METRICS_FILE) if world.is_main else None
        if metrics is not None:
            metrics.drop_after(progress.step)
        summaries = []
        if epochs_done >= args.epochs:
            log.info("nothing to train: %d of --epochs %d already done", epochs_done, args.epochs)
        point.apply_rng(world.device)
        for epoch in range(epochs_done, args.epochs):
            start_batch, data_position = (point.start_batch, point.data_position) if epoch == epochs_done else (0, None)
            summaries.append(train_one_epoch(
                model=trained, data=data, loss_fn=loss_fn, optimizer=optimizer, scaler=scaler, args=args,
                world=world, epoch=epoch, schedule=schedule, progress=progress, metrics=metrics, log=log,
                start_batch=start_batch, data_position=data_position, checkpointer=checkpoints,
            ))
            completed = epoch + 1
            checkpoints.after_epoch(progress, data)
            if evaluation is not None and evaluation.due(completed):
                with torch.random.fork_rng(devices=[world.device] if world.device.type == "cuda" else []):
                    evaluation(bundle, args.name, completed, progress.samples_seen)  # draws nothing from training's RNG
                log.info("evaluated epoch %d with the suite %s: %s", completed, args.eval_suite, evaluation.out_dir)
        if world.is_main:  # fastclip-eval --follow stops after its next round
            (run_dir / DONE_MARKER).write_text(f"{args.epochs}\n")
        barrier(world)
        return TrainResult(
            model=model, run_dir=run_dir, epochs_done=max(epochs_done, args.epochs),
            samples_seen=progress.samples_seen, epoch_summaries=summaries,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the fastclip-train console script; `argv` defaults to sys.argv[1:]."""
    args = parse_args(argv)
    try:
        train(args)
    except (ValueError, FileNotFoundError, MainRankError) as exc:  # bad input: the message says what to change
        raise SystemExit(f"fastclip-train: error: {exc}") from exc
    return 0


if __name__ == "__main__":
    sys.exit(main())
