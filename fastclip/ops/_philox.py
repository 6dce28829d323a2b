"""Counter-based random numbers for the statistics ops: Philox4x32-10 (Salmon et al., SC'11; Random123).

A random number is a pure function of (seed, stream, a, b, position), so bootstrap resample r, or the AUC-Borji
split s of image a, is the same whatever the batch, the chunking, the order or the device. The C++ kernels
(csrc/philox.h) compute the same function bit for bit; the tests hold the two to it.

Layout: value (a, b, j) is lane j mod 4 of Philox with counter (j div 4, b, stream, a) and key (seed mod 2**32,
seed div 2**32). Streams keep the uses apart (a bootstrap and a permutation test with one seed are independent).

`random_uint32` fills blocks of words with the extension's C++ kernel on the CPU, a Triton kernel on CUDA
(kernels/philox.py), or the plain-torch reference below (the oracle, and the fallback).
"""

from __future__ import annotations

import torch

from fastclip import _ext
from fastclip.ops._dispatch import Backend, OpDispatcher, extension_backend, triton_unavailable

MASK32 = 0xFFFFFFFF
MAX_SEED = 2**63 - 1
ROUND_MULTIPLIER_0 = 0xD2511F53
ROUND_MULTIPLIER_1 = 0xCD9E8D57
KEY_INCREMENT_0 = 0x9E3779B9
KEY_INCREMENT_1 = 0xBB67AE85
ROUNDS = 10

STREAM_BOOTSTRAP = 0
STREAM_PERMUTATION = 1
STREAM_AUC_JITTER = 2
STREAM_AUC_BORJI = 3
STREAM_SHUFFLED_SUBSET = 4
STREAM_SHUFFLED_OTHER_IMAGES = 5


def _mulhilo32(constant: int, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32 bits of constant * value (both < 2**32) without leaving int64: split the constant in halves."""
    constant_hi, constant_lo = constant >> 16, constant & 0xFFFF
    partial_lo = value * constant_lo  # < 2**48
    partial = value * constant_hi + (partial_lo >> 16)  # < 2**49
    return partial >> 16, ((partial & 0xFFFF) << 16) | (partial_lo & 0xFFFF)


def philox4x32(c0, c1, c2, c3, seed: int):
    """Philox4x32-10 on int64 tensors that hold uint32 values; returns the four output words."""
    k0, k1 = seed & MASK32, (seed >> 32) & MASK32
    for _ in range(ROUNDS):
        high_1, low_1 = _mulhilo32(ROUND_MULTIPLIER_1, c2)
        high_0, low_0 = _mulhilo32(ROUND_MULTIPLIER_0, c0)
        c0, c1, c2, c3 = high_1 ^ c1 ^ k0, low_1, high_0 ^ c3 ^ k1, low_0
        k0, k1 = (k0 + KEY_INCREMENT_0) & MASK32, (k1 + KEY_INCREMENT_1) & MASK32
    return c0, c1, c2, c3


def check_seed(seed, name: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{name} must be an integer in [0, 2**63), got {seed!r}")
    return seed


def random_uint32_ref(seed: int, stream: int, a: torch.Tensor, b: torch.Tensor, length: int) -> torch.Tensor:
    """Plain-torch random_uint32 (the oracle)."""
    device = a.device
    blocks = (length + 3) // 4
    c0 = torch.arange(blocks, dtype=torch.int64, device=device).view(1, 1, blocks)
    c1 = b.to(torch.int64).view(1, -1, 1)
    c3 = a.to(torch.int64).view(-1, 1, 1)
    shape = (c3.shape[0], c1.shape[1], blocks)
    c0, c1, c3 = c0.expand(shape), c1.expand(shape), c3.expand(shape)
    c2 = torch.full(shape, stream, dtype=torch.int64, device=device)
    words = torch.stack(philox4x32(c0, c1, c2, c3, seed), dim=-1)
    return words.reshape(shape[0], shape[1], blocks * 4)[..., :length]


def _random_uint32_extension(seed, stream, a, b, length):
    return _ext.op("philox_uint32")(seed, stream, a, b, length)


def _random_uint32_triton(seed, stream, a, b, length):
    from fastclip.kernels.philox import philox_fwd

    return philox_fwd(seed, stream, a, b, length)


_DISPATCH = OpDispatcher(
    "philox",
    backends=[
        extension_backend("philox_uint32", _random_uint32_extension),
        Backend("triton", _random_uint32_triton, triton_unavailable),
        Backend("reference", random_uint32_ref),
    ],
    auto_order={"cpu": ("extension", "reference"), "cuda": ("triton", "reference")},
)


def random_uint32(
    seed: int, stream: int, a: torch.Tensor, b: torch.Tensor, length: int, *, backend: str = "auto"
) -> torch.Tensor:
    """Uniform 32-bit words, shape (len(a), len(b), length), int64 holding values in [0, 2**32).

    `a` and `b` are int64 index vectors (e.g. image ids and split ids, or [0] and resample ids); pass the slice
    you need and get exactly the numbers a full call would give there.
    """
    a, b = a.to(torch.int64).reshape(-1), b.to(torch.int64).reshape(-1)
    return _DISPATCH.choose(a.device, backend).run(check_seed(seed), stream, a, b, length)


def uniform_index(words: torch.Tensor, n) -> torch.Tensor:
    """Map 32-bit words to integers in [0, n) by multiply-shift (bias below n / 2**32, negligible for n << 2**32)."""
    return (words * n) >> 32


def uniform_unit(words: torch.Tensor) -> torch.Tensor:
    """Map 32-bit words to float64 in [0, 1)."""
    return words.to(torch.float64) * (1.0 / 2**32)
