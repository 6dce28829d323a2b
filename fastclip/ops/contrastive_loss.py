"""CLIP and SigLIP contrastive losses whose fused backends never hold a B x B matrix, with open_clip 3.3's semantics.

clip_loss(image_features, text_features, logit_scale) is open_clip's ClipLoss on one process: with S = s·X·Yᵀ,
(CE(S, arange) + CE(Sᵀ, arange)) / 2 (logit_bias, if given, cancels in the softmax: its gradient is 0).
siglip_loss(...) is open_clip's SigLipLoss: -Σ logsigmoid(±(s·X·Yᵀ + b)) / B, + on the diagonal.

How (../shared/reference/loss.md §5), for rows i and columns j of S with the diagonal p_i = S_ii kept apart:
  forward   one tiled pass with an online max gives, over the off-diagonal entries, each row's and each column's
            log-sum-exp r'_i, c'_j and their softmax-weighted mean of C = X·Yᵀ. With u_i = r'_i - p_i and
            v_i = c'_i - p_i the loss is Σ(softplus(u_i) + softplus(v_i)) / 2B, which stays accurate down to losses of
            1e-13 at logit_scale 100 (the naive log-softmax form loses everything there), B = 1 gives exactly 0, and
            ∂L/∂s = Σ σ(u_i)(mean_i - C_ii) + σ(v_i)(mean'_i - C_ii) over 2B comes out of the same pass.
  backward  recomputes S row-chunk by row-chunk into G = a·e^(S - r) + b·e^(S - c) (r, c: full log-sum-exps), with
            the diagonal -(a·σ(u) + b·σ(v)) applied in full precision, and turns G into dX = s·G·Y, dY = s·Gᵀ·X by GEMMs.
  SigLIP    has no normaliser, so one pass computes the loss and all gradients; the backward only scales them.
Memory: O(B·D) plus one set of chunk buffers that every chunk of a loop reuses (_Workspace): chunked, two buffers of
CHUNK_ELEMENTS logits (three in SigLIP's forward with gradients); triton, one G buffer of TRITON_GRAD_BYTES. Only
the reference backend builds B x B logits. SigLIP without gradients (torch.no_grad(), or no input needing one)
computes the loss alone; both autograd Functions are once_differentiable.

Distributed (clip_loss_strip / siglip_loss_strip, used by fastclip.nn.FusedClipLoss / FusedSigLipLoss): each rank
all-gathers only the text features and computes its strip of rows. Column statistics take two small all-reduces,
and text-feature gradients return by reduce-scatter. The gradients are those of open_clip's gather_features
(torch.distributed.nn.all_gather) for every local_loss / gather_with_grad combination, including non-uniform
upstream gradients, and the loss per rank is open_clip's.

Backends: "reference" (clip_loss_ref / siglip_loss_ref: the B x B logits, as open_clip), "chunked" (pure PyTorch on
any device, float32 or float64 arithmetic), "triton" (kernels/contrastive_loss.py; CUDA, or the CPU under
TRITON_INTERPRET=1 in float32). auto: triton on CUDA (chunked for float64), chunked on the CPU.
Precision: half inputs are read as they are and accumulated in fp32; the logits are never rounded. Under autocast on
the features' device (CPU or CUDA), features are cast to the autocast dtype first, as open_clip's logits matmul
reads them (on CUDA the kernels then run on tensor cores); float64 features are left alone, as autocast does. The
loss comes back in float32 (float64 for float64 features). fp32 tiles follow torch's fp32 matmul setting, as the
backward's cuBLAS GEMMs do (kernels/contrastive_loss.py: _input_precision). float64 is exact to an ulp or two:
softplus keeps the e^-t that torch's default threshold drops (_softplus).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from fastclip.ops._dispatch import Backend, OpDispatcher, triton_unavailable

# Chunked backend: logits per chunk buffer (two live, three in SigLIP's forward): 16 MiB each in float32. Smaller
# chunks cost time on a busy CPU (more, shorter GEMMs and thread synchronisations: 1.4x slower at 8 MiB for
# B = 8192); larger ones cost memory (at B = 8192 the chunked peak is 1/12 of open_clip's at 16 MiB).
CHUNK_ELEMENTS = 1 << 22
# Triton backend: bytes of the G row-chunk buffer of the backward (and of SigLIP's forward), and of the forward's
# per-row-block column partials. Fewer, larger chunks mean fewer fp32 passes over dY.
TRITON_GRAD_BYTES = 1 << 30
TRITON_STATS_BYTES = 1 << 26
# Rows of dY per fp32-output GEMM when G is bf16 (bounds that GEMM's fp32 result: 32 MiB at D = 1024).
DY_BLOCK_ROWS = 8192

NEG_INF = float("-inf")


# ---------------------------------------------------------------------------------------------------- references


def _logits_ref(rows, cols, logit_scale, logit_bias) -> torch.Tensor:
    """s·rows·colsᵀ (+ b), as open_clip computes each logit matrix."""
    logits = logit_scale * rows @ cols.T
    if logit_bias is not None:
        logits = logits + logit_bias
    return logits


def clip_loss_ref(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """open_clip ClipLoss on one process, written out: two B x B logit matrices and two cross-entropies."""
    logits_per_image = _logits_ref(image_features, text_features, logit_scale, logit_bias)
    logits_per_text = _logits_ref(text_features, image_features, logit_scale, logit_bias)
    labels = torch.arange(image_features.shape[0], device=image_features.device)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


def siglip_loss_ref(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """open_clip SigLipLoss on one process: labels 2I - 1, -Σ logsigmoid(labels·logits) / B."""
    logits = _logits_ref(image_features, text_features, logit_scale, logit_bias)
    n = image_features.shape[0]
    # In the features' dtype, as open_clip's get_ground_truth (under autocast the product is then fp32).
    labels = 2 * torch.eye(n, device=logits.device, dtype=image_features.dtype) - 1
    return -F.logsigmoid(labels * logits).sum() / n


# ------------------------------------------------------------------------------------------------------- engines
# An engine computes the tiles of one chunk of rows; the drivers below own chunking, merging, GEMMs and the
# diagonal, so the chunked and Triton backends share every formula outside the tile.


class _ChunkedEngine:
    """Pure PyTorch: CHUNK_ELEMENTS // B rows of logits at a time, in float32 (float64 for float64 input)."""

    name = "chunked"
    # Chunk-sized buffers each tile method works in (see _Workspace): the forward's C and its exponentials; the
    # backward's S and G; SigLIP's C, Z (then G) and the softplus terms, or without gradients Z and the terms.
    buffer_counts = {"clip_stats": 2, "clip_grad": 2, "siglip_grad": 3, "siglip_loss": 2}

    def __init__(self, dtype: torch.dtype):
        self.work_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        self.buffer_dtype = self.work_dtype

    def operand(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.work_dtype)

    def gemm_operand(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def stats_rows(self, num_cols: int) -> int:
        return max(1, CHUNK_ELEMENTS // max(num_cols, 1))

    grad_rows = stats_rows

    def clip_stats(self, x, y, scale, diag_start, workspace):
        c, scratch = workspace.views(x.shape[0])
        torch.mm(x, y.T, out=c)
        # Shift by each line's max logit, diagonal included (masking it first would cost a pass over the chunk):
        # an off-diagonal term then underflows only when it is e^-87 below the diagonal, where its share of the
        # loss and gradients is below float32 resolution anyway. The diagonal's own term is zeroed after exp.
        positive = bool(scale >= 0)
        return tuple(_line_stats(c, scale, dim, diag_start, positive, scratch)[:, None] for dim in (1, 0))

    def clip_grad_block(self, x, y, scale, diag_start, row_lse, row_coef, col_lse, col_coef, workspace):
        s, g = workspace.views(x.shape[0])
        torch.mm(x * scale, y.T, out=s)
        s.diagonal(diag_start).fill_(NEG_INF)
        # a·e^(S-r) = e^(S - (r - log a)): folding the weights into the shifts saves two passes over the chunk; a
        # zero weight gives log 0 = -inf and a zero term. Negative weights (a negative upstream gradient) keep
        # their sign by a multiplication.
        negative = bool((row_coef < 0).any() or (col_coef < 0).any())
        torch.sub(s, (row_lse - row_coef.abs().log())[:, None], out=g)
        if negative:
            g.exp_().mul_(row_coef.sign()[:, None])
            return g.add_(s.sub_(col_lse - col_coef.abs().log()).exp_().mul_(col_coef.sign()))
        return g.exp_().add_(s.sub_(col_lse - col_coef.log()).exp_())

    def siglip_block(self, x, y, scale, bias, diag_start, grad_coef, workspace):
        if grad_coef is None:
            z, terms = workspace.views(x.shape[0])
            torch.mm(x, y.T, out=z).mul_(scale).add_(bias)
            z.diagonal(diag_start).fill_(NEG_INF)
            return _softplus(z, out=terms).sum(), None, None, None
        c, z, terms = workspace.views(x.shape[0])
        torch.mm(x, y.T, out=c)
        torch.mul(c, scale, out=z).add_(bias)
        z.diagonal(diag_start).fill_(NEG_INF)  # the positives are the caller's; softplus(-inf) = σ(-inf) = 0
        loss = _softplus(z, out=terms).sum()
        sigmoid = z.sigmoid_()
        ds = torch.dot(sigmoid.flatten(), c.flatten())
        db = sigmoid.sum()
        return loss, sigmoid.mul_(grad_coef), ds, db


def _line_stats(c, scale, dim: int, diag_start: int, positive: bool, scratch: torch.Tensor) -> torch.Tensor:
    """(max, Σe^(S-max), Σe^(S-max)·C) over the off-diagonal entries of S = scale·C along dim, stacked.

    max is the line's max of S with the diagonal included (see clip_stats); a line whose only entry is the
    diagonal gives Σ = 0, which _log_sum_exp reads as -inf.
    """
    top = (c.amax(dim, keepdim=True) if positive else c.amin(dim, keepdim=True)) * scale
    e = torch.addcmul(-top, c, scale, out=scratch).exp_()
    e.diagonal(diag_start).zero_()
    total = e.sum(dim)
    weighted = e.mul_(c).sum(dim)
    return torch.stack([top.squeeze(dim), total, weighted])


class _TritonEngine:
    """kernels/contrastive_loss.py; half inputs stay half on CUDA, the interpreter (CPU) gets float32."""

    name = "triton"
    work_dtype = torch.float32
    # The kernels keep every tile in registers; only G (of the backward, and of SigLIP's forward) is a chunk.
    buffer_counts = {"clip_stats": 0, "clip_grad": 1, "siglip_grad": 1, "siglip_loss": 0}

    def __init__(self, device: torch.device, dtype: torch.dtype):
        from fastclip.kernels import contrastive_loss as kernels

        self.kernels = kernels
        self.operand_dtype = dtype if device.type == "cuda" else torch.float32
        self.g_dtype = kernels.grad_dtype(self.operand_dtype)
        self.buffer_dtype = self.g_dtype
        self.fwd_config = kernels.default_config(device, self.operand_dtype, "clip_fwd")
        self.config = kernels.default_config(device, self.operand_dtype)
        self.siglip_config = kernels.default_config(device, self.operand_dtype, "siglip_fwd")

    def operand(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.operand_dtype).contiguous()

    def gemm_operand(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.g_dtype)  # fp16 features meet the bf16 G in bf16

    def stats_rows(self, num_cols: int) -> int:
        row_blocks = max(1, TRITON_STATS_BYTES // (12 * max(num_cols, 1)))
        return row_blocks * self.fwd_config.block_m

    def grad_rows(self, num_cols: int) -> int:
        return max(1, TRITON_GRAD_BYTES // (max(num_cols, 1) * self.g_dtype.itemsize))

    def clip_stats(self, x, y, scale, diag_start, workspace):
        return self.kernels.clip_loss_fwd(x, y, scale, diag_start, self.fwd_config)

    def clip_grad_block(self, x, y, scale, diag_start, row_lse, row_coef, col_lse, col_coef, workspace):
        (g,) = workspace.views(x.shape[0])
        return self.kernels.clip_loss_bwd(
            x, y, scale, diag_start, row_lse, row_coef, col_lse, col_coef, self.config, out=g
        )

    def siglip_block(self, x, y, scale, bias, diag_start, grad_coef, workspace):
        g = workspace.views(x.shape[0])[0] if grad_coef is not None else None
        loss, g, ds, db = self.kernels.siglip_loss_fwd(
            x, y, scale, bias, diag_start, grad_coef, self.siglip_config, out=g
        )
        if g is None:
            return loss.float(), None, None, None
        return loss.float(), g, ds.float(), db.float()


class _Workspace:
    """The chunk-sized buffers of one chunk loop, allocated once and reused by every chunk.

    A loop that allocated its next chunk while the previous chunk's result was still referenced would hold twice
    its budget whenever there is more than one chunk; here the scratch of a loop is buffer_counts[kind] chunks of
    rows x columns, whatever the number of chunks. A chunk's result (G) is a view that the next chunk overwrites,
    so the driver finishes with it (its GEMMs) before asking for the next.
    """

    def __init__(self, engine, kind: str, rows: int, num_cols: int, device: torch.device):
        self.buffers = [
            torch.empty((rows, num_cols), dtype=engine.buffer_dtype, device=device)
            for _ in range(engine.buffer_counts[kind])
        ]

    def views(self, rows: int) -> list[torch.Tensor]:
        """The buffers' first `rows` rows (contiguous: the buffers are row-major)."""
        return [buffer[:rows] for buffer in self.buffers]


# Beyond the threshold torch's softplus returns its argument t; the term it drops, log1p(e^-t) ≈ e^-t, must be
# below the dtype's resolution of t there. torch's default threshold 20 drops e^-20/20 = 1e-10 relative, below
# float32's 6e-8 but 1e6 float64 ulps; at 40 float64 drops e^-40/40 = 1e-19. log1p(e^t) is exact up to the
# threshold in both (no overflow before t = 709).
_SOFTPLUS_THRESHOLD = {torch.float64: 40.0}


def _softplus(t: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """softplus(t) = log(1 + e^t) to the full precision of t's dtype (float64 included)."""
    threshold = _SOFTPLUS_THRESHOLD.get(t.dtype, 20.0)
    if out is None:
        return F.softplus(t, threshold=threshold)
    return torch.ops.aten.softplus.out(t, 1.0, threshold, out=out)


# ---------------------------------------------------------------------------------------------- shared maths


class Collectives(Protocol):
    """What the distributed drivers need from a process group (fastclip.nn.distributed.ProcessGroupCollectives)."""

    rank: int
    world_size: int

    def all_gather_rows(self, tensor: torch.Tensor) -> torch.Tensor: ...  # (n, ...) per rank -> (world·n, ...)

    def all_reduce_max_(self, tensor: torch.Tensor) -> None: ...

    def all_reduce_sum_(self, tensor: torch.Tensor) -> None: ...

    def reduce_scatter_rows(self, tensor: torch.Tensor) -> torch.Tensor: ...  # Σ over ranks, this rank's rows


def _merge(parts: torch.Tensor) -> torch.Tensor:
    """Merge (3, K, N) partial (max, Σexp, Σexp·C) along K into (3, N)."""
    top = parts[0].amax(0)
    weight = torch.exp(parts[0] - top.masked_fill(top == NEG_INF, 0))
    return torch.stack([top, (parts[1] * weight).sum(0), (parts[2] * weight).sum(0)])


def _log_sum_exp(stats: torch.Tensor) -> torch.Tensor:
    return torch.where(stats[1] > 0, stats[0] + torch.log(stats[1]), NEG_INF)


def _softmax_mean(stats: torch.Tensor) -> torch.Tensor:
    """Softmax-weighted mean of C along a line; 0 for a line with no off-diagonal entry (B = 1)."""
    return torch.where(stats[1] > 0, stats[2] / stats[1].clamp_min(torch.finfo(stats.dtype).tiny), 0)


def _mm_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    # Half operands: one cuBLAS GEMM that accumulates and writes in fp32 (no bf16 rounding of partial sums).
    if a.dtype == out.dtype:
        torch.mm(a, b, out=out)
    else:
        torch.mm(a, b, out_dtype=out.dtype, out=out)


def _add_mm_(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """acc += a @ b. Half operands: fp32-output GEMMs over DY_BLOCK_ROWS rows at a time, so the fp32 temporary
    stays bounded instead of matching acc."""
    if a.dtype == acc.dtype:
        acc.addmm_(a, b)
        return
    for start in range(0, acc.shape[0], DY_BLOCK_ROWS):
        acc[start : start + DY_BLOCK_ROWS] += torch.mm(a[start : start + DY_BLOCK_ROWS], b, out_dtype=acc.dtype)


def _diag_dot(x: torch.Tensor, y_all: torch.Tensor, offset: int, dtype: torch.dtype) -> torch.Tensor:
    """C_ii = <x_i, y_(offset+i)> in full precision."""
    return torch.linalg.vecdot(x.to(dtype), y_all[offset : offset + x.shape[0]].to(dtype))


@dataclass
class _ClipTerms:
    """Per-row quantities of this process's strip (b rows) and per-column ones of the global batch (B columns)."""

    row_term: torch.Tensor  # (b,) softplus(u_i): image i's cross-entropy
    col_term: torch.Tensor  # (b,) softplus(v_i): text (offset + i)'s cross-entropy
    row_term_ds: torch.Tensor  # (b,) ∂ row_term / ∂s
    col_term_ds: torch.Tensor  # (b,) ∂ col_term / ∂s
    sigmoid_u: torch.Tensor  # (b,)
    sigmoid_v: torch.Tensor  # (b,)
    row_lse: torch.Tensor  # (b,) log-sum-exp of the whole row, diagonal included
    col_lse: torch.Tensor  # (B,) the same for every column


def _clip_terms(engine, x, y_all, scale, offset: int, comm: Collectives | None) -> _ClipTerms:
    b = x.shape[0]
    work = engine.work_dtype
    diag_dot = _diag_dot(x, y_all, offset, work)
    diag_logit = diag_dot * scale
    row_parts, col = [], None
    num_cols = y_all.shape[0]
    step = engine.stats_rows(num_cols)
    workspace = _Workspace(engine, "clip_stats", min(step, b), num_cols, x.device)
    for start in range(0, b, step):
        rows, cols = engine.clip_stats(x[start : start + step], y_all, scale, offset + start, workspace)
        row_parts.append(_merge(rows.to(work)))
        cols = _merge(cols.to(work))
        col = cols if col is None else _merge(torch.stack([col, cols], 1))
        del rows, cols  # the Triton kernel's partials: one chunk's at a time
    row = torch.cat(row_parts, 1)
    col_diag_logit = diag_logit
    if comm is not None:
        # Column statistics over every rank's rows: MAX of the maxima, then SUM of the sums rescaled to it. The
        # diagonal logits of all columns ride along in the SUM (each rank fills its own slots).
        top = col[0].clone()
        comm.all_reduce_max_(top)
        weight = torch.exp(col[0] - top.masked_fill(top == NEG_INF, 0))
        sums = torch.zeros((3, col.shape[1]), dtype=work, device=col.device)
        sums[0] = col[1] * weight
        sums[1] = col[2] * weight
        sums[2, offset : offset + b] = diag_logit
        comm.all_reduce_sum_(sums)
        col = torch.stack([top, sums[0], sums[1]])
        col_diag_logit = sums[2]
    u = _log_sum_exp(row) - diag_logit
    col_off_lse = _log_sum_exp(col)
    v = (col_off_lse - col_diag_logit)[offset : offset + b]
    sigmoid_u, sigmoid_v = torch.sigmoid(u), torch.sigmoid(v)
    return _ClipTerms(
        row_term=_softplus(u),
        col_term=_softplus(v),
        row_term_ds=sigmoid_u * (_softmax_mean(row) - diag_dot),
        col_term_ds=sigmoid_v * (_softmax_mean(col)[offset : offset + b] - diag_dot),
        sigmoid_u=sigmoid_u,
        sigmoid_v=sigmoid_v,
        row_lse=torch.logaddexp(_log_sum_exp(row), diag_logit),
        col_lse=torch.logaddexp(col_off_lse, col_diag_logit),
    )


def _clip_grads(engine, x, y_all, scale, offset, coefs, dx_factor, dx_dtype, want_dx, want_dy):
    """Gradients of Σ_i a_i·softplus(u_i) + Σ_j b_j·softplus(v_j) for this process's rows.

    coefs = (row_lse (b,), a (b,), col_lse (B,), b (B,), G's diagonal (b,)), weights already times s. Returns
    dX (b, D) times dx_factor in dx_dtype, and dY (B, D) in the engine's work dtype over this process's rows only
    (the caller sums it over ranks); either is None when not wanted.
    """
    row_lse, row_coef, col_lse, col_coef, diag_coef = coefs
    b, dim = x.shape
    num_cols = y_all.shape[0]
    work = engine.work_dtype
    dx = torch.empty((b, dim), dtype=dx_dtype, device=x.device) if want_dx else None
    dy = torch.zeros((num_cols, dim), dtype=work, device=x.device) if want_dy else None
    y_gemm = engine.gemm_operand(y_all)
    y_diag = y_all[offset : offset + b]
    step = engine.grad_rows(num_cols)
    workspace = _Workspace(engine, "clip_grad", min(step, b), num_cols, x.device)
    for start in range(0, b, step):
        stop = min(b, start + step)
        g = engine.clip_grad_block(
            x[start:stop], y_all, scale, offset + start, row_lse[start:stop], row_coef[start:stop], col_lse, col_coef,
            workspace,
        )
        if want_dx:
            # Each row chunk of dX is final after one GEMM: finish it (diagonal, factor) in fp32, store it once.
            in_place = dx_dtype == work
            part = dx[start:stop] if in_place else torch.empty((stop - start, dim), dtype=work, device=x.device)
            _mm_into(part, g, y_gemm)
            part.addcmul_(diag_coef[start:stop, None], y_diag[start:stop].to(work)).mul_(dx_factor)
            if not in_place:
                dx[start:stop] = part
        if want_dy:
            _add_mm_(dy, g.T, engine.gemm_operand(x[start:stop]))
            dy[offset + start : offset + stop].addcmul_(diag_coef[start:stop, None], x[start:stop].to(work))
    return dx, dy


# --------------------------------------------------------------------------------------------- autograd


@contextlib.contextmanager
def _no_autocast(device: torch.device):
    with torch.autocast(device_type=device.type, enabled=False):
        yield


def _strip_operands(engine, image_features, text_features, logit_scale, comm: Collectives | None):
    """(x, y_all, offset, scale): this process's rows and every rank's text features (all-gathered) as the engine's
    operands, where x's rows start in the global batch, and the logit scale as a (1,) tensor in the work dtype."""
    offset = 0 if comm is None else comm.rank * image_features.shape[0]
    y_all = text_features if comm is None else comm.all_gather_rows(text_features.contiguous())
    scale = logit_scale.detach().to(device=image_features.device, dtype=engine.work_dtype).reshape(1)
    return engine.operand(image_features), engine.operand(y_all), offset, scale


def _remember_input_layouts(ctx, image_features, text_features, logit_scale, logit_bias) -> None:
    """What backward needs to return each gradient in its input's dtype (and shape, for the scalars)."""
    ctx.feature_dtypes = (image_features.dtype, text_features.dtype)
    ctx.scale_like = (logit_scale.shape, logit_scale.dtype)
    ctx.bias_like = None if logit_bias is None else (logit_bias.shape, logit_bias.dtype)


class _ClipLossFunction(torch.autograd.Function):
    """ClipLoss for this process's strip of rows; comm None means one process holding the whole batch."""

    @staticmethod
    def forward(ctx, image_features, text_features, logit_scale, logit_bias, engine, comm, local_loss, gather_with_grad):
        device = image_features.device
        with _no_autocast(device):
            b = image_features.shape[0]
            world = 1 if comm is None else comm.world_size
            x, y_all, offset, scale = _strip_operands(engine, image_features, text_features, logit_scale, comm)
            terms = _clip_terms(engine, x, y_all, scale, offset, comm)
            local = local_loss or world == 1
            sums = torch.stack(
                [terms.row_term.sum() + terms.col_term.sum(), terms.row_term_ds.sum() + terms.col_term_ds.sum()]
            )
            if not local:
                comm.all_reduce_sum_(sums)  # every rank reports the global loss, as open_clip without local_loss
            sums /= 2 * b * (1 if local else world)
        ctx.save_for_backward(x, y_all, scale, terms.row_lse, terms.col_lse, terms.sigmoid_u, terms.sigmoid_v, sums[1])
        ctx.engine, ctx.comm, ctx.offset = engine, comm, offset
        ctx.local, ctx.gather_with_grad = local, gather_with_grad
        _remember_input_layouts(ctx, image_features, text_features, logit_scale, logit_bias)
        return sums[0].clone()

    @staticmethod
    @once_differentiable  # the backward's own operations are not differentiable again
    def backward(ctx, grad_loss):
        x, y_all, scale, row_lse, col_lse, sigmoid_u, sigmoid_v, loss_ds = ctx.saved_tensors
        engine, comm, offset = ctx.engine, ctx.comm, ctx.offset
        b, num_cols = x.shape[0], y_all.shape[0]
        g = grad_loss.detach().to(engine.work_dtype).reshape(1)
        want_dx, want_dy = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        one = torch.ones_like(g)
        x_dtype, y_dtype = ctx.feature_dtypes
        with _no_autocast(x.device):

            def grads(row_coef, col_coef, want_dx, want_dy, dx_factor=one):
                diag = -(row_coef * sigmoid_u + col_coef[offset : offset + b] * sigmoid_v)
                coefs = (row_lse, row_coef, col_lse, col_coef, diag)
                return _clip_grads(engine, x, y_all, scale, offset, coefs, dx_factor, x_dtype, want_dx, want_dy)

            if comm is None:
                coef = g * scale / (2 * b)
                dx, dy = grads(coef.expand(b), coef.expand(num_cols), want_dx, want_dy)
            elif ctx.local and ctx.gather_with_grad:
                # Rank r's loss is its rows' and columns' terms over 2b; autograd through the gather sums every
                # rank's loss, each weighted by that rank's upstream gradient.
                g_all = comm.all_gather_rows(g)
                dx, dy = grads((g * scale / (2 * b)).expand(b), (g_all * scale / (2 * b)).repeat_interleave(b), True, True)
                dy = comm.reduce_scatter_rows(dy)
            elif ctx.local:
                # No gradient through the gather: x sees its rows' terms with Y fixed, y its columns' with X fixed.
                unit = (scale / (2 * b)).expand(b)
                dx, _ = grads(g * unit, torch.zeros_like(col_lse), True, False)
                _, dy = grads(torch.zeros_like(unit), (scale / (2 * b)).expand(num_cols), False, True)
                dy = comm.reduce_scatter_rows(dy).mul_(g)
            else:
                # Every rank's loss is the global one: gradients of the global loss times Σ_r g_r (gather with
                # grad) or this rank's g (no gradient through the gather, only the local slot carries one).
                factor = g.clone()
                if ctx.gather_with_grad:
                    comm.all_reduce_sum_(factor)
                coef = scale / (2 * b * comm.world_size)
                dx, dy = grads(coef.expand(b), coef.expand(num_cols), True, True, dx_factor=factor)
                dy = comm.reduce_scatter_rows(dy).mul_(factor)
            grad_scale = (g * loss_ds).reshape(ctx.scale_like[0]).to(ctx.scale_like[1])
        grad_x = dx if want_dx else None
        grad_y = dy.to(y_dtype) if want_dy else None
        grad_bias = None
        if ctx.bias_like is not None and ctx.needs_input_grad[3]:
            grad_bias = torch.zeros(ctx.bias_like[0], dtype=ctx.bias_like[1], device=grad_loss.device)
        return grad_x, grad_y, grad_scale if ctx.needs_input_grad[2] else None, grad_bias, None, None, None, None


class _SigLipLossFunction(torch.autograd.Function):
    """SigLipLoss for this process's strip of rows (all columns); gradients are computed in the forward pass.

    grad_enabled is torch.is_grad_enabled() at the call (inside forward it is always off): without it, or when no
    input needs a gradient, the forward computes the loss alone and writes no G. Of dX and dY, each is computed
    only when its input needs it (a frozen tower costs no GEMM).
    """

    @staticmethod
    def forward(ctx, image_features, text_features, logit_scale, logit_bias, engine, comm, grad_enabled):
        device = image_features.device
        needs = ctx.needs_input_grad[:4] if grad_enabled else (False,) * 4
        want_dx, want_dy = needs[0], needs[1]
        need_grad = any(needs)
        with _no_autocast(device):
            b, dim = image_features.shape
            x, y_all, offset, scale = _strip_operands(engine, image_features, text_features, logit_scale, comm)
            work = engine.work_dtype
            num_cols = y_all.shape[0]
            bias = torch.zeros(1, dtype=work, device=device)
            if logit_bias is not None:
                bias = logit_bias.detach().to(device=device, dtype=work).reshape(1)
            diag_dot = _diag_dot(x, y_all, offset, work)
            diag_logit = diag_dot * scale + bias
            loss = _softplus(-diag_logit).sum()  # positives: -logsigmoid(z) = softplus(-z)
            grad_coef = scale / b if need_grad else None
            dx = dy = None
            if need_grad:
                diag_g = -torch.sigmoid(-diag_logit)  # ∂/∂z of softplus(-z), exact where σ(z) ≈ 1
                y_diag = y_all[offset : offset + b]
                d_scale = (diag_g * diag_dot).sum()
                d_bias = diag_g.sum()
            if want_dx:
                dx = torch.empty((b, dim), dtype=image_features.dtype, device=device)
                y_gemm = engine.gemm_operand(y_all)
            if want_dy:
                dy = torch.zeros((num_cols, dim), dtype=work, device=device)
            step = engine.grad_rows(num_cols)
            kind = "siglip_grad" if need_grad else "siglip_loss"
            workspace = _Workspace(engine, kind, min(step, b), num_cols, device)
            for start in range(0, b, step):
                stop = min(b, start + step)
                part, g, part_ds, part_db = engine.siglip_block(
                    x[start:stop], y_all, scale, bias, offset + start, grad_coef, workspace
                )
                loss = loss + part.to(work)
                if not need_grad:
                    continue
                diag_coef = (diag_g[start:stop] * grad_coef)[:, None]
                if want_dx:
                    dx_part = torch.empty((stop - start, dim), dtype=work, device=device)
                    _mm_into(dx_part, g, y_gemm)
                    dx[start:stop] = dx_part.addcmul_(diag_coef, y_diag[start:stop].to(work))
                if want_dy:
                    _add_mm_(dy, g.T, engine.gemm_operand(x[start:stop]))
                    dy[offset + start : offset + stop].addcmul_(diag_coef, x[start:stop].to(work))
                d_scale += part_ds.to(work)
                d_bias += part_db.to(work)
            loss = loss / b
            if need_grad:
                if dy is not None and comm is None:
                    dy = dy.to(text_features.dtype)  # kept until backward; the rank sum needs fp32 partials
                ctx.save_for_backward(dx, dy, d_scale / b, d_bias / b)
        ctx.comm = comm
        _remember_input_layouts(ctx, image_features, text_features, logit_scale, logit_bias)
        return loss

    @staticmethod
    @once_differentiable  # the gradients were computed in the forward; they are constants to autograd
    def backward(ctx, grad_loss):
        dx, dy, d_scale, d_bias = ctx.saved_tensors
        g = grad_loss.detach().to(d_scale.dtype)
        grad_x = grad_y = None
        if ctx.needs_input_grad[0]:
            grad_x = dx * g.to(dx.dtype)
        if ctx.needs_input_grad[1]:
            with _no_autocast(dy.device):
                if ctx.comm is not None:
                    dy = ctx.comm.reduce_scatter_rows(dy * g)
                else:
                    dy = dy * g.to(dy.dtype)
            grad_y = dy.to(ctx.feature_dtypes[1])
        grad_scale = None
        if ctx.needs_input_grad[2]:
            grad_scale = (g * d_scale).reshape(ctx.scale_like[0]).to(ctx.scale_like[1])
        grad_bias = None
        if ctx.bias_like is not None and ctx.needs_input_grad[3]:
            grad_bias = (g * d_bias).reshape(ctx.bias_like[0]).to(ctx.bias_like[1])
        return grad_x, grad_y, grad_scale, grad_bias, None, None, None


# ----------------------------------------------------------------------------------- validation and dispatch


def _as_scalar_tensor(value, name: str, op: str, like: torch.Tensor) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{op}: {name} must hold one value, got shape {tuple(value.shape)}")
        if not value.is_floating_point():
            raise TypeError(f"{op}: {name} must be floating, got {value.dtype}")
        if value.device != like.device:
            if value.device.type != "cpu":
                raise ValueError(f"{op}: {name} is on {value.device} but the features are on {like.device}")
            value = value.to(like.device)  # a CPU scalar may join CUDA features, as in any torch expression
        return value
    if isinstance(value, (int, float)):
        return torch.tensor(float(value), dtype=torch.float32, device=like.device)
    raise TypeError(f"{op}: {name} must be a tensor or a number, got {type(value).__name__}")


def _validate(op, image_features, text_features, logit_scale, logit_bias):
    for name, t in (("image_features", image_features), ("text_features", text_features)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise ValueError(f"{op}: {name} must be (batch, dim), got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{op}: {name} must be floating, got {t.dtype}")
    if image_features.shape != text_features.shape:
        raise ValueError(
            f"{op}: image_features {tuple(image_features.shape)} and text_features {tuple(text_features.shape)} "
            "must have the same shape (one text per image)"
        )
    if image_features.dtype != text_features.dtype:
        raise TypeError(f"{op}: image_features is {image_features.dtype} but text_features is {text_features.dtype}")
    if image_features.device != text_features.device:
        raise ValueError(f"{op}: image_features is on {image_features.device}, text_features on {text_features.device}")
    if image_features.shape[0] == 0:
        raise ValueError(f"{op}: the batch is empty; the loss needs at least one (image, text) pair")
    logit_scale = _as_scalar_tensor(logit_scale, "logit_scale", op, image_features)
    if logit_bias is not None:
        logit_bias = _as_scalar_tensor(logit_bias, "logit_bias", op, image_features)
    return logit_scale, logit_bias


def _autocast_dtype(features: torch.Tensor) -> torch.dtype:
    """The dtype open_clip's logits matmul would read the features in: under autocast on their device (CPU or
    CUDA), the autocast dtype, for every floating dtype but float64 (which autocast leaves alone)."""
    device_type = features.device.type
    if features.dtype != torch.float64 and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return features.dtype


def _engine_for(name: str, image_features, text_features):
    """The backend's engine and the features in the dtype it computes from (see _autocast_dtype)."""
    dtype = _autocast_dtype(image_features)
    image_features, text_features = image_features.to(dtype), text_features.to(dtype)
    engine = _TritonEngine(image_features.device, dtype) if name == "triton" else _ChunkedEngine(dtype)
    return engine, image_features, text_features


def _run_clip(name, image_features, text_features, logit_scale, logit_bias, comm=None, local_loss=True, gather_with_grad=True):
    engine, image_features, text_features = _engine_for(name, image_features, text_features)
    return _ClipLossFunction.apply(
        image_features, text_features, logit_scale, logit_bias, engine, comm, local_loss, gather_with_grad
    )


def _run_siglip(name, image_features, text_features, logit_scale, logit_bias, comm=None):
    engine, image_features, text_features = _engine_for(name, image_features, text_features)
    return _SigLipLossFunction.apply(
        image_features, text_features, logit_scale, logit_bias, engine, comm, torch.is_grad_enabled()
    )


_AUTO_ORDER = {"cpu": ("chunked",), "cuda": ("triton", "chunked")}
_CLIP_DISPATCH = OpDispatcher(
    "clip_loss",
    backends=[
        Backend("triton", functools.partial(_run_clip, "triton"), triton_unavailable),
        Backend("chunked", functools.partial(_run_clip, "chunked")),
        Backend("reference", clip_loss_ref),
    ],
    auto_order=_AUTO_ORDER,
)
_SIGLIP_DISPATCH = OpDispatcher(
    "siglip_loss",
    backends=[
        Backend("triton", functools.partial(_run_siglip, "triton"), triton_unavailable),
        Backend("chunked", functools.partial(_run_siglip, "chunked")),
        Backend("reference", siglip_loss_ref),
    ],
    auto_order=_AUTO_ORDER,
)


def _choose(op: str, dispatcher: OpDispatcher, features: torch.Tensor, backend: str) -> Backend:
    chosen = dispatcher.choose(features.device, backend)
    if chosen.name == "triton" and features.dtype == torch.float64:
        if backend != "auto":
            raise TypeError(f"{op}: backend 'triton' takes float16/bfloat16/float32 features; use 'chunked' for float64")
        return dispatcher.backends["chunked"]
    return chosen


def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float | None = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """open_clip's ClipLoss on one process, without a B x B matrix (see the module docstring).

    Args:
        image_features, text_features: (B, D) floating, same shape, dtype and device; row i of each is a pair.
        logit_scale: the multiplier s (already exp()-ed, as open_clip passes it), a one-element tensor or a number.
        logit_bias: accepted for open_clip compatibility; it cancels, and its gradient is exactly 0.
        backend: "auto", "triton", "chunked" or "reference".
    Returns:
        The scalar loss (float32; float64 for float64 features).
    """
    logit_scale, logit_bias = _validate("clip_loss", image_features, text_features, logit_scale, logit_bias)
    chosen = _choose("clip_loss", _CLIP_DISPATCH, image_features, backend)
    return chosen.run(image_features, text_features, logit_scale, logit_bias)


def siglip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float | None = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """open_clip's SigLipLoss on one process, without a B x B matrix; arguments as clip_loss (logit_bias is used)."""
    logit_scale, logit_bias = _validate("siglip_loss", image_features, text_features, logit_scale, logit_bias)
    chosen = _choose("siglip_loss", _SIGLIP_DISPATCH, image_features, backend)
    return chosen.run(image_features, text_features, logit_scale, logit_bias)


def _strip_backend(op: str, dispatcher: OpDispatcher, features: torch.Tensor, backend: str) -> str:
    chosen = _choose(op, dispatcher, features, backend)
    if chosen.name == "reference":
        raise ValueError(f"{op}: the distributed strip runs backend 'triton' or 'chunked'; 'reference' is open_clip's own")
    return chosen.name


def clip_loss_strip(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float | None = None,
    *,
    comm: Collectives,
    local_loss: bool,
    gather_with_grad: bool,
    backend: str = "auto",
) -> torch.Tensor:
    """open_clip ClipLoss(local_loss, gather_with_grad, rank, world_size) on this rank's equal share of the batch.

    The caller has checked that every rank holds the same number of rows (fastclip.nn does).
    """
    logit_scale, logit_bias = _validate("clip_loss", image_features, text_features, logit_scale, logit_bias)
    name = _strip_backend("clip_loss", _CLIP_DISPATCH, image_features, backend)
    return _run_clip(name, image_features, text_features, logit_scale, logit_bias, comm, local_loss, gather_with_grad)


def siglip_loss_strip(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float | None = None,
    *,
    comm: Collectives,
    backend: str = "auto",
) -> torch.Tensor:
    """open_clip SigLipLoss(rank, world_size) on this rank's equal share of the batch (any dist_impl: same result)."""
    logit_scale, logit_bias = _validate("siglip_loss", image_features, text_features, logit_scale, logit_bias)
    name = _strip_backend("siglip_loss", _SIGLIP_DISPATCH, image_features, backend)
    return _run_siglip(name, image_features, text_features, logit_scale, logit_bias, comm)
