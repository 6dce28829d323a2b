// fastclip::bootstrap_correlation: a correlation of every row of x with y, recomputed on R paired bootstrap
// resamples (or on the n leave-one-out jackknife samples) without materialising any resample.
//
// A resample is its count vector w (how often each pair was drawn, sum n); statistics are weighted by w: Pearson
// by weighted moments, Spearman by average ranks read off cumulative counts along the sorted order (no re-sort),
// Kendall tau-b by a Fenwick-tree count of weighted discordant pairs in (x, y) order. The counts of resample r
// come from Philox (csrc/philox.h) keyed by seed, bit-identical to fastclip/ops/_philox.py, so the torch paths
// draw the same resamples. Every row of x shares the resamples, so differences between rows are paired.
//
// x: (rows, n) float64, y: (rows, n) or (1, n) float64, both NaN-free. kind: 0 Pearson, 1 Spearman, 2 Kendall
// tau-b. jackknife: true gives the n leave-one-out statistics instead (resamples and seed are ignored).
// Returns (rows, R) float64 (R = n with jackknife); a degenerate resample (constant x or y) gives NaN.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastclip, m) {
  m.def("bootstrap_correlation(Tensor x, Tensor y, int kind, int resamples, int seed, bool jackknife) -> Tensor");
}
