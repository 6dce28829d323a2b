"""benchmarks/report.py: RESULTS.md's tables from stored pytest-benchmark JSON, other sections left alone."""

from __future__ import annotations

import importlib.util
import json

from tests.conftest import REPO_ROOT

spec = importlib.util.spec_from_file_location("bench_report", REPO_ROOT / "benchmarks" / "report.py")
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def _bench(name, group, provider, median, timing=(1, 5), baseline=None):
    extra = {"provider": provider, "timing": {"warmup": timing[0], "rounds": timing[1]}, "load_average_before": [2.0]}
    if baseline is not None:
        extra["baseline"] = {"median": baseline, "min": baseline, "max": baseline, "rounds": timing[1]}
    stats = {"median": median, "min": median * 0.9, "max": median * 1.1, "rounds": timing[1]}
    return {"name": name, "fullname": f"benchmarks/x.py::{name}", "group": group, "stats": stats, "extra_info": extra}


def _run(path, benchmarks, when="2026-12-05T10:00:00"):
    run = {"datetime": when, "commit_info": {"id": "abcdef123456", "dirty": False}, "machine_info": {},
           "benchmarks": benchmarks}  # fmt: skip
    path.write_text(json.dumps(run))
    return path


def test_tables_come_from_the_stored_medians_and_other_sections_stay(tmp_path):
    stored = _run(tmp_path / "run.json", [
        _bench("test_a[fastclip]", "g", "fastclip", 0.5), _bench("test_a[scipy_axis]", "g", "scipy_axis", 2.0),
        _bench("test_a[scipy_rows]", "g", "scipy_rows", 3.0), _bench("test_a[reference]", "g", "reference", 1.0),
        _bench("test_pair", "p", "fastclip vs numpy", 1.0, baseline=6.0),
        _bench("test_b[fastclip]", "h", "fastclip", 1.0, timing=(1, 3)), _bench("test_b[scipy]", "h", "scipy", 2.0),
    ])  # fmt: skip
    markdown = tmp_path / "RESULTS.md"
    markdown.write_text("# R\n\nprose\n\n<!-- audit:begin -->\nkept\n<!-- audit:end -->\n\n"
                        f"{report.BEGIN}\nold table 99x\n{report.END}\n\ntail\n")  # fmt: skip
    assert report.main([str(stored), "--results", str(markdown)]) == 0
    text = markdown.read_text()
    assert "old table 99x" not in text and "<!-- audit:begin -->\nkept\n<!-- audit:end -->" in text
    assert text.startswith("# R\n\nprose\n") and text.endswith("\n\ntail\n")
    assert "| g | 500.0 ms | scipy_axis 2.00 s | **4.00x** |" in text  # the best baseline, not fastclip's reference
    assert "**6.00x**" in text  # the pair
    assert "none: providers timed differently" in text  # group h


def test_newest_record_wins_and_bad_input_is_named(tmp_path, capsys):
    old = _run(tmp_path / "old.json", [_bench("t[fastclip]", "g", "fastclip", 1.0), _bench("t[scipy]", "g", "scipy", 2.0)],
               when="2026-12-01T00:00:00")  # fmt: skip
    new = _run(tmp_path / "new.json", [_bench("t[fastclip]", "g", "fastclip", 0.5)])
    records = report.load_runs([old, new])
    assert records["benchmarks/x.py::t[fastclip]"]["stats"]["median"] == 0.5
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert report.main([str(broken), "--results", str(tmp_path / "R.md")]) == 1
    assert "broken.json: not a pytest-benchmark JSON file" in capsys.readouterr().err
