// CPU kernel of fastclip::resize_bilinear (the contract is in csrc/resize_bilinear.cpp). Upscaling saliency maps
// from a ViT's patch grid to the fixation maps' size writes hundreds of MB per batch, so the kernel does little
// besides that write: source indices and weights are tabulated once per axis, and each task fills whole output rows
// (at::parallel_for over images x rows), blending the two x-interpolated source rows.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

struct Axis {
  std::vector<int64_t> first, second;  // the two source indices of each output index
  std::vector<double> first_weight, second_weight;
};

// torch's source index for align_corners=False (area_pixel_compute_source_index with scale in / out, clamped at 0)
// and its weights (guard_index_and_lambda): index0 = min(floor(src), in - 1), lambda1 = clamp(src - index0, 0, 1).
Axis tabulate(int64_t in, int64_t out) {
  Axis axis;
  axis.first.resize(out), axis.second.resize(out), axis.first_weight.resize(out), axis.second_weight.resize(out);
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  for (int64_t o = 0; o < out; ++o) {
    const double source = std::max(scale * (static_cast<double>(o) + 0.5) - 0.5, 0.0);
    const int64_t index = std::min(static_cast<int64_t>(std::floor(source)), in - 1);
    const double lambda = std::clamp(source - static_cast<double>(index), 0.0, 1.0);
    axis.first[o] = index;
    axis.second[o] = index + (index < in - 1 ? 1 : 0);
    axis.first_weight[o] = 1.0 - lambda;
    axis.second_weight[o] = lambda;
  }
  return axis;
}

template <typename scalar_t>
void resize_rows(const scalar_t* maps, double* out, int64_t in_h, int64_t in_w, int64_t out_w, const Axis& ys,
                 const Axis& xs, int64_t begin, int64_t end, int64_t out_h) {
  for (int64_t row = begin; row < end; ++row) {
    const int64_t image = row / out_h, y = row % out_h;
    const scalar_t* top = maps + (image * in_h + ys.first[y]) * in_w;
    const scalar_t* bottom = maps + (image * in_h + ys.second[y]) * in_w;
    const double wy0 = ys.first_weight[y], wy1 = ys.second_weight[y];
    double* target = out + row * out_w;
    for (int64_t x = 0; x < out_w; ++x) {
      const int64_t x0 = xs.first[x], x1 = xs.second[x];
      const double wx0 = xs.first_weight[x], wx1 = xs.second_weight[x];
      const double upper = static_cast<double>(top[x0]) * wx0 + static_cast<double>(top[x1]) * wx1;
      const double lower = static_cast<double>(bottom[x0]) * wx0 + static_cast<double>(bottom[x1]) * wx1;
      target[x] = upper * wy0 + lower * wy1;
    }
  }
}

at::Tensor& resize_bilinear_into_cpu(const at::Tensor& maps, at::Tensor& out) {
  TORCH_CHECK(maps.device().is_cpu() && out.device().is_cpu(), "resize_bilinear_into_cpu: tensors must be on the CPU");
  TORCH_CHECK(maps.dim() == 3, "resize_bilinear: maps must be (B, h, w), got ", maps.sizes());
  TORCH_CHECK(maps.scalar_type() == at::kDouble || maps.scalar_type() == at::kFloat,
              "resize_bilinear: maps must be float32 or float64, got ", maps.scalar_type());
  TORCH_CHECK(out.dim() == 3 && out.size(0) == maps.size(0) && out.scalar_type() == at::kDouble && out.is_contiguous(),
              "resize_bilinear: out must be a contiguous float64 (", maps.size(0), ", H, W) tensor, got ", out.sizes());
  const int64_t images = maps.size(0), in_h = maps.size(1), in_w = maps.size(2);
  const int64_t height = out.size(1), width = out.size(2);
  TORCH_CHECK(in_h > 0 && in_w > 0 && height > 0 && width > 0, "resize_bilinear: empty maps ", maps.sizes(),
              " or output ", out.sizes());
  const at::Tensor source = maps.contiguous();
  const Axis ys = tabulate(in_h, height), xs = tabulate(in_w, width);
  double* out_data = out.mutable_data_ptr<double>();
  // Grain: about a quarter of a million output pixels per task.
  const int64_t grain = std::max<int64_t>(1, (1 << 18) / width);
  at::parallel_for(0, images * height, grain, [&](int64_t begin, int64_t end) {
    if (source.scalar_type() == at::kDouble) {
      resize_rows(source.const_data_ptr<double>(), out_data, in_h, in_w, width, ys, xs, begin, end, height);
    } else {
      resize_rows(source.const_data_ptr<float>(), out_data, in_h, in_w, width, ys, xs, begin, end, height);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  m.impl("resize_bilinear_into", &resize_bilinear_into_cpu);
}
