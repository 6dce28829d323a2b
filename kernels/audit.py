"""Kernel audit: compile every kernel for real GPUs ahead of time and check its resource budget, without a GPU.

    python -m fastclip.kernels.audit                       # every Triton kernel, config, dtype, D; sm_80/90/100; CUDA
    python -m fastclip.kernels.audit --targets sm_90 --production --no-cuda   # what CI runs (tests/test_kernel_audit.py)
    python -m fastclip.kernels.audit --markdown --update-results benchmarks/RESULTS.md --roofline

Each Triton launcher is called, as production calls it, with meta tensors of the goal shapes and the configuration
its own config function picks for the target's compute capability (contrastive_loss.default_config, the other
modules' launch_config); the launch is captured instead of run, specialised the way Triton's JIT specialises it,
and compiled with triton.compile for that target. Registers, stack and static shared memory come from the
cuobjdump that ships with Triton, dynamic shared memory from the compiled kernel's metadata. The CUDA kernels of
csrc/cuda/ are compiled with nvcc for every architecture of fastclip.cuda_archs.DEFAULT_CUDA_ARCHS.

A row fails on a compile error, on any stack use (these kernels hold no local arrays, so stack is spilled registers),
or on shared memory above the target's per-block limit; the command exits 1 when any row fails. Nothing is cached
across runs: the Triton cache is a temporary folder removed at exit.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import datetime
import importlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ._launch import Capability

GOAL_DIM = 768  # the loss goal's feature width (ViT-L/14): what --production compiles
ALL_DIMS = (512, 768, 1024, 1152)  # ViT-B, ViT-L, ViT-H, SigLIP so400m
GOAL_BATCH = 32768  # global batch of the loss goals; rows per G chunk below
GOAL_CHUNK_ROWS = 4096
DEFAULT_TARGETS = ("sm_80", "sm_90", "sm_100")


# ------------------------------------------------------------------------------------------- occupancy arithmetic


@dataclass(frozen=True)
class Architecture:
    """Per-SM limits of one compute capability (CUDA C Programming Guide, "Compute Capabilities" table)."""

    name: str
    max_warps_per_sm: int
    max_blocks_per_sm: int
    shared_per_sm: int  # bytes a multiprocessor can give to resident blocks
    max_shared_per_block: int  # opt-in limit of one block (dynamic + static)
    registers_per_sm: int = 65536
    max_registers_per_thread: int = 255
    register_unit: int = 256  # registers are allocated per warp in units of 256
    shared_unit: int = 128  # shared memory is allocated per block in units of 128 bytes
    reserved_shared_per_block: int = 1024  # the driver's per-block reservation since sm_80
    max_threads_per_block: int = 1024


ARCHITECTURES = {
    80: Architecture("A100", 64, 32, 167936, 166912),
    86: Architecture("RTX 30xx / A10", 48, 16, 102400, 101376),
    89: Architecture("L4 / L40 / RTX 40xx", 48, 24, 102400, 101376),
    90: Architecture("H100 / H200", 64, 32, 233472, 232448),
    100: Architecture("B200", 64, 32, 233472, 232448),
    120: Architecture("RTX 50xx", 48, 32, 102400, 101376),
}


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def warps_per_sm(arch: Architecture, registers: int, shared_bytes: int, num_warps: int) -> int:
    """Resident warps per SM for blocks of num_warps warps using `registers` per thread and `shared_bytes` each
    (the CUDA occupancy calculator's rule: the tightest of the register, shared-memory, warp and block limits).
    0 means the block cannot launch at all."""
    if num_warps * 32 > arch.max_threads_per_block or registers > arch.max_registers_per_thread:
        return 0
    registers_per_warp = _round_up(max(registers, 1) * 32, arch.register_unit)
    blocks_by_registers = (arch.registers_per_sm // registers_per_warp) // num_warps
    block_shared = _round_up(shared_bytes, arch.shared_unit) + arch.reserved_shared_per_block
    if shared_bytes > arch.max_shared_per_block:
        return 0
    blocks_by_shared = arch.shared_per_sm // block_shared
    blocks_by_warps = arch.max_warps_per_sm // num_warps
    blocks = min(blocks_by_registers, blocks_by_shared, blocks_by_warps, arch.max_blocks_per_sm)
    return blocks * num_warps


# ------------------------------------------------------------------------------------------------- result rows


@dataclass
class AuditRow:
    kernel: str
    config: str
    dtype: str
    dim: int | None
    target: str
    registers: int | None = None
    stack: int | None = None  # bytes per thread: spilled registers and local arrays (sin/cos range reduction)
    spill: int | None = None  # bytes per thread of spill stores + loads (ptxas -v); any spill fails the row
    shared: int | None = None  # bytes per block: dynamic (Triton's metadata) + static (cuobjdump)
    warps_per_sm: int | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def failures(self) -> list[str]:
        if self.error is not None:
            return [self.error]
        problems = []
        if self.spill:
            problems.append(f"spills ({self.spill} B of spill stores + loads)")
        arch = ARCHITECTURES[_target_cc(self.target)]
        if self.shared is not None and self.shared > arch.max_shared_per_block:
            problems.append(f"shared memory {self.shared} B > {arch.max_shared_per_block} B")
        if self.warps_per_sm == 0 and not problems:
            problems.append("cannot launch (threads or registers over the limit)")
        return problems

    @property
    def passed(self) -> bool:
        return not self.failures


def evaluate(row: AuditRow, num_warps: int) -> AuditRow:
    """Fill warps_per_sm from the row's registers and shared memory."""
    arch = ARCHITECTURES[_target_cc(row.target)]
    row.warps_per_sm = warps_per_sm(arch, row.registers, row.shared, num_warps)
    return row


def _target_cc(target: str) -> int:
    match = re.fullmatch(r"sm_(\d+)a?", target)
    if match is None or int(match.group(1)) not in ARCHITECTURES:
        known = ", ".join(f"sm_{cc}" for cc in ARCHITECTURES)
        raise ValueError(f"--targets: unknown target {target!r}; known: {known}")
    return int(match.group(1))


# ---------------------------------------------------------------------------------------- cuobjdump parsing

_RESOURCE_LINE = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)")


def parse_resource_usage(text: str) -> dict[tuple[str, str], tuple[int, int, int]]:
    """`cuobjdump --dump-resource-usage` output -> {(arch, mangled function): (registers, stack, static shared)}.
    The arch is "" for a lone cubin (no fatbin header)."""
    usage = {}
    arch = ""
    function = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("arch = "):
            arch = stripped.split("=", 1)[1].strip()
        elif stripped.startswith("Function "):
            function = stripped[len("Function ") :].rstrip(":")
        elif function is not None and (match := _RESOURCE_LINE.search(stripped)):
            usage[(arch, function)] = tuple(int(v) for v in match.groups())
            function = None
    return usage


def parse_max_threads(text: str) -> dict[tuple[str, str], int]:
    """`cuobjdump -elf` output -> {(arch, mangled function): __launch_bounds__ threads} for kernels that set it."""
    bounds = {}
    arch = ""
    function = None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("arch = "):
            arch = stripped.split("=", 1)[1].strip()
        elif stripped.startswith(".nv.info."):
            function = stripped[len(".nv.info.") :]
        elif function is not None and "EIATTR_MAX_THREADS" in stripped:
            for following in lines[i + 1 : i + 4]:
                if following.strip().startswith("Value:"):
                    x, y, z = (int(v, 16) for v in following.split(":", 1)[1].split()[:3])
                    bounds[(arch, function)] = x * y * z
                    break
    return bounds


_SPILL_LINE = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def parse_spills_by_function(ptxas_log: str) -> dict[tuple[str, str], int]:
    """nvcc -Xptxas -v log -> {(arch, mangled function): spill stores + loads in bytes}."""
    spills = {}
    arch = ""
    function = None
    for line in ptxas_log.splitlines():
        if match := re.search(r"Compiling entry function '(\S+)' for '(sm_\d+a?)'", line):
            arch = match.group(2)
        elif match := re.search(r"Function properties for (\S+)", line):
            function = match.group(1)
        elif function is not None and (match := _SPILL_LINE.search(line)):
            spills[(arch, function)] = int(match.group(1)) + int(match.group(2))
            function = None
    return spills


def parse_spills(ptxas_log: str) -> int | None:
    """Bytes of spill stores + loads per thread summed over the functions of a `ptxas -v` log (None: no line)."""
    matches = _SPILL_LINE.findall(ptxas_log)
    return sum(int(stores) + int(loads) for stores, loads in matches) if matches else None


# ------------------------------------------------------------------------------------ Triton launch capture


@dataclass
class Launch:
    fn: object  # triton JITFunction
    args: tuple
    kwargs: dict


@contextlib.contextmanager
def capture_launches() -> Iterator[list[Launch]]:
    """Record the kernel launches of the code inside instead of running them (no GPU is touched)."""
    from triton.runtime.jit import JITFunction

    launches: list[Launch] = []
    real_run = JITFunction.run

    def record(self, *args, grid, warmup, **kwargs):
        launches.append(Launch(self, args, kwargs))

    JITFunction.run = record
    try:
        yield launches
    finally:
        JITFunction.run = real_run


@dataclass
class TritonCase:
    """One launch to audit: `launch` calls the production launcher with the configuration for `capability`."""

    kernel: str
    config: str
    dtype: str
    dim: int | None
    launch: Callable[[], None]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _meta(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


def _tile_label(cfg) -> str:
    return f"{cfg.block_m}x{cfg.block_n}x{cfg.block_k} w{cfg.num_warps} s{cfg.num_stages}"


def _at_fp32_precision(precision: str, launch: Callable) -> Callable:
    """`launch` run with torch's CUDA fp32 matmul precision set to `precision` (restored afterwards)."""

    def launch_at_precision(*args):
        matmul = torch.backends.cuda.matmul
        saved = matmul.fp32_precision
        matmul.fp32_precision = precision
        try:
            return launch(*args)
        finally:
            matmul.fp32_precision = saved

    return launch_at_precision


def _contrastive_cases(capability: Capability, dims: tuple[int, ...], production: bool) -> list[TritonCase]:
    from fastclip.kernels import contrastive_loss as kernels

    # Triton specialises integer arguments divisible by 16 (and pointers aligned to 16 B): the goal shapes compile
    # one kernel, a batch like 32,767 (its chunk 4,095 rows, rank offset 17) another, audited outside --production.
    shapes = [(GOAL_CHUNK_ROWS, GOAL_BATCH, 0, dim, "") for dim in dims]
    if not production:
        shapes.append((GOAL_CHUNK_ROWS - 1, GOAL_BATCH - 1, 17, GOAL_DIM, ", B = 32767"))
    cases = []
    # fp32 tiles compute at torch's fp32 matmul precision (contrastive_loss._input_precision): TF32 once training
    # enables it (fastclip-train does on CUDA), full fp32 ("ieee") otherwise; both compile, so both are audited.
    variants = [(torch.bfloat16, None), (torch.float16, None), (torch.float32, "tf32"), (torch.float32, "ieee")]
    for dtype, precision in variants:
        for rows, batch, diag_start, dim, shape_note in shapes:
            x = _meta(rows, dim, dtype=dtype)
            y = _meta(batch, dim, dtype=dtype)
            scalar = _meta(1)
            row_stats, col_stats = _meta(rows), _meta(batch)
            configs = {name: kernels.default_config(capability, dtype, name, dim) for name in kernels.KERNELS}

            def fwd(x=x, y=y, scalar=scalar, cfg=configs["clip_fwd"], diag_start=diag_start):
                kernels.clip_loss_fwd(x, y, scalar, diag_start, cfg)

            def bwd(x=x, y=y, scalar=scalar, cfg=configs["clip_bwd"], diag_start=diag_start, r=row_stats, c=col_stats):
                kernels.clip_loss_bwd(x, y, scalar, diag_start, r, r, c, c, cfg)

            def siglip(need_grad, x=x, y=y, scalar=scalar, cfg=configs["siglip_fwd"], diag_start=diag_start):
                kernels.siglip_loss_fwd(x, y, scalar, scalar, diag_start, scalar if need_grad else None, cfg)

            name = _dtype_name(dtype) + (f" ({precision})" if precision else "") + shape_note
            if precision:
                fwd, bwd, siglip = (_at_fp32_precision(precision, launch) for launch in (fwd, bwd, siglip))
            cases += [
                TritonCase("clip_loss_fwd", _tile_label(configs["clip_fwd"]), name, dim, fwd),
                TritonCase("clip_loss_bwd", _tile_label(configs["clip_bwd"]), name, dim, bwd),
                TritonCase("siglip_loss_fwd", _tile_label(configs["siglip_fwd"]), name, dim, lambda s=siglip: s(True)),
                TritonCase(
                    "siglip_loss_fwd (loss only)", _tile_label(configs["siglip_fwd"]), name, dim,
                    lambda s=siglip: s(False),
                ),
            ]
    return cases


def _gaussian_noise_cases(capability: Capability, production: bool) -> list[TritonCase]:
    from fastclip.kernels import gaussian_noise as kernels
    from fastclip.ops.gaussian_noise import OUT_DTYPES

    cfg = kernels.launch_config(capability)
    sigmas, images, size = 6, 64, 224  # the goal: a 6-sigma sweep of 224 px images
    cases = []
    # The evaluation feeds uint8 (decoded) or float32 (preprocessed) images; half inputs differ only in the load.
    in_dtypes = (torch.uint8, torch.float32) if production else (torch.uint8, torch.float32, torch.float16, torch.bfloat16)
    for in_dtype in in_dtypes:
        for out_dtype in OUT_DTYPES:
            for quantize in (False, True):
                for normalize in (False, True):

                    def launch(in_dtype=in_dtype, out_dtype=out_dtype, quantize=quantize, normalize=normalize):
                        mean = _meta(3) if normalize else None
                        kernels.gaussian_noise_fwd(
                            _meta(images, 3, size, size, dtype=in_dtype), _meta(sigmas, images), seed=0,
                            sample_ids=_meta(images, dtype=torch.int64), quantize=quantize, mean=mean, std=mean,
                            out_dtype=out_dtype, config=cfg,
                        )

                    variant = "+".join(["quantize"] * quantize + ["normalize"] * normalize) or "plain"
                    dtype = f"{_dtype_name(in_dtype)}->{_dtype_name(out_dtype)}"
                    cases.append(TritonCase(f"gaussian_noise_fwd ({variant})", cfg.label(), dtype, None, launch))
    return cases


def _cue_conflict_cases(capability: Capability) -> list[TritonCase]:
    from fastclip.kernels import cue_conflict as kernels
    from fastclip.ops.cue_conflict import OUT_DTYPES

    cfg = kernels.launch_config(capability)
    cases = []
    for out_dtype in OUT_DTYPES:

        def launch(out_dtype=out_dtype):
            kernels.cue_conflict_fwd(
                _meta(16, 224, 224), _meta(16, 3, 224, 224), _meta(256, 2, dtype=torch.int64), _meta(256, 3),
                out_dtype, config=cfg,
            )

        cases.append(TritonCase("cue_conflict_fwd", cfg.label(), f"float32->{_dtype_name(out_dtype)}", None, launch))
    return cases


def _toyworld_cases(capability: Capability) -> list[TritonCase]:
    from fastclip.kernels import toyworld_render as kernels

    op = importlib.import_module("fastclip.ops.toyworld_render")  # the package re-exports a function of this name

    cfg = kernels.launch_config(capability)
    cpu = torch.device("cpu")
    tables = op._tables(cpu)
    params = op.SceneParams(
        shape_id=torch.zeros(1, dtype=torch.int64), texture_id=torch.zeros(1, dtype=torch.int64),
        center=torch.zeros(1, 2), scale=torch.ones(1), rotation=torch.zeros(1), texture_colors=torch.zeros(1, 2, 3),
        background_color=torch.zeros(1, 3), texture_phase=torch.zeros(1, 2),
        background_seed=torch.zeros(1, dtype=torch.int64),
    )
    background = (op.BACKGROUND_CONTRAST, op.BACKGROUND_FREQ_MIN, op.BACKGROUND_FREQ_MAX, op.BACKGROUND_KEY,
                  op.BACKGROUND_STREAMS)

    def launch():
        kernels.toyworld_render_fwd(params, 224, tables, background, config=cfg)

    return [TritonCase("toyworld_render_fwd", cfg.label(), "float32", None, launch)]


def _philox_cases(capability: Capability) -> list[TritonCase]:
    from fastclip.kernels import philox as kernels

    cfg = kernels.launch_config(capability)

    def launch():
        kernels.philox_fwd(0, 0, _meta(64, dtype=torch.int64), _meta(8, dtype=torch.int64), 150528, config=cfg)

    return [TritonCase("philox_fwd", cfg.label(), "int64", None, launch)]


def _correlation_cases(capability: Capability) -> list[TritonCase]:
    from fastclip.kernels import kendall_tau, pearson
    from fastclip.ops.correlation import NEAR_CONSTANT_THRESHOLD

    kendall_cfg = kendall_tau.launch_config(capability)

    def launch_pearson():
        # the threshold the op passes (fastclip.ops.correlation.NEAR_CONSTANT_THRESHOLD), a constexpr of the kernel
        pearson.pearson_fwd(_meta(24, 10125, dtype=torch.float64), _meta(1, 10125, dtype=torch.float64),
                            NEAR_CONSTANT_THRESHOLD)

    def launch_kendall():
        x = _meta(24, 3000, dtype=torch.float64)
        kendall_tau.kendall_tau_fwd(x, x, config=kendall_cfg)

    # pearson_fwd picks no configuration of its own: Triton's defaults (4 warps, 3 stages) on every GPU.
    return [
        TritonCase("pearson_fwd", f"BLOCK={pearson.BLOCK} w4 s3", "float64", None, launch_pearson),
        TritonCase("kendall_tau_fwd", kendall_cfg.label(), "float64", None, launch_kendall),
    ]


def triton_cases(capability: Capability, production: bool) -> list[TritonCase]:
    """Every launch the Triton launchers make on a GPU of this capability; with `production`, those of the goal
    shapes only (D = GOAL_DIM, the image dtypes the evaluation feeds)."""
    dims = (GOAL_DIM,) if production else ALL_DIMS
    return (
        _contrastive_cases(capability, dims, production)
        + _gaussian_noise_cases(capability, production)
        + _cue_conflict_cases(capability)
        + _toyworld_cases(capability)
        + _philox_cases(capability)
        + _correlation_cases(capability)
    )


# ----------------------------------------------------------------------------------------- Triton compile


def _nvidia_tool(name: str) -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def compile_launch(launch: Launch, cc: int):
    """triton.compile the captured launch for sm_<cc>, specialised exactly as the JIT would specialise it.
    Returns the compiled kernel and the log of Triton's own `ptxas -v` run (registers, stack, spills)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    target = GPUTarget("cuda", cc, 32)
    backend = make_backend(target)
    fn = launch.fn
    kwargs = dict(launch.kwargs)
    kwargs.setdefault("debug", fn.debug)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound_args, specialization, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound_args, specialization, options)
    log = io.StringIO()
    with _knob(triton.knobs.nvidia, "dump_ptxas_log", True), contextlib.redirect_stdout(log):
        compiled = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__)
    return compiled, log.getvalue()


@contextlib.contextmanager
def _knob(group, name: str, value) -> Iterator[None]:
    previous = getattr(group, name)
    setattr(group, name, value)
    try:
        yield
    finally:
        setattr(group, name, previous)


def _measure_cubin(cubin: bytes, name: str) -> tuple[int, int, int]:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, f"{name}.cubin")
        Path(path).write_bytes(cubin)
        text = subprocess.run(
            [_nvidia_tool("cuobjdump"), "--dump-resource-usage", path], capture_output=True, text=True, check=True
        ).stdout
    usage = [value for (_, function), value in parse_resource_usage(text).items() if function == name]
    if not usage:
        raise RuntimeError(f"cuobjdump printed no resource usage for {name}:\n{text}")
    return usage[0]


def audit_triton_case(index: int, target: str, production: bool) -> AuditRow:
    """Compile case `index` of triton_cases for `target` and measure it (runs in a worker process)."""
    cc = _target_cc(target)
    case = triton_cases((cc // 10, cc % 10), production)[index]
    row = AuditRow(case.kernel, case.config, case.dtype, case.dim, target)
    start = time.perf_counter()
    try:
        with capture_launches() as launches:
            case.launch()
        if len(launches) != 1:
            raise RuntimeError(f"expected one kernel launch, captured {len(launches)}")
        compiled, ptxas_log = compile_launch(launches[0], cc)
        registers, stack, static_shared = _measure_cubin(compiled.asm["cubin"], compiled.metadata.name)
        spill = parse_spills(ptxas_log)
        if spill is None:
            raise RuntimeError("Triton's ptxas -v log has no spill line (TRITON_DUMP_PTXAS_LOG had no effect)")
        row.registers, row.stack, row.spill = registers, stack, spill
        row.shared = compiled.metadata.shared + static_shared
        evaluate(row, compiled.metadata.num_warps)
    except Exception as exc:  # a compile error is a finding, reported in the table
        row.error = f"compile error: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    row.seconds = time.perf_counter() - start
    return row


def target_unsupported(target: str) -> str | None:
    """Why the installed Triton/ptxas cannot compile for this target (None when it can)."""
    import triton
    import triton.language as tl

    @triton.jit
    def _probe_kernel(out):
        tl.store(out, 1.0)

    try:
        with capture_launches() as launches:
            _probe_kernel[(1,)](_meta(1))
        compile_launch(launches[0], _target_cc(target))
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"[:200]
    return None


def _worker_init(cache_dir: str) -> None:
    os.environ["TRITON_CACHE_DIR"] = cache_dir
    os.environ.pop("TRITON_INTERPRET", None)


def audit_triton(targets: list[str], production: bool, jobs: int, say: Callable[[str], None]) -> list[AuditRow]:
    rows: list[AuditRow] = []
    with tempfile.TemporaryDirectory(prefix="fastclip-audit-") as cache_dir:
        _worker_init(cache_dir)
        supported = []
        for target in targets:
            reason = target_unsupported(target)
            if reason is None:
                supported.append(target)
            else:
                say(f"skipped {target}: the installed Triton cannot compile for it ({reason})")
        work = [
            (index, target)
            for target in supported
            for index in range(len(triton_cases((_target_cc(target) // 10, _target_cc(target) % 10), production)))
        ]
        if jobs <= 1:
            return [audit_triton_case(index, target, production) for index, target in work]
        with concurrent.futures.ProcessPoolExecutor(
            jobs, mp_context=_spawn_context(), initializer=_worker_init, initargs=(cache_dir,)
        ) as pool:
            # By module name, so that workers find the function also when this file runs as __main__.
            from fastclip.kernels import audit as this_module

            futures = [pool.submit(this_module.audit_triton_case, index, target, production) for index, target in work]
            for done, future in enumerate(futures, 1):
                rows.append(future.result())
                if done % 10 == 0 or done == len(futures):
                    say(f"compiled {done}/{len(futures)} Triton launches")
    return rows


def _spawn_context():
    import multiprocessing

    return multiprocessing.get_context("spawn")


# ------------------------------------------------------------------------------------------------ CUDA kernels


def cuda_architectures() -> list[int]:
    """Compute capabilities of the extension's build list (fastclip.cuda_archs), e.g. [80, 86, 89, 90, 100]."""
    from fastclip.cuda_archs import DEFAULT_CUDA_ARCHS

    archs = os.environ.get("FASTCLIP_CUDA_ARCHS", DEFAULT_CUDA_ARCHS)
    return [int(a.replace("+PTX", "").replace(".", "")) for a in re.split(r"[;\s,]+", archs.strip()) if a]


def _readable_kernel_name(mangled: str) -> str:
    demangled = subprocess.run(["c++filt", mangled], capture_output=True, text=True).stdout.strip() or mangled
    match = re.search(r"(\w+)<(\w+)>\(", demangled)
    if match:
        return f"{match.group(1)}<{match.group(2)}>"
    return demangled.split("(")[0].split("::")[-1]


def audit_cuda(source_dir: Path, say: Callable[[str], None]) -> list[AuditRow]:
    """nvcc every csrc/cuda/*.cu for each architecture of the build list; one row per (kernel, architecture)."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        say("skipped the CUDA kernels: nvcc is not on PATH (install a CUDA toolkit matching torch.version.cuda)")
        return []
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS, include_paths

    archs = cuda_architectures()
    gencode = [f"-gencode=arch=compute_{cc},code=sm_{cc}" for cc in archs]
    includes = [f"-I{path}" for path in include_paths(device_type="cuda")] + [f"-I{source_dir}"]
    rows = []
    for source in sorted(source_dir.glob("cuda/*.cu")):
        start = time.perf_counter()
        say(f"nvcc {source.name} for sm_{', sm_'.join(map(str, archs))} ...")
        with tempfile.TemporaryDirectory() as folder:
            obj = os.path.join(folder, source.stem + ".o")
            build = subprocess.run(
                [nvcc, "-c", "-O3", "-std=c++20", "-Xptxas", "-v", *COMMON_NVCC_FLAGS, *includes, *gencode, str(source), "-o", obj],
                capture_output=True, text=True,
            )
            if build.returncode != 0:
                message = next((l for l in build.stderr.splitlines() if "error" in l), build.stderr.strip()[-200:])
                rows.append(AuditRow(source.name, "-", "-", None, "all", error=f"nvcc error: {message}"))
                continue
            spills = parse_spills_by_function(build.stdout + build.stderr)
            cuobjdump = _nvidia_tool("cuobjdump")
            usage = parse_resource_usage(
                subprocess.run([cuobjdump, "--dump-resource-usage", obj], capture_output=True, text=True).stdout
            )
            bounds = parse_max_threads(subprocess.run([cuobjdump, "-elf", obj], capture_output=True, text=True).stdout)
        seconds = time.perf_counter() - start
        by_arch = sorted(usage.items(), key=lambda item: (_target_cc(item[0][0]), item[0][1]))
        for (arch, function), (registers, stack, shared) in by_arch:
            threads = bounds.get((arch, function))
            row = AuditRow(
                _readable_kernel_name(function),
                f"__launch_bounds__({threads})" if threads else "no __launch_bounds__",
                "-", None, arch, registers=registers, stack=stack, spill=spills.get((arch, function)), shared=shared,
                seconds=seconds / max(len(usage), 1),
            )
            if row.spill is None:
                row.error = "nvcc's ptxas -v log has no spill line for this kernel"
            if threads:
                evaluate(row, -(-threads // 32))
            rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------------- output

_COLUMNS = ("kernel", "config", "dtype", "D", "target", "regs", "spill", "stack", "smem", "warps/SM", "result")


def _cells(row: AuditRow) -> list[str]:
    def show(value):
        return "-" if value is None else str(value)

    result = "pass" if row.passed else "FAIL: " + "; ".join(row.failures)
    return [row.kernel, row.config, row.dtype, show(row.dim), row.target, show(row.registers), show(row.spill), show(row.stack),
            show(row.shared), show(row.warps_per_sm), result]


def format_table(rows: list[AuditRow], markdown: bool) -> str:
    cells = [_cells(row) for row in rows]
    if markdown:
        lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
        return "\n".join(lines + ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in cells])
    widths = [max(len(r[i]) for r in cells + [list(_COLUMNS)]) for i in range(len(_COLUMNS))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(_COLUMNS, widths))]
    return "\n".join(lines + ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells])


def environment() -> dict[str, str]:
    import triton

    ptxas = subprocess.run([_nvidia_tool("ptxas"), "--version"], capture_output=True, text=True).stdout
    release = re.search(r"release ([\d.]+)", ptxas)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "triton": triton.__version__,
        "ptxas": release.group(1) if release else "unknown",
        "torch": torch.__version__,
        "commit": commit or "unknown",
        "date": datetime.date.today().isoformat(),
    }


def markdown_section(rows: list[AuditRow], env: dict[str, str], args_line: str, seconds: float) -> str:
    failed = sum(not row.passed for row in rows)
    summary = f"{len(rows)} compiled, {failed} failed" if failed else f"{len(rows)} compiled, all pass (zero spills)"
    return (
        f"Kernel audit under triton {env['triton']} (ptxas {env['ptxas']}), commit {env['commit']}, {env['date']}: "
        f"`{args_line}` ({summary}; {seconds:.0f} s on this machine). regs: registers per thread; spill: bytes of "
        "spill stores + loads per thread (ptxas -v); stack: stack frame per thread (spills and local arrays such as "
        "the sin/cos range reduction); smem: shared memory per block, bytes; warps/SM: resident warps those allow.\n\n"
        + format_table(rows, markdown=True)
    )


def replace_between_markers(text: str, begin: str, end: str, body: str) -> str:
    """text with everything between the begin/end marker lines replaced by body (markers appended if absent)."""
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        return head + block + tail
    return text.rstrip("\n") + "\n\n" + block + "\n"


def audit_markers(triton_version: str) -> tuple[str, str]:
    series = ".".join(triton_version.split(".")[:2])
    return f"<!-- audit:begin triton-{series} -->", f"<!-- audit:end triton-{series} -->"


# ------------------------------------------------------------------------------------------------------ CLI


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fastclip.kernels.audit",
        description="Compile every Triton and CUDA kernel for real GPUs (no GPU needed) and check registers, "
        "spills, shared memory and occupancy. Exits 1 on a compile error, a spill or shared memory over the limit.",
    )
    parser.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                        help="comma-separated, e.g. sm_80,sm_90 (default: %(default)s; a target the installed "
                        "ptxas cannot compile for is skipped with a line saying so)")
    parser.add_argument("--production", action="store_true",
                        help=f"only the goal shapes: D={GOAL_DIM} (default: D in {ALL_DIMS}) and uint8/float32 "
                        "images (default: also float16/bfloat16)")
    parser.add_argument("--no-cuda", action="store_true", help="skip the csrc/cuda kernels (nvcc takes minutes)")
    parser.add_argument("--jobs", type=int, default=2, help="compile processes (default: %(default)s)")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables (for benchmarks/RESULTS.md)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the rows and versions as JSON")
    parser.add_argument("--roofline", action="store_true", help="also print the roofline estimate of the GPU goals")
    parser.add_argument("--update-results", type=Path, metavar="RESULTS_MD",
                        help="write the audit table (and the roofline with --roofline) between their markers")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    try:
        args.target_list = [t.strip() for t in args.targets.split(",") if t.strip()]
        for target in args.target_list:
            _target_cc(target)
    except ValueError as exc:
        parser.error(str(exc))
    if args.update_results is not None and not args.update_results.is_file():
        parser.error(f"--update-results: {args.update_results} is not a file")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("fastclip.kernels.audit: unset TRITON_INTERPRET (it replaces the compiler with the CPU interpreter)",
              file=sys.stderr)
        return 2

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    start = time.perf_counter()
    rows = audit_triton(args.target_list, args.production, args.jobs, say)
    if not args.no_cuda:
        rows += audit_cuda(Path(__file__).resolve().parent.parent / "csrc", say)
    seconds = time.perf_counter() - start
    env = environment()
    # The command that reproduces these rows (output options left out).
    args_line = f"python -m fastclip.kernels.audit --targets {args.targets}" + " --production" * args.production + (
        " --no-cuda" * args.no_cuda
    )
    failed = [row for row in rows if not row.passed]
    if args.markdown:
        print(markdown_section(rows, env, args_line, seconds))
    else:
        print(format_table(rows, markdown=False))
    if args.roofline:
        from fastclip.kernels.roofline import format_roofline

        print()
        print(format_roofline(markdown=args.markdown))
    print(f"\n{len(rows)} kernels compiled in {seconds:.0f} s under triton {env['triton']} (ptxas {env['ptxas']}): "
          + (f"{len(failed)} FAILED" if failed else "all pass"), file=sys.stderr)
    if args.json is not None:
        payload = {"environment": env, "seconds": seconds,
                   "rows": [dataclasses.asdict(row) | {"passed": row.passed, "failures": row.failures} for row in rows]}
        _write_atomic(args.json, json.dumps(payload, indent=1) + "\n")
    if args.update_results is not None:
        text = args.update_results.read_text()
        text = replace_between_markers(
            text, *audit_markers(env["triton"]), markdown_section(rows, env, args_line, seconds)
        )
        if args.roofline:
            from fastclip.kernels.roofline import ROOFLINE_MARKERS, format_roofline

            text = replace_between_markers(text, *ROOFLINE_MARKERS, format_roofline(markdown=True))
        _write_atomic(args.update_results, text)
    return 1 if failed else 0


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


if __name__ == "__main__":
    sys.exit(main())
