"""Small helpers shared by the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_python(code_or_args: list[str], *, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python <args>` in a fresh interpreter (for env vars that must be set before Python starts)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, *code_or_args], capture_output=True, text=True, env=full_env, timeout=timeout, cwd=REPO_ROOT
    )
