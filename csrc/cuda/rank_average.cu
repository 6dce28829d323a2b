// CUDA kernel of fastclip::rank_average: a segmented sort of every row (at::sort along the last dimension), then
// one thread per element finds its tie segment [lo, hi) by two binary searches in its sorted row and scatters the
// average rank (lo + hi + 1) / 2 to the element's original position. Binary searches instead of a scan keep the
// cost O(log n) per element whatever the tie pattern (a row of equal values is as cheap as distinct values).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>

namespace {

// NaNs sort last; the first NaN position is the length of the rankable prefix.
template <typename scalar_t>
__device__ int64_t count_not_nan(const scalar_t* row, int64_t n) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (isnan(row[mid])) hi = mid; else lo = mid + 1;
  }
  return lo;
}

template <typename scalar_t>
__device__ int64_t lower_bound(const scalar_t* row, int64_t m, scalar_t value) {
  int64_t lo = 0, hi = m;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (row[mid] < value) lo = mid + 1; else hi = mid;
  }
  return lo;
}

template <typename scalar_t>
__device__ int64_t upper_bound(const scalar_t* row, int64_t m, scalar_t value) {
  int64_t lo = 0, hi = m;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (value < row[mid]) hi = mid; else lo = mid + 1;
  }
  return lo;
}

template <typename scalar_t>
__global__ void rank_average_scatter_kernel(const scalar_t* __restrict__ sorted, const int64_t* __restrict__ order,
                                            scalar_t* __restrict__ out, int64_t rows, int64_t n, bool omit_nan) {
  const int64_t linear = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (linear >= rows * n) return;
  const int64_t row = linear / n, j = linear % n;
  const scalar_t* sorted_row = sorted + row * n;
  scalar_t* out_row = out + row * n;
  const int64_t m = count_not_nan(sorted_row, n);
  const scalar_t nan = std::numeric_limits<scalar_t>::quiet_NaN();
  if (!omit_nan && m < n) {
    out_row[j] = nan;  // propagate: the whole row is NaN
    return;
  }
  if (j >= m) {
    out_row[order[row * n + j]] = nan;
    return;
  }
  const scalar_t value = sorted_row[j];
  const int64_t lo = lower_bound(sorted_row, m, value);
  const int64_t hi = upper_bound(sorted_row, m, value);
  out_row[order[row * n + j]] = static_cast<scalar_t>(lo + hi + 1) / static_cast<scalar_t>(2);
}

at::Tensor rank_average_cuda(const at::Tensor& x, bool omit_nan) {
  TORCH_CHECK(x.is_cuda(), "rank_average_cuda: x must be a CUDA tensor, got ", x.device());
  TORCH_CHECK(x.dim() == 2, "rank_average: x must be 2-D (rows, n), got ", x.dim(), "-D");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "rank_average: x must be float32 or float64, got ", x.scalar_type());
  const c10::cuda::CUDAGuard guard(x.device());
  // -0.0 + 0.0 is +0.0, so the two zeros tie in the sorted order and in the binary searches.
  const at::Tensor input = (x + 0.0).contiguous();
  at::Tensor output = at::empty_like(input);
  const int64_t rows = input.size(0), n = input.size(1);
  if (rows == 0 || n == 0) return output;
  auto [sorted, order] = at::sort(input, /*stable=*/true, /*dim=*/-1, /*descending=*/false);
  sorted = sorted.contiguous();
  order = order.contiguous();
  const int threads = 256;
  const int64_t blocks = (rows * n + threads - 1) / threads;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "rank_average_cuda", [&] {
    rank_average_scatter_kernel<scalar_t><<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        sorted.const_data_ptr<scalar_t>(), order.const_data_ptr<int64_t>(), output.mutable_data_ptr<scalar_t>(),
        rows, n, omit_nan);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return output;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastclip, CUDA, m) {
  m.impl("rank_average", &rank_average_cuda);
}
