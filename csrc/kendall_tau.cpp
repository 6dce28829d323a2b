// fastclip::kendall_tau: the exact pair counts behind Kendall's tau-b for every row of two (rows, n) float64
// tensors. Pairs holding a NaN in x or y are left out (the caller applies its NaN policy around this).
//
// Returns a (rows, 5) int64 tensor, per row: [m, ties_x, ties_y, ties_xy, s] where m is the number of complete
// pairs, ties_* count the pairs tied in x, in y and in both, and s = concordant - discordant. With
// n0 = m (m - 1) / 2, tau_b = s / sqrt(n0 - ties_x) / sqrt(n0 - ties_y). -0.0 and +0.0 tie.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastclip, m) {
  m.def("kendall_tau(Tensor x, Tensor y) -> Tensor");
}
