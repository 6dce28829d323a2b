// fastclip::resize_bilinear_into: bilinear resize of a stack of 2-D maps with half-pixel centres and no antialiasing,
// torch's interpolate(mode="bilinear", align_corners=False).
//
// maps: (B, h, w) float32 or float64; out: (B, height, width) float64, contiguous, written and returned (callers
// that resize chunk after chunk reuse one buffer: a fresh multi-MB tensor costs a page fault per 4 kB). Each output pixel is computed along x
// first, then along y: t_r = m[r][x0] * wx0 + m[r][x1] * wx1 for the two source rows r, then t_y0 * wy0 + t_y1 * wy1
// (fastclip.ops.resize_bilinear's "torch" backend is torch's own kernel, which rounds in its own order: the two
// differ by a few ulp).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastclip, m) {
  m.def("resize_bilinear_into(Tensor maps, Tensor(a!) out) -> Tensor(a!)");
}
