"""The toy world's phase diagram (fastclip.eval.phase_diagram) from a synthetic sweep folder."""

from __future__ import annotations

import contextlib
import io
import json
import math

from fastclip.eval.phase_diagram import load_sweep, main
from fastclip.eval.results import ResultsTable

IQA_VARIANT = "layer=embedding,distance=normalized_euclidean"


def _run(folder, name, predictivity, shape_bias, iqa):
    (folder / name / "eval").mkdir(parents=True)
    (folder / name / "params.json").write_text(json.dumps({"texture_predictivity": predictivity, "seed": 0}))
    table = ResultsTable()
    for epoch, (shape, alignment) in enumerate(zip(shape_bias, iqa), start=1):
        for benchmark, dataset, metric, variant, value in (
            ("shape_bias", "toyworld_cue_conflict", "shape_bias", "pooled", shape),
            ("iqa", "toyworld_iqa", "spearman", IQA_VARIANT, alignment),
        ):
            table.rows.append({"run": name, "epoch": epoch, "samples_seen": epoch, "benchmark": benchmark,
                               "dataset": dataset, "metric": metric, "variant": variant, "value": value,
                               "ci_low": math.nan, "ci_high": math.nan, "n": 1, "seconds": 0.0})  # fmt: skip
    table.save(folder / name / "eval")


def test_phase_diagram_draws_and_tables_every_setting(tmp_path):
    _run(tmp_path, "texture-1.0-seed-0", 1.0, [0.2, 0.1, 0.05], [0.5, 0.6, 0.7])
    _run(tmp_path, "texture-1.0-seed-1", 1.0, [0.3, 0.1, 0.1], [0.5, 0.7, 0.6])
    _run(tmp_path, "texture-0.4-seed-0", 0.4, [0.2, 0.5, 0.7], [0.7, 0.5, 0.4])
    (tmp_path / "not-a-run").mkdir()
    runs = load_sweep(tmp_path)
    assert [(r.predictivity, r.name) for r in runs] == [
        (1.0, "texture-1.0-seed-0"), (1.0, "texture-1.0-seed-1"), (0.4, "texture-0.4-seed-0")]
    assert runs[0].texture_bias == {1: 0.8, 2: 0.9, 3: 0.95} and runs[1].peak_epoch() == 2
    out = tmp_path / "figure" / "phase.png"
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        assert main([str(tmp_path), "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    table = out.with_suffix(".md").read_text()
    assert "| 1 | texture-1.0-seed-0 | 0.800 | 0.950 | 0.150 | 3 |" in table
    assert "| 1 | 2 | 0.750, 0.900, 0.925 | 0.175 | 2 |" in table  # mean IQA 0.5, 0.65, 0.65: the earlier tie
    assert "| 0.4 | 1 | 0.800, 0.500, 0.300 | -0.500 | 1 |" in table
    assert "wrote" in stdout.getvalue()


def test_an_empty_sweep_is_a_one_line_error(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"phase_diagram: error: {tmp_path}: no evaluated runs")
