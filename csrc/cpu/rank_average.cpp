// CPU kernel of fastclip::rank_average: an LSD radix sort of each row's order-preserving integer keys, then one
// walk over the tie segments. Rows run in parallel (at::parallel_for). Radix sort beats a comparison sort here
// because keys are fixed-width and rows are a few thousand long; passes whose digit is constant are skipped,
// which makes data with few distinct values (many ties) cheaper still.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

template <typename scalar_t>
struct KeyOf;
template <>
struct KeyOf<float> {
  using type = uint32_t;
};
template <>
struct KeyOf<double> {
  using type = uint64_t;
};

// Maps a float to an unsigned integer with the same order. -0.0 is folded into +0.0 so that the two tie.
template <typename scalar_t>
inline typename KeyOf<scalar_t>::type sortable_key(scalar_t value) {
  using key_t = typename KeyOf<scalar_t>::type;
  constexpr key_t sign_bit = key_t(1) << (sizeof(key_t) * 8 - 1);
  if (value == scalar_t(0)) value = scalar_t(0);
  key_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return (bits & sign_bit) ? ~bits : (bits | sign_bit);
}

template <typename scalar_t>
class RowRanker {
  using key_t = typename KeyOf<scalar_t>::type;
  static constexpr int kDigitBits = 8;
  static constexpr int kBuckets = 1 << kDigitBits;
  static constexpr int kPasses = sizeof(key_t) * 8 / kDigitBits;

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
    radix_sort(m);
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
  void radix_sort(int64_t m) {
    std::array<std::array<int64_t, kBuckets>, kPasses> counts{};
    for (int64_t i = 0; i < m; ++i) {
      const key_t key = keys_[i];
      for (int pass = 0; pass < kPasses; ++pass) ++counts[pass][(key >> (pass * kDigitBits)) & (kBuckets - 1)];
    }
    for (int pass = 0; pass < kPasses; ++pass) {
      auto& count = counts[pass];
      const key_t first_digit = m ? (keys_[0] >> (pass * kDigitBits)) & (kBuckets - 1) : 0;
      if (count[first_digit] == m) continue;  // every key has this digit: the pass would not move anything
      int64_t offset = 0;
      for (int b = 0; b < kBuckets; ++b) {
        const int64_t c = count[b];
        count[b] = offset;
        offset += c;
      }
      for (int64_t i = 0; i < m; ++i) {
        const int64_t dst = count[(keys_[i] >> (pass * kDigitBits)) & (kBuckets - 1)]++;
        keys_tmp_[dst] = keys_[i];
        order_tmp_[dst] = order_[i];
      }
      keys_.swap(keys_tmp_);
      order_.swap(order_tmp_);
    }
  }

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
