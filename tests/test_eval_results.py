"""The results table (DESIGN.md schema): writing, reading back, atomic replacement, incremental skip; Wilson CIs;
the noise rows' formulas; figure and summary from a table."""

from __future__ import annotations

import json
import math
import os

import pytest
import scipy.stats

from fastclip.eval.benchmarks.noise_robustness import SIGMAS, noise_measurements
from fastclip.eval.figure import write_figure
from fastclip.eval.results import (
    COLUMNS, Measurement, Provenance, ResultsFileError, ResultsTable, TruncatedResultsWarning, UnitKey, make_rows,
    read_results_csv, read_results_jsonl,
)  # fmt: skip
from fastclip.eval.stats import wilson_interval
from fastclip.eval.summary import markdown_summary


PRODUCED_BY = Provenance("1234-5678", "0123456789abcdef")


def _rows(epoch: int, value: float, *, samples_seen=1000, dataset="toyworld_heldout", provenance=PRODUCED_BY):
    key = UnitKey("run-a", epoch, "zeroshot", dataset)
    measurements = [Measurement("top1", "", value, 0.1, 0.9, 256), Measurement("top5", "", 1 / 3, n=256)]
    return key, make_rows(key, measurements, samples_seen=samples_seen, seconds=0.25, provenance=provenance)


def test_rows_round_trip_through_jsonl_and_csv(tmp_path):
    table = ResultsTable()
    key, rows = _rows(2, 0.123456789012345, samples_seen=None)
    table.replace(key, rows)
    table.replace(*_rows(1, 0.5))
    table.save(tmp_path)
    header = (tmp_path / "results.csv").read_text().splitlines()[0]
    assert header == ",".join(COLUMNS)
    for read in (read_results_jsonl(tmp_path / "results.jsonl"), read_results_csv(tmp_path / "results.csv")):
        assert [(row["epoch"], row["metric"]) for row in read] == [(1, "top1"), (1, "top5"), (2, "top1"), (2, "top5")]
        epoch2 = read[2]
        assert epoch2["value"] == 0.123456789012345  # no precision lost
        assert epoch2["samples_seen"] is None and read[0]["samples_seen"] == 1000
        assert math.isnan(read[3]["ci_low"]) and read[3]["n"] == 256 and read[3]["variant"] == ""
        assert (read[1]["checkpoint"], read[1]["options"]) == ("1234-5678", "0123456789abcdef")
    assert json.loads((tmp_path / "results.jsonl").read_text().splitlines()[1])["ci_low"] is None  # NaN -> null


def test_incremental_has_and_replace(tmp_path):
    table = ResultsTable()
    key, rows = _rows(1, 0.5)
    assert not table.has(key)
    table.replace(key, rows)
    table.save(tmp_path)
    loaded = ResultsTable.load(tmp_path)
    assert loaded.has(key) and not loaded.has(UnitKey("run-a", 2, "zeroshot", "toyworld_heldout"))
    assert not loaded.has(UnitKey("run-a", 1, "zeroshot", "other_dataset"))
    loaded.replace(*_rows(1, 0.75))  # a --force re-run replaces, never duplicates
    assert [row["value"] for row in loaded.rows if row["metric"] == "top1"] == [0.75]
    assert ResultsTable.load(tmp_path / "missing").rows == []


def test_a_unit_is_current_only_for_the_checkpoint_and_options_it_was_measured_with(tmp_path):
    table = ResultsTable()
    key, rows = _rows(1, 0.5)
    table.replace(key, rows)
    table.save(tmp_path)
    loaded = ResultsTable.load(tmp_path)
    assert loaded.is_current(key, PRODUCED_BY)
    assert not loaded.is_current(key, Provenance("1234-9999", PRODUCED_BY.options))  # a re-written checkpoint
    assert not loaded.is_current(key, Provenance(PRODUCED_BY.checkpoint, "fedcba9876543210"))  # other options
    assert not loaded.is_current(UnitKey("run-a", 2, "zeroshot", "toyworld_heldout"), PRODUCED_BY)


def test_rows_written_before_provenance_existed_read_back_as_not_current(tmp_path):
    key, rows = _rows(1, 0.5)
    old = [{column: value for column, value in row.items() if column not in ("checkpoint", "options")} for row in rows]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in old))
    loaded = ResultsTable.load(tmp_path)
    assert loaded.has(key) and not loaded.is_current(key, PRODUCED_BY)
    assert loaded.rows[0]["checkpoint"] is None and loaded.rows[0]["value"] == 0.5


def test_a_cut_off_last_line_drops_its_unit_and_keeps_the_others(tmp_path):
    table = ResultsTable()
    table.replace(*_rows(1, 0.5))
    key, rows = _rows(2, 0.75)
    table.replace(key, rows)
    table.save(tmp_path)
    text = (tmp_path / "results.jsonl").read_text()
    (tmp_path / "results.jsonl").write_text(text[: len(text) - 40])  # mid-way through epoch 2's second row
    with pytest.warns(TruncatedResultsWarning, match=r"line 4 is cut off"):
        loaded = ResultsTable.load(tmp_path)
    assert [row["epoch"] for row in loaded.rows] == [1, 1]  # epoch 2's first row went with it: re-measured whole
    assert not loaded.has(key)


def test_mirrors_left_behind_by_a_crash_are_rewritten(tmp_path):
    table = ResultsTable()
    table.replace(*_rows(1, 0.5))
    table.save(tmp_path)
    csv_before = (tmp_path / "results.csv").read_text()
    table.replace(*_rows(2, 0.75))
    table.save(tmp_path)
    (tmp_path / "results.csv").write_text(csv_before)  # as if killed between the two renames
    jsonl_time = (tmp_path / "results.jsonl").stat().st_mtime_ns
    os.utime(tmp_path / "results.csv", ns=(jsonl_time - 10**9, jsonl_time - 10**9))
    loaded = ResultsTable.load(tmp_path)
    assert loaded.repair_mirrors(tmp_path)
    assert [row["epoch"] for row in read_results_csv(tmp_path / "results.csv")] == [1, 1, 2, 2]
    assert not loaded.repair_mirrors(tmp_path)


def test_save_leaves_no_temporary_files(tmp_path):
    table = ResultsTable()
    table.replace(*_rows(1, 0.5))
    table.save(tmp_path)
    table.save(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["results.csv", "results.jsonl"]


def test_damaged_results_file_is_named(tmp_path):
    (tmp_path / "results.jsonl").write_text('{"run": "x"}\n{not json\n')
    with pytest.raises(ResultsFileError, match=r"results.jsonl, line 1: missing columns"):
        ResultsTable.load(tmp_path)
    (tmp_path / "results.jsonl").write_text("{not json\n")
    with pytest.raises(ResultsFileError, match=r"results.jsonl, line 1: not JSON"):
        ResultsTable.load(tmp_path)


@pytest.mark.parametrize("successes,trials", [(0, 10), (3, 10), (10, 10), (37, 120), (1, 1)])
def test_wilson_interval_matches_scipy(successes, trials):
    expected = scipy.stats.binomtest(successes, trials).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(successes, trials)
    assert low == pytest.approx(expected.low, abs=1e-12) and high == pytest.approx(expected.high, abs=1e-12)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_noise_rows_accuracy_and_relative_drop():
    correct = [200, 180, 150, 100, 40, 0]
    measurements = {(m.metric, m.variant): m for m in noise_measurements(correct, 256)}
    assert measurements[("accuracy", "sigma=0")].value == 200 / 256
    assert measurements[("accuracy", "sigma=0.26")].value == 0.0
    drops = [(200 - c) / 200 for c in correct[1:]]
    for sigma, drop in zip(SIGMAS[1:], drops):
        assert measurements[("relative_drop", f"sigma={sigma:g}")].value == pytest.approx(drop)
    assert measurements[("relative_drop", "mean")].value == pytest.approx(sum(drops) / 5)
    assert ("relative_drop", "sigma=0") not in measurements
    # Nothing to lose: the drop is undefined, not 0 or infinite.
    no_accuracy = {(m.metric, m.variant): m for m in noise_measurements([0] * 6, 10)}
    assert math.isnan(no_accuracy[("relative_drop", "mean")].value)


def test_figure_and_summary_from_table(tmp_path):
    table = ResultsTable()
    for epoch in (1, 2, 3):
        table.replace(*_rows(epoch, 0.1 * epoch))
    figure = write_figure(table.rows, tmp_path / "figure.png")
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 5000
    summary = markdown_summary(table.rows, tmp_path, evaluated=3)
    assert "| zeroshot top1 (toyworld_heldout) |" in summary
    assert "| run-a | 3 | 1000 | 0.300 |" in summary
    assert write_figure([], tmp_path / "empty.png").stat().st_size > 0


def test_parts_of_an_interrupted_distributed_run_are_merged(tmp_path):
    from fastclip.eval.runner import merge_parts

    main_table = ResultsTable()
    main_table.replace(*_rows(1, 0.5))
    main_table.save(tmp_path)
    for rank, epoch in ((0, 2), (1, 3)):
        part = ResultsTable()
        part.replace(*_rows(epoch, 0.1 * epoch))
        part.save(tmp_path / "parts" / f"rank{rank}")
    assert merge_parts(tmp_path) == 2
    rows = read_results_jsonl(tmp_path / "results.jsonl")
    assert sorted({row["epoch"] for row in rows}) == [1, 2, 3] and not (tmp_path / "parts").exists()
    assert merge_parts(tmp_path) == 0


def test_parquet_mirror_when_pyarrow_is_importable(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    table = ResultsTable()
    table.replace(*_rows(1, 0.5, samples_seen=None))
    table.save(tmp_path)
    read = pq.read_table(tmp_path / "results.parquet").to_pylist()
    assert [row["metric"] for row in read] == ["top1", "top5"] and read[0]["samples_seen"] is None
