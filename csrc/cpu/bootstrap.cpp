// CPU kernel of fastclip::bootstrap_correlation (the contract is in csrc/bootstrap.cpp). Each row is sorted once;
// each resample then costs O(n) for Pearson and Spearman and O(n log n) for Kendall, with no resample ever built.
// Resamples run in parallel (at::parallel_for); one resample's counts serve every row.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "../philox.h"

namespace {

enum Kind : int64_t { kPearson = 0, kSpearman = 1, kKendall = 2 };

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

int64_t pairs_of(int64_t count) { return count * (count - 1) / 2; }

// The order that sorts a vector and the boundaries of its tie groups along that order.
struct TieGroups {
  std::vector<int64_t> order;
  std::vector<int64_t> starts;  // one per group, plus n at the end

  TieGroups(const double* values, int64_t n) : order(n) {
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return values[a] < values[b]; });
    for (int64_t k = 0; k < n; ++k) {
      if (k == 0 || values[order[k]] != values[order[k - 1]]) starts.push_back(k);
    }
    starts.push_back(n);
  }
};

// Whether every drawn value is the same (it stops at the first one that differs, so it costs next to nothing on
// real data). Needed because a constant resample's rounding can leave a tiny non-zero variance.
bool drawn_values_equal(const double* v, const int32_t* w, int64_t n) {
  int64_t first = 0;
  while (first < n && w[first] == 0) ++first;
  for (int64_t i = first + 1; i < n; ++i) {
    if (w[i] != 0 && v[i] != v[first]) return false;
  }
  return true;
}

// Average ranks of the resample with counts w, written at the original positions: a group's rank is the count of
// all smaller values plus (its own count + 1) / 2, i.e. a cumulative sum of counts along the sorted order.
void weighted_ranks(const TieGroups& groups, const int32_t* w, double* ranks) {
  double before = 0.0;
  for (size_t g = 0; g + 1 < groups.starts.size(); ++g) {
    if (groups.starts[g + 1] == groups.starts[g] + 1) {  // a value without ties: the common case, kept cheap
      const int64_t item = groups.order[groups.starts[g]];
      ranks[item] = before + (w[item] + 1) * 0.5;
      before += w[item];
      continue;
    }
    int64_t count = 0;
    for (int64_t k = groups.starts[g]; k < groups.starts[g + 1]; ++k) count += w[groups.order[k]];
    const double rank = before + (count + 1) * 0.5;
    for (int64_t k = groups.starts[g]; k < groups.starts[g + 1]; ++k) ranks[groups.order[k]] = rank;
    before += count;
  }
}

// Weighted Pearson correlation by two passes (weighted means, then centred moments); NaN when x or y is constant
// over the drawn pairs. Branch-free loops: pairs not drawn have weight 0.
double weighted_pearson(const double* x, const double* y, const int32_t* w, int64_t n) {
  double total = 0.0, sum_x = 0.0, sum_y = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    total += w[i];
    sum_x += w[i] * x[i];
    sum_y += w[i] * y[i];
  }
  const double mean_x = sum_x / total, mean_y = sum_y / total;
  double sxx = 0.0, syy = 0.0, sxy = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double dx = x[i] - mean_x, dy = y[i] - mean_y;
    sxx += w[i] * dx * dx;
    syy += w[i] * dy * dy;
    sxy += w[i] * dx * dy;
  }
  if (sxx == 0.0 || syy == 0.0 || drawn_values_equal(x, w, n) || drawn_values_equal(y, w, n)) return kNaN;
  return std::clamp(sxy / std::sqrt(sxx * syy), -1.0, 1.0);
}

// Spearman of a resample: Pearson of its weighted average ranks. Ranks are half-integers and their weighted mean is
// exactly (N + 1) / 2, so the centred moments are exact sums.
double weighted_spearman(const TieGroups& x_groups, const TieGroups& y_groups, const int32_t* w, int64_t n,
                         double* rank_x, double* rank_y) {
  weighted_ranks(x_groups, w, rank_x);
  weighted_ranks(y_groups, w, rank_y);
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) total += w[i];
  const double centre = (total + 1.0) * 0.5;
  double sxx = 0.0, syy = 0.0, sxy = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    if (w[i] == 0) continue;
    const double dx = rank_x[i] - centre, dy = rank_y[i] - centre;
    sxx += w[i] * dx * dx;
    syy += w[i] * dy * dy;
    sxy += w[i] * dx * dy;
  }
  if (sxx == 0.0 || syy == 0.0) return kNaN;
  return std::clamp(sxy / std::sqrt(sxx * syy), -1.0, 1.0);
}

// One row's pairs in (x, y) order, its x and joint tie groups along that order, and the dense rank of each y.
struct KendallRow {
  std::vector<int64_t> order;
  std::vector<int64_t> x_starts, xy_starts;
  std::vector<int32_t> y_rank;  // by position in `order`
  int64_t y_groups = 0;

  KendallRow(const double* x, const double* y, int64_t n) : order(n), y_rank(n) {
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return x[a] < x[b] || (x[a] == x[b] && y[a] < y[b]);
    });
    for (int64_t k = 0; k < n; ++k) {
      const bool new_x = k == 0 || x[order[k]] != x[order[k - 1]];
      if (new_x) x_starts.push_back(k);
      if (new_x || y[order[k]] != y[order[k - 1]]) xy_starts.push_back(k);
    }
    x_starts.push_back(n);
    xy_starts.push_back(n);
    const TieGroups by_y(y, n);
    std::vector<int32_t> rank_of(n);
    for (size_t g = 0; g + 1 < by_y.starts.size(); ++g) {
      for (int64_t k = by_y.starts[g]; k < by_y.starts[g + 1]; ++k) rank_of[by_y.order[k]] = static_cast<int32_t>(g);
    }
    for (int64_t k = 0; k < n; ++k) y_rank[k] = rank_of[order[k]];
    y_groups = static_cast<int64_t>(by_y.starts.size()) - 1;
  }

  int64_t grouped_pairs(const std::vector<int64_t>& starts, const int32_t* w) const {
    int64_t total = 0;
    for (size_t g = 0; g + 1 < starts.size(); ++g) {
      int64_t count = 0;
      for (int64_t k = starts[g]; k < starts[g + 1]; ++k) count += w[order[k]];
      total += pairs_of(count);
    }
    return total;
  }
};

// Kendall tau-b of a resample. Walking the (x, y) order, a drawn pair is discordant with every earlier drawn pair
// of larger y (earlier pairs of equal x have y no larger), counted with weights in a Fenwick tree over y ranks.
double weighted_kendall(const KendallRow& row, const int32_t* w, std::vector<int64_t>& fenwick,
                        std::vector<int64_t>& y_counts) {
  std::fill(fenwick.begin(), fenwick.end(), 0);
  std::fill(y_counts.begin(), y_counts.end(), 0);
  int64_t seen = 0, discordant = 0;
  const int64_t n = static_cast<int64_t>(row.order.size());
  for (int64_t k = 0; k < n; ++k) {
    const int64_t weight = w[row.order[k]];
    if (weight == 0) continue;
    const int64_t rank = row.y_rank[k];
    int64_t not_greater = 0;
    for (int64_t i = rank + 1; i > 0; i -= i & -i) not_greater += fenwick[i];
    discordant += weight * (seen - not_greater);
    for (int64_t i = rank + 1; i <= row.y_groups; i += i & -i) fenwick[i] += weight;
    seen += weight;
    y_counts[rank] += weight;
  }
  const int64_t total = pairs_of(seen);
  const int64_t ties_x = row.grouped_pairs(row.x_starts, w);
  const int64_t ties_xy = row.grouped_pairs(row.xy_starts, w);
  int64_t ties_y = 0;
  for (const int64_t count : y_counts) ties_y += pairs_of(count);
  if (ties_x == total || ties_y == total) return kNaN;
  const int64_t s = total - ties_x - ties_y + ties_xy - 2 * discordant;
  const double tau = static_cast<double>(s) / std::sqrt(static_cast<double>(total - ties_x)) /
                     std::sqrt(static_cast<double>(total - ties_y));
  return std::clamp(tau, -1.0, 1.0);
}

void draw_counts(int64_t resample, int64_t n, uint64_t seed, int32_t* counts) {
  constexpr int kCalls = fastclip::kBatch;
  std::fill(counts, counts + n, 0);
  uint32_t blocks[kCalls];
  uint32_t words[4][kCalls];
  for (int64_t first = 0; first < n; first += 4 * kCalls) {
    for (int i = 0; i < kCalls; ++i) blocks[i] = static_cast<uint32_t>(first / 4 + i);
    fastclip::philox4x32_batch(blocks, static_cast<uint32_t>(resample), fastclip::kStreamBootstrap, 0u, seed, words);
    const int64_t count = std::min<int64_t>(4 * kCalls, n - first);
    for (int64_t j = 0; j < count; ++j) ++counts[fastclip::uniform_index(words[j % 4][j / 4], n)];
  }
}

at::Tensor bootstrap_correlation_cpu(const at::Tensor& x, const at::Tensor& y, int64_t kind, int64_t resamples,
                                     int64_t seed, bool jackknife) {
  TORCH_CHECK(x.device().is_cpu() && y.device().is_cpu(), "bootstrap_correlation_cpu: x and y must be CPU tensors");
  TORCH_CHECK(x.dim() == 2 && y.dim() == 2, "bootstrap_correlation: x and y must be 2-D (rows, n)");
  TORCH_CHECK(x.scalar_type() == at::kDouble && y.scalar_type() == at::kDouble,
              "bootstrap_correlation: x and y must be float64");
  TORCH_CHECK(y.size(1) == x.size(1) && (y.size(0) == x.size(0) || y.size(0) == 1),
              "bootstrap_correlation: y must be (rows, n) or (1, n) for x of shape ", x.sizes(), ", got ", y.sizes());
  TORCH_CHECK(kind >= kPearson && kind <= kKendall, "bootstrap_correlation: kind must be 0, 1 or 2, got ", kind);
  TORCH_CHECK(seed >= 0, "bootstrap_correlation: seed must be non-negative, got ", seed);
  TORCH_CHECK(x.size(1) >= 2 && x.size(1) < (int64_t(1) << 31), "bootstrap_correlation: n must be in [2, 2^31)");
  const int64_t rows = x.size(0), n = x.size(1);
  const int64_t draws = jackknife ? n : resamples;
  TORCH_CHECK(draws >= 1 && draws <= (int64_t(1) << 32), "bootstrap_correlation: resamples must be in [1, 2^32]");
  const at::Tensor xs = x.contiguous(), ys = y.contiguous();
  const double* x_data = xs.const_data_ptr<double>();
  const double* y_data = ys.const_data_ptr<double>();
  const int64_t y_stride = ys.size(0) == 1 ? 0 : n;

  std::vector<TieGroups> x_groups, y_groups;
  std::vector<KendallRow> kendall_rows;
  if (kind == kSpearman) {
    for (int64_t b = 0; b < rows; ++b) x_groups.emplace_back(x_data + b * n, n);
    for (int64_t b = 0; b < ys.size(0); ++b) y_groups.emplace_back(y_data + b * n, n);
  } else if (kind == kKendall) {
    for (int64_t b = 0; b < rows; ++b) kendall_rows.emplace_back(x_data + b * n, y_data + b * y_stride, n);
  }

  at::Tensor out = at::empty({rows, draws}, xs.options());
  double* out_data = out.mutable_data_ptr<double>();
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, rows * n));
  at::parallel_for(0, draws, grain, [&](int64_t begin, int64_t end) {
    std::vector<int32_t> counts(n);
    std::vector<double> rank_x(kind == kSpearman ? n : 0), rank_y(kind == kSpearman ? n : 0);
    int64_t most_y_groups = 0;
    for (const auto& row : kendall_rows) most_y_groups = std::max(most_y_groups, row.y_groups);
    std::vector<int64_t> fenwick(most_y_groups + 1), y_counts(most_y_groups);
    for (int64_t r = begin; r < end; ++r) {
      if (jackknife) {
        std::fill(counts.begin(), counts.end(), 1);
        counts[r] = 0;
      } else {
        draw_counts(r, n, static_cast<uint64_t>(seed), counts.data());
      }
      for (int64_t b = 0; b < rows; ++b) {
        double value;
        if (kind == kPearson) {
          value = weighted_pearson(x_data + b * n, y_data + b * y_stride, counts.data(), n);
        } else if (kind == kSpearman) {
          const TieGroups& yg = y_groups[y_groups.size() == 1 ? 0 : b];
          value = weighted_spearman(x_groups[b], yg, counts.data(), n, rank_x.data(), rank_y.data());
        } else {
          const KendallRow& row = kendall_rows[b];
          fenwick.resize(row.y_groups + 1);
          y_counts.resize(row.y_groups);
          value = weighted_kendall(row, counts.data(), fenwick, y_counts);
        }
        out_data[b * draws + r] = value;
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  m.impl("bootstrap_correlation", &bootstrap_correlation_cpu);
}
