"""Triton kernels for fastclip.ops.contrastive_loss: CLIP and SigLIP losses that never write a B x B matrix.

Every kernel tiles C = X Yᵀ (X: R x D rows of this process, Y: B x D all columns) with fp32 accumulation and
finishes each tile in registers. The diagonal of the global batch (row i of X meets column diag_start + i) is
masked in every kernel; the driver in fastclip/ops/contrastive_loss.py handles it in fp32 from the O(B) row dots,
which is what keeps the loss accurate down to 1e-13 at logit_scale 100 (../shared/reference/loss.md §5).

  _clip_loss_fwd_kernel   one program per (row block, column split) walks its column blocks with an online max and
                          returns, per row, (max, Σexp, Σexp·C) over the off-diagonal logits, and per (row block,
                          column), the same three partials for the columns. C-weighted sums give ∂L/∂logit_scale
                          without a second pass.
  _clip_loss_bwd_kernel   recomputes one tile and writes G = a_i·e^(S-r_i) + b_j·e^(S-c_j) (diagonal zero) into a
                          row-chunk buffer; the driver turns it into dX = G·Y and dY += Gᵀ·X with two cuBLAS GEMMs,
                          because a full-D accumulator (D up to 1152) does not fit in registers.
  _siglip_loss_fwd_kernel recomputes one tile and writes Σsoftplus, and, when gradients are wanted, G = σ(Z)·coef and
                          the tile's Σσ·C and Σσ for ∂L/∂logit_scale and ∂L/∂logit_bias: SigLIP needs no
                          normaliser, so its gradients come out of the forward pass.

Partial sums go to per-program slots and are reduced by torch, never by atomics, so results are bitwise
reproducible. Launchers take tensors already validated by the op; half inputs give bf16 G (fp16 would underflow
its e^(S-r) terms), fp32 inputs give fp32 G. Under TRITON_INTERPRET=1 (CPU) only fp32 inputs are supported: the
interpreter's bf16 tl.dot is broken (triton#11584), so the op upcasts there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ._launch import Capability, device_capability

LOG2E = 1.4426950408889634


@dataclass(frozen=True)
class TileConfig:
    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int
    group_m: int = 8
    # Column splits of the forward grid; None picks enough programs to fill the device twice.
    split_n: int | None = None


# Kernel names of gpu_configs; "tile" is the name the op used for the one configuration of both G kernels.
KERNELS = ("clip_fwd", "clip_bwd", "siglip_fwd")
_KERNEL_ALIASES = {"tile": "clip_bwd"}
# The CPU interpreter ignores warps and stages; small tiles keep its numpy work short.
_INTERPRETER_CONFIG = TileConfig(block_m=32, block_n=32, block_k=32, num_warps=4, num_stages=1, split_n=2)


def gpu_configs(capability: Capability, dtype: torch.dtype, dim: int | None = None) -> dict[str, TileConfig]:
    """The configuration each kernel of KERNELS launches with on a GPU of this compute capability, for features
    of this dtype and width D (D changes nothing today: every width in use compiles spill-free with these).
    `python -m fastclip.kernels.audit` compiles exactly these for sm_80/90/100.

    Chosen from the audit's numbers: registers per thread, shared memory per block and resident warps per SM at
    D = 768 under triton 3.8 (3.6 in brackets where it differs); every one also compiles without spills at
    D = 512/1024/1152, for an unaligned batch, and for sm_100. All are 8-warp tensor-core tiles with 2-3 pipeline
    stages; what differs is what keeps each kernel's fp32 epilogue (the tile's exponentials and the sums beside
    the accumulator) within 255 registers.
    """
    half = dtype in (torch.float16, torch.bfloat16)
    hopper = capability >= (9, 0)
    if half and hopper:
        return {
            # 171 [174] regs, 73 KiB smem, 8 warps/SM; wgmma keeps the accumulator lean enough for 64-wide K steps.
            "clip_fwd": TileConfig(block_m=128, block_n=64, block_k=64, num_warps=8, num_stages=3),
            # 178 [174] regs, 97 KiB, 8 warps/SM: G is compute-bound (2·D FLOPs per 2-byte store), so the full
            # 128 x 128 tensor-core tile.
            "clip_bwd": TileConfig(block_m=128, block_n=128, block_k=64, num_warps=8, num_stages=3),
            # 196 [216] regs, 73 KiB, 8 warps/SM. At 128 x 128 (the G kernel's tile) the softplus, sigmoid and
            # three sums took 255 regs + 668 B of spill traffic per thread: half the columns per program fit.
            "siglip_fwd": TileConfig(block_m=128, block_n=64, block_k=64, num_warps=8, num_stages=3),
        }
    if half:
        # sm_8x: mma.sync holds both operands' K slices in registers, so K steps of 32, not 64: the forward drops
        # from 255 regs + 64 B of spill traffic to 165 [195] regs (24 KiB smem, 8 warps/SM), the G kernel from 174
        # to 128 regs (32 KiB, 16 warps/SM), SigLIP's forward (128 x 64) to 112 [193] regs; all fit sm_86/89's
        # 99 KiB per block.
        return {
            "clip_fwd": TileConfig(block_m=128, block_n=64, block_k=32, num_warps=8, num_stages=3),
            "clip_bwd": TileConfig(block_m=128, block_n=128, block_k=32, num_warps=8, num_stages=3),
            "siglip_fwd": TileConfig(block_m=128, block_n=64, block_k=32, num_warps=8, num_stages=3),
        }
    if hopper:
        # float32 tiles run at torch's fp32 matmul precision (_input_precision), TF32 or full fp32 ("ieee", FMA);
        # the audit compiles both. Forward in K steps of 16: at 32 the ieee tile of an unaligned batch took 255 regs
        # + 20 B of spill traffic; now 166 (tf32) / 176-196 (ieee) regs, 37 / 25 KiB, 8 warps/SM. SigLIP's forward
        # likewise (at 32, triton 3.6's ieee tile spilled 40 B): 149-222 regs, 37 / 25 KiB, 8 warps/SM. G keeps
        # 32: 107 / 128 regs (tf32 / ieee, triton 3.8), 49 / 25 KiB, 16 warps/SM.
        return {
            "clip_fwd": TileConfig(block_m=128, block_n=64, block_k=16, num_warps=8, num_stages=3),
            "clip_bwd": TileConfig(block_m=128, block_n=64, block_k=32, num_warps=8, num_stages=2),
            "siglip_fwd": TileConfig(block_m=128, block_n=64, block_k=16, num_warps=8, num_stages=3),
        }
    # float32 on sm_8x: 32-wide K slices overflow registers (forward 255 regs + 76 B of spill traffic, G 255 regs);
    # K steps of 16 give 168-200 / 86-128 / 114-128 regs (tf32 / ieee, triton 3.8), 24-32 KiB, 8 / 16 / 16 warps/SM.
    return {
        "clip_fwd": TileConfig(block_m=128, block_n=64, block_k=16, num_warps=8, num_stages=3),
        "clip_bwd": TileConfig(block_m=128, block_n=64, block_k=16, num_warps=8, num_stages=3),
        "siglip_fwd": TileConfig(block_m=128, block_n=64, block_k=16, num_warps=8, num_stages=3),
    }


def default_config(
    device: torch.device | Capability | None, dtype: torch.dtype, kernel: str = "tile", dim: int | None = None
) -> TileConfig:
    """Tile sizes for `kernel` (one of KERNELS, or "tile" for the G kernels) on `device` (or a compute capability):
    gpu_configs' choice on a GPU, small tiles for the CPU interpreter."""
    capability = device_capability(device) if isinstance(device, torch.device) else device
    if capability is None:
        return _INTERPRETER_CONFIG
    return gpu_configs(capability, dtype, dim)[_KERNEL_ALIASES.get(kernel, kernel)]


def _input_precision(dtype: torch.dtype) -> str:
    """tl.dot's input precision for operands of `dtype`, read at launch time.

    fp32 operands follow torch's setting for CUDA fp32 matmuls (torch.backends.cuda.matmul.fp32_precision, which
    torch.set_float32_matmul_precision and the legacy allow_tf32 flag also set), because the backward's cuBLAS
    GEMMs (dX = s·G·Y, dY = s·Gᵀ·X) follow it too: TF32 in the tiles exactly when TF32 in the GEMMs, full fp32
    ("ieee") in both otherwise, so S and its gradient are computed at one precision. Half operands ignore it. The
    interpreter computes in numpy fp32 whatever this says.
    """
    if dtype != torch.float32:
        return "tf32"
    return "tf32" if torch.backends.cuda.matmul.fp32_precision == "tf32" else "ieee"


def _check_operands(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.device.type == "cpu" and x.dtype != torch.float32:
        raise TypeError(
            f"contrastive_loss Triton kernels on the CPU (TRITON_INTERPRET=1) take float32 features, got {x.dtype}: "
            "the interpreter's bf16 dot is broken"
        )
    if x.dtype != y.dtype or x.stride(1) != 1 or y.stride(1) != 1:
        raise ValueError("contrastive_loss kernels need x and y of one dtype, each with unit stride along D")


@triton.jit
def _tile_dot(
    X, Y, rows, cols, row_ok, col_ok, stride_x, stride_y,
    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    """C[rows, cols] = X[rows] · Y[cols]ᵀ accumulated in fp32 (zero outside the valid rows and columns)."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    x_rows = X + rows[:, None].to(tl.int64) * stride_x
    y_rows = Y + cols[:, None].to(tl.int64) * stride_y
    for k in range(0, D, BLOCK_K):
        ks = k + tl.arange(0, BLOCK_K)
        k_ok = ks < D
        x = tl.load(x_rows + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        y = tl.load(y_rows + ks[None, :], mask=col_ok[:, None] & k_ok[None, :], other=0.0)
        acc = tl.dot(x, tl.trans(y), acc, input_precision=INPUT_PRECISION)
    return acc


@triton.jit
def _grouped_tile(R, B, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(row block, column block) of this program, GROUP_M row blocks at a time so that Y tiles are reused in L2."""
    pid = tl.program_id(0)
    num_m = tl.cdiv(R, BLOCK_M)
    num_n = tl.cdiv(B, BLOCK_N)
    in_group = GROUP_M * num_n
    first_m = (pid // in_group) * GROUP_M
    group_rows = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % in_group) % group_rows
    pid_n = (pid % in_group) // group_rows
    return pid_m, pid_n


@triton.jit
def _grouped_tile_dot(
    X, Y, R, B, stride_x, stride_y,
    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, INPUT_PRECISION: tl.constexpr,
):
    """The tile of C = X·Yᵀ of this program of a one-tile-per-program grid (_grouped_tile's order): its rows and
    columns, which of them are valid, and C there."""
    pid_m, pid_n = _grouped_tile(R, B, BLOCK_M, BLOCK_N, GROUP_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < R
    col_ok = cols < B
    c = _tile_dot(X, Y, rows, cols, row_ok, col_ok, stride_x, stride_y, D, BLOCK_M, BLOCK_N, BLOCK_K, INPUT_PRECISION)
    return rows, cols, row_ok, col_ok, c


@triton.jit
def _clip_loss_fwd_kernel(
    X, Y, SCALE,
    ROW_M, ROW_L, ROW_T,  # (split_n, R) partials over this program's columns
    COL_M, COL_L, COL_T,  # (row blocks, B) partials over this program's rows
    R, B, diag_start, stride_x, stride_y,
    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    split_n = tl.num_programs(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < R
    scale = tl.load(SCALE).to(tl.float32)
    scale2 = scale * 1.4426950408889634  # logits in log2 units: one exp2 per element
    row_max = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    row_sum = tl.zeros((BLOCK_M,), tl.float32)
    row_dot = tl.zeros((BLOCK_M,), tl.float32)
    for nb in range(pid_n, tl.cdiv(B, BLOCK_N), split_n):
        cols = nb * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = cols < B
        c = _tile_dot(X, Y, rows, cols, row_ok, col_ok, stride_x, stride_y, D, BLOCK_M, BLOCK_N, BLOCK_K, INPUT_PRECISION)
        off_diag = row_ok[:, None] & col_ok[None, :] & (cols[None, :] != rows[:, None] + diag_start)
        s2 = tl.where(off_diag, c * scale2, float("-inf"))

        # Online max: a row (or column) with no valid entry yet keeps max -inf; shifting by 0 then gives e^-inf = 0.
        new_max = tl.maximum(row_max, tl.max(s2, 1))
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)
        rescale = tl.exp2(row_max - shift)
        p = tl.exp2(s2 - shift[:, None])
        row_sum = row_sum * rescale + tl.sum(p, 1)
        row_dot = row_dot * rescale + tl.sum(p * c, 1)
        row_max = new_max

        col_max = tl.max(s2, 0)
        col_shift = tl.where(col_max == float("-inf"), 0.0, col_max)
        q = tl.exp2(s2 - col_shift[None, :])
        col_slot = pid_m.to(tl.int64) * B + cols
        tl.store(COL_M + col_slot, col_max, mask=col_ok)
        tl.store(COL_L + col_slot, tl.sum(q, 0), mask=col_ok)
        tl.store(COL_T + col_slot, tl.sum(q * c, 0), mask=col_ok)
    row_slot = pid_n.to(tl.int64) * R + rows
    tl.store(ROW_M + row_slot, row_max, mask=row_ok)
    tl.store(ROW_L + row_slot, row_sum, mask=row_ok)
    tl.store(ROW_T + row_slot, row_dot, mask=row_ok)


@triton.jit
def _clip_loss_bwd_kernel(
    X, Y, SCALE,
    ROW_LSE2, ROW_COEF,  # (R,) log2-unit row log-sum-exp (diagonal included) and the row term's weight
    COL_LSE2, COL_COEF,  # (B,) the same for columns
    G, stride_g,
    R, B, diag_start, stride_x, stride_y,
    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, INPUT_PRECISION: tl.constexpr,
):
    rows, cols, row_ok, col_ok, c = _grouped_tile_dot(
        X, Y, R, B, stride_x, stride_y, D, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, INPUT_PRECISION
    )
    s2 = c * (tl.load(SCALE).to(tl.float32) * 1.4426950408889634)
    row_lse2 = tl.load(ROW_LSE2 + rows, mask=row_ok, other=0.0)
    row_coef = tl.load(ROW_COEF + rows, mask=row_ok, other=0.0)
    col_lse2 = tl.load(COL_LSE2 + cols, mask=col_ok, other=0.0)
    col_coef = tl.load(COL_COEF + cols, mask=col_ok, other=0.0)
    g = row_coef[:, None] * tl.exp2(s2 - row_lse2[:, None]) + col_coef[None, :] * tl.exp2(s2 - col_lse2[None, :])
    in_range = row_ok[:, None] & col_ok[None, :]
    off_diag = in_range & (cols[None, :] != rows[:, None] + diag_start)
    g = tl.where(off_diag, g, 0.0)
    g_ptrs = G + rows[:, None].to(tl.int64) * stride_g + cols[None, :]
    tl.store(g_ptrs, g.to(G.dtype.element_ty), mask=in_range)


@triton.jit
def _log1p(e):
    # log(1 + e) to full relative accuracy for small e (Goldberg): the rounding of 1 + e cancels in the ratio.
    u = 1.0 + e
    rounded = u == 1.0
    return tl.where(rounded, e, tl.log(u) * (e / tl.where(rounded, 1.0, u - 1.0)))


@triton.jit
def _siglip_loss_fwd_kernel(
    X, Y, SCALE, BIAS, GRAD_COEF,
    LOSS_PART, DS_PART, DB_PART,  # one slot per program
    G, stride_g,
    R, B, diag_start, stride_x, stride_y,
    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, INPUT_PRECISION: tl.constexpr, NEED_GRAD: tl.constexpr,
):
    rows, cols, row_ok, col_ok, c = _grouped_tile_dot(
        X, Y, R, B, stride_x, stride_y, D, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, INPUT_PRECISION
    )
    z = c * tl.load(SCALE).to(tl.float32) + tl.load(BIAS).to(tl.float32)
    in_range = row_ok[:, None] & col_ok[None, :]
    off_diag = in_range & (cols[None, :] != rows[:, None] + diag_start)
    # Off-diagonal pairs are negatives: -logsigmoid(-z) = softplus(z) = max(z, 0) + log1p(e^-|z|).
    e = tl.exp(-tl.abs(z))
    softplus = tl.maximum(z, 0.0) + _log1p(e)
    pid = tl.program_id(0)
    tl.store(LOSS_PART + pid, tl.sum(tl.where(off_diag, softplus, 0.0)))
    if NEED_GRAD:
        inv = 1.0 / (1.0 + e)
        sigmoid = tl.where(off_diag, tl.where(z >= 0, inv, e * inv), 0.0)
        tl.store(DS_PART + pid, tl.sum(sigmoid * c))
        tl.store(DB_PART + pid, tl.sum(sigmoid))
        g = sigmoid * tl.load(GRAD_COEF).to(tl.float32)
        g_ptrs = G + rows[:, None].to(tl.int64) * stride_g + cols[None, :]
        tl.store(g_ptrs, g.to(G.dtype.element_ty), mask=in_range)


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 1
    return torch.cuda.get_device_properties(device).multi_processor_count


def grad_dtype(operand_dtype: torch.dtype) -> torch.dtype:
    """dtype of the G buffers: bf16 for half inputs (fp16's range would flush the e^(S-r) terms), else fp32."""
    return torch.bfloat16 if operand_dtype in (torch.float16, torch.bfloat16) else torch.float32


def _grad_buffer(out: torch.Tensor | None, shape: tuple[int, int], x: torch.Tensor) -> torch.Tensor:
    if out is None:
        return torch.empty(shape, dtype=grad_dtype(x.dtype), device=x.device)
    if out.shape != shape or out.dtype != grad_dtype(x.dtype) or out.device != x.device or out.stride(1) != 1:
        raise ValueError(
            f"contrastive_loss: out must be a {shape} {grad_dtype(x.dtype)} buffer on {x.device} with unit column "
            f"stride, got {tuple(out.shape)} {out.dtype} on {out.device}"
        )
    return out


def clip_loss_fwd(
    x: torch.Tensor, y: torch.Tensor, scale: torch.Tensor, diag_start: int, config: TileConfig | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Off-diagonal log-sum-exp partials of S = scale·x·yᵀ (row i's diagonal is column diag_start + i).

    Args:
        x: (R, D) rows; y: (B, D) columns; same dtype, unit stride along D. scale: one-element tensor.
    Returns:
        rows (3, K, R) and columns (3, M, B) float32: along the first axis (max, Σe^(S-max), Σe^(S-max)·C) with
        C = x·yᵀ, max in natural-log units; K column splits and M row blocks still to be merged by the caller.
    """
    _check_operands(x, y)
    cfg = config or default_config(x.device, x.dtype, "clip_fwd", x.shape[1])
    num_rows, dim = x.shape
    num_cols = y.shape[0]
    row_blocks = triton.cdiv(num_rows, cfg.block_m)
    col_blocks = triton.cdiv(num_cols, cfg.block_n)
    split_n = cfg.split_n or triton.cdiv(2 * _sm_count(x.device), row_blocks)
    split_n = max(1, min(split_n, col_blocks))
    rows = torch.empty((3, split_n, num_rows), dtype=torch.float32, device=x.device)
    cols = torch.empty((3, row_blocks, num_cols), dtype=torch.float32, device=x.device)
    _clip_loss_fwd_kernel[(row_blocks, split_n)](
        x, y, scale,
        rows[0], rows[1], rows[2],
        cols[0], cols[1], cols[2],
        num_rows, num_cols, diag_start, x.stride(0), y.stride(0),
        D=dim, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
        INPUT_PRECISION=_input_precision(x.dtype), num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    rows[0].mul_(math.log(2.0))
    cols[0].mul_(math.log(2.0))
    return rows, cols


def clip_loss_bwd(
    x: torch.Tensor,
    y: torch.Tensor,
    scale: torch.Tensor,
    diag_start: int,
    row_lse: torch.Tensor,
    row_coef: torch.Tensor,
    col_lse: torch.Tensor,
    col_coef: torch.Tensor,
    config: TileConfig | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """G (R, B) with G_ij = row_coef_i·e^(S_ij - row_lse_i) + col_coef_j·e^(S_ij - col_lse_j), zero on the diagonal.

    row_lse (R,), col_lse (B,) are natural-log log-sum-exps including the diagonal; the coefficients are float32.
    G is bf16 for half inputs, float32 otherwise (see grad_dtype). out: a buffer to write G into instead of a new
    one (the driver reuses one buffer for every row chunk).
    """
    _check_operands(x, y)
    cfg = config or default_config(x.device, x.dtype, "clip_bwd", x.shape[1])
    num_rows, dim = x.shape
    num_cols = y.shape[0]
    g = _grad_buffer(out, (num_rows, num_cols), x)
    grid = (triton.cdiv(num_rows, cfg.block_m) * triton.cdiv(num_cols, cfg.block_n),)
    _clip_loss_bwd_kernel[grid](
        x, y, scale,
        (row_lse.float() * LOG2E).contiguous(), row_coef.float().contiguous(),
        (col_lse.float() * LOG2E).contiguous(), col_coef.float().contiguous(),
        g, g.stride(0),
        num_rows, num_cols, diag_start, x.stride(0), y.stride(0),
        D=dim, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=cfg.group_m,
        INPUT_PRECISION=_input_precision(x.dtype), num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return g


def siglip_loss_fwd(
    x: torch.Tensor,
    y: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor,
    diag_start: int,
    grad_coef: torch.Tensor | None,
    config: TileConfig | None = None,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Off-diagonal SigLIP terms of Z = scale·x·yᵀ + bias (all off-diagonal pairs are negatives).

    Returns (Σ softplus(Z), G, Σ σ(Z)·C, Σ σ(Z)) over off-diagonal pairs, sums as float32 scalars; G (R, B) =
    σ(Z)·grad_coef with a zero diagonal, written into `out` when given. With grad_coef None only the loss sum is
    computed, no G is allocated or written, and the rest is None.
    """
    _check_operands(x, y)
    cfg = config or default_config(x.device, x.dtype, "siglip_fwd", x.shape[1])
    num_rows, dim = x.shape
    num_cols = y.shape[0]
    need_grad = grad_coef is not None
    grid = (triton.cdiv(num_rows, cfg.block_m) * triton.cdiv(num_cols, cfg.block_n),)
    parts = torch.empty((3, grid[0]), dtype=torch.float32, device=x.device)
    # Without gradients the kernel never touches G (NEED_GRAD is a constexpr); the pointer argument is x.
    g = _grad_buffer(out, (num_rows, num_cols), x) if need_grad else x
    _siglip_loss_fwd_kernel[grid](
        x, y, scale, bias, grad_coef if need_grad else scale,
        parts[0], parts[1], parts[2],
        g, g.stride(0),
        num_rows, num_cols, diag_start, x.stride(0), y.stride(0),
        D=dim, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=cfg.group_m,
        INPUT_PRECISION=_input_precision(x.dtype), NEED_GRAD=need_grad,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    # Per-tile partials are summed in float64: up to (B/128)² of them at large B.
    sums = parts.double().sum(1)
    if not need_grad:
        return sums[0], None, None, None
    return sums[0], g, sums[1], sums[2]
