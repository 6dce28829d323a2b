// CPU kernels of fastclip::saliency_map_metrics and fastclip::saliency_split_aucs (the contracts are in
// csrc/saliency_metrics.cpp). One image per task (at::parallel_for over images).
// saliency_map_metrics, in a handful of passes with no temporary map but AUC-Judd's jittered copy:
//   1. ranges and sums of pred and fixation map;
//   2. centred moments (CC, NSS's std), the pixelwise minimum of the normalised maps (SIM) and G log(eps + G/(P+eps))
//      (KLD), with the normalisations folded into constants and the logarithms vectorised (vector_log.h);
//   3. AUC-Judd: jitter (Philox, the layout of fastclip/ops/_philox.py) and its range, then every pixel bucketed
//      among the sorted fixation thresholds (a table lookup and a short scan), so #{S >= t_k} comes from one
//      histogram.
// saliency_split_aucs: AUC-Borji and shuffled AUC, every split of an image drawn here (Philox, the torch paths'
// layout) and its negatives counted against the step thresholds, so no (splits x negatives) tensor is built.
// AUC-Judd's rescaling and jitter, and the split AUCs' rescaling, follow the torch paths operation for operation
// (pixel-versus-threshold comparisons must come out the same); elsewhere reciprocals replace divisions, which moves
// results by ~1e-16.
//
// Accuracy of the sums over a map's N pixels (sums, centred sums of squares and cross products, SIM's minimum, KLD):
// each is accumulated in blocks of kBlock = 256 pixels, four interleaved lanes of 64 terms per block, and the block
// totals go into a Neumaier compensated sum. To first order the error is then at most (64 + 4) u sum|terms|
// (u = 2^-53), i.e. <= 7.6e-15 relative to the sum of the terms' magnitudes whatever N is (a single running sum's
// bound grows as N u: 8.7e-11 at 768 x 1024). Sums of non-negative terms are thus within ~1e-14 of exact; CC and KLD
// within that times their condition number (sum|terms| / |sum|), and tests/test_saliency_metrics.py holds CC, SIM,
// NSS and KLD to 1e-13 of math.fsum on 768 x 1024 maps.
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

constexpr int64_t kBlock = 256;
constexpr int kLanes = 4;

// Neumaier's compensated sum (Kahan-Babuska): sum + compensation carries the total to ~2u, whatever the count.
struct CompensatedSum {
  double sum = 0.0, compensation = 0.0;
  void add(double x) {
    const double t = sum + x;
    compensation += std::fabs(sum) >= std::fabs(x) ? (sum - t) + x : (x - t) + sum;
    sum = t;
  }
  double value() const { return sum + compensation; }
};

// Adds the kLanes partial sums of one block to `total` (pairwise within the block, then compensated).
inline void add_block(CompensatedSum& total, const double (&lanes)[kLanes]) {
  total.add((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]));
}

struct Range {
  double low = std::numeric_limits<double>::infinity();
  double high = -std::numeric_limits<double>::infinity();
  CompensatedSum sum;
  bool any_nonzero = false;
};

template <typename value_t>
Range range_of(const value_t* v, int64_t n) {
  Range r;
  for (int64_t first = 0; first < n; first += kBlock) {
    const int64_t count = std::min(kBlock, n - first);
    const value_t* block = v + first;
    double lanes[kLanes] = {0.0, 0.0, 0.0, 0.0};
    for (int64_t j = 0; j < count; ++j) {
      const double value = block[j];
      lanes[j % kLanes] += value;
      r.low = std::min(r.low, value);
      r.high = std::max(r.high, value);
    }
    add_block(r.sum, lanes);
  }
  r.any_nonzero = r.low != 0.0 || r.high != 0.0;
  return r;
}

// sum - n * low of a map, i.e. the sum of (v - low), with n * low's rounding error taken back (fma): the
// normalisation of MIT's min-max rescaled maps, without the cancellation of two large, close sums.
inline double shifted_sum(const Range& r, int64_t n) {
  const double count = static_cast<double>(n);
  const double product = count * r.low;
  const double product_error = std::fma(count, r.low, -product);
  return (r.sum.sum - product) + (r.sum.compensation - product_error);
}

// Centred sum of squares of one map (NSS's std when there is no fixation map), with the accuracy of the other sums.
inline double centred_squares(const double* p, int64_t n, double mean) {
  CompensatedSum total;
  for (int64_t first = 0; first < n; first += kBlock) {
    const int64_t count = std::min(kBlock, n - first);
    double lanes[kLanes] = {0.0, 0.0, 0.0, 0.0};
    for (int64_t j = 0; j < count; ++j) {
      const double d = p[first + j] - mean;
      lanes[j % kLanes] += d * d;
    }
    add_block(total, lanes);
  }
  return total.value();
}

// CC, SIM and KLD of one prediction p against its fixation map g (float32 or float64), and p's centred sum of
// squares. The normalisations are folded into constants (sums of rescaled maps from the plain sums), so one pass
// does all three; KLD terms with G = 0 are exactly 0 and skip their logarithm (most of a fixation map is 0).
template <typename map_t>
void map_metrics(const double* p, const map_t* g, int64_t n, const Range& rp, double* m2_p, double* cc, double* sim,
                 double* kld) {
  const Range rg = range_of(g, n);
  const double mean_p = rp.sum.value() / n, mean_g = rg.sum.value() / n;
  // MIT's `if any(map(:))`: only maps with a non-zero value are rescaled / divided by their sum. A rescaled map
  // (v - low) / (high - low) sums to (sum - n low) / (high - low), so SIM's normalised value is
  // (v - low) / (sum - n low).
  const double sim_low_p = rp.any_nonzero ? rp.low : 0.0, sim_low_g = rg.any_nonzero ? rg.low : 0.0;
  const double sim_scale_p = rp.any_nonzero ? 1.0 / shifted_sum(rp, n) : 1.0;
  const double sim_scale_g = rg.any_nonzero ? 1.0 / shifted_sum(rg, n) : 1.0;
  const double kld_scale_p = rp.any_nonzero ? 1.0 / rp.sum.value() : 1.0;
  const double kld_scale_g = rg.any_nonzero ? 1.0 / rg.sum.value() : 1.0;
  const bool constant_p = rp.any_nonzero && !(rp.high > rp.low), constant_g = rg.any_nonzero && !(rg.high > rg.low);
  CompensatedSum squares_p, squares_g, cross, minimum, divergence;
  // Blocks of pixels: the logarithms of a block in one vectorised call (fastclip::log_array), then the sums.
  double ratio[kBlock], logs[kBlock];
  for (int64_t first = 0; first < n; first += kBlock) {
    const int64_t count = std::min(kBlock, n - first);
    const double* pb = p + first;
    const map_t* gb = g + first;
    double lanes_pp[kLanes] = {}, lanes_gg[kLanes] = {}, lanes_pg[kLanes] = {}, lanes_min[kLanes] = {};
    bool any_fixated = false;  // blocks where the fixation map is 0 (most of a sparse one) need no logarithm
    for (int64_t j = 0; j < count; ++j) {
      const double gi = gb[j];
      const double dp = pb[j] - mean_p, dg = gi - mean_g;
      const int lane = j % kLanes;
      lanes_pp[lane] += dp * dp;
      lanes_gg[lane] += dg * dg;
      lanes_pg[lane] += dp * dg;
      lanes_min[lane] += std::min((pb[j] - sim_low_p) * sim_scale_p, (gi - sim_low_g) * sim_scale_g);
      ratio[j] = kMatlabEps + gi * kld_scale_g / (pb[j] * kld_scale_p + kMatlabEps);
      any_fixated |= gi != 0.0;
    }
    add_block(squares_p, lanes_pp);
    add_block(squares_g, lanes_gg);
    add_block(cross, lanes_pg);
    add_block(minimum, lanes_min);
    if (!any_fixated) continue;
    fastclip::log_array(ratio, logs, count);
    double lanes_kld[kLanes] = {};
    for (int64_t j = 0; j < count; ++j) {
      const double kg = static_cast<double>(gb[j]) * kld_scale_g;
      if (kg != 0.0) lanes_kld[j % kLanes] += kg * logs[j];  // G = 0 terms are 0 (MIT: 0 * log(eps + 0))
    }
    add_block(divergence, lanes_kld);
  }
  *m2_p = squares_p.value();
  const double sp = squares_p.value(), sg = squares_g.value();
  *cc = std::clamp(cross.value() / (std::sqrt(sp) * std::sqrt(sg)), -1.0, 1.0);
  *sim = constant_p || constant_g ? kNaN : minimum.value();  // MIT rescales a constant non-zero map to 0 / 0
  *kld = divergence.value();
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
        m2_p = centred_squares(p, n, rp.sum.value() / n);
      }
      const double judd_auc =
          judd ? auc_judd(p, n, index_data + image * width, count_data[image], id_data[image],
                          static_cast<uint64_t>(seed), jitter, scored, thresholds, histogram, cell_start)
               : kNaN;
      result[0] = rp.low;
      result[1] = rp.high;
      result[2] = rp.sum.value();
      result[3] = m2_p;
      result[4] = cc;
      result[5] = sim;
      result[6] = kld;
      result[7] = judd_auc;
    }
  });
  return out;
}

constexpr uint32_t kStreamAucBorji = 3;
constexpr uint32_t kStreamShuffledSubset = 4;
constexpr int kCandidateBits = 24;  // as fastclip/ops/saliency_metrics.py: a candidate's position in its key's low bits

// Words j = 0 .. count-1 of Philox value (a, b, j) in `stream` (the layout of fastclip/ops/_philox.py).
void philox_words(uint64_t seed, uint32_t stream, uint32_t a, uint32_t b, int64_t count, std::vector<uint32_t>& out) {
  out.resize(count);
  uint32_t counters[fastclip::kBatch];
  uint32_t words[4][fastclip::kBatch];
  for (int64_t first = 0; first < count; first += 4 * fastclip::kBatch) {
    for (int i = 0; i < fastclip::kBatch; ++i) counters[i] = static_cast<uint32_t>(first / 4 + i);
    fastclip::philox4x32_batch(counters, b, stream, a, seed, words);
    const int64_t block = std::min<int64_t>(4 * fastclip::kBatch, count - first);
    for (int64_t j = 0; j < block; ++j) out[first + j] = words[j % 4][j / 4];
  }
}

// The step thresholds t_k = k * step, k = 0 .. T-1, and the bucket of a rescaled value: #{t_k <= value} (torch's
// searchsorted(right=True)), from a first guess corrected by exact comparisons with the same doubles.
struct StepThresholds {
  std::vector<double> t;
  double inverse_step;
  explicit StepThresholds(double step) : inverse_step(1.0 / step) {
    const int64_t count = static_cast<int64_t>(std::floor(1.0 / step + 1e-9)) + 1;
    t.resize(count);
    for (int64_t k = 0; k < count; ++k) t[k] = static_cast<double>(k) * step;
  }
  int64_t size() const { return static_cast<int64_t>(t.size()); }
  int64_t bucket(double value) const {
    const int64_t count = size();
    if (!(value >= 0.0)) return value < 0.0 ? 0 : count;  // NaN (a constant map, masked later) sorts last
    int64_t b = std::min<int64_t>(count, static_cast<int64_t>(std::min(value * inverse_step, 1e18)) + 1);
    while (b > 0 && t[b - 1] > value) --b;
    while (b < count && t[b] <= value) ++b;
    return b;
  }
};

// Mean over splits of the trapezoid area under (FP, TP) from the highest threshold down, between (0, 0) and (1, 1);
// `positives` and each split's negatives are histograms over the T + 1 buckets.
struct SplitCurve {
  std::vector<double> tp, fp;
  void rates(const std::vector<int64_t>& histogram, double total, std::vector<double>& out) const {
    const int64_t count = static_cast<int64_t>(histogram.size()) - 1;
    out.assign(count, 0.0);
    int64_t at_least = 0;  // values >= t_k  <=>  bucket > k
    for (int64_t k = count - 1; k >= 0; --k) {
      at_least += histogram[k + 1];
      out[k] = static_cast<double>(at_least) / total;
    }
  }
  double area() const {
    const int64_t count = static_cast<int64_t>(tp.size());
    double sum = 0.0, previous_fp = 0.0, previous_tp = 0.0;
    for (int64_t k = count - 1; k >= 0; --k) {
      sum += (fp[k] - previous_fp) * (tp[k] + previous_tp) / 2;
      previous_fp = fp[k], previous_tp = tp[k];
    }
    return sum + (1.0 - previous_fp) * (1.0 + previous_tp) / 2;
  }
};

at::Tensor saliency_split_aucs_cpu(const at::Tensor& pred, const at::Tensor& low, const at::Tensor& high,
                                   const at::Tensor& fixation_index, const at::Tensor& fixation_count,
                                   const std::optional<at::Tensor>& candidates, const at::Tensor& image_ids,
                                   int64_t seed, int64_t splits, double step, bool borji) {
  TORCH_CHECK(pred.device().is_cpu(), "saliency_split_aucs_cpu: pred must be a CPU tensor");
  TORCH_CHECK(pred.dim() == 2 && pred.scalar_type() == at::kDouble, "saliency_split_aucs: pred must be (B, N) float64");
  const int64_t images = pred.size(0), n = pred.size(1);
  TORCH_CHECK(low.numel() == images && high.numel() == images && low.scalar_type() == at::kDouble &&
                  high.scalar_type() == at::kDouble,
              "saliency_split_aucs: low and high must be (B,) float64");
  TORCH_CHECK(
      fixation_index.dim() == 2 && fixation_index.size(0) == images && fixation_index.scalar_type() == at::kLong,
      "saliency_split_aucs: fixation_index must be (B, K) int64");
  TORCH_CHECK(fixation_count.numel() == images && fixation_count.scalar_type() == at::kLong,
              "saliency_split_aucs: fixation_count must be (B,) int64");
  TORCH_CHECK(image_ids.numel() == images && image_ids.scalar_type() == at::kLong,
              "saliency_split_aucs: image_ids must be (B,) int64");
  const bool shuffled = candidates.has_value() && candidates->defined();
  if (shuffled) {
    TORCH_CHECK(candidates->dim() == 2 && candidates->size(0) == images && candidates->scalar_type() == at::kLong,
                "saliency_split_aucs: candidates must be (B, L) int64");
    TORCH_CHECK(candidates->size(1) < (int64_t(1) << kCandidateBits), "saliency_split_aucs: at most 2^24 candidates");
  }
  TORCH_CHECK(seed >= 0 && splits >= 1 && step > 0.0 && step <= 1.0,
              "saliency_split_aucs: needs seed >= 0, splits >= 1 and 0 < step <= 1");
  const at::Tensor p_all = pred.contiguous(), low_all = low.contiguous(), high_all = high.contiguous();
  const at::Tensor index_all = fixation_index.contiguous(), count_all = fixation_count.contiguous();
  const at::Tensor ids = image_ids.contiguous();
  const at::Tensor candidates_all = shuffled ? candidates->contiguous() : at::Tensor();
  at::Tensor out = at::full({images, 2}, kNaN, p_all.options());
  const double* p_data = p_all.const_data_ptr<double>();
  const double* low_data = low_all.const_data_ptr<double>();
  const double* high_data = high_all.const_data_ptr<double>();
  const int64_t* index_data = index_all.const_data_ptr<int64_t>();
  const int64_t* count_data = count_all.const_data_ptr<int64_t>();
  const int64_t* id_data = ids.const_data_ptr<int64_t>();
  const int64_t width = index_all.size(1), candidate_width = shuffled ? candidates_all.size(1) : 0;
  const int64_t* candidate_data = shuffled ? candidates_all.const_data_ptr<int64_t>() : nullptr;
  double* out_data = out.mutable_data_ptr<double>();
  const StepThresholds thresholds(step);
  const int64_t buckets = thresholds.size() + 1;

  at::parallel_for(0, images, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint32_t> words;
    std::vector<int64_t> positive_histogram, negative_histogram;
    std::vector<int64_t> candidate_bucket;
    std::vector<uint64_t> keys;
    SplitCurve curve;
    for (int64_t image = begin; image < end; ++image) {
      const int64_t k = count_data[image];
      if (k == 0) continue;
      const double* p = p_data + image * n;
      const int64_t* fixated = index_data + image * width;
      const double image_low = low_data[image], span = high_data[image] - image_low;
      const auto bucket_of_pixel = [&](int64_t pixel) { return thresholds.bucket((p[pixel] - image_low) / span); };
      const uint32_t image_id = static_cast<uint32_t>(id_data[image]);
      positive_histogram.assign(buckets, 0);
      for (int64_t i = 0; i < k; ++i) ++positive_histogram[bucket_of_pixel(fixated[i])];
      curve.rates(positive_histogram, static_cast<double>(k), curve.tp);
      if (borji) {
        double total = 0.0;
        for (int64_t split = 0; split < splits; ++split) {
          philox_words(static_cast<uint64_t>(seed), kStreamAucBorji, image_id, static_cast<uint32_t>(split), k, words);
          negative_histogram.assign(buckets, 0);
          for (int64_t i = 0; i < k; ++i) ++negative_histogram[bucket_of_pixel(fastclip::uniform_index(words[i], n))];
          curve.rates(negative_histogram, static_cast<double>(k), curve.fp);
          total += curve.area();
        }
        out_data[image * 2] = total / static_cast<double>(splits);
      }
      if (shuffled) {
        const int64_t* row = candidate_data + image * candidate_width;
        int64_t length = 0;
        while (length < candidate_width && row[length] >= 0) ++length;
        const int64_t take = std::min(k, length);
        candidate_bucket.resize(length);
        for (int64_t j = 0; j < length; ++j) candidate_bucket[j] = bucket_of_pixel(row[j]);
        double total = 0.0;
        for (int64_t split = 0; split < splits; ++split) {
          // The `take` smallest keys (word << 24 | position) pick the same subset as the torch paths' topk.
          philox_words(static_cast<uint64_t>(seed), kStreamShuffledSubset, image_id, static_cast<uint32_t>(split),
                       length, words);
          keys.resize(length);
          for (int64_t j = 0; j < length; ++j) keys[j] = (uint64_t(words[j]) << kCandidateBits) | uint64_t(j);
          if (take < length) std::nth_element(keys.begin(), keys.begin() + take, keys.end());
          negative_histogram.assign(buckets, 0);
          const uint64_t position_mask = (uint64_t(1) << kCandidateBits) - 1;
          for (int64_t j = 0; j < take; ++j) ++negative_histogram[candidate_bucket[keys[j] & position_mask]];
          curve.rates(negative_histogram, static_cast<double>(take), curve.fp);
          total += curve.area();
        }
        out_data[image * 2 + 1] = total / static_cast<double>(splits);
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  m.impl("saliency_map_metrics", &saliency_map_metrics_cpu);
  m.impl("saliency_split_aucs", &saliency_split_aucs_cpu);
}
