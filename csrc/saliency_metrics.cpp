// fastclip::saliency_map_metrics: the per-map work of fastclip.ops.saliency_metrics in a few fused passes per image
// (the definitions are in that module's docstring; MIT cvzoya/saliency code_forMetrics).
//
// pred: (B, N) float64, the predicted maps already resized to the fixation size and flattened.
// fixation_map: (B, N) float32 or float64 continuous maps, or None (then cc, sim and kld are NaN).
// fixation_index: (B, K) int64 flat indices of the fixated pixels padded with -1; fixation_count: (B,) int64.
// image_ids: (B,) int64, each image's index in the whole batch (the Philox key of its AUC-Judd jitter).
// judd: whether to compute AUC-Judd (with U(0,1)/1e7 jitter from Philox stream 2 when jitter is true).
// Returns (B, 8) float64: [min, max, sum, centred sum of squares of pred, cc, sim, kld, auc_judd].
//
// fastclip::saliency_split_aucs: AUC-Borji and shuffled AUC, every split drawn in the kernel.
// pred, fixation_index, fixation_count, image_ids as above; low, high: (B,) float64, pred's range (the rescaling).
// candidates: (B, L) int64 shuffled AUC's candidate negatives (ascending pixel indices padded with -1), or None.
// Draws: AUC-Borji split s takes K uniform pixels from Philox stream 3 (a = image id, b = s); shuffled AUC split s
// the min(K, #candidates) candidates with the smallest keys (word << 24 | position), words from stream 4.
// Returns (B, 2) float64: [auc_borji (when borji), auc_shuffled (when candidates)], NaN elsewhere and for K = 0.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastclip, m) {
  m.def(
      "saliency_map_metrics(Tensor pred, Tensor? fixation_map, Tensor fixation_index, Tensor fixation_count, "
      "Tensor image_ids, int seed, bool jitter, bool judd) -> Tensor");
  m.def(
      "saliency_split_aucs(Tensor pred, Tensor low, Tensor high, Tensor fixation_index, Tensor fixation_count, "
      "Tensor? candidates, Tensor image_ids, int seed, int splits, float step, bool borji) -> Tensor");
}
