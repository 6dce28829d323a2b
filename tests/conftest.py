"""Shared test settings: the needs_cuda and triton_interpret markers, the path of ../shared/data, and the check that
no test compares a backend with itself (tests/backend_comparisons.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data; the test is skipped with a clear message when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs the shared real data at {path} (see the README's 'Data layouts')")
    return path


def pytest_collection_modifyitems(config, items):
    interpret = os.environ.get("TRITON_INTERPRET", "0") == "1"
    has_cuda = torch.cuda.is_available()
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device")
    skip_interpret = pytest.mark.skip(reason="Triton interpreter test: run with TRITON_INTERPRET=1 (make test does)")
    for item in items:
        if "needs_cuda" in item.keywords and not has_cuda:
            item.add_marker(skip_cuda)
        if "triton_interpret" in item.keywords and not interpret:
            item.add_marker(skip_interpret)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """A test that passes while one of its comparisons runs the same backend on both sides fails: that comparison
    could not have failed (issue 13). Checked after the test body, so skips inside it stay skips."""
    outcome = yield
    function = getattr(item, "function", None)
    if outcome.excinfo is not None or function is None:
        return
    from tests.backend_comparisons import self_comparisons_of

    device = "cuda" if item.get_closest_marker("needs_cuda") else "cpu"
    found = self_comparisons_of(function, device)
    if found:
        outcome.force_exception(pytest.fail.Exception("\n".join(f.message(item.name) for f in found), pytrace=False))
