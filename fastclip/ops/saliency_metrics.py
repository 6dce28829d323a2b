"""Saliency metrics of predicted maps against human fixations, batched over images.

`saliency_metrics(pred, fixation_map=..., fixations=...)` returns {metric: (B,) float64} for
  "cc", "sim", "kld"                        against continuous fixation maps (B, H, W), and
  "nss", "auc_judd", "auc_borji", "auc_shuffled", "info_gain"  against binary fixation points (B, H, W).
Predictions (M, B, h, w), M maps of every image, are scored against human data prepared once, giving (M, B).
Predicted maps (B, h, w) are first resized to the fixation maps' size (H, W) by bilinear interpolation with
half-pixel centres (torch's align_corners=False, no antialiasing). All arithmetic is float64.

Definitions follow the MIT saliency benchmark (cvzoya/saliency, code_forMetrics/*.m) unless noted; differences from
pysaliency (Kümmerer) are listed per metric. eps is MATLAB's eps, 2.220446049250313e-16.
  cc         Pearson correlation of prediction and fixation map over pixels (MIT CC.m; pysaliency CC agrees).
  nss        mean over fixated pixels of the prediction z-scored with its mean and sample std (ddof 1, MATLAB's std)
             (MIT NSS.m). pysaliency uses ddof 0 and averages over fixations, not over images' fixated pixels.
  sim        both maps min-max rescaled to [0, 1] (when not all zero), then divided by their sums; the sum of the
             pixelwise minimum (MIT similarity.m). pysaliency and the newer benchmark skip the min-max rescaling.
  kld        both maps divided by their sums (when not all zero); sum of G log(eps + G / (P + eps)) (MIT KLdiv.m;
             pysaliency's MIT_KLDiv agrees, its image_based_kl_divergence regularises with 1e-20 instead).
  auc_judd   prediction plus U(0, 1) / 1e7 jitter (jitter=True, as MIT's default), min-max rescaled; thresholds are
             the values at fixated pixels; TP = i / Nfix, FP = (#{S >= t_i} - i) / (Npix - Nfix), trapezoid area
             with end points (0, 0) and (1, 1) (MIT AUC_Judd.m). pysaliency counts negatives among non-fixated pixels
             only, with jitter seeded at 42.
  auc_borji  min-max rescaled prediction; `splits` (100) draws of Nfix pixels uniformly with replacement as
             negatives; thresholds k * step (0.1) for k = 0 .. floor(1 / step); mean AUC over splits (MIT
             AUC_Borji.m). MIT's thresholds stop at the largest value of the split, ours at 1: the extra thresholds
             add (0, 0) points, which add no area.
  auc_shuffled as auc_borji with negatives drawn without replacement, min(Nfix, Nother) per split, from the union
             of the fixations of `num_other` (10) other images of the batch (MIT AUC_shuffled.m with Borji's M = 10;
             same-sized maps assumed, as a batch is). Pass other_fixations (B, H, W) to choose them yourself.
             pysaliency's sAUC uses all fixations of all other images.
  info_gain  prediction and baseline min-max rescaled and divided by their sums; mean over fixated pixels of
             log2(eps + P) - log2(eps + B), in bits per fixation (MIT InfoGain.m). The baseline defaults to
             center_bias(H, W). pysaliency computes log-likelihoods per fixation against a uniform baseline.
A map the normalisation divides by zero (e.g. a constant prediction for auc_*, sim, info_gain) gives NaN, as MIT's
code; images without fixations give NaN for the fixation metrics.

Randomness (AUC-Judd jitter, AUC-Borji negatives, the other images and negatives of shuffled AUC) is Philox keyed by
(seed, image index in the batch, split), so an image's scores do not depend on the chunking or the device. The
draws are public (judd_jitter, borji_negatives, other_images, shuffled_negatives) so that other implementations
can be fed the same ones.

Backends: "batched" (vectorised torch over chunks of images on any device: one sort-free pass per threshold
family, AUC-Judd counts by searchsorted of pixels into the sorted fixation values, AUC-Borji and shuffled AUC over all
splits at once) and "reference" (plain torch, one image and one split at a time, each metric written as the MIT
code reads).
"""

from __future__ import annotations

import copy
import math
import warnings

import torch

from fastclip import _ext
from fastclip.ops import _philox
from fastclip.ops._dispatch import Backend, OpDispatcher, extension_backend
from fastclip.ops.resize_bilinear import resize_bilinear

METRICS = ("cc", "nss", "sim", "kld", "auc_judd", "auc_borji", "auc_shuffled", "info_gain")
MAP_METRICS = ("cc", "sim", "kld")
FIXATION_METRICS = ("nss", "auc_judd", "auc_borji", "auc_shuffled", "info_gain")
MATLAB_EPS = 2.220446049250313e-16
JITTER_SCALE = 1e-7
_CANDIDATE_BITS = 24  # shuffled AUC's candidate positions live in the low bits of its sort keys
# Pixels per chunk of the batched path (each float64 temporary of a chunk is then ~256 MB at most).
_CHUNK_PIXELS = 1 << 25


class ConstantMapWarning(RuntimeWarning):
    """A predicted map is constant, so the metrics that rescale it are NaN for that image."""


# ------------------------------------------------------------------------------------------------- inputs


def center_bias(height: int, width: int, sigma: float = 0.25, device="cpu") -> torch.Tensor:
    """A centre-bias baseline map (height, width): a Gaussian at the image centre with standard deviation `sigma`
    times the height vertically and times the width horizontally."""
    y = (torch.arange(height, dtype=torch.float64, device=device) + 0.5) / height - 0.5
    x = (torch.arange(width, dtype=torch.float64, device=device) + 0.5) / width - 0.5
    return torch.exp(-(y.view(-1, 1) ** 2 + x.view(1, -1) ** 2) / (2 * sigma**2))


def _center_bias_at(fix_index: torch.Tensor, height: int, width: int, sigma: float = 0.25) -> torch.Tensor:
    """The default info-gain baseline, center_bias(height, width) min-max rescaled and divided by its sum, at the
    given flat pixel indices: (b, K). The Gaussian is separable, exp(-y^2/2s^2) exp(-x^2/2s^2), so its range and
    sum come from the two 1-D factors, without building the (height, width) map for every call (a per-size cost
    that dominated images of many sizes)."""
    device = fix_index.device
    y = (torch.arange(height, dtype=torch.float64, device=device) + 0.5) / height - 0.5
    x = (torch.arange(width, dtype=torch.float64, device=device) + 0.5) / width - 0.5
    along_y, along_x = torch.exp(-(y**2) / (2 * sigma**2)), torch.exp(-(x**2) / (2 * sigma**2))
    low = along_y.min() * along_x.min()
    span = along_y.max() * along_x.max() - low
    rescaled_total = (along_y.sum() * along_x.sum() - height * width * low) / span
    index = fix_index.clamp(min=0)
    values = along_y[index // width] * along_x[index % width]
    return (values - low) / span / rescaled_total


def fixation_indices(fixations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat pixel indices of the fixated pixels of each map (B, H, W), ascending, padded with -1: (B, Kmax), and the
    count per image (B,)."""
    flat = fixations.reshape(fixations.shape[0], -1)
    flat = flat if flat.dtype == torch.bool else flat != 0
    image, pixel = flat.nonzero(as_tuple=True)
    counts = torch.bincount(image, minlength=flat.shape[0])
    width = max(1, int(counts.max())) if counts.numel() else 1
    slot = torch.arange(pixel.numel(), device=flat.device) - (counts.cumsum(0) - counts)[image]
    indices = torch.full((flat.shape[0], width), -1, dtype=torch.int64, device=flat.device)
    indices[image, slot] = pixel
    return indices, counts


# ------------------------------------------------------------------------------------------ random draws


def judd_jitter(seed: int, image_ids: torch.Tensor, num_pixels: int) -> torch.Tensor:
    """AUC-Judd's jitter U(0, 1) / 1e7 for every pixel of each image: (b, num_pixels) float64."""
    zero = torch.zeros(1, dtype=torch.int64, device=image_ids.device)
    words = _philox.random_uint32(seed, _philox.STREAM_AUC_JITTER, image_ids, zero, num_pixels)[:, 0]
    return _philox.uniform_unit(words) * JITTER_SCALE


def borji_negatives(seed: int, image_ids: torch.Tensor, splits: int, count: int, num_pixels: int) -> torch.Tensor:
    """AUC-Borji's random pixels: (b, splits, count) indices uniform in [0, num_pixels); an image with K fixations
    uses the first K of each split."""
    split_ids = torch.arange(splits, dtype=torch.int64, device=image_ids.device)
    words = _philox.random_uint32(seed, _philox.STREAM_AUC_BORJI, image_ids, split_ids, count)
    return _philox.uniform_index(words, num_pixels)


def other_images(seed: int, num_images: int, num_other: int, device="cpu") -> torch.Tensor:
    """For each image of the batch, `num_other` distinct other images chosen uniformly: (B, num_other) int64."""
    ids = torch.arange(num_images, dtype=torch.int64, device=device)
    zero = torch.zeros(1, dtype=torch.int64, device=device)
    keys = _philox.random_uint32(seed, _philox.STREAM_SHUFFLED_OTHER_IMAGES, zero, ids, num_images)[0]
    keys[ids, ids] = 1 << 40  # never pick yourself
    return torch.argsort(keys, dim=-1, stable=True)[:, :num_other]


def shuffled_candidates(fixation_index: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """The union, ascending and without duplicates, of the fixated pixels of each image's other images:
    (B, L) padded with -1 (MATLAB's find(otherMap))."""
    pooled = fixation_index[others].reshape(others.shape[0], -1)
    pooled = torch.where(pooled < 0, torch.iinfo(torch.int64).max, pooled)
    pooled = torch.sort(pooled, dim=-1).values
    repeated = torch.zeros_like(pooled, dtype=torch.bool)
    repeated[:, 1:] = pooled[:, 1:] == pooled[:, :-1]
    pooled = torch.where(repeated | (pooled == torch.iinfo(torch.int64).max), torch.iinfo(torch.int64).max, pooled)
    pooled = torch.sort(pooled, dim=-1).values
    width = max(1, int((pooled != torch.iinfo(torch.int64).max).sum(-1).max()))
    pooled = pooled[:, :width]
    return torch.where(pooled == torch.iinfo(torch.int64).max, -1, pooled)


def shuffled_negatives(
    seed: int, image_ids: torch.Tensor, splits: int, candidates: torch.Tensor, take: torch.Tensor
) -> torch.Tensor:
    """Shuffled AUC's negatives: per image and split, `take` candidates drawn without replacement (a random
    permutation's first `take`, as MATLAB's randperm): (b, splits, max take) pixel indices padded with -1."""
    length = candidates.shape[-1]
    if length >= 1 << _CANDIDATE_BITS:
        raise ValueError(
            f"saliency_metrics: {length} candidate fixations for shuffled AUC; at most {1 << _CANDIDATE_BITS} fit"
        )
    split_ids = torch.arange(splits, dtype=torch.int64, device=image_ids.device)
    words = _philox.random_uint32(seed, _philox.STREAM_SHUFFLED_SUBSET, image_ids, split_ids, length)
    # The candidate's position in the low bits makes every key distinct, so the `take` smallest keys are one set on
    # every device and whatever the selection algorithm; padding sorts last.
    position = torch.arange(length, device=candidates.device)
    keys = torch.where((candidates < 0).unsqueeze(1), 1 << 62, (words << _CANDIDATE_BITS) | position)
    width = min(length, max(1, int(take.max())) if take.numel() else 1)
    smallest = torch.topk(keys, width, dim=-1, largest=False, sorted=True).indices
    chosen = candidates.unsqueeze(1).expand(-1, splits, -1).gather(2, smallest)
    inside = torch.arange(width, device=candidates.device) < take.view(-1, 1, 1)
    return torch.where(inside, chosen, -1)


# ---------------------------------------------------------------------------------------- shared pieces


def _rescale(maps: torch.Tensor) -> torch.Tensor:
    """Min-max rescaling of each row to [0, 1] (NaN for a constant row, as MATLAB's 0/0)."""
    low = maps.amin(-1, keepdim=True)
    return (maps - low) / (maps.amax(-1, keepdim=True) - low)


def _to_distribution(maps: torch.Tensor, rescale: bool) -> torch.Tensor:
    """MIT's `if any(map(:))`: rows with a non-zero value are (rescaled and) divided by their sum; others stay 0."""
    nonzero = (maps != 0).any(-1, keepdim=True)
    scaled = _rescale(maps) if rescale else maps
    scaled = scaled / scaled.sum(-1, keepdim=True)
    return torch.where(nonzero, scaled, maps)


def _step_thresholds(step: float, device) -> torch.Tensor:
    return torch.arange(int(math.floor(1 / step + 1e-9)) + 1, dtype=torch.float64, device=device) * step


def _trapezoid(fp: torch.Tensor, tp: torch.Tensor) -> torch.Tensor:
    """Area under curves whose points run along the last dimension."""
    return ((fp[..., 1:] - fp[..., :-1]) * (tp[..., 1:] + tp[..., :-1]) / 2).sum(-1)


# ------------------------------------------------------------------------------------- backend: batched


def _count_at_least(values: torch.Tensor, valid: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """#{valid values >= t_k} for every threshold of an ascending list: (..., T), by bucketing values among the
    thresholds (searchsorted) and suffix sums of the bucket counts, instead of T comparisons per value."""
    shape = values.shape[:-1]
    flat_values = values.reshape(-1, values.shape[-1])
    t = thresholds.reshape(-1, thresholds.shape[-1]).expand(flat_values.shape[0], -1).contiguous()
    bucket = torch.searchsorted(t, flat_values.contiguous(), right=True)  # thresholds <= value
    histogram = torch.zeros((flat_values.shape[0], t.shape[-1] + 1), dtype=torch.float64, device=values.device)
    histogram.scatter_add_(1, bucket, valid.reshape(flat_values.shape).to(torch.float64))
    at_least = histogram.flip(-1).cumsum(-1).flip(-1)[:, 1:]  # value >= t_k  <=>  bucket > k
    return at_least.reshape(*shape, -1)


def _auc_judd_batched(rescaled: torch.Tensor, fix_index: torch.Tensor, fix_count: torch.Tensor) -> torch.Tensor:
    rows, num_pixels = rescaled.shape
    valid = fix_index >= 0
    at_fixations = rescaled.gather(1, fix_index.clamp(min=0))
    ascending = torch.sort(torch.where(valid, at_fixations, float("inf")), dim=-1).values
    at_least = _count_at_least(rescaled, torch.ones_like(rescaled, dtype=torch.bool), ascending)
    k = fix_count.view(-1, 1).to(torch.float64)
    i = torch.arange(1, ascending.shape[1] + 1, device=rescaled.device).view(1, -1)
    # The i-th largest threshold is ascending[K - i].
    above = at_least.gather(1, (fix_count.view(-1, 1) - i).clamp(min=0))
    inside = i <= fix_count.view(-1, 1)
    tp = torch.where(inside, i / k, 1.0)
    fp = torch.where(inside, (above - i) / (num_pixels - k), 1.0)
    zero = torch.zeros((rows, 1), dtype=torch.float64, device=rescaled.device)
    one = torch.ones_like(zero)
    return _trapezoid(torch.cat([zero, fp, one], -1), torch.cat([zero, tp, one], -1))


def _auc_splits_batched(p, low, high, positives, positive_count, negatives, negative_count, step) -> torch.Tensor:
    """Mean over splits of the AUC of positives (b, K) against each split's negatives (b, splits, L), pixels of the
    min-max rescaled maps p, with thresholds k * step; TP and FP are normalised by their own set sizes (as MIT)."""
    thresholds = _step_thresholds(step, p.device)
    low, span = low.view(-1, 1), (high - low).view(-1, 1)
    pos_values = (p.gather(1, positives.clamp(min=0)) - low) / span
    tp = _count_at_least(pos_values, positives >= 0, thresholds) / positive_count.view(-1, 1)
    neg_values = ((p.gather(1, negatives.clamp(min=0).flatten(1)) - low) / span).view(negatives.shape)
    fp = _count_at_least(neg_values, negatives >= 0, thresholds) / negative_count.view(-1, 1, 1)
    tp = tp.unsqueeze(1).expand_as(fp)
    # Points run from the highest threshold down, between (0, 0) and (1, 1).
    zero = torch.zeros((*fp.shape[:-1], 1), dtype=torch.float64, device=fp.device)
    one = torch.ones_like(zero)
    area = _trapezoid(torch.cat([zero, fp.flip(-1), one], -1), torch.cat([zero, tp.flip(-1), one], -1))
    return area.mean(-1)


def _fixation_mean(values: torch.Tensor, fix_index: torch.Tensor, fix_count: torch.Tensor) -> torch.Tensor:
    gathered = values.gather(1, fix_index.clamp(min=0))
    return torch.where(fix_index >= 0, gathered, 0.0).sum(-1) / fix_count


# Columns of the per-map statistics (the layout of the C++ op fastclip::saliency_map_metrics).
_LOW, _HIGH, _SUM, _M2, _CC, _SIM, _KLD, _JUDD = range(8)


def _map_statistics_torch(p, g, fix_index, fix_count, ids, job) -> torch.Tensor:
    """Everything that needs whole-map passes, (b, 8) float64, in torch ops (any device)."""
    nan = torch.full((p.shape[0],), float("nan"), dtype=torch.float64, device=p.device)
    low, high = p.aminmax(dim=-1)
    centred = p - p.mean(-1, keepdim=True)
    columns = [low, high, p.sum(-1), (centred * centred).sum(-1), nan, nan, nan, nan]
    if g is not None:
        columns[_CC] = _pearson_of_maps(p, g)
        columns[_SIM] = torch.minimum(_to_distribution(p, True), _to_distribution(g, True)).sum(-1)
        pk, gk = _to_distribution(p, False), _to_distribution(g, False)
        columns[_KLD] = (gk * torch.log(MATLAB_EPS + gk / (pk + MATLAB_EPS))).sum(-1)
    if "auc_judd" in job.metrics:
        scored = p + judd_jitter(job.seed, ids, p.shape[1]) if job.jitter else p
        judd = _auc_judd_batched(_rescale(scored), fix_index, fix_count)
        # MIT returns NaN when the rescaled map is all NaN (a constant map: 0 / 0).
        columns[_JUDD] = judd.masked_fill(scored.amax(-1) == scored.amin(-1), float("nan"))
    return torch.stack(columns, dim=-1)


def _map_statistics_extension(p, g, fix_index, fix_count, ids, job) -> torch.Tensor:
    if fix_index is None:
        fix_index = torch.full((p.shape[0], 1), -1, dtype=torch.int64)
        fix_count = torch.zeros(p.shape[0], dtype=torch.int64)
    return _ext.op("saliency_map_metrics")(
        p, g, fix_index, fix_count, ids, job.seed, job.jitter, "auc_judd" in job.metrics
    )


def _split_aucs_torch(p, low, high, fix_index, fix_count, ids, start, stop, job) -> dict[str, torch.Tensor]:
    """AUC-Borji and shuffled AUC of a chunk (those of job.metrics) in torch ops (any device)."""
    out = {}
    num_pixels = p.shape[1]
    if "auc_borji" in job.metrics:
        negatives = borji_negatives(job.seed, ids, job.splits, fix_index.shape[1], num_pixels)
        negatives = torch.where((fix_index >= 0).unsqueeze(1), negatives, -1)
        out["auc_borji"] = _auc_splits_batched(p, low, high, fix_index, fix_count, negatives, fix_count, job.step)
    if "auc_shuffled" in job.metrics:
        candidates = job.shuffled_candidates[start:stop]
        take = torch.minimum(fix_count, (candidates >= 0).sum(-1))
        negatives = shuffled_negatives(job.seed, ids, job.splits, candidates, take)
        out["auc_shuffled"] = _auc_splits_batched(p, low, high, fix_index, fix_count, negatives, take, job.step)
    return out


def _split_aucs_extension(p, low, high, fix_index, fix_count, ids, start, stop, job) -> dict[str, torch.Tensor]:
    """The same in one C++ call: the splits are drawn and counted in the kernel, no (splits x negatives) tensor."""
    borji, shuffled = "auc_borji" in job.metrics, "auc_shuffled" in job.metrics
    if not (borji or shuffled):
        return {}
    candidates = job.shuffled_candidates[start:stop] if shuffled else None
    aucs = _ext.op("saliency_split_aucs")(
        p, low.contiguous(), high.contiguous(), fix_index, fix_count, candidates, ids, job.seed, job.splits,
        float(job.step), borji,
    )  # fmt: skip
    out = {}
    if borji:
        out["auc_borji"] = aucs[:, 0]
    if shuffled:
        out["auc_shuffled"] = aucs[:, 1]
    return out


def _metrics_batched(
    job: "_Job", map_statistics=_map_statistics_torch, split_aucs=_split_aucs_torch
) -> dict[str, torch.Tensor]:
    out: dict[str, list[torch.Tensor]] = {name: [] for name in job.metrics}
    rows = job.pred.shape[0]
    num_pixels = job.height * job.width
    chunk = max(1, _CHUNK_PIXELS // num_pixels)
    shared_baseline = None
    for start in range(0, rows, chunk):
        stop = min(rows, start + chunk)
        ids = torch.arange(start, stop, device=job.pred.device)
        # Slices, not ids: a chunk is a view, where indexing would copy every full-size map of the chunk.
        p = resize_bilinear(job.pred[start:stop], (job.height, job.width), out=job.resized_buffer(stop - start))
        p = p.reshape(len(ids), -1)
        g = None
        if job.fixation_map is not None and any(name in MAP_METRICS for name in job.metrics):
            g = job.fixation_map[start:stop].reshape(len(ids), -1)
            # The extension reads float32 maps as they are; everything else computes in float64.
            g = g if map_statistics is _map_statistics_extension and g.dtype == torch.float32 else g.to(torch.float64)
        fix_index = fix_count = None
        if job.fix_index is not None:
            fix_index, fix_count = job.fix_index[start:stop], job.fix_count[start:stop]
        stats = map_statistics(p, g, fix_index, fix_count, ids, job)
        low, high, total, m2 = stats[:, _LOW], stats[:, _HIGH], stats[:, _SUM], stats[:, _M2]
        constant = high == low
        aucs = split_aucs(p, low, high, fix_index, fix_count, ids, start, stop, job) if fix_index is not None else {}
        for name in job.metrics:
            if name in ("cc", "sim", "kld", "auc_judd"):
                value = stats[:, {"cc": _CC, "sim": _SIM, "kld": _KLD, "auc_judd": _JUDD}[name]]
            elif name == "nss":
                value = (_fixation_mean(p, fix_index, fix_count) - total / num_pixels) / (m2 / (num_pixels - 1)).sqrt()
            elif name in ("auc_borji", "auc_shuffled"):
                value = aucs[name].masked_fill(constant, float("nan"))
            else:  # info_gain: rescaled maps divided by their sums, at the fixated pixels only
                if job._baseline is None:
                    baseline_at = _center_bias_at(fix_index, job.height, job.width)
                elif job.baseline_is_shared:
                    if shared_baseline is None:
                        shared_baseline = _to_distribution(_rescale(job.baseline_rows(ids[:1])), False)
                    baseline_at = shared_baseline.expand(len(ids), -1).gather(1, fix_index.clamp(min=0))
                else:
                    baseline = _to_distribution(_rescale(job.baseline_rows(ids)), False)
                    baseline_at = baseline.gather(1, fix_index.clamp(min=0))
                span = (high - low).view(-1, 1)
                rescaled_total = (total - num_pixels * low).view(-1, 1) / span
                at_fixations = (p.gather(1, fix_index.clamp(min=0)) - low.view(-1, 1)) / span / rescaled_total
                log_ratio = torch.log2(MATLAB_EPS + at_fixations) - torch.log2(MATLAB_EPS + baseline_at)
                value = torch.where(fix_index >= 0, log_ratio, 0.0).sum(-1) / fix_count
            if name in FIXATION_METRICS:
                value = value.masked_fill(fix_count == 0, float("nan"))
            out[name].append(value)
    return {name: torch.cat(values) for name, values in out.items()}


def _metrics_extension(job: "_Job") -> dict[str, torch.Tensor]:
    return _metrics_batched(job, _map_statistics_extension, _split_aucs_extension)


def _pearson_of_maps(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    from fastclip.ops.correlation import ConstantInputWarning, pearson

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)  # reported once per call as a ConstantMapWarning
        return pearson(p, g)


# ----------------------------------------------------------------------------------- backend: reference


def _auc_of_splits_reference(s, positives_at, negative_sets, step) -> torch.Tensor:
    aucs = []
    for negatives_at in negative_sets:
        top = float(torch.cat([positives_at, negatives_at]).max())
        thresholds = torch.arange(int(math.floor(top / step + 1e-9)) + 1, dtype=torch.float64) * step
        thresholds = thresholds.flip(0).to(s.device)
        tp = (positives_at.view(1, -1) >= thresholds.view(-1, 1)).sum(-1).double() / positives_at.numel()
        fp = (negatives_at.view(1, -1) >= thresholds.view(-1, 1)).sum(-1).double() / negatives_at.numel()
        zero, one = s.new_zeros(1), s.new_ones(1)
        aucs.append(torch.trapezoid(torch.cat([zero, tp, one]), torch.cat([zero, fp, one])))
    return torch.stack(aucs).mean()


def _metrics_reference(job: "_Job") -> dict[str, torch.Tensor]:
    """One image at a time, each metric as the MIT code reads."""
    out = {name: [] for name in job.metrics}
    num_pixels = job.height * job.width
    for image in range(job.pred.shape[0]):
        ids = torch.tensor([image], device=job.pred.device)
        p = resize_bilinear(job.pred[image : image + 1], (job.height, job.width), backend="torch").reshape(-1)
        if job.fixation_map is not None:
            g = job.fixation_map[image].to(torch.float64).reshape(-1)
        if job.fix_index is not None:
            fixated = job.fix_index[image][: int(job.fix_count[image])]
        for name in job.metrics:
            if name in FIXATION_METRICS and fixated.numel() == 0:
                out[name].append(torch.tensor(float("nan"), dtype=torch.float64, device=p.device))
                continue
            if name == "cc":
                zp, zg = (p - p.mean()) / p.std(), (g - g.mean()) / g.std()
                value = (zp * zg).sum() / torch.sqrt((zp * zp).sum() * (zg * zg).sum())
            elif name == "nss":
                value = ((p - p.mean()) / p.std())[fixated].mean()
            elif name == "sim":
                p1 = (p - p.min()) / (p.max() - p.min()) if bool((p != 0).any()) else p
                g1 = (g - g.min()) / (g.max() - g.min()) if bool((g != 0).any()) else g
                p1 = p1 / p1.sum() if bool((p != 0).any()) else p1
                g1 = g1 / g1.sum() if bool((g != 0).any()) else g1
                value = torch.minimum(p1, g1).sum()
            elif name == "kld":
                p1 = p / p.sum() if bool((p != 0).any()) else p
                g1 = g / g.sum() if bool((g != 0).any()) else g
                value = (g1 * torch.log(MATLAB_EPS + g1 / (p1 + MATLAB_EPS))).sum()
            elif name == "auc_judd":
                s = p + judd_jitter(job.seed, ids, num_pixels)[0] if job.jitter else p
                s = (s - s.min()) / (s.max() - s.min())
                thresholds = torch.sort(s[fixated], descending=True).values
                k = thresholds.numel()
                above = torch.stack([(s >= t).sum() for t in thresholds]).to(torch.float64)
                i = torch.arange(1, k + 1, dtype=torch.float64, device=s.device)
                zero, one = s.new_zeros(1), s.new_ones(1)
                tp = torch.cat([zero, i / k, one])
                fp = torch.cat([zero, (above - i) / (num_pixels - k), one])
                value = torch.trapezoid(tp, fp)
            elif name == "auc_borji":
                s = (p - p.min()) / (p.max() - p.min())
                k = fixated.numel()
                negatives = borji_negatives(job.seed, ids, job.splits, k, num_pixels)[0]
                value = _auc_of_splits_reference(s, s[fixated], [s[split] for split in negatives], job.step)
            elif name == "auc_shuffled":
                s = (p - p.min()) / (p.max() - p.min())
                candidates = job.shuffled_candidates[image]
                candidates = candidates[candidates >= 0]
                take = torch.tensor([min(fixated.numel(), candidates.numel())], device=s.device)
                negatives = shuffled_negatives(job.seed, ids, job.splits, candidates.view(1, -1), take)[0]
                value = _auc_of_splits_reference(s, s[fixated], [s[split] for split in negatives], job.step)
            else:  # info_gain
                b = job.baseline_rows(ids, resize_backend="torch")[0]
                p1 = (p - p.min()) / (p.max() - p.min())
                b1 = (b - b.min()) / (b.max() - b.min())
                p1, b1 = p1 / p1.sum(), b1 / b1.sum()
                value = (torch.log2(MATLAB_EPS + p1[fixated]) - torch.log2(MATLAB_EPS + b1[fixated])).mean()
            if name.startswith("auc_") and bool(torch.isnan(s).all()):  # MIT: 'NaN saliencyMap'
                value = torch.tensor(float("nan"), dtype=torch.float64, device=p.device)
            out[name].append(value.reshape(()))
    return {name: torch.stack(values) for name, values in out.items()}


_DISPATCH = OpDispatcher(
    "saliency_metrics",
    backends=[
        extension_backend("saliency_map_metrics", _metrics_extension),
        Backend("batched", _metrics_batched),
        Backend("reference", _metrics_reference),
    ],
    auto_order={"cpu": ("extension", "batched"), "cuda": ("batched",)},
)


# ------------------------------------------------------------------------------------------- validation


class _Job:
    """Validated inputs of one call, shared by both backends."""

    def __init__(
        self, pred, fixation_map, fixations, metrics, baseline, other_fixations, seed, jitter, splits, step, num_other
    ):
        self.pred = pred
        self.fixation_map = fixation_map
        self.metrics = metrics
        self.seed, self.jitter, self.splits, self.step = seed, jitter, splits, step
        reference = fixation_map if fixation_map is not None else fixations
        self.height, self.width = int(reference.shape[-2]), int(reference.shape[-1])
        self.fix_index = self.fix_count = self.shuffled_candidates = None
        if fixations is not None:
            self.fix_index, self.fix_count = fixation_indices(fixations)
        if "auc_shuffled" in metrics:
            if other_fixations is not None:
                self.shuffled_candidates = fixation_indices(other_fixations)[0]
            else:
                others = other_images(seed, pred.shape[0], min(num_other, pred.shape[0] - 1), pred.device)
                self.shuffled_candidates = shuffled_candidates(self.fix_index, others)
        self._baseline = baseline
        self.baseline_is_shared = baseline is None or baseline.dim() == 2
        self._scratch: dict[str, torch.Tensor] = {}  # shared by with_prediction's copies

    def resized_buffer(self, images: int) -> torch.Tensor:
        """A float64 (images, H, W) tensor for the resized predictions of a chunk: one allocation for every chunk
        and prediction of the call, as a fresh one of hundreds of MB costs a page fault per 4 kB."""
        buffer = self._scratch.get("resized")
        if buffer is None or buffer.shape[0] < images:
            buffer = torch.empty(images, self.height, self.width, dtype=torch.float64, device=self.pred.device)
            self._scratch["resized"] = buffer
        return buffer[:images]

    def with_prediction(self, pred: torch.Tensor) -> "_Job":
        """This job for another prediction of the same images (the human data is prepared once)."""
        job = copy.copy(self)
        job.pred = pred
        return job

    def baseline_rows(self, ids: torch.Tensor, resize_backend: str = "auto") -> torch.Tensor:
        """The information-gain baseline of the given images, resized to the fixation size and flattened."""
        baseline = self._baseline
        if baseline is None:
            baseline = center_bias(self.height, self.width, device=self.pred.device)
        if baseline.dim() == 2:
            baseline = baseline.unsqueeze(0).expand(len(ids), -1, -1)
        else:
            baseline = baseline[ids]
        return resize_bilinear(baseline, (self.height, self.width), backend=resize_backend).reshape(len(ids), -1)


def _check_maps(name: str, value, batch: int | None, device, *, several: bool = False) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"saliency_metrics: {name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() != 3 and not (several and value.dim() == 4):
        expected = "(images, height, width) or (predictions, images, height, width)" if several else "(images, height, width)"
        raise ValueError(f"saliency_metrics: {name} must be {expected}, got shape {tuple(value.shape)}")
    if value.is_complex():
        raise TypeError(f"saliency_metrics: {name} must be real, got {value.dtype}")
    if batch is not None and value.shape[-3] != batch:
        raise ValueError(f"saliency_metrics: {name} holds {value.shape[-3]} images, pred holds {batch}")
    if value.device != device:
        raise ValueError(f"saliency_metrics: {name} is on {value.device}, pred on {device}")
    # One reduction finds NaN (a NaN sum also comes from +inf and -inf: then look element by element).
    if value.is_floating_point() and bool(torch.isnan(value.sum())) and bool(torch.isnan(value).any()):
        raise ValueError(f"saliency_metrics: {name} contains NaN")
    return value


def saliency_metrics(
    pred: torch.Tensor,
    *,
    fixation_map: torch.Tensor | None = None,
    fixations: torch.Tensor | None = None,
    metrics: tuple[str, ...] | list[str] | None = None,
    baseline: torch.Tensor | None = None,
    other_fixations: torch.Tensor | None = None,
    seed: int = 0,
    jitter: bool = True,
    splits: int = 100,
    step: float = 0.1,
    num_other: int = 10,
    backend: str = "auto",
) -> dict[str, torch.Tensor]:
    """Saliency metrics of each predicted map (see the module docstring for the definitions).

    Args:
        pred: predicted saliency maps (B, h, w), any real dtype; resized bilinearly to (H, W). Or (M, B, h, w): M
            predictions of every image (e.g. several map methods), scored against the same human data, which is
            then prepared once; each prediction's scores equal those of its own (B, h, w) call.
        fixation_map: continuous human fixation maps (B, H, W) for cc, sim and kld.
        fixations: binary fixation points (B, H, W) (non-zero = fixated) for nss, the AUCs and info_gain.
        metrics: names from METRICS; default: every metric the given inputs allow.
        baseline: info_gain's baseline map, (H', W') for all images or (B, H', W'); default center_bias(H, W).
        other_fixations: shuffled AUC's binary negative maps (B, H, W); default: the union of the fixations of
            `num_other` other images of the batch, chosen with `seed`.
        seed: integer in [0, 2**63) for the AUC jitter and negatives; jitter: AUC-Judd's jitter on or off.
        splits, step: AUC-Borji and shuffled AUC's number of random splits and threshold step.
        backend: "auto", "batched" or "reference".

    Returns:
        {metric: (B,) float64 tensor}, or (M, B) for (M, B, h, w) predictions, in the order asked.
    """
    pred = _check_maps("pred", pred, None, getattr(pred, "device", None), several=True)
    batch, device = pred.shape[-3], pred.device
    if fixation_map is not None:
        fixation_map = _check_maps("fixation_map", fixation_map, batch, device)
    if fixations is not None:
        fixations = _check_maps("fixations", fixations, batch, device)
    if fixation_map is not None and fixations is not None and fixation_map.shape[-2:] != fixations.shape[-2:]:
        raise ValueError(
            f"saliency_metrics: fixation_map {tuple(fixation_map.shape[-2:])} and fixations "
            f"{tuple(fixations.shape[-2:])} must have the same height and width"
        )
    available = (MAP_METRICS if fixation_map is not None else ()) + (FIXATION_METRICS if fixations is not None else ())
    if metrics is None:
        if not available:
            raise ValueError("saliency_metrics: pass fixation_map (for cc, sim, kld) and/or fixations (for the rest)")
        metrics = tuple(name for name in METRICS if name in available)
    metrics = tuple(metrics)
    for name in metrics:
        if name not in METRICS:
            raise ValueError(f"saliency_metrics: unknown metric {name!r}; choose from {METRICS}")
        if name not in available:
            needed = "fixation_map" if name in MAP_METRICS else "fixations"
            raise ValueError(f"saliency_metrics: metric {name!r} needs the {needed} argument")
    _philox.check_seed(seed)
    if isinstance(splits, bool) or not isinstance(splits, int) or splits < 1:
        raise ValueError(f"saliency_metrics: splits must be a positive integer, got {splits!r}")
    if not isinstance(step, (int, float)) or not 0 < step <= 1:
        raise ValueError(f"saliency_metrics: step must be in (0, 1], got {step!r}")
    if "auc_shuffled" in metrics and other_fixations is None and batch < 2:
        raise ValueError("saliency_metrics: auc_shuffled needs other images: pass 2+ images or other_fixations")
    if other_fixations is not None:
        other_fixations = _check_maps("other_fixations", other_fixations, batch, device)
    if baseline is not None:
        if not isinstance(baseline, torch.Tensor) or baseline.dim() not in (2, 3):
            raise ValueError("saliency_metrics: baseline must be a (H, W) or (B, H, W) tensor")
        if baseline.dim() == 3 and baseline.shape[0] != batch:
            raise ValueError(f"saliency_metrics: baseline holds {baseline.shape[0]} maps, pred holds {batch}")
    if batch == 0:
        return {name: torch.empty(pred.shape[:-2], dtype=torch.float64, device=device) for name in metrics}
    flat = pred.flatten(-2)
    constant = flat.amax(-1) == flat.amin(-1)
    if bool(constant.any()):
        warnings.warn(
            f"saliency_metrics: {int(constant.sum())} predicted map(s) are constant; cc, nss, sim, auc_borji, "
            "auc_shuffled and info_gain are NaN for them (auc_judd too with jitter=False; with jitter it scores the "
            "jitter, as MIT's code)",
            ConstantMapWarning,
            stacklevel=2,
        )
    several = pred.dim() == 4
    predictions = pred if several else pred.unsqueeze(0)
    job = _Job(predictions[0], fixation_map, fixations, metrics, baseline, other_fixations, seed, jitter, splits, step, num_other)
    chosen = _DISPATCH.choose(device, backend)
    scores = [chosen.run(job.with_prediction(prediction)) for prediction in predictions]
    if not several:
        return scores[0]
    return {name: torch.stack([score[name] for score in scores]) for name in metrics}


def saliency_metrics_ref(pred: torch.Tensor, **kwargs) -> dict[str, torch.Tensor]:
    """The plain-PyTorch oracle: saliency_metrics with backend="reference" (one image, one split at a time)."""
    return saliency_metrics(pred, **kwargs, backend="reference")
