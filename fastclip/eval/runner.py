"""Find the checkpoints to evaluate and run the suite's benchmarks the results table lacks, one pass per checkpoint.

Inputs are run folders (LOGS/NAME with checkpoints/epoch_N.pt, as fastclip-train and open_clip write them, or a
folder holding epoch_N.pt itself) and checkpoint files (fastclip's, open_clip's, or bare state_dicts with --model).
The unit of work is (run, epoch, benchmark, dataset): a unit already in results.jsonl, measured on the same checkpoint
file with the same options (fastclip.eval.provenance), is skipped unless `force`; the table is rewritten atomically
after every unit, so an interrupted evaluation, killed at any point, resumes where it stopped without losing or
repeating a row.

An `Evaluator` is one evaluation run: it loads every dataset of the suite first (a wrong layout fails before any
checkpoint is read), keeps the decoded pixels for the whole run, and per checkpoint builds one context whose caches
(classifiers, image features) every benchmark shares. `follow` repeats rounds while training writes checkpoints;
under torchrun each round splits the checkpoints across ranks (fastclip.eval.distributed).
"""

from __future__ import annotations

import math
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from tqdm import tqdm

from fastclip.eval.context import CheckpointContext, EvalData, EvalOptions
from fastclip.eval.distributed import EvalWorld, barrier, broadcast, gather
from fastclip.eval.errors import InputError
from fastclip.eval.items import items_path, save_items
from fastclip.eval.provenance import IN_MEMORY, checkpoint_identity, options_digest
from fastclip.eval.registry import get_benchmark
from fastclip.eval.results import (
    Provenance, ResultsTable, UnitKey, make_rows, read_results_jsonl, trials_csv_path, unit_key, write_trials_csv,
)  # fmt: skip
from fastclip.models import (
    CheckpointError, ModelBundle, checkpoint_epoch, find_checkpoints, load_checkpoint, load_model_from_checkpoint,
)  # fmt: skip

PARTS_DIR = "parts"
DONE_MARKER = "done"  # fastclip-train writes RUN/done when training ends; --follow stops after the next round


@dataclass(frozen=True, order=True)
class CheckpointTarget:
    run: str
    epoch: int
    path: Path
    run_dir: Path  # the run's folder: RUN in RUN/checkpoints/epoch_N.pt, else the checkpoint's folder


@dataclass
class EvalReport:
    table: ResultsTable
    evaluated: list[UnitKey] = field(default_factory=list)
    skipped: list[UnitKey] = field(default_factory=list)


def _run_dir_of_file(path: Path) -> Path:
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def _targets_in_folder(folder: Path, *, allow_empty: bool = False) -> list[CheckpointTarget]:
    checkpoint_dir = folder / "checkpoints" if (folder / "checkpoints").is_dir() else folder
    found = find_checkpoints(checkpoint_dir)
    if not found and not allow_empty:
        raise InputError(
            f"{folder}: no checkpoints found; expected a run folder with {folder / 'checkpoints'}/epoch_N.pt (as "
            f"fastclip-train and open_clip write them) or epoch_N.pt files in {folder} itself"
        )
    run_dir = folder.parent if checkpoint_dir == folder and folder.name == "checkpoints" else folder
    return [CheckpointTarget(run_dir.name, epoch, path, run_dir) for epoch, path in found]


def _target_of_file(path: Path, model_name: str | None) -> CheckpointTarget:
    """A checkpoint given by path: read it now, so a file that cannot be evaluated fails before any work."""
    state = load_checkpoint(path)
    if model_name is None and "model_name" not in state:
        raise CheckpointError(
            f"{path}: the checkpoint does not say which model it holds (open_clip checkpoints and bare state_dicts "
            "do not); pass --model NAME"
        )
    epoch = state.get("epoch", checkpoint_epoch(path))
    if epoch is None:
        raise InputError(
            f"{path}: cannot tell which epoch it holds (no 'epoch' key, and the file is not named epoch_N.pt); "
            "rename it epoch_N.pt"
        )
    run_dir = _run_dir_of_file(path)
    return CheckpointTarget(run_dir.name, int(epoch), path, run_dir)


def find_targets(
    inputs: Sequence[str | Path], *, model_name: str | None = None, allow_empty: bool = False
) -> list[CheckpointTarget]:
    """Every checkpoint to evaluate, sorted by (run, epoch); an epoch given twice is an error. With allow_empty
    (--follow), a run folder may have no checkpoint yet (or not exist yet)."""
    if not inputs:
        raise InputError("give a run folder or checkpoint files to evaluate")
    targets: list[CheckpointTarget] = []
    for item in map(Path, inputs):
        if item.is_dir():
            targets += _targets_in_folder(item, allow_empty=allow_empty)
        elif item.is_file():
            targets.append(_target_of_file(item, model_name))
        elif not allow_empty:
            raise InputError(f"{item}: no such run folder or checkpoint file")
    seen: dict[tuple[str, int], Path] = {}
    for target in targets:
        other = seen.setdefault((target.run, target.epoch), target.path)
        if other != target.path:
            raise InputError(f"run {target.run!r} epoch {target.epoch} is given twice: {other} and {target.path}")
    return sorted(targets)


def default_out_dir(targets: Sequence[CheckpointTarget], inputs: Sequence[str | Path] = ()) -> Path:
    """RUN/eval for the one run the targets (or, before any checkpoint exists, the input folders) belong to;
    several runs need an explicit --out."""
    run_dirs = sorted({target.run_dir for target in targets})
    if not run_dirs:
        run_dirs = sorted({Path(item).parent if Path(item).name == "checkpoints" else Path(item) for item in inputs})
    if len(run_dirs) != 1:
        raise InputError(
            f"the checkpoints belong to {len(run_dirs)} runs ({', '.join(map(str, run_dirs))}); pass --out FOLDER"
        )
    return run_dirs[0] / "eval"


@dataclass(frozen=True)
class PlannedUnit:
    """One (benchmark, dataset) of the suite, and the digest of the options its values depend on."""

    benchmark: object
    dataset: str
    options: str


def build_plan(options: EvalOptions) -> list[PlannedUnit]:
    """The suite's (benchmark instance with the suite's settings, dataset name) pairs in suite order."""
    if options.suite is None:
        raise InputError("no suite to run")
    plan = []
    for spec in options.suite.benchmarks:
        benchmark = get_benchmark(spec.name, spec.settings)
        plan += [
            PlannedUnit(benchmark, dataset, options_digest(options, spec.name, benchmark.settings, dataset))
            for dataset in spec.datasets
        ]
    return plan


def merge_parts(out_dir: Path) -> int:
    """Merge OUT/parts/rank*/results.jsonl into OUT/results.* and remove the parts; returns the units merged."""
    parts = sorted((out_dir / PARTS_DIR).glob("rank*/results.jsonl"))
    if not parts:
        return 0
    table = ResultsTable.load(out_dir)
    by_unit: dict[UnitKey, list[dict]] = defaultdict(list)
    for part in parts:
        for row in read_results_jsonl(part):
            by_unit[unit_key(row)].append(row)
    for key, rows in by_unit.items():
        table.replace(key, rows)
    table.save(out_dir)
    shutil.rmtree(out_dir / PARTS_DIR)
    return len(by_unit)


class Evaluator:
    """One evaluation run writing to out_dir (see the module docstring)."""

    def __init__(
        self, out_dir: str | Path, options: EvalOptions, *, force: bool = False, model_name: str | None = None,
        world: EvalWorld = EvalWorld(),
    ):  # fmt: skip
        self.out_dir = Path(out_dir)
        self.options = options
        self.force = force
        self.model_name = model_name
        self.world = world
        self.plan = build_plan(options)
        self.data = EvalData(options)
        for dataset in dict.fromkeys(unit.dataset for unit in self.plan):
            self.data.dataset(dataset)
        self.report = EvalReport(ResultsTable.load(self.out_dir))
        if world.is_main:
            self.report.table.repair_mirrors(self.out_dir)
        self.own_rows = ResultsTable()  # under torchrun: this rank's rows, kept in OUT/parts/rank<r>/ until merged

    def reload(self) -> None:
        """Re-read the main table (after rank 0 merged a round)."""
        self.report.table = ResultsTable.load(self.out_dir)

    def units(self, run: str, epoch: int, checkpoint: str) -> list[tuple[object, str, UnitKey, Provenance]]:
        return [
            (unit.benchmark, unit.dataset, UnitKey(run, epoch, unit.benchmark.name, unit.dataset),
             Provenance(checkpoint, unit.options))
            for unit in self.plan
        ]  # fmt: skip

    def pending(self, run: str, epoch: int, checkpoint: str) -> list[tuple[object, str, UnitKey, Provenance]]:
        """Units the table lacks, or holds from another checkpoint file or other options; with --force, every unit
        not yet evaluated by this Evaluator (so that --follow --force re-evaluates each checkpoint once, not every
        round)."""
        done = set(self.report.evaluated)
        return [
            unit for unit in self.units(run, epoch, checkpoint)
            if (self.force and unit[2] not in done) or not self.report.table.is_current(unit[2], unit[3])
        ]  # fmt: skip

    def evaluate_target(self, target: CheckpointTarget, todo, progress: tqdm | None = None) -> None:
        if not todo:
            return
        bundle, meta = load_model_from_checkpoint(target.path, model_name=self.model_name, device=self.options.device)
        self.evaluate_bundle(bundle, target.run, target.epoch, meta.get("samples_seen"), todo=todo, progress=progress)

    def evaluate_bundle(
        self, bundle: ModelBundle, run: str, epoch: int, samples_seen: int | None, *, checkpoint: str = IN_MEMORY,
        todo=None, progress: tqdm | None = None,
    ) -> None:  # fmt: skip
        """Run the pending units of (run, epoch) on a model already in memory (the training hook calls this, with
        the identity of the checkpoint file it just wrote of that model, if any)."""
        todo = self.pending(run, epoch, checkpoint) if todo is None else todo
        context = CheckpointContext(bundle, self.options, self.data)
        for benchmark, dataset, key, provenance in todo:
            if progress is not None:
                progress.set_postfix_str(f"epoch {epoch} {benchmark.name} {dataset}")
            start = time.perf_counter()
            output = benchmark.run(context, dataset)
            seconds = time.perf_counter() - start
            self._record(key, provenance, output, samples_seen, seconds)

    def _record(self, key: UnitKey, provenance: Provenance, output, samples_seen: int | None, seconds: float) -> None:
        if output.trials is not None:
            by_suffix = output.trials if isinstance(output.trials, dict) else {"": output.trials}
            for suffix, trials in by_suffix.items():
                subj = f"{key.run}_epoch{key.epoch}" + (f"_{suffix}" if suffix else "")
                write_trials_csv(trials_csv_path(self.out_dir, key.dataset, subj), [{**t, "subj": subj} for t in trials])
        if output.items is not None:
            save_items(items_path(self.out_dir, key.benchmark, key.dataset, key.run, key.epoch), output.items)
        rows = make_rows(key, output.measurements, samples_seen=samples_seen, seconds=seconds, provenance=provenance)
        self.report.table.replace(key, rows)
        if self.world.distributed:
            self.own_rows.replace(key, rows)
            self.own_rows.save(self.out_dir / PARTS_DIR / f"rank{self.world.rank}")
        else:
            self.report.table.save(self.out_dir)
        self.report.evaluated.append(key)

    def round(self, targets: Sequence[CheckpointTarget]) -> int:
        """Evaluate this rank's share of the targets that have work (every world_size-th one), then merge on
        rank 0. Returns the number of units evaluated on all ranks."""
        # Read each checkpoint's identity once per round: the units skipped and the rows written agree on it.
        identity = {target: checkpoint_identity(target.path) for target in targets}
        pending = {target: self.pending(target.run, target.epoch, identity[target]) for target in targets}
        with_work = [target for target in targets if pending[target]]
        self.report.skipped = [
            unit[2] for target in targets for unit in self.units(target.run, target.epoch, identity[target])
            if unit not in pending[target]
        ]  # fmt: skip
        mine = with_work[self.world.rank :: self.world.world_size]
        before = len(self.report.evaluated)
        progress = tqdm(mine, desc="fastclip-eval", unit="ckpt", disable=not mine)
        for target in progress:
            self.evaluate_target(target, pending[target], progress)
        progress.close()
        new = self.report.evaluated[before:]
        if self.world.distributed:
            everyone = [key for keys in gather(self.world, new) for key in keys]
            if self.world.is_main:
                merge_parts(self.out_dir)
            barrier(self.world)
            self.own_rows = ResultsTable()
            self.reload()
            self.report.evaluated[before:] = everyone
            return len(everyone)
        return len(new)


def start_evaluator(out_dir, options, *, force=False, model_name=None, world: EvalWorld = EvalWorld()) -> Evaluator:
    """An Evaluator, after rank 0 merged the parts an interrupted distributed run left behind."""
    if world.is_main:
        merge_parts(Path(out_dir))
    barrier(world)
    return Evaluator(out_dir, options, force=force, model_name=model_name, world=world)


def follow(
    inputs: Sequence[str | Path],
    evaluator: Evaluator,
    *,
    model_name: str | None = None,
    poll_seconds: float = 30.0,
    timeout_seconds: float = math.inf,
    sleep: Callable[[float], None] = time.sleep,
) -> EvalReport:
    """Evaluate new checkpoints as training writes them, until every input run folder holds the `done` marker
    (then one last round) or no new checkpoint appeared for `timeout_seconds`."""
    last_progress = time.monotonic()
    while True:
        done = all((Path(item) / DONE_MARKER).exists() for item in inputs if not Path(item).is_file())
        done = broadcast(evaluator.world, done)
        targets = find_targets(inputs, model_name=model_name, allow_empty=True)
        evaluated = evaluator.round(targets)  # the same count on every rank
        if evaluated:
            last_progress = time.monotonic()
        timed_out = time.monotonic() - last_progress >= timeout_seconds
        if broadcast(evaluator.world, done or timed_out):  # rank 0's clock decides for all
            return evaluator.report
        sleep(poll_seconds)
