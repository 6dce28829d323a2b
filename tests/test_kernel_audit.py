"""The kernel audit (fastclip.kernels.audit): occupancy arithmetic, output parsing, and the sm_90 audit of the
production configurations, which compiles every Triton launch for a real GPU and fails on any spill."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

from fastclip.kernels import audit
from fastclip.kernels.audit import ARCHITECTURES, AuditRow, warps_per_sm
from tests.helpers import REPO_ROOT, run_python

triton = pytest.importorskip("triton")


# ------------------------------------------------------------------------------------------------ occupancy


@pytest.mark.parametrize(
    "cc, registers, shared, num_warps, expected",
    [
        # 171 regs -> 5,632 per warp -> 11 warps' worth of registers -> one 8-warp block.
        (90, 171, 74752, 8, 8),
        # 32 regs, 4 warps: registers allow 64 warps, the SM holds 64: 16 blocks.
        (90, 32, 0, 4, 64),
        # 64 regs -> 2,048 per warp -> 32 warps -> 8 blocks of 4.
        (90, 64, 5120, 4, 32),
        # 255 regs round up to 8,192 per warp: 8 warps fit.
        (90, 255, 99328, 8, 8),
        # 116 regs -> 3,840 per warp -> 17 warps -> two 8-warp blocks.
        (90, 116, 99328, 8, 16),
        # Shared memory limits: 100 KB + 1 KB reserved per block; sm_90's 228 KB hold two of them, not three.
        (90, 32, 100 * 1024, 4, 8),
        # sm_86 holds 48 warps: twelve 4-warp blocks.
        (86, 32, 0, 4, 48),
        # sm_86 gives at most 99 KB to one block.
        (86, 32, 100 * 1024, 4, 0),
        # Over 255 registers or 1,024 threads cannot launch.
        (90, 256, 0, 4, 0),
        (90, 32, 0, 64, 0),
    ],
)
def test_warps_per_sm(cc, registers, shared, num_warps, expected):
    assert warps_per_sm(ARCHITECTURES[cc], registers, shared, num_warps) == expected


def test_row_fails_on_spill_shared_memory_and_compile_error():
    clean = AuditRow("k", "c", "bfloat16", 768, "sm_90", registers=171, spill=0, stack=32, shared=74752)
    assert clean.passed  # a stack frame without spills (sin/cos range reduction) is fine
    assert "spills (8 B" in AuditRow("k", "c", "-", None, "sm_90", registers=255, spill=8, stack=8, shared=0).failures[0]
    too_big = AuditRow("k", "c", "-", None, "sm_80", registers=64, spill=0, stack=0, shared=200_000)
    assert "shared memory 200000 B > 166912 B" in too_big.failures[0]
    assert not AuditRow("k", "c", "-", None, "sm_90", error="compile error: boom").passed


# -------------------------------------------------------------------------------------------------- parsing


CUOBJDUMP_FATBIN = """
Fatbin elf code:
================
arch = sm_80
code version = [1,8]

Resource usage:
 Common:
  GLOBAL:28 CONSTANT[4]:224
 Function _Z6kernelIfEvPT_:
  REG:26 STACK:0 SHARED:0 LOCAL:0 CONSTANT[0]:569 TEXTURE:0 SURFACE:0 SAMPLER:0

Fatbin elf code:
================
arch = sm_90
 Function _Z6kernelIfEvPT_:
  REG:22 STACK:16 SHARED:1024 LOCAL:0 CONSTANT[0]:937 TEXTURE:0 SURFACE:0 SAMPLER:0
"""

NVCC_PTXAS_LOG = """
ptxas info    : Compiling entry function '_Z6kernelIfEvPT_' for 'sm_80'
ptxas info    : Function properties for _Z6kernelIfEvPT_
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 26 registers, used 0 barriers, 569 bytes cmem[0]
ptxas info    : Compiling entry function '_Z6kernelIfEvPT_' for 'sm_90'
ptxas info    : Function properties for _Z6kernelIfEvPT_
    16 bytes stack frame, 12 bytes spill stores, 8 bytes spill loads
"""

CUOBJDUMP_ELF = """
arch = sm_80
.nv.info._Z6kernelIfEvPT_
	<0x14>
	Attribute:	EIATTR_MAX_THREADS
	Format:	EIFMT_SVAL
	Value:	0x100 0x1 0x1
"""


def test_parse_cuobjdump_resource_usage():
    usage = audit.parse_resource_usage(CUOBJDUMP_FATBIN)
    assert usage == {("sm_80", "_Z6kernelIfEvPT_"): (26, 0, 0), ("sm_90", "_Z6kernelIfEvPT_"): (22, 16, 1024)}


def test_parse_ptxas_spills():
    assert audit.parse_spills(NVCC_PTXAS_LOG) == 20
    assert audit.parse_spills("ptxas info : Used 26 registers") is None
    assert audit.parse_spills_by_function(NVCC_PTXAS_LOG) == {
        ("sm_80", "_Z6kernelIfEvPT_"): 0, ("sm_90", "_Z6kernelIfEvPT_"): 20,
    }


def test_parse_launch_bounds():
    assert audit.parse_max_threads(CUOBJDUMP_ELF) == {("sm_80", "_Z6kernelIfEvPT_"): 256}


def test_markers_replace_only_their_section():
    begin, end = audit.audit_markers("3.8.0")
    assert begin == "<!-- audit:begin triton-3.8 -->"
    text = f"head\n{begin}\nold\n{end}\ntail\n"
    assert audit.replace_between_markers(text, begin, end, "new") == f"head\n{begin}\nnew\n{end}\ntail\n"
    appended = audit.replace_between_markers("head\n", begin, end, "new")
    assert appended == f"head\n\n{begin}\nnew\n{end}\n"


def test_cuda_architectures_come_from_the_build_list(monkeypatch):
    monkeypatch.delenv("FASTCLIP_CUDA_ARCHS", raising=False)
    assert audit.cuda_architectures()[:4] == [80, 86, 89, 90]
    monkeypatch.setenv("FASTCLIP_CUDA_ARCHS", "8.0;9.0+PTX")
    assert audit.cuda_architectures() == [80, 90]


# ----------------------------------------------------------------------------------- launcher configurations


def test_loss_launchers_pick_the_audited_configurations():
    from fastclip.kernels import contrastive_loss as kernels

    for capability in ((8, 0), (8, 6), (9, 0), (10, 0)):
        for dtype in (torch.bfloat16, torch.float16, torch.float32):
            configs = kernels.gpu_configs(capability, dtype, 768)
            assert set(configs) == set(kernels.KERNELS)
            for name in kernels.KERNELS:
                assert kernels.default_config(capability, dtype, name, 768) == configs[name]
    assert kernels.default_config(torch.device("cpu"), torch.float32, "siglip_fwd").num_stages == 1


def _triton_kernels_in_kernels_folder() -> set[str]:
    """Names of the @triton.jit functions whose name ends in _kernel, read from kernels/*.py's source."""
    names = set()
    for path in (REPO_ROOT / "kernels").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.endswith("_kernel") and node.decorator_list:
                if any("jit" in ast.unparse(d) for d in node.decorator_list):
                    names.add(node.name)
    return names - {"_probe_kernel"}


def test_audit_cases_cover_every_triton_kernel():
    with audit.capture_launches() as launches:
        for case in audit.triton_cases((9, 0), production=True):
            case.launch()
    assert {launch.fn.__name__ for launch in launches} == _triton_kernels_in_kernels_folder()


def test_audit_catches_a_spilling_configuration(tmp_path, monkeypatch):
    """The SigLIP forward at the G kernel's 128 x 128 tile (its configuration before the audit) spills on sm_90."""
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))  # compile afresh, as the audit does
    from fastclip.kernels import contrastive_loss as kernels
    from fastclip.kernels.contrastive_loss import TileConfig

    x, y = audit._meta(4096, 768, dtype=torch.bfloat16), audit._meta(32768, 768, dtype=torch.bfloat16)
    scalar = audit._meta(1)
    with audit.capture_launches() as launches:
        config = TileConfig(block_m=128, block_n=128, block_k=64, num_warps=8, num_stages=3)
        kernels.siglip_loss_fwd(x, y, scalar, scalar, 0, scalar, config)
    _, log = audit.compile_launch(launches[0], 90)
    assert audit.parse_spills(log) > 0


# ------------------------------------------------------------------------------------------ the sm_90 audit


def test_sm90_production_audit_has_no_spills(tmp_path: Path):
    """What CI guards: every production launch of every Triton kernel compiles for sm_90 without spills, within the
    shared memory limit (the command exits 1 otherwise)."""
    report = tmp_path / "audit.json"
    result = run_python(
        ["-m", "fastclip.kernels.audit", "--targets", "sm_90", "--production", "--no-cuda", "--json", str(report)],
        env={"TRITON_INTERPRET": "0"}, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    rows = json.loads(report.read_text())["rows"]
    assert {row["kernel"].split(" ")[0] for row in rows} >= {
        "clip_loss_fwd", "clip_loss_bwd", "siglip_loss_fwd", "gaussian_noise_fwd", "cue_conflict_fwd",
        "toyworld_render_fwd", "philox_fwd", "pearson_fwd", "kendall_tau_fwd",
    }
    assert all(row["passed"] and row["spill"] == 0 and row["target"] == "sm_90" for row in rows)
