// CPU kernel of fastclip::saliency_map_metrics (the contract is in csrc/saliency_metrics.cpp). One image per task
// (at::parallel_for over images), each in a handful of passes with no temporary map but AUC-Judd's jittered copy:
//   1. ranges and sums of pred and fixation map;
//   2. centred moments (CC, NSS's std), the pixelwise minimum of the normalised maps (SIM) and G log(eps + G/(P+eps))
//      (KLD), with the normalisations folded into constants and the logarithms vectorised (vector_log.h);
//   3. AUC-Judd: jitter (Philox, the layout of fastclip/ops/_philox.py) and its range, then every pixel bucketed
//      among the sorted fixation thresholds (a table lookup and a short scan), so #{S >= t_k} comes from one
//      histogram.
// AUC-Judd's rescaling and jitter follow the torch paths operation for operation (its pixel-versus-threshold
// comparisons must come out the same); elsewhere reciprocals replace divisions, which moves results by ~1e-16.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

#include "../philox.h"
#include "vector_log.h"

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kMatlabEps = 2.220446049250313e-16;
constexpr double kJitterScale = 1e-7;
constexpr uint32_t kStreamAucJitter = 2;

struct Range {
  double low = std::numeric_limits<double>::infinity();
  double high = -std::numeric_limits<double>::infinity();
  double sum = 0.0;
  bool any_nonzero = false;
};

template <typename value_t>
Range range_of(const value_t* v, int64_t n) {
  Range r;
  double partial[4] = {0.0, 0.0, 0.0, 0.0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int lane = 0; lane < 4; ++lane) {
      const double value = v[i + lane];
      partial[lane] += value;
      r.low = std::min(r.low, value);
      r.high = std::max(r.high, value);
    }
  }
  for (; i < n; ++i) {
    partial[0] += v[i];
    r.low = std::min(r.low, static_cast<double>(v[i]));
    r.high = std::max(r.high, static_cast<double>(v[i]));
  }
  r.sum = (partial[0] + partial[1]) + (partial[2] + partial[3]);
  r.any_nonzero = r.low != 0.0 || r.high != 0.0;
  return r;
}

// CC, SIM and KLD of one prediction p against its fixation map g (float32 or float64), and p's centred sum of
// squares. The normalisations are folded into constants (sums of rescaled maps from the plain sums), so one pass
// does all three; KLD terms with G = 0 are exactly 0 and skip their logarithm (most of a fixation map is 0).
template <typename map_t>
void map_metrics(const double* p, const map_t* g, int64_t n, const Range& rp, double* m2_p, double* cc, double* sim,
                 double* kld) {
  const Range rg = range_of(g, n);
  const double mean_p = rp.sum / n, mean_g = rg.sum / n;
  // MIT's `if any(map(:))`: only maps with a non-zero value are rescaled / divided by their sum. A rescaled map
  // (v - low) / (high - low) sums to (sum - n low) / (high - low), so SIM's normalised value is
  // (v - low) / (sum - n low).
  const double sim_low_p = rp.any_nonzero ? rp.low : 0.0, sim_low_g = rg.any_nonzero ? rg.low : 0.0;
  const double sim_scale_p = rp.any_nonzero ? 1.0 / (rp.sum - n * rp.low) : 1.0;
  const double sim_scale_g = rg.any_nonzero ? 1.0 / (rg.sum - n * rg.low) : 1.0;
  const double kld_scale_p = rp.any_nonzero ? 1.0 / rp.sum : 1.0, kld_scale_g = rg.any_nonzero ? 1.0 / rg.sum : 1.0;
  const bool constant_p = rp.any_nonzero && !(rp.high > rp.low), constant_g = rg.any_nonzero && !(rg.high > rg.low);
  double squares_p = 0.0, squares_g = 0.0, cross = 0.0, minimum = 0.0, divergence = 0.0;
  // Blocks of pixels: the logarithms of a block in one vectorised call (fastclip::log_array), then the sums.
  constexpr int64_t kBlock = 256;
  double ratio[kBlock], logs[kBlock];
  for (int64_t first = 0; first < n; first += kBlock) {
    const int64_t count = std::min(kBlock, n - first);
    const double* pb = p + first;
    const map_t* gb = g + first;
    bool any_fixated = false;  // blocks where the fixation map is 0 (most of a sparse one) need no logarithm
    for (int64_t j = 0; j < count; ++j) {
      const double gi = gb[j];
      const double dp = pb[j] - mean_p, dg = gi - mean_g;
      squares_p += dp * dp;
      squares_g += dg * dg;
      cross += dp * dg;
      minimum += std::min((pb[j] - sim_low_p) * sim_scale_p, (gi - sim_low_g) * sim_scale_g);
      ratio[j] = kMatlabEps + gi * kld_scale_g / (pb[j] * kld_scale_p + kMatlabEps);
      any_fixated |= gi != 0.0;
    }
    if (!any_fixated) continue;
    fastclip::log_array(ratio, logs, count);
    for (int64_t j = 0; j < count; ++j) {
      const double kg = static_cast<double>(gb[j]) * kld_scale_g;
      if (kg != 0.0) divergence += kg * logs[j];  // G = 0 terms are 0 (MIT: 0 * log(eps + 0))
    }
  }
  *m2_p = squares_p;
  *cc = std::clamp(cross / (std::sqrt(squares_p) * std::sqrt(squares_g)), -1.0, 1.0);
  *sim = constant_p || constant_g ? kNaN : minimum;  // MIT rescales a constant non-zero map to 0 / 0
  *kld = divergence;
}

// AUC-Judd of one map: thresholds are the rescaled jittered values at the fixations; TP = i / K and
// FP = (#{S >= t_i} - i) / (N - K) for the i-th largest threshold; trapezoid area from (0, 0) to (1, 1).
double auc_judd(const double* p, int64_t n, const int64_t* fixated, int64_t k, int64_t image_id, uint64_t seed,
                bool jitter, std::vector<double>& scored, std::vector<double>& thresholds,
                std::vector<int64_t>& histogram, std::vector<int64_t>& cell_start) {
  if (k == 0) return kNaN;
  scored.resize(n);
  if (jitter) {
    uint32_t counters[fastclip::kBatch];
    uint32_t words[4][fastclip::kBatch];
    for (int64_t first = 0; first < n; first += 4 * fastclip::kBatch) {
      for (int i = 0; i < fastclip::kBatch; ++i) counters[i] = static_cast<uint32_t>(first / 4 + i);
      fastclip::philox4x32_batch(counters, 0u, kStreamAucJitter, static_cast<uint32_t>(image_id), seed, words);
      const int64_t count = std::min<int64_t>(4 * fastclip::kBatch, n - first);
      for (int64_t j = 0; j < count; ++j) {
        const double unit = static_cast<double>(words[j % 4][j / 4]) * (1.0 / 4294967296.0);
        scored[first + j] = p[first + j] + unit * kJitterScale;
      }
    }
  } else {
    std::copy(p, p + n, scored.begin());
  }
  const Range range = range_of(scored.data(), n);
  if (!(range.high > range.low)) return kNaN;  // MIT: a constant map rescales to NaN
  const double span = range.high - range.low;
  thresholds.resize(k);
  for (int64_t i = 0; i < k; ++i) thresholds[i] = (scored[fixated[i]] - range.low) / span;
  std::sort(thresholds.begin(), thresholds.end());
  histogram.assign(k + 1, 0);
  // Number of thresholds <= value (the pixel is >= exactly those), for every pixel. A table over kCells equal
  // cells of [0, 1] gives a starting position, then a short scan makes it exact whatever the rounding of the cell:
  // far cheaper than a binary search, since most pixels are dark and sit below every threshold.
  constexpr int64_t kCells = 4096;
  const double* sorted = thresholds.data();
  cell_start.resize(kCells + 1);
  for (int64_t cell = 0, position = 0; cell <= kCells; ++cell) {
    while (position < k && sorted[position] <= static_cast<double>(cell) / kCells) ++position;
    cell_start[cell] = position;
  }
  for (int64_t i = 0; i < n; ++i) {
    const double value = (scored[i] - range.low) / span;
    int64_t position = cell_start[std::clamp<int64_t>(static_cast<int64_t>(value * kCells), 0, kCells)];
    while (position > 0 && sorted[position - 1] > value) --position;
    while (position < k && sorted[position] <= value) ++position;
    ++histogram[position];
  }
  // Suffix sums: at_least[b] = #{pixels whose bucket is b or above} = #{pixels >= thresholds[b - 1]}.
  std::vector<int64_t>& at_least = histogram;
  int64_t running = 0;
  for (int64_t b = k; b >= 1; --b) {
    running += histogram[b];
    at_least[b] = running;
  }
  double area = 0.0, previous_tp = 0.0, previous_fp = 0.0;
  const double negatives = static_cast<double>(n - k), positives = static_cast<double>(k);
  for (int64_t i = 1; i <= k; ++i) {
    const double tp = static_cast<double>(i) / positives;
    const double fp = static_cast<double>(at_least[k - i + 1] - i) / negatives;
    area += (fp - previous_fp) * (tp + previous_tp) / 2;
    previous_tp = tp, previous_fp = fp;
  }
  return area + (1.0 - previous_fp) * (1.0 + previous_tp) / 2;
}

at::Tensor saliency_map_metrics_cpu(const at::Tensor& pred, const std::optional<at::Tensor>& fixation_map,
                                    const at::Tensor& fixation_index, const at::Tensor& fixation_count,
                                    const at::Tensor& image_ids, int64_t seed, bool jitter, bool judd) {
  TORCH_CHECK(pred.device().is_cpu(), "saliency_map_metrics_cpu: pred must be a CPU tensor");
  TORCH_CHECK(pred.dim() == 2 && pred.scalar_type() == at::kDouble,
              "saliency_map_metrics: pred must be (B, N) float64");
  const int64_t images = pred.size(0), n = pred.size(1);
  const bool has_map = fixation_map.has_value() && fixation_map->defined();
  if (has_map) {
    TORCH_CHECK(fixation_map->sizes() == pred.sizes() &&
                    (fixation_map->scalar_type() == at::kDouble || fixation_map->scalar_type() == at::kFloat),
                "saliency_map_metrics: fixation_map must be float32 or float64 shaped like pred ", pred.sizes());
  }
  TORCH_CHECK(
      fixation_index.dim() == 2 && fixation_index.size(0) == images && fixation_index.scalar_type() == at::kLong,
      "saliency_map_metrics: fixation_index must be (B, K) int64");
  TORCH_CHECK(fixation_count.numel() == images && fixation_count.scalar_type() == at::kLong,
              "saliency_map_metrics: fixation_count must be (B,) int64");
  TORCH_CHECK(image_ids.numel() == images && image_ids.scalar_type() == at::kLong,
              "saliency_map_metrics: image_ids must be (B,) int64");
  TORCH_CHECK(seed >= 0, "saliency_map_metrics: seed must be non-negative");
  const at::Tensor p_all = pred.contiguous();
  const at::Tensor g_all = has_map ? fixation_map->contiguous() : at::Tensor();
  const at::Tensor index_all = fixation_index.contiguous(), count_all = fixation_count.contiguous();
  const at::Tensor ids = image_ids.contiguous();
  at::Tensor out = at::empty({images, 8}, p_all.options());
  const int64_t width = index_all.size(1);
  const double* p_data = p_all.const_data_ptr<double>();
  const bool map_is_double = has_map && g_all.scalar_type() == at::kDouble;
  const double* g_double = map_is_double ? g_all.const_data_ptr<double>() : nullptr;
  const float* g_float = has_map && !map_is_double ? g_all.const_data_ptr<float>() : nullptr;
  const int64_t* index_data = index_all.const_data_ptr<int64_t>();
  const int64_t* count_data = count_all.const_data_ptr<int64_t>();
  const int64_t* id_data = ids.const_data_ptr<int64_t>();
  double* out_data = out.mutable_data_ptr<double>();

  at::parallel_for(0, images, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> scored, thresholds;
    std::vector<int64_t> histogram, cell_start;
    for (int64_t image = begin; image < end; ++image) {
      const double* p = p_data + image * n;
      double* result = out_data + image * 8;
      const Range rp = range_of(p, n);
      double m2_p = 0.0, cc = kNaN, sim = kNaN, kld = kNaN;
      if (has_map && map_is_double) {
        map_metrics(p, g_double + image * n, n, rp, &m2_p, &cc, &sim, &kld);
      } else if (has_map) {
        map_metrics(p, g_float + image * n, n, rp, &m2_p, &cc, &sim, &kld);
      } else {
        const double mean_p = rp.sum / n;
        for (int64_t i = 0; i < n; ++i) m2_p += (p[i] - mean_p) * (p[i] - mean_p);
      }
      const double judd_auc =
          judd ? auc_judd(p, n, index_data + image * width, count_data[image], id_data[image],
                          static_cast<uint64_t>(seed), jitter, scored, thresholds, histogram, cell_start)
               : kNaN;
      result[0] = rp.low;
      result[1] = rp.high;
      result[2] = rp.sum;
      result[3] = m2_p;
      result[4] = cc;
      result[5] = sim;
      result[6] = kld;
      result[7] = judd_auc;
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  m.impl("saliency_map_metrics", &saliency_map_metrics_cpu);
}
