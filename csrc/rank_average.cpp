// fastclip::rank_average: tie-aware average ranks (1-based) along the last dimension of a 2-D float tensor.
//
// NaN policy (omit_nan):
//   false ("propagate", scipy's default): a row that holds any NaN comes back as all NaN.
//   true  ("omit"): NaN entries get rank NaN; the other entries are ranked among themselves, 1..m.
// -0.0 and +0.0 tie. Output dtype equals the input dtype (float32 or float64).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastclip, m) {
  m.def("rank_average(Tensor x, bool omit_nan) -> Tensor");
}
