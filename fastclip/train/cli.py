"""fastclip-train: train a CLIP model with open_clip's flags, one process per device (torchrun or srun for several).

    fastclip-train                                   # fc-tiny-vit on the embedded toy world, a few CPU minutes
    fastclip-train --train-data pairs.csv --model ViT-B-32 --epochs 10
    torchrun --nproc-per-node 2 -m fastclip.train.cli -- --logs runs --name ddp

A run writes LOGS/NAME/: params.json (every flag; params.txt as open_clip writes it), out.log, metrics.jsonl (one
line per logged step, and one per validation with --val-data) and checkpoints/epoch_N.pt (open_clip's keys plus
model_name, model_cfg, samples_seen, the train_state that resumes it exactly and, for the toy world, the `toyworld`
knobs of the world it saw; written atomically; with --save-every-n-steps also the newest epoch_E_step_S.pt). With
--val-data and no --train-data it only evaluates, as open_clip.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import random
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from fastclip.data.loader import build_train_data
from fastclip.data.skips import NoReadableSamplesError
from fastclip.data.toyworld_knobs import knobs_of_config
from fastclip.eval.runner import DONE_MARKER
from fastclip.io import atomic_write_text
from fastclip.ops._dispatch import BackendUnavailableError
from fastclip.train.checkpoints import Checkpointer
from fastclip.train.config import TrainConfig, parse_args, resolve_defaults, trains_toyworld
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
from fastclip.train.loss import create_loss
from fastclip.train.model_setup import build_model
from fastclip.train.openclip_flags import check_supported
from fastclip.train.optim import create_optimizer
from fastclip.train.reporting import Reporter, report_targets
from fastclip.train.run_dir import prepare_run_start
from fastclip.train.schedule import schedule_from_args
from fastclip.train.state import Progress, ResumePoint, restore

PARAMS_FILE, LOG_FILE, METRICS_FILE, CHECKPOINT_DIR = "params.json", "out.log", "metrics.jsonl", "checkpoints"
OPEN_CLIP_PARAMS_FILE = "params.txt"
VAL_RESULTS_FILE = "results.jsonl"  # open_clip's file of validation metrics, in the checkpoints folder
CODE_DIR = "code"

# What bad input raises (each message names the flag, file or column); anything else is a bug and keeps its traceback.
INPUT_ERRORS = (ValueError, FileNotFoundError, MainRankError, NoReadableSamplesError, BackendUnavailableError)


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
def run_logging(log_file: Path | None, world: World, *, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """The `fastclip` logger (training and data messages) to out.log and the console, for the duration of a run."""
    logger = logging.getLogger("fastclip")
    saved = (logger.level, logger.propagate)
    prefix = f"[rank {world.rank}] " if world.distributed else ""
    console = _TqdmHandler()
    console.setFormatter(logging.Formatter(f"{prefix}%(message)s"))
    console.setLevel(level if world.is_main else logging.WARNING)
    handlers: list[logging.Handler] = [console]
    if log_file is not None:
        file_handler = logging.FileHandler(log_file)
        file_handler.setFormatter(logging.Formatter("%(asctime)s | %(levelname)s | %(name)s | %(message)s"))
        handlers.append(file_handler)
    for handler in handlers:
        logger.addHandler(handler)
    logger.setLevel(level)
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
    """open_clip's random_seed: torch, numpy and random."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def log_file_of(run_dir: Path, args: TrainConfig, world: World) -> Path | None:
    """out.log on global rank 0; with --log-local, out-RANK.log on every node's local rank 0 (open_clip)."""
    if args.log_local:
        return run_dir / f"out-{world.rank}.log" if world.local_rank == 0 else None
    return run_dir / LOG_FILE if world.is_main else None


def copy_codebase(run_dir: Path) -> Path:
    """--copy-codebase: the fastclip package as it ran, beside the run's logs."""
    import fastclip

    target = run_dir / CODE_DIR / "fastclip"
    if target.exists():
        raise ValueError(f"--copy-codebase: {target} already exists; use a new --name")
    shutil.copytree(Path(fastclip.__file__).parent, target,
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "logs", "wandb"))
    return target


def train(args: TrainConfig) -> TrainResult:
    """Run a training job as `args` describes (joins torchrun's or SLURM's process group when there is one)."""
    check_supported(args)  # refused open_clip flags fail before anything starts
    world = init_distributed(args.device, args.dist_backend, dist_url=args.dist_url,
                             set_device_rank=not args.no_set_device_rank)
    if world.device.type == "cuda":  # as open_clip: TF32 tensor cores for the fp32 matmuls (Ampere and later)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    try:
        return _train(args, world)
    finally:
        shutdown(world)


def evaluates_only(args: TrainConfig) -> bool:
    """open_clip's evaluation run: --val-data without training data."""
    has_training_data = bool(args.train_data) or trains_toyworld(args) or args.dataset_type == "synthetic"
    return bool(args.val_data) and not has_training_data


def _train(args: TrainConfig, world: World) -> TrainResult:
    name_given = args.name is not None
    if args.resume == "latest" and not name_given:
        raise ValueError("--resume latest needs --name NAME, the run to continue (without --name a run gets a new "
                         "timestamped name, which has no checkpoint)")
    args = dataclasses.replace(resolve_defaults(args, device_type=world.device.type), device=str(world.device))
    report_targets(args.report_to)  # an unknown target is refused before anything is written
    if not name_given:
        args = dataclasses.replace(args, name=on_main_then_broadcast(world, lambda: default_run_name(args)))
    run_dir = Path(args.logs) / args.name
    checkpoint_dir = run_dir / CHECKPOINT_DIR
    start = on_main_then_broadcast(world, lambda: prepare_run_start(run_dir, checkpoint_dir, args.resume))
    resume_path = start.resume_path
    only_evaluate = evaluates_only(args)

    # Everything that can refuse the input (model name, data, checkpoint) runs before the run folder is written.
    seed_everything(args.seed)  # the same initial weights on every rank
    bundle = build_model(args, world.device)
    seed_everything(args.seed + world.rank)  # different augmentation per rank
    model = bundle.model
    optimizer = create_optimizer(model, args, world.device)
    scaler = torch.amp.GradScaler("cuda") if args.precision == "amp" and world.device.type == "cuda" else None
    data = None if only_evaluate else build_train_data(args, bundle, device=world.device, rank=world.rank,
                                                       world_size=world.world_size)
    toyworld_knobs = knobs_of_config(args).as_dict() if args.dataset_type == "toyworld" else None
    validation = None
    if args.val_data and world.is_main:  # as open_clip: rank 0 validates
        from fastclip.train.validation import Validation

        validation = Validation(args, bundle, world.device)
    steps_per_epoch = 0 if data is None else data.num_batches // args.accum_freq
    if data is not None and steps_per_epoch == 0:
        raise ValueError(f"--accum-freq {args.accum_freq}: an epoch has only {data.num_batches} batch(es) per rank, "
                         "fewer than one optimizer step; lower --accum-freq or raise --train-num-samples")
    evaluation = None
    if args.eval_every and args.eval_suite and world.is_main and not only_evaluate:
        from fastclip.eval.hook import TrainingEvaluation

        evaluation = TrainingEvaluation(args.eval_suite, run_dir, every=args.eval_every, device=world.device,
                                        precision=args.precision)  # fmt: skip
    point = ResumePoint()
    if resume_path is not None:
        point = restore(resume_path, args, model=model, optimizer=optimizer, scaler=scaler, data=data, world=world)
    progress, epochs_done = point.progress, point.progress.epoch

    if world.is_main:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / DONE_MARKER).unlink(missing_ok=True)  # training (again): the run is not done
    barrier(world)
    if args.copy_codebase and world.is_main:
        copy_codebase(run_dir)
    level = logging.DEBUG if args.debug else logging.INFO
    with run_logging(log_file_of(run_dir, args, world), world, level=level) as log:
        reporter = Reporter(args, run_dir) if world.is_main and args.report_to else None
        try:
            if world.is_main:
                params = dataclasses.asdict(args)
                atomic_write_text(run_dir / PARAMS_FILE, json.dumps(params, indent=2) + "\n")
                # open_clip's params.txt too: `name: value` lines, sorted, for tools that read it
                atomic_write_text(run_dir / OPEN_CLIP_PARAMS_FILE,
                                  "".join(f"{name}: {params[name]}\n" for name in sorted(params)))
            if start.note:
                log.info(start.note)
            for note in point.notes:
                log.info(note)
            if args.eval_every and not args.eval_suite:  # open_clip's --zeroshot-frequency without ImageNet: no-op
                log.warning("--eval-every/--zeroshot-frequency %d: no --eval-suite given, so nothing is evaluated "
                            "in-process (give --eval-suite paper, toyworld or a suite file)", args.eval_every)
            metrics = MetricsLog(run_dir / METRICS_FILE) if world.is_main else None
            if metrics is not None:
                metrics.drop_after(progress.step)
            if only_evaluate:
                validate(validation, model, epochs_done, progress, metrics, reporter, checkpoint_dir, log)
                return TrainResult(model=model, run_dir=run_dir, epochs_done=epochs_done,
                                   samples_seen=progress.samples_seen, epoch_summaries=[])
            return _train_epochs(
                args, world, bundle=bundle, model=model, optimizer=optimizer, scaler=scaler, data=data,
                steps_per_epoch=steps_per_epoch, validation=validation, evaluation=evaluation,
                point=point, metrics=metrics, reporter=reporter, run_dir=run_dir, toyworld_knobs=toyworld_knobs,
                log=log,
            )
        finally:
            if reporter is not None:
                reporter.close()


def validate(validation, model, epoch: int, progress: Progress, metrics, reporter, checkpoint_dir: Path, log) -> dict:
    """open_clip's evaluate(): metrics to out.log, metrics.jsonl, checkpoints/results.jsonl and --report-to."""
    results = validation.run(model, epoch)
    log.info("validation, epoch %d: %s", epoch, "  ".join(f"{key}: {value:.4f}" for key, value in results.items()))
    if metrics is not None:
        metrics.write({"step": progress.step, "split": "val", "samples_seen": progress.samples_seen, **results})
    with (checkpoint_dir / VAL_RESULTS_FILE).open("a") as handle:
        handle.write(json.dumps(results) + "\n")
    if reporter is not None:
        reporter.validation(results, progress.step)
    return results


def _train_epochs(args, world, *, bundle, model, optimizer, scaler, data, steps_per_epoch, validation, evaluation,
                  point: ResumePoint, metrics, reporter, run_dir, toyworld_knobs, log) -> TrainResult:
    checkpoint_dir = run_dir / CHECKPOINT_DIR
    progress, epochs_done = point.progress, point.progress.epoch
    log.info(
        "run %s: %s (%.1fM parameters, %.1fM trainable) on %s x %d, %s data, %d images/epoch, %d steps/epoch%s, "
        "precision %s", run_dir, args.model, sum(p.numel() for p in model.parameters()) / 1e6,
        sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, world.device, world.world_size,
        args.dataset_type, data.num_samples, steps_per_epoch,
        f" of {args.accum_freq} batches" if args.accum_freq > 1 else "", args.precision,
    )
    trained = wrap_model(model, world, static_graph=args.ddp_static_graph, sync_batchnorm=args.use_bn_sync)
    if args.torchcompile:
        log.info("compiling the model (torch.compile)")
        if args.grad_checkpointing and world.distributed:  # as open_clip: DDP's dynamo optimizer breaks with it
            torch._dynamo.config.optimize_ddp = False
        trained = torch.compile(trained)  # checkpoints keep `model`'s keys, without the _orig_mod. prefix
    loss_fn = create_loss(args, world)
    # The learning rate follows samples seen, in the step units of the run's first batch (fastclip.train.schedule).
    schedule = schedule_from_args(args, samples_per_step=args.batch_size * world.world_size * args.accum_freq,
                                  steps_per_epoch=steps_per_epoch, stored_units=point.schedule_units)
    checkpoints = Checkpointer(checkpoint_dir, args=args, model_cfg=bundle.model_cfg, model=model,
                               optimizer=optimizer, scaler=scaler, world=world, schedule_units=schedule.units(),
                               toyworld=toyworld_knobs)
    summaries = []
    if epochs_done >= args.epochs:
        log.info("nothing to train: %d of --epochs %d already done", epochs_done, args.epochs)
    point.apply_rng(world.device)
    for epoch in range(epochs_done, args.epochs):
        start_batch, data_position = (point.start_batch, point.data_position) if epoch == epochs_done else (0, None)
        summaries.append(train_one_epoch(
            model=trained, data=data, loss_fn=loss_fn, optimizer=optimizer, scaler=scaler, args=args,
            world=world, epoch=epoch, schedule=schedule, progress=progress, metrics=metrics, log=log,
            reporter=reporter, start_batch=start_batch, data_position=data_position, checkpointer=checkpoints,
        ))
        completed = epoch + 1
        if validation is not None and args.val_frequency and (
                completed % args.val_frequency == 0 or completed == args.epochs):
            with torch.random.fork_rng(devices=[world.device] if world.device.type == "cuda" else []):
                validate(validation, model, completed, progress, metrics, reporter, checkpoint_dir, log)
        barrier(world)  # the other ranks wait for rank 0's validation
        checkpoint = checkpoints.after_epoch(progress, data)  # a collective: every rank hands in its state
        if evaluation is not None and (evaluation.due(completed) or completed == args.epochs):
            # The epoch's checkpoint file identifies these rows, so fastclip-eval of that file finds them current.
            with torch.random.fork_rng(devices=[world.device] if world.device.type == "cuda" else []):
                evaluation(bundle, args.name, completed, progress.samples_seen, checkpoint=checkpoint)
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
    except INPUT_ERRORS as exc:  # bad input: the message says what to change
        message = " ".join(str(exc).split())  # one line, whatever the exception held
        raise SystemExit(f"fastclip-train: error: {message}") from exc
    return 0


if __name__ == "__main__":
    sys.exit(main())
