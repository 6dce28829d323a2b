"""Step of run.py: every needs_cuda test of tests/, in one pytest run, with the counts recorded as figures.

The files are found by their marker, so a new CUDA test joins without an edit here. Tests that need a package the
machine lacks (open_clip, PIL, DALI) skip themselves (pytest.importorskip or a skip marker). --collect-only is the
dry run: every file must import and its tests be collected in the machine's bare environment.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from _common import Figures

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# The other steps' module names (data, metrics, ...) must not shadow anything the tests import.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]


def needs_cuda_files() -> list[str]:
    return sorted(str(path.relative_to(REPO)) for path in (REPO / "tests").glob("test_*.py")
                  if "needs_cuda" in path.read_text())


class Counts:
    """Records pytest's outcome counts (passed, failed, skipped, errors) as figures."""

    def __init__(self, figures: Figures, collect_only: bool):
        self.figures = figures
        self.collect_only = collect_only
        self.collected = 0

    def pytest_collection_finish(self, session):
        self.collected = len(session.items)

    def pytest_terminal_summary(self, terminalreporter):
        self.figures.add("needs_cuda tests collected", self.collected, "tests")
        if self.collect_only:
            return
        for outcome in ("passed", "failed", "error", "skipped"):
            count = len(terminalreporter.stats.get(outcome, []))
            check = "" if outcome in ("passed", "skipped") else ("ok" if count == 0 else "FAILED")
            self.figures.add(f"needs_cuda tests {outcome}", count, "tests", check=check)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--collect-only", action="store_true")
    args = parser.parse_args()
    files = needs_cuda_files()
    print(f"needs_cuda tests in {len(files)} files: {' '.join(files)}", flush=True)
    options = ["-q", "-p", "no:cacheprovider", "-m", "needs_cuda", "-rs"] + (["--collect-only"] if args.collect_only else [])
    return int(pytest.main([*options, *files], plugins=[Counts(Figures(), args.collect_only)]))


if __name__ == "__main__":
    sys.exit(main())
