"""Shared test settings: the needs_cuda and triton_interpret markers, and the path of ../shared/data."""

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
