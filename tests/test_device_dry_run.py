"""`bash benchmarks/device/run.sh --dry-run` in an environment holding only what the lent GPU machine has (torch,
Triton, numpy, scipy, pytest, pytest-benchmark, pybind11 and what they need: no open_clip, PIL, tqdm, torchvision,
DALI), proving here what the machine will run: the environment and import steps, the build's configuration, the
collection of every needs_cuda test, and the imports of every timing step, each CUDA step then skipped."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess

import pytest
import torch

from tests.helpers import REPO_ROOT

DEVICE = REPO_ROOT / "benchmarks" / "device"
STEPS = ["environment", "build", "import", "cuda_tests", "contrastive_loss", "metrics", "stimuli", "data"]
HOST_STEPS = {"environment", "build", "import"}


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("bare_env", DEVICE / "bare_env.py")
    bare_env = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bare_env)
    return bare_env.make_bare_env(tmp_path_factory.mktemp("device") / "bare")


def test_the_bare_environment_lacks_what_the_machine_lacks(bare_python):
    code = ("import importlib.util as u; print(' '.join(n for n in ['torch', 'triton', 'scipy', 'pytest', 'PIL', "
            "'tqdm', 'open_clip', 'torchvision', 'nvidia.dali'] if u.find_spec(n)))")
    result = subprocess.run([str(bare_python), "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["torch", "triton", "scipy", "pytest"], result.stderr


@pytest.mark.slow
def test_the_dry_run_runs_every_step_and_skips_the_cuda_ones(bare_python, tmp_path):
    env = {**os.environ, "PYTHON": str(bare_python), "OUT": str(tmp_path)}
    env.pop("PYTHONPATH", None)
    env.pop("FASTCLIP_BACKEND", None)
    result = subprocess.run(["bash", str(DEVICE / "run.sh"), "--dry-run"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]

    report = json.loads((tmp_path / "device.json").read_text())
    steps = {step["name"]: step for step in report["steps"]}
    assert list(steps) == STEPS
    assert report["dry_run"] is True and report["summary"]["failed"] == 0
    for name in HOST_STEPS:
        assert steps[name]["status"] == "passed", steps[name]
    no_device = "no device" if not torch.cuda.is_available() else "dry run"
    for name in set(STEPS) - HOST_STEPS:
        assert steps[name]["status"] == "skipped" and steps[name]["reason"].startswith(no_device), steps[name]
        assert steps[name]["returncode"] == 0  # its probe (imports, test collection) ran and passed
    collected = next(row["value"] for row in steps["cuda_tests"]["figures"] if row["name"] == "needs_cuda tests collected")
    assert collected >= 20
    assert steps["build"]["facts"]["setup"]  # what setup.py decided: toolkit and archs, or why CPU only
    assert report["environment"]["torch"] == torch.__version__

    markdown = (tmp_path / "device.md").read_text()
    assert markdown.startswith("### Device run (DRY RUN")
    for name in STEPS:
        assert f"| {name} | {steps[name]['status']} |" in markdown
    assert (tmp_path / "device.log").stat().st_size > 0
