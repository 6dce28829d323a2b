"""The one entry point for a lent GPU machine (`bash benchmarks/device/run.sh`, which runs this file).

The machine is bare and offline: Python, torch, Triton, numpy, scipy, pytest, pytest-benchmark, pybind11, nvcc and
g++, nothing else (no open_clip, PIL, tqdm, DALI; torchvision maybe). In order, each step a separate process with a
time budget, each one independent of the others' success (a failure is recorded with its log tail and the next
step runs):

  environment       Python, torch, Triton, GPU, driver, CUDA toolkits
  build             `setup.py build_ext --inplace` for the GPU's architecture (default: its compute capability)
  import            fastclip, fastclip.kernels and fastclip._C import from the checkout; the extension has code
                    for this GPU; `python -m fastclip.info`
  cuda_tests        every needs_cuda test (tests that need open_clip, PIL or DALI skip themselves)
  contrastive_loss  fused CLIP/SigLIP loss: correctness against float64, then timings and issue 3's goals
  metrics           bootstrap, Kendall, Spearman, Pearson, saliency metrics: GPU = CPU, then issue 6's goals
  stimuli           gaussian_noise, cue_conflict, toyworld_render against copy bandwidth and the torch chains
  data              JPEG decoding: DALI when installed, else torchvision's nvJPEG path (it says which)

It writes $OUT/device.json (per step: name, status passed/failed/skipped, seconds, figures, log tail),
$OUT/device.md (a table ready to paste into benchmarks/RESULTS.md with date, GPU, torch/Triton versions and git
commit) and $OUT/device.log (every step's whole output), and finishes within --total-budget seconds (480).

--dry-run (or FASTCLIP_DEVICE_DRY_RUN=1) proves the orchestration on a machine without a GPU: the environment
and import steps run; build resolves the toolkit and architectures without compiling and the later steps use the
extension already built in fastclip/ (FASTCLIP_DEVICE_DRY_RUN_BUILD=1 compiles a CPU-only one into a temporary
folder instead); every CUDA step imports its modules (cuda_tests collects its tests) and reports "skipped: no
device". tests/test_device_dry_run.py runs it in CI in an environment holding only the machine's packages.

Standard library only: this must run even where fastclip or torch is broken, to record that.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FIGURES_ENV = "FASTCLIP_DEVICE_FIGURES"
SKIP_EXIT_CODE = 77  # _common.SKIP_EXIT_CODE: the step printed why it cannot run here
LOG_TAIL_CHARS = 3000
SETUP_PREFIX = "[fastclip setup]"


@dataclass
class Run:
    python: str
    out: Path
    work: Path
    dry_run: bool
    deadline: float
    facts: dict = field(default_factory=dict)

    @property
    def has_cuda(self) -> bool:
        return bool(self.facts.get("cuda_available"))


@dataclass(frozen=True)
class Step:
    name: str
    budget_s: float  # the most this step may take
    reserve_s: float  # what the earlier steps must leave it, out of the total budget
    needs_cuda: bool
    command: Callable[[Run], list[str]]
    # The dry run's command (None: nothing to do). A host step runs it in place of `command`; a CUDA step runs it as
    # a probe (imports, test collection) and, when it passes, is reported skipped.
    dry_command: Callable[[Run], list[str]] | None = None
    env: Callable[[Run], dict] = lambda run: {}


def _script(name: str, *args: str) -> Callable[[Run], list[str]]:
    return lambda run: [run.python, str(HERE / f"{name}.py"), *args]


def _import_probe(module: str) -> Callable[[Run], list[str]]:
    code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import {module}; print('imports of {module}.py: ok')"
    return lambda run: [run.python, "-c", code]


def _build_env(run: Run) -> dict:
    """Compile for the GPU at hand (FASTCLIP_CUDA_ARCHS, when set, wins): one arch keeps the build short."""
    env = {"MAX_JOBS": str(os.cpu_count() or 4)}
    if "FASTCLIP_CUDA_ARCHS" not in os.environ and run.facts.get("capability"):
        env["FASTCLIP_CUDA_ARCHS"] = run.facts["capability"]
    if run.dry_run and os.environ.get("FASTCLIP_DEVICE_DRY_RUN_BUILD") == "1":
        env["FASTCLIP_SKIP_CUDA"] = "1"
    return env


def _dry_build(run: Run) -> list[str]:
    if os.environ.get("FASTCLIP_DEVICE_DRY_RUN_BUILD") == "1":
        target = run.work / "dry_build"
        return [run.python, "setup.py", "build_ext", "--build-lib", str(target / "lib"),
                "--build-temp", str(target / "temp")]
    # setup.py resolves the toolkit and the architectures (and says so) while it prints the package name.
    return [run.python, "setup.py", "--name"]


# Budgets are caps, guesses for an H200 with 16 cores (a one-arch build ~1 min; Triton compiles most of the rest);
# the total budget (8 min) is what binds, and each step is left at least its reserve by the ones before it.
STEPS = [
    Step("environment", 30, 10, False, _script("environment"), _script("environment")),
    Step("build", 180, 30, False, lambda run: [run.python, "setup.py", "build_ext", "--inplace"], _dry_build,
         _build_env),
    Step("import", 30, 10, False, _script("imports"), _script("imports")),
    Step("cuda_tests", 150, 40, True, _script("cuda_tests"), _script("cuda_tests", "--collect-only")),
    Step("contrastive_loss", 120, 40, True, _script("contrastive_loss_check"), _import_probe("contrastive_loss_check")),
    Step("metrics", 60, 25, True, _script("metrics"), _import_probe("metrics")),
    Step("stimuli", 60, 25, True, _script("stimuli"), _import_probe("stimuli")),
    Step("data", 60, 25, True, _script("data", "--images", "4096", "--batches", "12", "--memory-batches", "300"),
         _import_probe("data")),
]
STEP_NAMES = [step.name for step in STEPS]


def _git_commit() -> str:
    if os.environ.get("FASTCLIP_COMMIT"):
        return os.environ["FASTCLIP_COMMIT"]
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=30, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git metadata here: set FASTCLIP_COMMIT)"
    return head + ("+local changes" if dirty else "")


def _copy_output(stream, log_handle, captured: list[str]) -> None:
    for line in iter(stream.readline, ""):
        sys.stdout.write(line)
        sys.stdout.flush()
        log_handle.write(line)
        captured.append(line)


class Interrupted(Exception):
    """SIGTERM or SIGINT reached run.py (e.g. the caller's own time limit): the running step is stopped and the
    report written before exiting."""


def _stop_group(process: subprocess.Popen) -> None:
    """Stop the step's whole process group (pytest, ninja, nvcc, DataLoader workers): TERM, then KILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def _execute(command: list[str], env: dict, timeout: float, log_handle) -> tuple[int | None, str]:
    """Run `command` in a process group of its own (not a session of its own: whoever stops run.py's session stops
    it too); (exit code, or None when stopped at `timeout`; its output)."""
    captured: list[str] = []
    group = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, text=True, errors="replace", **group)
    reader = threading.Thread(target=_copy_output, args=(process.stdout, log_handle, captured), daemon=True)
    reader.start()
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        code = None
        _stop_group(process)
    except Interrupted:
        _stop_group(process)
        reader.join(timeout=10)
        raise Interrupted("".join(captured)) from None
    reader.join(timeout=10)
    return code, "".join(captured)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _not_run(step: Step, budget_s: float | None = None) -> dict:
    """A step's record before it runs: skipped, no reason yet."""
    return {"name": step.name, "needs_cuda": step.needs_cuda, "status": "skipped", "reason": "", "seconds": 0.0,
            "budget_s": step.budget_s if budget_s is None else budget_s, "command": "", "returncode": None,
            "figures": [], "facts": {}, "log_tail": ""}


def run_step(step: Step, run: Run, budget_s: float, later_reserve_s: float, selected: bool, log_handle) -> dict:
    result = _not_run(step, budget_s)
    if not selected:
        result["reason"] = "not selected (--only)"
        return result
    # Without a GPU (or in a dry run) a CUDA step runs its probe only: it still proves that its imports work.
    cannot_run = step.needs_cuda and (run.dry_run or not run.has_cuda)
    command_of = step.dry_command if run.dry_run or cannot_run else step.command
    if command_of is None:
        result["reason"] = "no device" if cannot_run else "nothing to do in a dry run"
        return result
    left = run.deadline - time.monotonic() - later_reserve_s
    if left < 5:
        result["reason"] = "no time left in the total budget"
        return result
    timeout = min(budget_s, left)
    figures_path = run.work / f"{step.name}.json"
    command = command_of(run)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1", FIGURES_ENV: str(figures_path), **step.env(run)}
    result["command"] = " ".join(f"{k}={shlex.quote(v)}" for k, v in step.env(run).items()) + \
        (" " if step.env(run) else "") + shlex.join(command)
    header = f"\n===== {step.name}: {result['command']} (budget {timeout:.0f} s) =====\n"
    sys.stdout.write(header)
    log_handle.write(header)
    start = time.monotonic()
    try:
        code, output = _execute(command, env, timeout, log_handle)
    except Interrupted as interruption:
        result.update(status="failed", reason="interrupted: run.py was stopped during this step",
                      seconds=round(time.monotonic() - start, 1), log_tail=str(interruption)[-LOG_TAIL_CHARS:])
        raise Interrupted(result) from None
    result["seconds"] = round(time.monotonic() - start, 1)
    result["returncode"] = code
    result["log_tail"] = output[-LOG_TAIL_CHARS:]
    if figures_path.exists():  # written atomically by _common.Figures, so whole even when the step was stopped
        recorded = json.loads(figures_path.read_text())
        result["figures"], result["facts"] = recorded.get("rows", []), recorded.get("facts", {})
    said = [line.strip() for line in output.splitlines() if line.startswith(SETUP_PREFIX)]
    if said:  # what setup.py decided: toolkit, architectures dropped, CPU only and why
        result["facts"]["setup"] = [line.removeprefix(SETUP_PREFIX).strip() for line in said]
    if code is None:
        result["status"], result["reason"] = "failed", f"stopped at its time budget of {timeout:.0f} s"
    elif code == SKIP_EXIT_CODE:
        result["reason"] = _last_line(output).removeprefix("skipped: ")
    elif code != 0:
        result["status"], result["reason"] = "failed", f"exit code {code}: {_last_line(output)}"
    elif cannot_run:
        result["reason"] = ("no device" if not run.has_cuda else "dry run") + " (imports checked)"
    else:
        result["status"] = "passed"
        if run.dry_run and step.name == "build" and os.environ.get("FASTCLIP_DEVICE_DRY_RUN_BUILD") != "1":
            result["reason"] = ("dry run: toolkit and architectures resolved, nothing compiled; later steps use "
                                "the extension already built in fastclip/")
    return result


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _step_summary(step: dict) -> str:
    if step["status"] != "passed":
        return step["reason"]
    rows = step["figures"]
    goals = [row for row in rows if row.get("meets") is not None]
    checks = [row for row in rows if row.get("check")]
    parts = []
    if goals:
        parts.append(f"goals met {sum(bool(row['meets']) for row in goals)}/{len(goals)}")
    if checks:
        parts.append(f"checks ok {sum(row['check'] == 'ok' for row in checks)}/{len(checks)}")
    if step["name"] == "environment":
        facts = step["facts"]
        parts.append(f"{facts['gpu']} ({facts.get('capability')})" if facts.get("gpu") else "no CUDA device visible")
    parts += step["facts"].get("setup", [])
    if step["reason"]:
        parts.append(step["reason"])
    return "; ".join(parts)


def markdown(report: dict) -> str:
    env = report["environment"]
    gpu = f"{env.get('gpu', 'no GPU')}" + (f" (compute capability {env['capability']})" if env.get("capability") else "")
    title = "Device run (DRY RUN: no GPU work, no measurements)" if report["dry_run"] else f"Device run: {gpu}"
    counts = report["summary"]
    lines = [
        f"### {title}",
        "",
        f"{report['date']} · commit `{report['commit']}` · {gpu} · driver {env.get('driver') or '-'} · torch "
        f"{env.get('torch', '?')} (CUDA {env.get('torch_cuda') or '-'}) · triton {env.get('triton', '?')} · Python "
        f"{env.get('python', '?')} · {env.get('cpu_cores', '?')} CPU cores · extension archs "
        f"{report.get('extension_cuda_archs') or '-'}",
        "",
        f"`{report['command']}`: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped "
        f"in {report['seconds']:.0f} s.",
        "",
        "| step | status | seconds | budget s | result |",
        "|---|---|---|---|---|",
    ]
    for step in report["steps"]:
        lines.append(f"| {step['name']} | {step['status']} | {step['seconds']:.1f} | {step['budget_s']:.0f} | "
                     f"{_cell(_step_summary(step))} |")
    for step in report["steps"]:
        if not step["figures"]:
            continue
        lines += ["", f"#### {step['name']}", "", "| figure | value | unit | goal | meets | check |",
                  "|---|---|---|---|---|---|"]
        for row in step["figures"]:
            lines.append("| " + " | ".join(_cell(row.get(key)) for key in ("name", "value", "unit", "goal", "meets",
                                                                          "check")) + " |")
    return "\n".join(lines) + "\n"


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def write_report(report: dict, out: Path) -> None:
    counts = {status: sum(step["status"] == status for step in report["steps"]) for status in
              ("passed", "failed", "skipped")}
    report["summary"] = counts
    _write_atomically(out / "device.json", json.dumps(report, indent=1) + "\n")
    _write_atomically(out / "device.md", markdown(report))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or REPO / "runs" / "device"),
                        help="folder for device.json, device.md and device.log ($OUT, else runs/device)")
    parser.add_argument("--python", default=os.environ.get("PYTHON") or sys.executable,
                        help="the interpreter the steps run under ($PYTHON, else this one)")
    parser.add_argument("--dry-run", action="store_true", default=os.environ.get("FASTCLIP_DEVICE_DRY_RUN") == "1",
                        help="prove the orchestration without a GPU (see above)")
    parser.add_argument("--only", default="", help=f"comma-separated steps to run, of {','.join(STEP_NAMES)} "
                        "(the environment step always runs; the others are reported as not selected)")
    parser.add_argument("--budget", action="append", default=[], metavar="STEP=SECONDS",
                        help="override one step's time budget (repeatable)")
    parser.add_argument("--total-budget", type=float, default=480.0,
                        help="seconds for the whole run; a step gets at most what is left (default 480 = 8 min)")
    parser.add_argument("--list", action="store_true", help="print the steps as JSON and exit")
    args = parser.parse_args(argv)
    only = {name for name in args.only.split(",") if name}
    unknown = only - set(STEP_NAMES)
    budgets = {}
    for item in args.budget:
        name, _, seconds = item.partition("=")
        if name not in STEP_NAMES or not seconds.replace(".", "", 1).isdigit():
            parser.error(f"--budget {item!r}: expected STEP=SECONDS with STEP one of {', '.join(STEP_NAMES)}")
        budgets[name] = float(seconds)
    if unknown:
        parser.error(f"--only: unknown steps {', '.join(sorted(unknown))}; the steps are {', '.join(STEP_NAMES)}")
    return args, only, budgets


def _interrupt(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def main(argv=None) -> int:
    args, only, budgets = parse_args(argv)
    if args.list:
        print(json.dumps([{"name": s.name, "needs_cuda": s.needs_cuda, "budget_s": s.budget_s, "reserve_s": s.reserve_s}
                          for s in STEPS]))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)} if in_main_thread else {}
    try:
        return _run_all(args, only, budgets)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_all(args, only: set, budgets: dict) -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fastclip_device_") as work:
        run = Run(python=args.python, out=args.out, work=Path(work), dry_run=args.dry_run,
                  deadline=started + args.total_budget)
        report = {"fastclip_device_run": 1,
                  "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                  "dry_run": args.dry_run, "commit": _git_commit(),
                  "command": "bash benchmarks/device/run.sh" + (" --dry-run" if args.dry_run else "")
                  + (f" --only {args.only}" if only else ""),
                  "environment": {}, "extension_cuda_archs": None, "seconds": 0.0, "steps": []}
        with open(args.out / "device.log", "w") as log_handle:
            chosen = [step for step in STEPS if not only or step.name in only or step.name == "environment"]
            for index, step in enumerate(STEPS):
                later_reserve = 0.0 if args.dry_run else sum(s.reserve_s for s in chosen if STEPS.index(s) > index)
                try:
                    result = run_step(step, run, budgets.get(step.name, step.budget_s), later_reserve,
                                      step in chosen, log_handle)
                except Interrupted as interruption:
                    if isinstance(interruption.args[0], dict):  # the step's record, from run_step
                        report["steps"].append(interruption.args[0])
                    report["steps"] += [
                        {**_not_run(later), "reason": "not run: run.py was stopped"}
                        for later in STEPS if later.name not in {done["name"] for done in report["steps"]}]
                    report["seconds"] = round(time.monotonic() - started, 1)
                    write_report(report, args.out)
                    print(f"----- {step.name}: interrupted; wrote {args.out / 'device.json'}", flush=True)
                    return 143
                log_handle.flush()
                report["steps"].append(result)
                if step.name == "environment":
                    run.facts = result["facts"]
                    report["environment"] = result["facts"]
                if step.name == "import" and result["facts"].get("extension_cuda_archs") is not None:
                    report["extension_cuda_archs"] = result["facts"]["extension_cuda_archs"] or "none (CPU only)"
                report["seconds"] = round(time.monotonic() - started, 1)
                write_report(report, args.out)
                print(f"----- {step.name}: {result['status']}"
                      + (f" ({result['reason']})" if result["reason"] else "") + f", {result['seconds']} s",
                      flush=True)
    print("\n" + (args.out / "device.md").read_text())
    print(f"wrote {args.out / 'device.json'}, {args.out / 'device.md'} and {args.out / 'device.log'}")
    return 1 if report["summary"]["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
