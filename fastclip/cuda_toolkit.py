"""Finding the CUDA toolkit that builds fastclip's extension, and saying why a toolkit that was found is not used.

Standard library only: setup.py executes this file before fastclip is importable, and `python -m fastclip.info`
reports the same findings, so a toolkit that cannot build the CUDA kernels is named, never skipped in silence.
Places looked at, in order: $CUDA_HOME, $CUDA_PATH, /usr/local/cuda, and the toolkit of the `nvcc` on PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class Toolkit:
    home: str
    found_by: str  # which place named it: "CUDA_HOME", "CUDA_PATH", "/usr/local/cuda" or "nvcc on PATH"
    version: tuple[int, int] | None  # nvcc's release; None when bin/nvcc is missing or does not answer

    @property
    def nvcc(self) -> str:
        return os.path.join(self.home, "bin", "nvcc")

    @property
    def version_text(self) -> str:
        return "no working bin/nvcc" if self.version is None else f"CUDA {self.version[0]}.{self.version[1]}"


def _run_nvcc(nvcc: str, *args: str) -> str | None:
    try:
        return subprocess.run([nvcc, *args], capture_output=True, text=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def nvcc_version(home: str) -> tuple[int, int] | None:
    text = _run_nvcc(os.path.join(home, "bin", "nvcc"), "--version")
    match = re.search(r"release (\d+)\.(\d+)", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def nvcc_gpu_arch_list(toolkit: Toolkit) -> str | None:
    """What `nvcc --list-gpu-arch` prints (one compute_XY per line), or None when this nvcc cannot say."""
    return _run_nvcc(toolkit.nvcc, "--list-gpu-arch")


def _toolkit_of_nvcc_on_path() -> str | None:
    """`nvcc` on PATH may be a wrapper script (exec /usr/local/cuda-X/bin/nvcc "$@"): follow it to the toolkit."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    real = os.path.realpath(nvcc)
    try:
        with open(real, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return None
    if head.startswith(b"#!"):
        match = re.search(rb"(/\S+/bin/nvcc)", head)
        if match:
            real = match.group(1).decode()
    return os.path.dirname(os.path.dirname(real))


def find_toolkits(environ=None) -> list[Toolkit]:
    """Every distinct toolkit folder the places above name, in that order, with its nvcc version."""
    environ = os.environ if environ is None else environ
    places = [
        ("CUDA_HOME", environ.get("CUDA_HOME")),
        ("CUDA_PATH", environ.get("CUDA_PATH")),
        ("/usr/local/cuda", "/usr/local/cuda" if os.path.isdir("/usr/local/cuda") else None),
        ("nvcc on PATH", _toolkit_of_nvcc_on_path()),
    ]
    toolkits, seen = [], set()
    for found_by, home in places:
        if not home or os.path.realpath(home) in seen:
            continue
        seen.add(os.path.realpath(home))
        toolkits.append(Toolkit(home, found_by, nvcc_version(home)))
    return toolkits


def why_not_usable(toolkit: Toolkit, torch_cuda_version: str | None) -> str | None:
    """None when `toolkit` can build CUDA code that loads into this torch; else why not, and what to do."""
    if toolkit.version is None:
        return f"{toolkit.nvcc} is missing or does not run"
    if not torch_cuda_version:
        return "this torch was built without CUDA (install a CUDA build of torch)"
    wanted = int(torch_cuda_version.split(".")[0])
    if toolkit.version[0] != wanted:
        return (
            f"torch was built with CUDA {torch_cuda_version} and the major versions must match; install a CUDA "
            f"{wanted}.x toolkit and point CUDA_HOME at it"
        )
    return None


def choose_toolkit(torch_cuda_version: str | None, environ=None) -> tuple[Toolkit | None, list[str]]:
    """The toolkit to build the CUDA sources with (None: build the CPU part only), and sentences saying why each
    toolkit found was passed over, or why none was looked for."""
    environ = os.environ if environ is None else environ
    if environ.get("FASTCLIP_SKIP_CUDA", "0") == "1":
        return None, ["FASTCLIP_SKIP_CUDA=1: building the CPU extension only"]
    if not torch_cuda_version:
        return None, ["this torch was built without CUDA: building the CPU extension only"]
    notes = []
    for toolkit in find_toolkits(environ):
        reason = why_not_usable(toolkit, torch_cuda_version)
        if reason is None:
            return toolkit, notes
        notes.append(f"toolkit {toolkit.home} ({toolkit.found_by}, {toolkit.version_text}) not used: {reason}")
    wanted = torch_cuda_version.split(".")[0]
    notes.append(f"no CUDA {wanted} toolkit found (set CUDA_HOME): building the CPU extension only")
    return None, notes
