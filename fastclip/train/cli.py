"""fastclip-train: train a CLIP model with open_clip's flags, one process per device (torchrun for several).

    fastclip-train                                   # fc-tiny-vit on the embedded toy world, a few CPU minutes
    fastclip-train --dataset-type csv --train-data pairs.csv --model ViT-B-32 --epochs 10
    torchrun --nproc-per-node 2 -m fastclip.train.cli -- --logs runs --name ddp

A run writes LOGS/NAME/: params.json (every flag), out.log, metrics.jsonl (one line per logged step) and
checkpoints/epoch_N.pt (open_clip's keys plus model_name, model_cfg, samples_seen and, for the toy world, the
`toyworld` knobs of the world it saw; written atomically).
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
from fastclip.data.toyworld_knobs import knobs_of_config
from fastclip.eval.runner import DONE_MARKER
from fastclip.io import atomic_write_text
from fastclip.models import (
    CheckpointError,
    create_model,
    load_checkpoint,
    load_state_dict_into,
    save_checkpoint,
)
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
from fastclip.train.loop import MetricsLog, Progress, train_one_epoch
from fastclip.train.loss import create_loss, model_kwargs
from fastclip.train.optim import create_optimizer
from fastclip.train.run_dir import prepare_run_start

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


def restore(path: str, args: TrainConfig, *, model, optimizer, scaler, batches_per_epoch: int, world: World):
    """Load a checkpoint into the model (and optimizer/scaler); returns (epochs done, Progress, what was done)."""
    checkpoint = load_checkpoint(path)
    stored_model = checkpoint.get("model_name")
    if stored_model is not None and stored_model != args.model:
        raise CheckpointError(f"{path}: holds a {stored_model!r} model, but --model is {args.model!r}")
    load_state_dict_into(model, checkpoint["state_dict"], source=path)
    if "epoch" not in checkpoint:  # as open_clip: a checkpoint without an epoch only provides weights
        return 0, Progress(), f"loaded weights from {path} (it has no epoch: training starts at epoch 1)"
    epochs_done = int(checkpoint["epoch"])
    if "optimizer" in checkpoint:
        optimizer.load_state_dict(checkpoint["optimizer"])
    if scaler is not None and "scaler" in checkpoint:
        scaler.load_state_dict(checkpoint["scaler"])
    images_per_epoch = batches_per_epoch * args.batch_size * world.world_size
    progress = Progress(
        step=epochs_done * batches_per_epoch,
        samples_seen=int(checkpoint.get("samples_seen", epochs_done * images_per_epoch)),
    )
    return epochs_done, progress, f"resumed from {path}: {epochs_done} epoch(s) done, {progress.samples_seen} samples seen"


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
    start = on_main_then_broadcast(world, lambda: prepare_run_start(run_dir, checkpoint_dir, args.resume))
    resume_path = start.resume_path

    # Everything that can refuse the input (model name, data, checkpoint) runs before the run folder is written.
    seed_everything(args.seed)  # the same initial weights on every rank
    bundle = create_model(args.model, device=world.device, **model_kwargs(args))
    seed_everything(args.seed + world.rank)  # different augmentation per rank
    model = bundle.model
    optimizer = create_optimizer(model, args, world.device)
    scaler = torch.amp.GradScaler("cuda") if args.precision == "amp" and world.device.type == "cuda" else None
    data = build_train_data(args, bundle, device=world.device, rank=world.rank, world_size=world.world_size)
    toyworld_knobs = knobs_of_config(args).as_dict() if args.dataset_type == "toyworld" else None
    evaluation = None
    if args.eval_every and world.is_main:
        from fastclip.eval.hook import TrainingEvaluation

        if args.eval_suite is None:
            raise ValueError("--eval-every needs --eval-suite (paper, toyworld or a suite file)")
        evaluation = TrainingEvaluation(args.eval_suite, run_dir, every=args.eval_every, device=world.device,
                                        precision=args.precision)  # fmt: skip
    epochs_done, progress, resumed = 0, Progress(), None
    if resume_path is not None:
        epochs_done, progress, resumed = restore(
            resume_path, args, model=model, optimizer=optimizer, scaler=scaler, batches_per_epoch=data.num_batches,
            world=world,
        )

    if world.is_main:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / DONE_MARKER).unlink(missing_ok=True)  # training (again): the run is not done
    barrier(world)
    with run_logging(run_dir / LOG_FILE if world.is_main else None, world) as log:
        if world.is_main:
            atomic_write_text(run_dir / PARAMS_FILE, json.dumps(dataclasses.asdict(args), indent=2) + "\n")
        if start.note:
            log.info(start.note)
        if resumed:
            log.info(resumed)
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
        for epoch in range(epochs_done, args.epochs):
            summaries.append(train_one_epoch(
                model=trained, data=data, loss_fn=loss_fn, optimizer=optimizer, scaler=scaler, args=args,
                world=world, epoch=epoch, total_steps=data.num_batches * args.epochs, progress=progress,
                metrics=metrics, log=log,
            ))
            completed = epoch + 1
            due = completed == args.epochs or (args.save_frequency > 0 and completed % args.save_frequency == 0)
            path = checkpoint_dir / f"epoch_{completed}.pt" if due and world.is_main else None
            if path is not None:
                save_checkpoint(
                    path, model=model, optimizer=optimizer, epoch=completed, name=args.name, model_name=args.model,
                    model_cfg=bundle.model_cfg, samples_seen=progress.samples_seen, scaler=scaler,
                    toyworld=toyworld_knobs,
                )
                log.info("saved %s", path)
            if evaluation is not None and evaluation.due(completed):
                evaluation(bundle, args.name, completed, progress.samples_seen, checkpoint=path)
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
