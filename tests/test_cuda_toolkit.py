"""CUDA toolkits found on the machine: a toolkit whose major version differs from torch's is reported (by setup.py
and by `python -m fastclip.info`), never skipped in silence; what the extension was built for is named."""

from __future__ import annotations

import importlib.util
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastclip import _ext, cuda_toolkit, info
from fastclip.cuda_archs import format_cuda_archs


def fake_toolkit(folder, release: str) -> str:
    """A toolkit folder whose bin/nvcc answers --version as CUDA `release` would."""
    nvcc = folder / "bin" / "nvcc"
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = "--version" ] && echo "Cuda compilation tools, release {release}, V{release}.131" && exit 0\n'
        'echo "compute_80"; echo "compute_90"\n'
    )
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IEXEC)
    return str(folder)


def test_the_version_of_a_toolkit_is_read_from_its_nvcc(tmp_path):
    home = fake_toolkit(tmp_path / "cuda-12.4", "12.4")
    found = cuda_toolkit.find_toolkits({"CUDA_HOME": home})
    assert found[0] == cuda_toolkit.Toolkit(home, "CUDA_HOME", (12, 4))


def test_a_toolkit_of_another_major_version_is_not_used_and_says_why(tmp_path):
    home = fake_toolkit(tmp_path / "cuda-12.4", "12.4")
    chosen, notes = cuda_toolkit.choose_toolkit("13.0", {"CUDA_HOME": home})
    assert chosen is None or chosen.home != home
    assert any(note.startswith(f"toolkit {home} (CUDA_HOME, CUDA 12.4) not used: torch was built with CUDA 13.0 and "
                               "the major versions must match") for note in notes)


def test_a_matching_toolkit_is_chosen(tmp_path):
    home = fake_toolkit(tmp_path / "cuda-13.1", "13.1")
    chosen, notes = cuda_toolkit.choose_toolkit("13.0", {"CUDA_HOME": home})
    assert chosen == cuda_toolkit.Toolkit(home, "CUDA_HOME", (13, 1)) and notes == []


def test_skip_cuda_and_a_cpu_torch_build_say_so():
    assert cuda_toolkit.choose_toolkit("13.0", {"FASTCLIP_SKIP_CUDA": "1"}) == (
        None, ["FASTCLIP_SKIP_CUDA=1: building the CPU extension only"])
    assert cuda_toolkit.choose_toolkit(None, {})[0] is None


def test_info_reports_a_mismatched_toolkit(tmp_path, monkeypatch):
    home = fake_toolkit(tmp_path / "cuda-12.4", "12.4")
    monkeypatch.setenv("CUDA_HOME", home)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    report = info.report()
    line = next(line for line in report.splitlines() if home in line)
    assert "(CUDA 12.4, found by CUDA_HOME): NOT usable: torch was built with CUDA 13.0" in line


def test_info_reports_a_toolkit_without_nvcc(tmp_path, monkeypatch):
    (tmp_path / "empty-cuda").mkdir()
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "empty-cuda"))
    line = next(line for line in info.report().splitlines() if "empty-cuda" in line)
    assert "no working bin/nvcc" in line and "NOT usable" in line


@pytest.mark.skipif(_ext.load_error() is not None, reason="the compiled extension is not built")
def test_info_names_the_archs_the_extension_was_built_for():
    archs = _ext.built_cuda_archs()
    assert archs is not None, "fastclip._C does not record its CUDA archs: rebuild it (setup.py build_ext --inplace)"
    line = next(line for line in info.report().splitlines() if line.startswith("cuda archs"))
    if archs:
        assert line == f"cuda archs    {format_cuda_archs(archs)} (compiled with CUDA {_ext.built_cuda_version()})"
        assert _ext.has_kernel("rank_average", "cuda")
    else:
        assert line.startswith("cuda archs    none: CPU-only build (") and _ext.cpu_only_reason() in line
        assert not _ext.has_kernel("rank_average", "cuda")



def _cuobjdump() -> str | None:
    """cuobjdump from the CUDA toolkit, else the copy Triton's package carries."""
    found = shutil.which("cuobjdump")
    if found:
        return found
    spec = importlib.util.find_spec("triton")
    if spec is None or spec.origin is None:
        return None
    candidate = Path(spec.origin).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return str(candidate) if candidate.exists() else None


@pytest.mark.skipif(not _ext.built_cuda_archs(), reason="the extension is not built with CUDA kernels")
@pytest.mark.skipif(_cuobjdump() is None, reason="no cuobjdump (CUDA toolkit or Triton's copy) to read the binary")
def test_the_recorded_archs_are_the_code_in_the_binary():
    library = sys.modules["fastclip._C"].__file__
    listing = subprocess.run([_cuobjdump(), "--list-elf", "--list-ptx", library], capture_output=True, text=True,
                             timeout=120, check=True).stdout
    sass = set(re.findall(r"\.sm_(\d+)\.cubin", listing))
    ptx = set(re.findall(r"\.sm_(\d+)\.ptx", listing))
    archs = _ext.built_cuda_archs()
    assert sass == {arch.number for arch in archs}
    assert ptx == {arch.number for arch in archs if arch.ptx}
