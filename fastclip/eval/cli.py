"""fastclip-eval: evaluate every epoch of a CLIP run; `main(argv)` is the console script.

    fastclip-eval RUN_OR_CHECKPOINT... [--suite paper|toyworld|FILE] [--data-root DIR] [--benchmarks a,b]
                  [--cue-conflict DIR]... [--follow [--poll-interval S] [--follow-timeout S]] [--force]
    torchrun --nproc-per-node N -m fastclip.eval.cli RUN ...      checkpoints split across N processes
    fastclip-eval report RUN_OR_EVAL_DIR... [--out DIR]           (fastclip.eval.report)
    fastclip-eval make-stimuli ...                                (fastclip.eval.make_stimuli)
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from pathlib import Path
from typing import Sequence

import torch

from fastclip.eval.context import (
    DEFAULT_RESAMPLES, DEFAULT_TOYWORLD_SIZE, SUITE_OPTION_DEFAULTS, EvalOptions, options_for_suite,
)  # fmt: skip
from fastclip.eval.datasets.cue_conflict import EXPECTED_LAYOUT
from fastclip.eval.errors import InputError
from fastclip.eval.registry import parse_benchmark_list, registered_names
from fastclip.eval.suite import BUILTIN_SUITES, default_suite, load_suite, with_cue_conflict
from fastclip.eval.zeroshot import DEFAULT_TEMPLATE_SET, TEMPLATE_SET_NAMES
from fastclip.models import PRECISIONS, CheckpointError, model_config

# Subcommands: the first argument selects a module whose main(argv) gets the rest.
SUBCOMMANDS = {"make-stimuli": "fastclip.eval.make_stimuli", "report": "fastclip.eval.report"}
DEFAULT_FOLLOW_TIMEOUT = 3600.0
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastclip-eval",
        description="Evaluate every epoch of a CLIP training run with a suite of benchmarks (zero-shot accuracy, "
        "texture-shape bias, noise robustness, image-quality and 2AFC alignment, saliency). Writes "
        "results.jsonl/results.csv (+ results.parquet with pyarrow), trials CSVs, per-item files and figure.png to "
        "--out and prints a summary. Re-running skips what is already in the results table.",
        epilog="Subcommands: " + ", ".join(f"`fastclip-eval {name} ...`" for name in SUBCOMMANDS)
        + f".\n\n--cue-conflict DIR layout:\n{EXPECTED_LAYOUT}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="RUN_OR_CHECKPOINT",
        help="a run folder (LOGS/NAME with checkpoints/epoch_N.pt) or checkpoint files (fastclip's, open_clip's "
        "epoch_N.pt, or a bare state_dict with --model)",
    )  # fmt: skip
    parser.add_argument(
        "--suite", default=None, metavar="NAME_OR_FILE",
        help=f"the evaluation suite: a built-in ({', '.join(BUILTIN_SUITES)}) or a TOML suite file. Without it: "
        "zeroshot, shape_bias and noise_robustness on the toy world (plus --cue-conflict folders)",
    )  # fmt: skip
    parser.add_argument(
        "--data-root", type=Path, default=None, metavar="DIR",
        help="folder that relative dataset paths of the suite resolve against (built-in suites: default the "
        "current directory; suite files: their data_root, else their own folder)",
    )  # fmt: skip
    parser.add_argument(
        "--skip-missing", action="store_true", help="leave out suite datasets whose path does not exist"
    )
    parser.add_argument(
        "--model", default=None,
        help="model name for checkpoints that do not store it (open_clip's epoch_N.pt, bare state_dicts)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="output folder (default RUN/eval)")
    parser.add_argument(
        "--benchmarks", default=None,
        help=f"comma-separated benchmarks of the suite to run (default: all of them; registered: "
        f"{', '.join(registered_names())})",
    )  # fmt: skip
    parser.add_argument(
        "--cue-conflict", action="append", type=Path, default=[], metavar="DIR",
        help="a cue-conflict folder in the Geirhos layout for shape_bias (repeatable); layout below",
    )  # fmt: skip
    parser.add_argument("--device", default=None, help="torch device (default cuda when available, else cpu)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per forward pass (default 64 on the CPU, 256 on a GPU)")
    parser.add_argument("--precision", choices=PRECISIONS, default=None, help="autocast precision (default fp32)")
    parser.add_argument("--force", action="store_true", help="re-evaluate units already in the results table")
    parser.add_argument("--seed", type=int, default=None, help="seed of noise and bootstrap draws (default 0)")
    parser.add_argument(
        "--resamples", type=int, default=None,
        help=f"bootstrap resamples of the confidence intervals (default {DEFAULT_RESAMPLES})",
    )  # fmt: skip
    parser.add_argument(
        "--toyworld-size", type=int, default=None, metavar="N",
        help=f"toy-world eval images per category (held-out and cue-conflict sets; default {DEFAULT_TOYWORLD_SIZE})",
    )  # fmt: skip
    parser.add_argument(
        "--templates", choices=TEMPLATE_SET_NAMES, default=None,
        help="zero-shot prompt templates of datasets that do not set their own: the toy world's caption templates, "
        "'a photo of a {}.', CLIP's 7-template ensemble, OpenAI's 18 CIFAR or 80 ImageNet templates "
        f"(default {DEFAULT_TEMPLATE_SET})",
    )  # fmt: skip
    parser.add_argument(
        "--follow", action="store_true",
        help="keep evaluating new checkpoints while training runs; stops when every run folder holds the `done` "
        "marker fastclip-train writes at the end, or after --follow-timeout without a new checkpoint",
    )  # fmt: skip
    parser.add_argument("--poll-interval", type=float, default=30.0, metavar="S", help="--follow: seconds between looks")
    parser.add_argument(
        "--follow-timeout", type=float, default=DEFAULT_FOLLOW_TIMEOUT, metavar="S",
        help="--follow: stop after this many seconds without a new checkpoint (default %(default)s; 0: no limit)",
    )  # fmt: skip
    return parser


def _device(parser: argparse.ArgumentParser, name: str | None) -> torch.device | None:
    if name is None:
        return None
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        parser.error(f"--device {name!r}: {exc}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {name}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
    return device


def _check_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for flag, value in (("--batch-size", args.batch_size), ("--toyworld-size", args.toyworld_size),
                        ("--resamples", args.resamples)):  # fmt: skip
        if value is not None and value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    if args.seed is not None and args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    if args.poll_interval <= 0 or args.follow_timeout < 0:
        parser.error("--poll-interval must be > 0 and --follow-timeout >= 0")
    if args.model is not None:
        try:
            model_config(args.model)
        except ValueError as exc:
            parser.error(f"--model: {exc}")


def build_suite(args: argparse.Namespace):
    suite = load_suite(args.suite, data_root=args.data_root) if args.suite else default_suite()
    if args.benchmarks is not None:
        suite = suite.only(parse_benchmark_list(args.benchmarks))
    suite = with_cue_conflict(suite, args.cue_conflict)
    if args.skip_missing:
        suite, absent = suite.without_missing_paths()
        for name in absent:
            print(f"fastclip-eval: --skip-missing: leaving out {name} ({suite.source})", file=sys.stderr)
    return suite


def build_options(args: argparse.Namespace, suite, device: torch.device) -> EvalOptions:
    """Flags given > the suite's [options] > the defaults."""
    return options_for_suite(suite, device, **{key: getattr(args, key) for key in SUITE_OPTION_DEFAULTS})


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])
    from fastclip.eval.distributed import init_eval_world, rank_device, shutdown
    from fastclip.eval.figure import write_figure
    from fastclip.eval.runner import default_out_dir, find_targets, follow, start_evaluator
    from fastclip.eval.summary import markdown_summary

    parser = build_parser()
    args = parser.parse_args(argv)
    _check_flags(parser, args)
    requested = _device(parser, args.device)
    world = init_eval_world(requested.type if requested is not None else "cuda" if torch.cuda.is_available() else "cpu")
    try:
        suite = build_suite(args)
        options = build_options(args, suite, rank_device(world, requested))
        if options.device.type == "cuda":  # as fastclip-train and open_clip: TF32 tensor cores for fp32 matmuls
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        targets = find_targets(args.inputs, model_name=args.model, allow_empty=args.follow)
        out_dir = args.out if args.out is not None else default_out_dir(targets, args.inputs)
        evaluator = start_evaluator(out_dir, options, force=args.force, model_name=args.model, world=world)
        if args.follow:
            timeout = args.follow_timeout if args.follow_timeout > 0 else math.inf
            report = follow(args.inputs, evaluator, model_name=args.model, poll_seconds=args.poll_interval,
                            timeout_seconds=timeout)  # fmt: skip
        else:
            evaluator.round(targets)
            report = evaluator.report
    except (InputError, CheckpointError) as exc:
        print(f"fastclip-eval: error: {exc}", file=sys.stderr)
        return 2
    finally:
        shutdown(world)
    if world.is_main:
        write_figure(report.table.rows, out_dir / "figure.png")
        print(markdown_summary(report.table.rows, out_dir, evaluated=len(report.evaluated), skipped=len(report.skipped)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
