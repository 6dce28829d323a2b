"""fastclip-eval end to end on random-init fc-tiny-vit checkpoints made here: the files, columns and epochs; shape
bias recomputed from the trials CSVs on the 160 real stimuli; noise rows; incremental re-runs; input errors."""

from __future__ import annotations

import contextlib
import io
import math
import shutil

import pytest
import torch

from fastclip.eval.benchmarks.shape_bias import shape_bias_from_trials_csv
from fastclip.eval.cli import main
from fastclip.eval.results import COLUMNS, read_results_csv, read_results_jsonl
from fastclip.models import create_model, save_checkpoint
from tests.conftest import shared_data

RUN = "fc-run"
FAST = ["--toyworld-size", "2", "--batch-size", "128", "--device", "cpu"]
TINY = ["--toyworld-size", "1", "--batch-size", "128", "--device", "cpu"]  # for runs whose values are not checked


def _save(path, *, epoch, seed, **overrides):
    torch.manual_seed(seed)
    bundle = create_model("fc-tiny-vit")
    save_checkpoint(
        path, model=bundle.model, optimizer=None, epoch=epoch, name=RUN, model_name=bundle.model_name,
        model_cfg=bundle.model_cfg, samples_seen=1024 * epoch,
    )  # fmt: skip
    return bundle


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("logs") / RUN
    for epoch in (1, 2):
        _save(run / "checkpoints" / f"epoch_{epoch}.pt", epoch=epoch, seed=epoch)
    return run


@pytest.fixture(scope="module")
def evaluated(run_dir):
    """One full evaluation of both epochs, shared by the checks below (main's exit status and stdout kept)."""
    real = shared_data("texture-vs-shape", "cue-conflict-subset")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main([str(run_dir), "--cue-conflict", str(real), *FAST])
    return status, stdout.getvalue(), run_dir / "eval"


def _same(rows_a, rows_b) -> bool:
    """Row lists equal, NaN matching NaN."""
    def key(rows):
        return [{k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in rows]

    return key(rows_a) == key(rows_b)


def _row(rows, **match):
    found = [row for row in rows if all(row[key] == value for key, value in match.items())]
    assert len(found) == 1, match
    return found[0]


def _value(rows, **match):
    return _row(rows, **match)["value"]


def test_outputs_columns_and_epochs(evaluated):
    status, stdout, out = evaluated
    assert status == 0
    rows = read_results_csv(out / "results.csv")
    assert (out / "results.csv").read_text().splitlines()[0] == ",".join(COLUMNS)
    assert _same(rows, read_results_jsonl(out / "results.jsonl"))
    assert {row["epoch"] for row in rows} == {1, 2}
    assert {row["run"] for row in rows} == {RUN}
    assert {(row["benchmark"], row["dataset"]) for row in rows} == {
        ("zeroshot", "toyworld_heldout"), ("noise_robustness", "toyworld_heldout"),
        ("shape_bias", "toyworld_cue_conflict"), ("shape_bias", "cue-conflict-subset"),
    }  # fmt: skip
    assert {row["samples_seen"] for row in rows if row["epoch"] == 2} == {2048}
    assert all(row["seconds"] > 0 for row in rows)
    top1, top5 = (_value(rows, epoch=1, benchmark="zeroshot", metric=metric) for metric in ("top1", "top5"))
    assert top1 <= top5
    assert {row["n"] for row in rows if row["benchmark"] == "zeroshot"} == {32}  # 2 per category x 16
    figure = out / "figure.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| run | epoch |" in stdout and "shape_bias pooled (cue-conflict-subset)" in stdout


def test_shape_bias_recomputed_from_trials_csv_equals_results(evaluated):
    _, _, out = evaluated
    rows = read_results_csv(out / "results.csv")
    for dataset, images in (("cue-conflict-subset", 160), ("toyworld_cue_conflict", 240)):
        for epoch in (1, 2):
            trials = out / "trials" / dataset / f"{RUN}_epoch{epoch}.csv"
            lines = trials.read_text().splitlines()
            assert lines[0] == "subj,session,trial,rt,object_response,category,condition,imagename"
            assert len(lines) == 1 + images and lines[1].startswith(f"{RUN}_epoch{epoch},1,1,NaN,")
            report = shape_bias_from_trials_csv(trials)
            table = _value(rows, epoch=epoch, dataset=dataset, metric="shape_bias", variant="pooled")
            assert table == report.pooled.shape_bias or (math.isnan(table) and math.isnan(report.pooled.shape_bias))
            for category, score in report.per_category.items():
                value = _value(rows, epoch=epoch, dataset=dataset, variant=f"category={category}")
                assert value == score.shape_bias or (math.isnan(value) and math.isnan(score.shape_bias))
    real = shape_bias_from_trials_csv(out / "trials" / "cue-conflict-subset" / f"{RUN}_epoch1.csv").pooled
    assert real.trials == 160  # the 10 shape == texture images are in the trials, left out by the rule
    assert real.shape_decisions + real.texture_decisions > 0  # the comparison above is between numbers, not NaNs
    pooled = _row(rows, epoch=1, dataset="cue-conflict-subset", variant="pooled")
    assert pooled["n"] == real.shape_decisions + real.texture_decisions


def test_noise_rows_sigma0_equals_clean_accuracy_and_drop_formula(evaluated):
    _, _, out = evaluated
    rows = read_results_csv(out / "results.csv")
    for epoch in (1, 2):
        noise = {row["variant"]: row["value"] for row in rows if row["epoch"] == epoch and row["metric"] == "accuracy"}
        assert list(noise) == ["sigma=0", "sigma=0.04", "sigma=0.08", "sigma=0.12", "sigma=0.18", "sigma=0.26"]
        clean = _value(rows, epoch=epoch, benchmark="zeroshot", metric="top1")
        assert noise["sigma=0"] == clean
        drops = {
            row["variant"]: row["value"] for row in rows if row["epoch"] == epoch and row["metric"] == "relative_drop"
        }
        for variant in list(noise)[1:]:
            assert drops[variant] == pytest.approx((clean - noise[variant]) / clean)
        assert drops["mean"] == pytest.approx(sum(drops[v] for v in list(noise)[1:]) / 5)


def test_rerun_skips_and_force_reevaluates(evaluated, tmp_path, capsys):
    _, _, out = evaluated
    run_dir = out.parent
    before = (out / "results.jsonl").read_text()
    assert main([str(run_dir), "--benchmarks", "zeroshot,noise_robustness", *FAST]) == 0
    assert "Evaluated 0 (epoch, benchmark, dataset) unit(s); skipped 4" in capsys.readouterr().out
    assert (out / "results.jsonl").read_text() == before

    # A new cue-conflict folder is a new dataset: only its units run, written to a separate --out copy.
    copy = tmp_path / "eval"
    shutil.copytree(out, copy)
    real = shared_data("texture-vs-shape", "cue-conflict-subset")
    mini = tmp_path / "mini-set"
    for category in ("cat", "dog"):
        (mini / category).mkdir(parents=True)
        for image in sorted((real / category).iterdir())[:3]:
            shutil.copy(image, mini / category / image.name)
    args = [str(run_dir), "--out", str(copy), "--benchmarks", "shape_bias", "--cue-conflict", str(real), *FAST]
    assert main([*args, "--cue-conflict", str(mini)]) == 0
    assert "Evaluated 2 (epoch, benchmark, dataset) unit(s); skipped 4" in capsys.readouterr().out
    rows = read_results_jsonl(copy / "results.jsonl")
    assert {row["epoch"] for row in rows if row["dataset"] == "mini-set"} == {1, 2}
    assert (copy / "trials" / "mini-set" / f"{RUN}_epoch2.csv").exists()

    epoch_1 = run_dir / "checkpoints" / "epoch_1.pt"  # a file inside the run: same run name, one model to load
    assert main([str(epoch_1), "--out", str(copy), "--force", "--benchmarks", "zeroshot", *TINY]) == 0
    assert "Evaluated 1 (epoch, benchmark, dataset) unit(s); skipped 0" in capsys.readouterr().out
    assert len(read_results_jsonl(copy / "results.jsonl")) == len(rows)  # replaced, not duplicated


def test_open_clip_and_bare_checkpoints_need_model(tmp_path, capsys):
    bundle = _save(tmp_path / "fastclip.pt", epoch=1, seed=3)
    bare = tmp_path / "weights" / "epoch_5.pt"
    bare.parent.mkdir()
    torch.save(bundle.model.state_dict(), bare)
    assert main([str(bare), "--benchmarks", "zeroshot", *TINY]) == 2
    assert "pass --model" in capsys.readouterr().err
    assert main([str(bare), "--model", "fc-tiny-vit", "--benchmarks", "zeroshot", *TINY]) == 0
    rows = read_results_jsonl(tmp_path / "weights" / "eval" / "results.jsonl")
    assert {(row["run"], row["epoch"], row["samples_seen"]) for row in rows} == {("weights", 5, None)}

    # open_clip's layout: epoch, name, state_dict, optimizer; no model name stored.
    open_clip_file = tmp_path / "oc" / "checkpoints" / "last.pt"
    open_clip_file.parent.mkdir(parents=True)
    torch.save({"epoch": 7, "name": "oc", "state_dict": bundle.model.state_dict(), "optimizer": {}}, open_clip_file)
    assert main([str(open_clip_file), "--model", "fc-tiny-vit", "--benchmarks", "zeroshot", *TINY]) == 0
    rows = read_results_jsonl(tmp_path / "oc" / "eval" / "results.jsonl")
    assert {(row["run"], row["epoch"]) for row in rows} == {("oc", 7)}


def test_input_errors(tmp_path, capsys):
    empty_run = tmp_path / "empty-run"
    empty_run.mkdir()
    assert main([str(empty_run), *TINY]) == 2
    err = capsys.readouterr().err
    assert str(empty_run) in err and "checkpoints/epoch_N.pt" in err

    assert main([str(tmp_path / "absent"), *TINY]) == 2
    assert "no such run folder or checkpoint file" in capsys.readouterr().err

    run = tmp_path / "run"
    _save(run / "checkpoints" / "epoch_1.pt", epoch=1, seed=0)
    empty_set = tmp_path / "cue-empty"
    empty_set.mkdir()
    assert main([str(run), "--cue-conflict", str(empty_set), *TINY]) == 2
    err = capsys.readouterr().err
    assert str(empty_set) in err and "no cue-conflict images found" in err
    assert "airplane/" in err and "<shape><i>-<texture><j>.png" in err
    assert not (run / "eval" / "results.jsonl").exists()  # checked before any checkpoint was evaluated

    assert main([str(run), "--benchmarks", "zeroshot,nope", *TINY]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(run), "--batch-size", "0"])
    assert "--batch-size must be >= 1" in capsys.readouterr().err


def test_results_survive_a_failing_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    _save(run / "checkpoints" / "epoch_1.pt", epoch=1, seed=0)
    (run / "checkpoints" / "epoch_2.pt").write_bytes(b"PK\x03\x04 truncated")
    assert main([str(run), "--benchmarks", "zeroshot", *TINY]) == 2
    assert "epoch_2.pt" in capsys.readouterr().err
    rows = read_results_jsonl(run / "eval" / "results.jsonl")
    assert {row["epoch"] for row in rows} == {1}  # written before epoch 2 failed
    # no temporary file left behind (items/ holds the per-item scores the findings bootstrap over)
    assert sorted(path.name for path in (run / "eval").iterdir()) == ["items", "results.csv", "results.jsonl"]
    assert not [path for path in (run / "eval" / "items").rglob("*") if ".tmp" in path.name]


def test_make_stimuli_subcommand_is_dispatched(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["make-stimuli", "--help"])
    assert exited.value.code == 0
    assert "make-stimuli" in capsys.readouterr().out
