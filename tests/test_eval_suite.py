"""Suite files: the built-in suites parse, paths resolve against the data root, and every mistake names the file and
the key before any checkpoint is read."""

from __future__ import annotations

import pytest
import torch

from fastclip.eval.context import options_for_suite
from fastclip.eval.errors import InputError
from fastclip.eval.suite import SuiteError, builtin_suite_path, default_suite, load_suite, with_cue_conflict


def _suite(tmp_path, text: str, name: str = "s.toml"):
    path = tmp_path / name
    path.write_text(text)
    return load_suite(str(path))


def test_builtin_suites_are_package_data_and_parse(tmp_path):
    paper = load_suite("paper", data_root=tmp_path)
    assert builtin_suite_path("paper").is_file()
    assert [b.name for b in paper.benchmarks] == ["zeroshot", "noise_robustness", "shape_bias", "iqa", "two_afc", "saliency"]
    assert paper.datasets["tid2013"].path == tmp_path / "tid2013"
    assert paper.benchmark("noise_robustness").settings["sigmas"] == (0.08, 0.12, 0.18, 0.26, 0.38)
    assert paper.options["templates"] == "imagenet"
    toyworld = load_suite("toyworld")
    assert {spec.type for spec in toyworld.datasets.values()} == {
        "toyworld", "toyworld_cue_conflict", "toyworld_iqa", "toyworld_2afc", "toyworld_saliency",
    }  # fmt: skip
    assert all(spec.path is None for spec in toyworld.datasets.values())
    options = options_for_suite(paper, torch.device("cpu"), resamples=50)
    assert (options.resamples, options.templates, options.batch_size) == (50, "imagenet", 64)
    assert options_for_suite(paper, torch.device("cuda")).batch_size == 256  # the default batch follows the device
    assert options_for_suite(paper, torch.device("cpu"), batch_size=8).batch_size == 8


def test_paths_resolve_against_the_data_root(tmp_path):
    text = """
[suite]
data_root = "data"
[datasets.cc]
type = "cue_conflict"
path = "stimuli"
human_raw = "/abs/raw"
[benchmarks.shape_bias]
datasets = ["cc"]
"""
    suite = _suite(tmp_path, text)
    assert suite.name == "s" and suite.datasets["cc"].path == tmp_path / "data" / "stimuli"
    assert str(suite.datasets["cc"].settings["human_raw"]) == "/abs/raw"
    assert load_suite(str(tmp_path / "s.toml"), data_root=tmp_path / "x").datasets["cc"].path == tmp_path / "x" / "stimuli"
    trimmed, absent = suite.without_missing_paths()
    assert absent == ["cc"] and trimmed.benchmarks == ()


@pytest.mark.parametrize(
    "text,message",
    [
        ("[datasets.a]\ntype = 'toyworld'\n", "runs no benchmark"),
        ("[datasets.a]\ntype = 'nope'\n", "unknown dataset type 'nope'"),
        ("[datasets.a]\npath = 'x'\n", "missing key 'type'"),
        ("[datasets.a]\ntype = 'tid2013'\n", "needs a 'path'"),
        ("[datasets.a]\ntype = 'toyworld'\npath = 'x'\n", "takes no 'path'"),
        ("[datasets.a]\ntype = 'toyworld'\nsize = 0\n[benchmarks.zeroshot]\ndatasets=['a']\n", "size must be a positive"),
        ("[datasets.a]\ntype = 'toyworld'\ncolour = 1\n", r"unknown setting\(s\) \['colour'\]"),
        ("[datasets.a]\ntype = 'toyworld'\n[benchmarks.iqa]\ndatasets = ['a']\n", "iqa evaluates iqa datasets"),
        ("[datasets.a]\ntype = 'toyworld'\n[benchmarks.zeroshot]\ndatasets = ['b']\n", "dataset 'b' is not defined"),
        ("[datasets.a]\ntype = 'toyworld'\n[benchmarks.zeroshot]\ndatasets = ['a']\nk = 1\n", "unknown setting"),
        ("[datasets.a]\ntype = 'toyworld'\n[benchmarks.nope]\ndatasets = ['a']\n", "unknown benchmark 'nope'"),
        ("[datasets.a]\ntype = 'iqa_csv'\npath = 'x.csv'\n", "needs higher_is_better"),
        ("[options]\nfoo = 1\n", r"\[options\]: unknown key"),
        ("[datasets.a]\ntype = 'toyworld'\n[benchmarks.noise_robustness]\ndatasets = ['a']\nsigmas = 'x'\n", "sigmas must be one of"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_suite_errors_name_the_file_and_key(tmp_path, text, message):
    with pytest.raises(InputError, match=message) as caught:
        _suite(tmp_path, text)
    assert "s.toml" in str(caught.value)


def test_cue_conflict_folders_join_the_shape_bias_benchmark(tmp_path):
    suite = with_cue_conflict(default_suite(), [tmp_path / "set-a", tmp_path / "deeper" / "set-b"])
    assert suite.benchmark("shape_bias").datasets == ("toyworld_cue_conflict", "set-a", "set-b")
    with pytest.raises(SuiteError, match="already used"):
        with_cue_conflict(default_suite(), [tmp_path / "a" / "x", tmp_path / "b" / "x"])
    with pytest.raises(SuiteError, match="leaves out"):
        with_cue_conflict(default_suite().only(["zeroshot"]), [tmp_path / "x"])
    with pytest.raises(SuiteError, match="does not run"):
        default_suite().only(["iqa"])
    with pytest.raises(SuiteError, match="no such file"):
        load_suite(str(tmp_path / "missing.toml"))
