// fastclip::gaussian_noise: Gaussian-noise perturbation of a batch of images in one pass (the contract of
// fastclip/ops/gaussian_noise.py): out[k, n] = normalise(quantise(clip(x[n] + sigma_table[k, n] * z[n], 0, 1))).
//
//   images       (N, C, H, W) contiguous uint8 (divided by 255), float32, float16 or bfloat16 on the [0, 1] scale
//   sigma_table  float32 (K, N): K = 1 for one sigma per image, K > 1 for a sweep (every sigma uses the same z)
//   seed         in [0, 2^63): the Philox key (seed mod 2^32, seed div 2^32)
//   sample_ids   int64 (N,) in [0, 2^31): element e of image n takes lane e % 4 of Philox counter
//                (e / 4, sample_ids[n], 0, 0), exactly Triton's tl.randn4x(seed, (sample_id << 32) | e / 4)
//   quantize     floor(y * 255) / 255 after clipping (8-bit truncation)
//   mean, std    float32 (C,) each, both or neither: (y - mean[c]) / std[c], applied last
//   out_dtype    float32 or bfloat16
// Returns (K, N, C, H, W) in out_dtype.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastclip, m) {
  m.def(
      "gaussian_noise(Tensor images, Tensor sigma_table, int seed, Tensor sample_ids, bool quantize, Tensor? mean, "
      "Tensor? std, ScalarType out_dtype) -> Tensor");
}
