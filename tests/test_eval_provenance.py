"""Evaluation rows are keyed by what produced them: a re-written checkpoint or a changed option re-runs its units
without --force, an unchanged one is skipped; and fastclip-eval killed at any point (between units, while writing
the table, between the JSONL and CSV renames, or by SIGKILL at an arbitrary moment) loses no finished row and
duplicates none when run again."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from fastclip.eval.cli import main
from fastclip.eval.results import read_results_csv, read_results_jsonl
from fastclip.models import create_model, save_checkpoint
from tests.helpers import REPO_ROOT

RUN = "fc-run"
OPTIONS = ["--benchmarks", "zeroshot,noise_robustness", "--toyworld-size", "1", "--batch-size", "128",
           "--device", "cpu", "--resamples", "50"]  # fmt: skip
UNITS_PER_EPOCH = 2


def _save(path, *, epoch, seed):
    torch.manual_seed(seed)
    bundle = create_model("fc-tiny-vit")
    save_checkpoint(
        path, model=bundle.model, optimizer=None, epoch=epoch, name=RUN, model_name=bundle.model_name,
        model_cfg=bundle.model_cfg, samples_seen=1024 * epoch,
    )  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("logs") / RUN
    for epoch in (1, 2):
        _save(run / "checkpoints" / f"epoch_{epoch}.pt", epoch=epoch, seed=epoch)
    return run


def _evaluate(*args) -> str:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main([*map(str, args)]) == 0
    return stdout.getvalue()


def _values(rows) -> dict:
    """{(epoch, benchmark, dataset, metric, variant): value}; fails on a duplicated row."""
    values = {}
    for row in rows:
        key = (row["epoch"], row["benchmark"], row["dataset"], row["metric"], row["variant"])
        assert key not in values, f"duplicated row {key}"
        values[key] = row["value"]
    return values


@pytest.fixture(scope="module")
def uninterrupted(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    _evaluate(run_dir, "--out", out, *OPTIONS)
    return _values(read_results_jsonl(out / "results.jsonl"))


def test_a_rewritten_checkpoint_or_changed_option_re_runs_only_what_it_changes(run_dir, uninterrupted, tmp_path):
    out = tmp_path / "eval"
    _evaluate(run_dir, "--out", out, *OPTIONS)
    assert "Evaluated 0 (epoch, benchmark, dataset) unit(s)" in _evaluate(run_dir, "--out", out, *OPTIONS)

    _save(run_dir / "checkpoints" / "epoch_1.pt", epoch=1, seed=11)  # new weights under the same name
    assert "Evaluated 2 (epoch, benchmark, dataset) unit(s); skipped 2" in _evaluate(run_dir, "--out", out, *OPTIONS)
    rewritten = _values(read_results_jsonl(out / "results.jsonl"))
    assert {key: value for key, value in rewritten.items() if key[0] == 2} == {
        key: value for key, value in uninterrupted.items() if key[0] == 2
    }
    assert rewritten != uninterrupted  # epoch 1 was measured again, on the new weights

    more_resamples = [*OPTIONS[:-1], "60"]
    assert "Evaluated 4 (epoch, benchmark, dataset) unit(s); skipped 0" in _evaluate(
        run_dir, "--out", out, *more_resamples
    )
    assert len(read_results_jsonl(out / "results.jsonl")) == len(rewritten)  # replaced, never duplicated
    _save(run_dir / "checkpoints" / "epoch_1.pt", epoch=1, seed=1)  # back to the module fixture's weights


# A driver that runs fastclip-eval and dies (os._exit, no clean-up, like a kill) at one chosen point.
DRIVER = """
import os, sys
from fastclip.eval import runner
from fastclip.eval.cli import main

point, count = sys.argv[1], int(sys.argv[2])
seen = {"units": 0, "renames": 0}
if point == "after_unit":
    record = runner.Evaluator._record
    def dying_record(self, *args, **kwargs):
        record(self, *args, **kwargs)
        seen["units"] += 1
        if seen["units"] == count:
            os._exit(137)
    runner.Evaluator._record = dying_record
else:  # "before_jsonl_rename" (the temporary file is written) or "before_csv_rename" (the JSONL is renamed)
    target = "results.jsonl" if point == "before_jsonl_rename" else "results.csv"
    replace = os.replace
    def dying_replace(source, destination):
        if str(destination).endswith(target):
            seen["renames"] += 1
            if seen["renames"] == count:
                os._exit(137)
        replace(source, destination)
    os.replace = dying_replace
sys.exit(main(sys.argv[3:]))
"""


def _driver(point: str, count: int, args) -> int:
    return subprocess.run(
        [sys.executable, "-c", DRIVER, point, str(count), *map(str, args)], cwd=REPO_ROOT, capture_output=True,
        timeout=600,
    ).returncode  # fmt: skip


def _rerun_completes_the_table(args, out, uninterrupted) -> None:
    assert "Evaluated 0 (epoch, benchmark, dataset) unit(s)" not in _evaluate(*args)
    rows = read_results_jsonl(out / "results.jsonl")
    assert _values(rows) == pytest.approx(uninterrupted, rel=1e-9, nan_ok=True)
    assert _values(read_results_csv(out / "results.csv")) == pytest.approx(_values(rows), nan_ok=True)  # mirror
    assert "Evaluated 0 (epoch, benchmark, dataset) unit(s)" in _evaluate(*args)


def test_killed_at_chosen_points_and_rerun_loses_and_duplicates_nothing(run_dir, uninterrupted, tmp_path):
    out = tmp_path / "eval"
    args = [run_dir, "--out", out, *OPTIONS]
    assert _driver("before_jsonl_rename", 2, args) == 137  # dies writing the table after the 2nd unit
    assert len(read_results_jsonl(out / "results.jsonl")) > 0  # the 1st unit's rows survived
    assert _driver("before_csv_rename", 1, args) == 137  # the JSONL has the 2nd unit, the CSV does not yet
    assert _driver("after_unit", 1, args) == 137  # between units: the 3rd is written, then it dies
    _rerun_completes_the_table(args, out, uninterrupted)


def test_sigkilled_while_evaluating_and_rerun_loses_and_duplicates_nothing(run_dir, uninterrupted, tmp_path):
    out = tmp_path / "eval"
    args = [run_dir, "--out", out, *OPTIONS]
    process = subprocess.Popen([sys.executable, "-m", "fastclip.eval.cli", *map(str, args)], cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while not (out / "results.jsonl").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)  # somewhere in the 2nd unit or the table's write: wherever it is
    assert process.wait(timeout=60) == -signal.SIGKILL, "the evaluation ended before it could be killed"
    _rerun_completes_the_table(args, out, uninterrupted)
