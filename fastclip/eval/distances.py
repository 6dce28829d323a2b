"""Distances between image features, pair by pair: what the IQA and 2AFC benchmarks correlate with human judgements.

    l2                    ||a - b||
    cosine                1 - cos(a, b)
    normalized_euclidean  sqrt(mean_k (a_k - b_k)^2 / s_k), s_k = the mean of (a_k - b_k)^2 over the dataset's pairs

The normalised Euclidean is the one the paper's authors used (pablohc97/Evaluating_Human-CLIP_Alignment...,
reference/eval.md §0): each dimension is scaled by its mean squared difference over the dataset, so every dimension
weighs the same on average. For 2AFC the scale pools both comparisons of every triplet (ref-p0 and ref-p1), which is
their "mean of the left and right means" when the two sets have one size. A dimension that never differs (s_k = 0)
adds 0. Features are compared as computed (the embedding before normalisation, block outputs averaged over
tokens); the authors' hidden-layer variant averages squared differences over tokens instead, which needs every
token of every image kept and is not offered.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DISTANCES = ("l2", "cosine", "normalized_euclidean")


def squared_differences(features: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """(pairs, D) float32 (a_k - b_k)^2 of the pairs (features[first[i]], features[second[i]])."""
    return (features[first].float() - features[second].float()).square()


def normalized_euclidean_scale(*squared: torch.Tensor) -> torch.Tensor:
    """(D,) the mean squared difference per dimension over all the given pairs."""
    return torch.cat(squared).double().mean(dim=0)


def normalized_euclidean(squared: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(pairs,) float64 sqrt(mean_k squared_k / scale_k); dimensions with scale 0 add 0."""
    inverse = torch.where(scale > 0, 1.0 / scale.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    return (squared.double() @ inverse / squared.shape[1]).sqrt()


def _distance(distance: str, squared: torch.Tensor, unit: torch.Tensor | None, first, second, scale) -> torch.Tensor:
    if distance == "l2":
        return squared.double().sum(dim=1).sqrt()
    if distance == "cosine":
        return 1.0 - (unit[first] * unit[second]).sum(dim=1)
    if distance == "normalized_euclidean":
        if scale is None:
            raise ValueError("normalized_euclidean needs the dataset's per-dimension scale")
        return normalized_euclidean(squared, scale)
    raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")


def pair_distances(
    features: torch.Tensor, first: torch.Tensor, second: torch.Tensor, distance: str, scale: torch.Tensor | None = None
) -> torch.Tensor:
    """(pairs,) float64 distances between features[first] and features[second]; `scale` is required by (and only
    used for) normalized_euclidean."""
    unit = F.normalize(features.double(), dim=1) if distance == "cosine" else None
    return _distance(distance, squared_differences(features, first, second), unit, first, second, scale)


def layer_variant(layer: str, distance: str) -> str:
    return f"layer={layer},distance={distance}"


def distances_by_variant(
    layers: dict[str, torch.Tensor], pair_sets: list[tuple[torch.Tensor, torch.Tensor]], distances: tuple[str, ...]
) -> dict[str, list[torch.Tensor]]:
    """{layer_variant: [distances of pair set 0, of pair set 1, ...]} for every layer and distance, each squared
    difference computed once; the normalised Euclidean scale of a layer pools all pair sets."""
    for distance in distances:
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    out = {}
    for layer, features in layers.items():
        squared = [squared_differences(features, a, b) for a, b in pair_sets]
        unit = F.normalize(features.double(), dim=1) if "cosine" in distances else None
        scale = normalized_euclidean_scale(*squared) if "normalized_euclidean" in distances else None
        for distance in distances:
            out[layer_variant(layer, distance)] = [
                _distance(distance, sq, unit, a, b, scale) for sq, (a, b) in zip(squared, pair_sets)
            ]
    return out
