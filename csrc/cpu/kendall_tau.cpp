// CPU kernel of fastclip::kendall_tau: Knight's O(n log n) algorithm (Knight 1966), as scipy.stats.kendalltau.
// Sort the complete pairs by x, then by y within ties of x; the discordant pairs are then exactly the exchanges a
// stable merge sort of the y sequence makes (strict inversions). The (x, y) order comes from two stable LSD radix
// sorts of order-preserving integer keys (by y, then by x), which beat a comparison sort of pairs severalfold;
// the first also gives each pair its dense y rank, so the merge sort compares int32s. Tie counts come from run
// lengths. All counts are exact 64-bit integers. Rows run in parallel (at::parallel_for).
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "radix_sort.h"

namespace {

using fastclip::sortable_key;

class RowCounter {
 public:
  explicit RowCounter(int64_t n)
      : keys_(n), keys_tmp_(n), items_(n), items_tmp_(n), y_rank_(n), sequence_(n), buffer_(n) {}

  void count(const double* x, const double* y, int64_t n, int64_t* out) {
    int64_t m = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (std::isnan(x[i]) || std::isnan(y[i])) continue;
      keys_[m] = sortable_key(y[i]);
      items_[m++] = static_cast<int32_t>(i);
    }
    // Sort by y, give each pair its dense y rank and count the ties in y.
    radix_sort(m);
    int64_t ties_y = 0, run_start = 0;
    int32_t rank = 0;
    for (int64_t k = 0; k < m; ++k) {
      if (k > 0 && keys_[k] != keys_[k - 1]) run_start = k, ++rank;
      ties_y += k - run_start;
      y_rank_[items_[k]] = rank;
    }
    // A stable sort by x of the y-sorted pairs gives the (x, y) order.
    for (int64_t k = 0; k < m; ++k) keys_[k] = sortable_key(x[items_[k]]);
    radix_sort(m);
    int64_t ties_x = 0, ties_xy = 0, x_run_start = 0, xy_run_start = 0;
    for (int64_t k = 0; k < m; ++k) {
      sequence_[k] = y_rank_[items_[k]];
      if (k > 0 && keys_[k] != keys_[k - 1]) x_run_start = k, xy_run_start = k;
      else if (k > 0 && sequence_[k] != sequence_[k - 1]) xy_run_start = k;
      ties_x += k - x_run_start;
      ties_xy += k - xy_run_start;
    }
    const int64_t discordant = merge_sort_inversions(m);
    const int64_t total = m * (m - 1) / 2;
    out[0] = m;
    out[1] = ties_x;
    out[2] = ties_y;
    out[3] = ties_xy;
    out[4] = total - ties_x - ties_y + ties_xy - 2 * discordant;
  }

 private:
  // Stable sort of (keys_, items_)[0, m) by key.
  void radix_sort(int64_t m) { fastclip::radix_sort_pairs(keys_, keys_tmp_, items_, items_tmp_, m); }

  // Bottom-up stable merge sort of sequence_[0, m) that counts the pairs it exchanges (i < j, value_i > value_j).
  int64_t merge_sort_inversions(int64_t m) {
    int64_t inversions = 0;
    int32_t* source = sequence_.data();
    int32_t* target = buffer_.data();
    for (int64_t width = 1; width < m; width *= 2) {
      for (int64_t lo = 0; lo < m; lo += 2 * width) {
        const int64_t mid = std::min(lo + width, m), hi = std::min(lo + 2 * width, m);
        int64_t i = lo, j = mid, k = lo;
        // Branch-free: which side goes next is data-dependent and unpredictable, so selects beat branches.
        while (i < mid && j < hi) {
          const bool take_right = source[j] < source[i];
          target[k++] = take_right ? source[j] : source[i];
          inversions += take_right ? mid - i : 0;
          j += take_right;
          i += !take_right;
        }
        while (i < mid) target[k++] = source[i++];
        while (j < hi) target[k++] = source[j++];
      }
      std::swap(source, target);
    }
    return inversions;
  }

  std::vector<uint64_t> keys_, keys_tmp_;
  std::vector<int32_t> items_, items_tmp_, y_rank_, sequence_, buffer_;
};

at::Tensor kendall_tau_cpu(const at::Tensor& x, const at::Tensor& y) {
  TORCH_CHECK(x.device().is_cpu() && y.device().is_cpu(), "kendall_tau_cpu: x and y must be CPU tensors");
  TORCH_CHECK(x.dim() == 2 && y.dim() == 2, "kendall_tau: x and y must be 2-D (rows, n), got ", x.dim(), "-D and ",
              y.dim(), "-D");
  TORCH_CHECK(x.sizes() == y.sizes(), "kendall_tau: x and y must have the same shape, got ", x.sizes(), " and ",
              y.sizes());
  TORCH_CHECK(x.scalar_type() == at::kDouble && y.scalar_type() == at::kDouble,
              "kendall_tau: x and y must be float64, got ", x.scalar_type(), " and ", y.scalar_type());
  TORCH_CHECK(x.size(1) < (int64_t(1) << 31), "kendall_tau: rows must be shorter than 2^31, got ", x.size(1));
  const at::Tensor xs = x.contiguous(), ys = y.contiguous();
  const int64_t rows = xs.size(0), n = xs.size(1);
  at::Tensor counts = at::empty({rows, 5}, xs.options().dtype(at::kLong));
  const double* x_data = xs.const_data_ptr<double>();
  const double* y_data = ys.const_data_ptr<double>();
  int64_t* out = counts.mutable_data_ptr<int64_t>();
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    RowCounter counter(n);
    for (int64_t r = begin; r < end; ++r) counter.count(x_data + r * n, y_data + r * n, n, out + r * 5);
  });
  return counts;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  m.impl("kendall_tau", &kendall_tau_cpu);
}
