"""Confidence intervals for the numbers the benchmarks report: Wilson intervals of proportions (accuracy, shape
bias) and paired bootstrap intervals and tests of means over items (2AFC scores per triplet, saliency metrics per
image, embedding stability per image). Correlations use fastclip.ops.bootstrap.

The bootstrap draws are fastclip.ops.bootstrap.resample_counts (Philox keyed by (seed, resample)), so a mean's
interval does not depend on the device or the chunking, and rows resampled together share their draws (paired).
A resample is its count vector w, so the resampled means of all rows are one matrix product w @ values.T.
"""

from __future__ import annotations

import math

import torch

Z_95 = 1.959963984540054
_CHUNK_ELEMENTS = 1 << 24  # resamples x items per chunk of count vectors


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% by default); (nan, nan) when there are no trials.

    Wilson rather than the normal approximation because it stays inside [0, 1] and behaves at 0 and n successes,
    which small eval sets hit often.
    """
    if trials <= 0:
        return math.nan, math.nan
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def _as_rows(values: torch.Tensor) -> torch.Tensor:
    values = torch.as_tensor(values, dtype=torch.float64)
    return values.unsqueeze(0) if values.dim() == 1 else values


def resampled_nanmeans(values: torch.Tensor, resamples: int, seed: int) -> torch.Tensor:
    """(rows, resamples): the mean of each row's non-NaN items over each bootstrap resample of the n items."""
    from fastclip.ops.bootstrap import resample_counts

    values = _as_rows(values)
    present = (~torch.isnan(values)).double()
    filled = torch.nan_to_num(values, nan=0.0)
    n = values.shape[1]
    out = torch.empty(values.shape[0], resamples, dtype=torch.float64, device=values.device)
    chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
    for first in range(0, resamples, chunk):
        count = min(chunk, resamples - first)
        weights = resample_counts(seed, first, count, n, values.device)
        out[:, first : first + count] = (weights @ filled.T / (weights @ present.T)).T
    return out


def _percentiles(distribution: torch.Tensor, confidence: float) -> tuple[torch.Tensor, torch.Tensor]:
    alpha = (1 - confidence) / 2
    q = torch.tensor([alpha, 1 - alpha], dtype=torch.float64, device=distribution.device)
    bounds = torch.nanquantile(distribution, q, dim=-1)
    return bounds[0], bounds[1]


def bootstrap_mean_ci(
    values: torch.Tensor, *, resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, low, high) per row of values (rows, n) (or (n,)): the mean of the non-NaN items and its percentile
    bootstrap interval over resamples of the items (NaN items count as absent, e.g. a shape-bias trial that chose
    neither cue)."""
    values = _as_rows(values)
    mean = torch.nanmean(values, dim=-1)
    if values.shape[1] < 2:
        nan = torch.full_like(mean, math.nan)
        return mean, nan, nan
    low, high = _percentiles(resampled_nanmeans(values, resamples, seed), confidence)
    return mean, low, high


def paired_mean_difference(
    first: torch.Tensor, second: torch.Tensor, *, resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, torch.Tensor]:
    """Paired bootstrap test of mean(first) - mean(second) per row, the items resampled together (e.g. the same
    triplets scored at two epochs). p is two-sided, the bootstrap test centred at the observed difference:
    p = (1 + #{|d* - d| >= |d|}) / (R + 1), as fastclip.ops.bootstrap.paired_difference_test."""
    first, second = _as_rows(first), _as_rows(second)
    if first.shape != second.shape:
        raise ValueError(f"paired_mean_difference: first {tuple(first.shape)} and second {tuple(second.shape)} differ")
    both = torch.cat([first, second])
    rows = first.shape[0]
    distribution = resampled_nanmeans(both, resamples, seed)
    differences = distribution[:rows] - distribution[rows:]
    observed = torch.nanmean(first, dim=-1) - torch.nanmean(second, dim=-1)
    low, high = _percentiles(differences, confidence)
    extreme = ((differences - observed[:, None]).abs() >= observed.abs()[:, None]).sum(-1)
    return {"difference": observed, "low": low, "high": high, "pvalue": (1 + extreme).double() / (resamples + 1)}
