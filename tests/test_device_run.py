"""benchmarks/device/run.py's orchestration with stand-in steps: every step runs whatever the ones before it did (a
failure, a hang stopped at its budget, a step that skips itself), figures reach device.json and device.md, and a
CUDA step without a GPU runs only its probe and is reported skipped."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
import threading
import time

import pytest

from tests.helpers import REPO_ROOT


@pytest.fixture
def device_run(monkeypatch):
    spec = importlib.util.spec_from_file_location("device_run", REPO_ROOT / "benchmarks" / "device" / "run.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "device_run", module)
    spec.loader.exec_module(module)
    monkeypatch.delenv("FASTCLIP_DEVICE_DRY_RUN", raising=False)

    def python(code):
        return lambda run: [run.python, "-c", code]

    write_figures = (
        "import json, os; json.dump({{'rows': {rows}, 'facts': {facts}}}, open(os.environ['FASTCLIP_DEVICE_FIGURES'], 'w'))"
    )
    steps = [
        module.Step("environment", 60, 0, False, python(write_figures.format(
            rows=[], facts={"cuda_available": False, "python": "3.x", "torch": "9.9"})), None),
        module.Step("broken", 60, 0, False, python("print('half done'); raise SystemExit(3)")),
        module.Step("hangs", 2, 0, False, python("import time; print('started', flush=True); time.sleep(120)")),
        module.Step("skips_itself", 60, 0, False, python("print('skipped: needs a thing'); raise SystemExit(77)")),
        module.Step("measures", 60, 0, False, python(write_figures.format(
            rows=[{"name": "kernel x", "value": 1.5, "unit": "ms", "goal": "<= 2 ms", "meets": True, "check": "ok"}],
            facts={}))),
        module.Step("gpu_timing", 60, 0, True, python("raise SystemExit('would need a GPU')"), python("pass")),
        module.Step("gpu_broken_imports", 60, 0, True, python("pass"), python("import no_such_module_here")),
    ]
    monkeypatch.setattr(module, "STEPS", steps)
    monkeypatch.setattr(module, "STEP_NAMES", [step.name for step in steps])
    return module


def test_every_step_runs_and_is_recorded_whatever_came_before(device_run, tmp_path):
    start = time.monotonic()
    code = device_run.main(["--out", str(tmp_path), "--python", sys.executable])
    assert time.monotonic() - start < 60  # the hanging step was stopped at its 2 s budget
    assert code == 1
    report = json.loads((tmp_path / "device.json").read_text())
    steps = {step["name"]: step for step in report["steps"]}
    assert list(steps) == [step.name for step in device_run.STEPS]
    assert (steps["broken"]["status"], steps["broken"]["reason"]) == ("failed", "exit code 3: half done")
    assert "half done" in steps["broken"]["log_tail"]
    assert steps["hangs"]["status"] == "failed"
    assert steps["hangs"]["reason"] == "stopped at its time budget of 2 s" and "started" in steps["hangs"]["log_tail"]
    assert (steps["skips_itself"]["status"], steps["skips_itself"]["reason"]) == ("skipped", "needs a thing")
    assert steps["measures"]["status"] == "passed" and steps["measures"]["figures"][0]["value"] == 1.5
    assert (steps["gpu_timing"]["status"], steps["gpu_timing"]["reason"]) == ("skipped", "no device (imports checked)")
    assert steps["gpu_broken_imports"]["status"] == "failed"
    assert "no_such_module_here" in steps["gpu_broken_imports"]["log_tail"]
    assert report["summary"] == {"passed": 2, "failed": 3, "skipped": 2}
    assert report["environment"]["torch"] == "9.9"

    markdown = (tmp_path / "device.md").read_text()
    assert "| measures | passed |" in markdown and "goals met 1/1; checks ok 1/1" in markdown
    assert "| kernel x | 1.5 | ms | <= 2 ms | yes | ok |" in markdown
    assert "| broken | failed |" in markdown and "exit code 3: half done" in markdown
    assert "half done" in (tmp_path / "device.log").read_text()


def test_only_runs_the_named_steps_and_lists_the_rest(device_run, tmp_path):
    assert device_run.main(["--out", str(tmp_path), "--python", sys.executable, "--only", "measures"]) == 0
    steps = {step["name"]: step for step in json.loads((tmp_path / "device.json").read_text())["steps"]}
    assert steps["environment"]["status"] == "passed"  # always: it says what the machine is
    assert steps["measures"]["status"] == "passed"
    assert {steps[name]["reason"] for name in ("broken", "hangs", "gpu_timing")} == {"not selected (--only)"}


def test_bad_options_name_the_steps(device_run, capsys):
    with pytest.raises(SystemExit):
        device_run.main(["--only", "nonsense"])
    assert "the steps are environment, broken" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        device_run.main(["--budget", "measures=soon"])
    assert "expected STEP=SECONDS" in capsys.readouterr().err


def test_a_stopped_run_stops_its_step_and_still_writes_every_step(device_run, tmp_path):
    """The caller's own time limit (SIGTERM) ends the running step's process group and leaves a whole report."""
    stopper = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGTERM))
    stopper.start()
    try:
        start = time.monotonic()
        code = device_run.main(["--out", str(tmp_path), "--python", sys.executable, "--budget", "hangs=120"])
    finally:
        stopper.cancel()
    assert code == 143 and time.monotonic() - start < 60
    steps = {step["name"]: step for step in json.loads((tmp_path / "device.json").read_text())["steps"]}
    assert list(steps) == [step.name for step in device_run.STEPS]
    assert steps["hangs"]["status"] == "failed" and steps["hangs"]["reason"].startswith("interrupted")
    assert "started" in steps["hangs"]["log_tail"]
    assert steps["measures"]["reason"] == "not run: run.py was stopped"
    assert signal.getsignal(signal.SIGTERM) is not device_run._interrupt  # the caller's handlers are back
