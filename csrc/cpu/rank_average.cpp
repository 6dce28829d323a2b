// CPU kernel of fastclip::rank_average: an LSD radix sort of each row's order-preserving integer keys
// (radix_sort.h), then one walk over the tie segments. Rows run in parallel (at::parallel_for).
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "radix_sort.h"

namespace {

using fastclip::sortable_key;

template <typename scalar_t>
class RowRanker {
  using key_t = typename fastclip::SortableKey<scalar_t>::type;

 public:
  explicit RowRanker(int64_t n) : keys_(n), keys_tmp_(n), order_(n), order_tmp_(n) {}

  void rank_row(const scalar_t* in, scalar_t* out, int64_t n, bool omit_nan) {
    int64_t m = 0;  // number of non-NaN entries
    for (int64_t j = 0; j < n; ++j) {
      if (std::isnan(in[j])) {
        if (!omit_nan) {
          std::fill(out, out + n, std::numeric_limits<scalar_t>::quiet_NaN());
          return;
        }
        out[j] = std::numeric_limits<scalar_t>::quiet_NaN();
        continue;
      }
      keys_[m] = sortable_key(in[j]);
      order_[m] = j;
      ++m;
    }
    fastclip::radix_sort_pairs(keys_, keys_tmp_, order_, order_tmp_, m);
    int64_t start = 0;
    while (start < m) {
      int64_t end = start;
      while (end + 1 < m && keys_[end + 1] == keys_[start]) ++end;
      const scalar_t average_rank = scalar_t(start + end) / scalar_t(2) + scalar_t(1);
      for (int64_t k = start; k <= end; ++k) out[order_[k]] = average_rank;
      start = end + 1;
    }
  }

 private:
  std::vector<key_t> keys_, keys_tmp_;
  std::vector<int64_t> order_, order_tmp_;
};

at::Tensor rank_average_cpu(const at::Tensor& x, bool omit_nan) {
  TORCH_CHECK(x.device().is_cpu(), "rank_average_cpu: x must be a CPU tensor, got ", x.device());
  TORCH_CHECK(x.dim() == 2, "rank_average: x must be 2-D (rows, n), got ", x.dim(), "-D");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "rank_average: x must be float32 or float64, got ", x.scalar_type());
  const at::Tensor input = x.contiguous();
  at::Tensor output = at::empty_like(input);
  const int64_t rows = input.size(0), n = input.size(1);
  if (rows == 0 || n == 0) return output;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "rank_average_cpu", [&] {
    const scalar_t* in = input.const_data_ptr<scalar_t>();
    scalar_t* out = output.mutable_data_ptr<scalar_t>();
    // Grain of a few rows keeps each thread's buffers warm while balancing the load.
    at::parallel_for(0, rows, 4, [&](int64_t begin, int64_t end) {
      RowRanker<scalar_t> ranker(n);
      for (int64_t r = begin; r < end; ++r) ranker.rank_row(in + r * n, out + r * n, n, omit_nan);
    });
  });
  return output;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  m.impl("rank_average", &rank_average_cpu);
}
