"""A plain numpy transcription of the MIT saliency benchmark's metrics (cvzoya/saliency, code_forMetrics/*.m): the
outside oracle for fastclip.ops.saliency_metrics.

One image at a time, line by line as the MATLAB reads (the comments quote it). Two deliberate departures:
- imresize (bicubic with antialiasing in MATLAB) is replaced by bilinear interpolation with half-pixel centres,
  the resize fastclip documents, written out here independently of torch;
- the random draws (AUC-Judd's rand, AUC-Borji's randi, AUC-shuffled's randperm picks) are passed in, so that the
  comparison is exact. Indices are 0-based flat row-major pixel indices.
Maps are float arrays (MATLAB's im2double of a uint8 map only scales it, which none of these metrics sees).
"""

from __future__ import annotations

import numpy as np

EPS = np.finfo(np.float64).eps  # MATLAB's eps


def imresize_bilinear(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear interpolation with half-pixel centres: output pixel d samples input coordinate
    (d + 0.5) * in / out - 0.5, clamped at the borders."""
    image = np.asarray(image, dtype=np.float64)
    if image.shape == tuple(shape):
        return image
    for axis, size_out in enumerate(shape):
        size_in = image.shape[axis]
        source = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
        source = np.maximum(source, 0.0)
        lower = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
        upper = np.minimum(lower + 1, size_in - 1)
        weight = source - lower
        low_values = np.take(image, lower, axis=axis)
        high_values = np.take(image, upper, axis=axis)
        shape_w = [1, 1]
        shape_w[axis] = size_out
        weight = weight.reshape(shape_w)
        image = low_values + weight * (high_values - low_values)
    return image


def _rescale_or_none(saliency_map):
    """Min-max rescaling; None for MATLAB's `if sum(isnan(saliencyMap(:)))==length(saliencyMap(:))` (NaN score)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        rescaled = (saliency_map - saliency_map.min()) / (saliency_map.max() - saliency_map.min())
    return None if np.isnan(rescaled).all() else rescaled


def _std(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1))  # MATLAB's std


def CC(saliency_map, fixation_map):
    # map1 = im2double(imresize(saliencyMap1, size(saliencyMap2))); map2 = im2double(saliencyMap2);
    map1 = imresize_bilinear(saliency_map, fixation_map.shape)
    map2 = np.asarray(fixation_map, dtype=np.float64)
    # map1 = (map1 - mean(map1(:))) / std(map1(:)); map2 likewise
    map1 = (map1 - map1.mean()) / _std(map1)
    map2 = (map2 - map2.mean()) / _std(map2)
    # score = corr2(map2, map1);
    a, b = map2 - map2.mean(), map1 - map1.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def NSS(saliency_map, fixation_points):
    # map = imresize(saliencyMap, size(fixationMap));
    map_ = imresize_bilinear(saliency_map, fixation_points.shape)
    # map = (map - mean(map(:)))/std(map(:));
    map_ = (map_ - map_.mean()) / _std(map_)
    # score = mean(map(logical(fixationMap)));
    return float(map_[fixation_points.astype(bool)].mean())


def similarity(saliency_map1, saliency_map2):
    map1 = imresize_bilinear(saliency_map1, saliency_map2.shape)
    map2 = np.asarray(saliency_map2, dtype=np.float64)
    # if any(map1(:)): map1 = (map1-min)/(max-min); map1 = map1/sum(map1(:)); end
    if np.any(map1):
        map1 = (map1 - map1.min()) / (map1.max() - map1.min())
        map1 = map1 / map1.sum()
    if np.any(map2):
        map2 = (map2 - map2.min()) / (map2.max() - map2.min())
        map2 = map2 / map2.sum()
    # diff = min(map1, map2); score = sum(diff(:));
    return float(np.minimum(map1, map2).sum())


def KLdiv(saliency_map, fixation_map):
    map1 = imresize_bilinear(saliency_map, fixation_map.shape)
    map2 = np.asarray(fixation_map, dtype=np.float64)
    # if any(map1(:)): map1 = map1/sum(map1(:)); end  (same for map2)
    if np.any(map1):
        map1 = map1 / map1.sum()
    if np.any(map2):
        map2 = map2 / map2.sum()
    # score = sum(sum(map2 .* log(eps + map2./(map1+eps))));
    return float((map2 * np.log(EPS + map2 / (map1 + EPS))).sum())


def _auc_scores(saliency_map, fixation_points, jitter_noise=None):
    """The common start of the three AUCs: (S, Sth), the rescaled map's values at every pixel and at the fixated
    ones, or None where MATLAB returns NaN (no fixation, or a map that rescales to all NaN)."""
    if not np.any(fixation_points):
        return None
    saliency_map = imresize_bilinear(saliency_map, fixation_points.shape)
    if jitter_noise is not None:
        saliency_map = saliency_map + np.asarray(jitter_noise).reshape(saliency_map.shape)
    # saliencyMap = (saliencyMap-min(saliencyMap(:)))/(max(saliencyMap(:))-min(saliencyMap(:)));
    saliency_map = _rescale_or_none(saliency_map)
    if saliency_map is None:
        return None
    S = saliency_map.ravel()
    F = fixation_points.ravel()
    return S, S[F > 0]


def AUC_Judd(saliency_map, fixation_points, jitter_noise=None):
    """jitter_noise: the per-pixel rand(size(saliencyMap))/10000000 (flat, row-major), or None for jitter = 0."""
    scores = _auc_scores(saliency_map, fixation_points, jitter_noise)
    if scores is None:
        return float("nan")
    S, Sth = scores
    Nfixations = len(Sth)
    Npixels = len(S)
    allthreshes = np.sort(Sth)[::-1]
    tp = np.zeros(Nfixations + 2)
    fp = np.zeros(Nfixations + 2)
    tp[-1] = 1
    fp[-1] = 1
    for i in range(1, Nfixations + 1):
        thresh = allthreshes[i - 1]
        aboveth = np.sum(S >= thresh)
        tp[i] = i / Nfixations
        fp[i] = (aboveth - i) / (Npixels - Nfixations)
    return float(np.trapezoid(tp, fp))


def _split_auc(Sth, curfix, step_size, normaliser_tp, normaliser_fp):
    # allthreshes = fliplr([0:stepSize:double(max([Sth;curfix]))]);
    top = max(Sth.max(), curfix.max())
    allthreshes = (np.arange(int(np.floor(top / step_size + 1e-9)) + 1) * step_size)[::-1]
    tp = np.zeros(len(allthreshes) + 2)
    fp = np.zeros(len(allthreshes) + 2)
    tp[-1] = 1
    fp[-1] = 1
    for i, thresh in enumerate(allthreshes, start=1):
        tp[i] = np.sum(Sth >= thresh) / normaliser_tp
        fp[i] = np.sum(curfix >= thresh) / normaliser_fp
    return np.trapezoid(tp, fp)


def AUC_Borji(saliency_map, fixation_points, random_pixels, step_size=0.1):
    """random_pixels: r = randi([1 Npixels],[Nfixations,Nsplits]) as 0-based indices, shape (Nfixations, Nsplits)."""
    scores = _auc_scores(saliency_map, fixation_points)
    if scores is None:
        return float("nan")
    S, Sth = scores
    Nfixations = len(Sth)
    randfix = S[random_pixels]
    auc = [_split_auc(Sth, randfix[:, s], step_size, Nfixations, Nfixations) for s in range(randfix.shape[1])]
    return float(np.mean(auc))


def AUC_shuffled(saliency_map, fixation_points, chosen_other_fixations, step_size=0.1):
    """chosen_other_fixations: per split, the pixels randind(1:Nfixations_oth) picked from find(otherMap>0)."""
    scores = _auc_scores(saliency_map, fixation_points)
    if scores is None:
        return float("nan")
    S, Sth = scores
    Nfixations = len(Sth)
    auc = []
    for chosen in chosen_other_fixations:
        curfix = S[chosen]
        auc.append(_split_auc(Sth, curfix, step_size, Nfixations, len(chosen)))
    return float(np.mean(auc))


def InfoGain(saliency_map, fixation_points, baseline_map):
    map1 = imresize_bilinear(saliency_map, fixation_points.shape)
    mapb = imresize_bilinear(baseline_map, fixation_points.shape)
    # map1 = (map1(:)-min(map1(:)))/(max(map1(:))-min(map1(:)));  (same for mapb)
    map1 = (map1.ravel() - map1.min()) / (map1.max() - map1.min())
    mapb = (mapb.ravel() - mapb.min()) / (mapb.max() - mapb.min())
    map1 = map1 / map1.sum()
    mapb = mapb / mapb.sum()
    locs = fixation_points.ravel().astype(bool)
    return float(np.mean(np.log2(EPS + map1[locs]) - np.log2(EPS + mapb[locs])))
