"""fastclip's operators. Each op has a plain-PyTorch `<op>_ref` beside one dispatcher `<op>(..., backend=...)`."""

from fastclip.ops.bootstrap import bootstrap_ci, paired_difference_test, permutation_test
from fastclip.ops.contrastive_loss import clip_loss, clip_loss_ref, siglip_loss, siglip_loss_ref
from fastclip.ops.correlation import kendall_tau_b, kendall_tau_b_ref, pearson, pearson_ref, spearman, spearman_ref
from fastclip.ops.cue_conflict import cue_conflict, cue_conflict_ref, phase_amplitude_swap, silhouette_masks
from fastclip.ops.gaussian_noise import gaussian_noise, gaussian_noise_ref
from fastclip.ops.rank_average import rank_average, rank_average_ref
from fastclip.ops.resize_bilinear import resize_bilinear, resize_bilinear_ref
from fastclip.ops.saliency_metrics import saliency_metrics, saliency_metrics_ref
from fastclip.ops.toyworld_render import toyworld_render, toyworld_render_ref

__all__ = [
    "bootstrap_ci",
    "clip_loss",
    "clip_loss_ref",
    "cue_conflict",
    "cue_conflict_ref",
    "gaussian_noise",
    "gaussian_noise_ref",
    "kendall_tau_b",
    "kendall_tau_b_ref",
    "paired_difference_test",
    "pearson",
    "pearson_ref",
    "permutation_test",
    "phase_amplitude_swap",
    "rank_average",
    "rank_average_ref",
    "resize_bilinear",
    "resize_bilinear_ref",
    "saliency_metrics",
    "saliency_metrics_ref",
    "silhouette_masks",
    "siglip_loss",
    "siglip_loss_ref",
    "spearman",
    "spearman_ref",
    "toyworld_render",
    "toyworld_render_ref",
]
