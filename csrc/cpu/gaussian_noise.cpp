// CPU kernel of fastclip::gaussian_noise (the contract is in csrc/gaussian_noise.cpp). Work is split into blocks of
// kGroupsPerBlock Philox groups (4 elements each) of one image, run in parallel (at::parallel_for). A block draws
// its integers (philox4x32_batch), turns them into normals in cache-resident scratch, then reads its pixels once and
// writes one output per sigma, so a K-sigma sweep costs one read and K writes.
//
// The output is bit-identical to the torch reference: the float steps are the reference's, in its order, and log,
// sqrt, sin and cos are torch's own kernels called on the scratch buffers. Those four are not correctly rounded in
// torch's CPU build (a vector math library: about 5-20% of its float32 results are an ulp off the correctly rounded
// value), so only calling them keeps the two backends identical. Nothing here enables FMA (the build targets
// baseline x86-64 and the AVX2 loop excludes it): a fused x + sigma * z would round once where torch rounds twice,
// and the bit-identity tests would fail.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <type_traits>
#include <vector>

#include "../philox.h"

namespace {

// 2048 groups = 8192 elements: scratch and pixels of a block (128 KB) stay in L2, while the four torch calls
// per block are few enough that their dispatch overhead stays small.
constexpr int64_t kGroupsPerBlock = 2048;

// The reference's constants are Python floats rounded once to float32; rounding the same doubles here matches them.
const float kUintToUniform = static_cast<float>(4.6566127342e-10);
const float kMinUniform = static_cast<float>(1.0e-7);
const float kTwoPi = static_cast<float>(6.283185307179586);

// Triton's uint_to_uniform_float: the word read as int32, negatives folded with ~x (= -x - 1), scaled into [0, 1).
inline float uint32_to_uniform(uint32_t word) {
  const int32_t signed_word = static_cast<int32_t>(word);
  return static_cast<float>(signed_word < 0 ? ~signed_word : signed_word) * kUintToUniform;
}

// Per-thread buffers for one block. Lanes (0, 1) of group j use index j of radius/angle, lanes (2, 3) index
// groups + j, so each transcendental runs once over one contiguous span of 2 * groups values.
struct Scratch {
  std::vector<float> radius, angle, cosine, sine, noise, pixels;
  Scratch()
      : radius(2 * kGroupsPerBlock),
        angle(2 * kGroupsPerBlock),
        cosine(2 * kGroupsPerBlock),
        sine(2 * kGroupsPerBlock),
        noise(4 * kGroupsPerBlock),
        pixels(4 * kGroupsPerBlock) {}
};

at::Tensor wrap(std::vector<float>& buffer, int64_t count) {
  return at::from_blob(buffer.data(), {count}, at::TensorOptions().dtype(at::kFloat));
}

// The standard normals of groups [first_group, first_group + groups) of one sample, element-ordered in s.noise.
void draw_normals(uint64_t seed, uint32_t sample_id, int64_t first_group, int64_t groups, Scratch& s) {
  constexpr int kCalls = fastclip::kBatch;
  uint32_t counters[kCalls];
  uint32_t words[4][kCalls];
  float* radius = s.radius.data();
  float* angle = s.angle.data();
  for (int64_t start = 0; start < groups; start += kCalls) {
    for (int i = 0; i < kCalls; ++i) counters[i] = static_cast<uint32_t>(first_group + start + i);
    fastclip::philox4x32_batch(counters, sample_id, 0, 0, seed, words);
    const int64_t count = std::min<int64_t>(kCalls, groups - start);
    for (int64_t i = 0; i < count; ++i) {
      radius[start + i] = std::max(uint32_to_uniform(words[0][i]), kMinUniform);
      angle[start + i] = kTwoPi * uint32_to_uniform(words[1][i]);
      radius[groups + start + i] = std::max(uint32_to_uniform(words[2][i]), kMinUniform);
      angle[groups + start + i] = kTwoPi * uint32_to_uniform(words[3][i]);
    }
  }
  // Box-Muller as the reference writes it: sqrt(-2 log u1) * (cos, sin)(2 pi u2).
  at::Tensor radius_t = wrap(s.radius, 2 * groups), angle_t = wrap(s.angle, 2 * groups);
  at::log_(radius_t);
  for (int64_t i = 0; i < 2 * groups; ++i) radius[i] = -2.0f * radius[i];
  at::sqrt_(radius_t);
  at::Tensor cosine_t = wrap(s.cosine, 2 * groups), sine_t = wrap(s.sine, 2 * groups);
  at::cos_out(cosine_t, angle_t);
  at::sin_out(sine_t, angle_t);
  const float* cosine = s.cosine.data();
  const float* sine = s.sine.data();
  float* noise = s.noise.data();
  for (int64_t j = 0; j < groups; ++j) {
    noise[4 * j + 0] = radius[j] * cosine[j];
    noise[4 * j + 1] = radius[j] * sine[j];
    noise[4 * j + 2] = radius[groups + j] * cosine[groups + j];
    noise[4 * j + 3] = radius[groups + j] * sine[groups + j];
  }
}

template <typename in_t>
void load_pixels(const in_t* in, int64_t count, float* pixels) {
  for (int64_t i = 0; i < count; ++i) {
    if constexpr (std::is_same_v<in_t, uint8_t>) {
      pixels[i] = static_cast<float>(in[i]) / 255.0f;  // a true division, as the reference's images / 255
    } else {
      pixels[i] = static_cast<float>(in[i]);
    }
  }
}

// The per-element steps are written once, for a float and for a vector of 8 floats (GCC vector extensions): the
// auto-vectoriser gives up on the clamp-and-quantise selects (they may trap), and explicit vectors also pin the
// operation order. Every helper is always inlined, so the 32-byte vectors never cross a call (the ABI note GCC
// warns about does not apply).
#pragma GCC diagnostic ignored "-Wpsabi"
using Floats = float __attribute__((vector_size(32)));
using Ints = int32_t __attribute__((vector_size(32)));
using Words = uint32_t __attribute__((vector_size(32)));
using Halfwords = uint16_t __attribute__((vector_size(16)));
constexpr int64_t kLanes = 8;
#define FASTCLIP_INLINE __attribute__((always_inline)) inline

// Truncation toward zero, which is floor for the non-negative values it gets.
FASTCLIP_INLINE float truncate_toward_zero(float v) { return static_cast<float>(static_cast<int32_t>(v)); }
FASTCLIP_INLINE Floats truncate_toward_zero(Floats v) {
  return __builtin_convertvector(__builtin_convertvector(v, Ints), Floats);
}

// clip(x + sigma z, 0, 1), floor(y * 255) / 255, (y - mean) / std: the reference's float32 operations in its order.
// Comparison selects keep NaN inputs NaN as torch.clamp does; NaN is kept out of the float -> int conversion.
template <bool kQuantize, bool kNormalize, typename T>
FASTCLIP_INLINE T perturb(T x, T z, float sigma, float mean, float std_dev) {
  const T zero = T{} + 0.0f, one = T{} + 1.0f;
  T y = x + sigma * z;
  y = y < 0.0f ? zero : y;
  y = y > 1.0f ? one : y;
  if constexpr (kQuantize) {
    const T scaled = y * 255.0f;
    const auto is_number = scaled == scaled;  // bool, or a lane mask for vectors
    const T floored = truncate_toward_zero(is_number ? scaled : zero);
    y = (is_number ? floored : scaled) / 255.0f;
  }
  if constexpr (kNormalize) y = (y - mean) / std_dev;
  return y;
}

// float32 -> bfloat16 bits, rounding to nearest even and NaN -> 0x7FC0, as c10::BFloat16(float) does.
FASTCLIP_INLINE uint16_t bfloat16_bits(float y) {
  uint32_t bits;
  std::memcpy(&bits, &y, sizeof(bits));
  return static_cast<uint16_t>(y == y ? (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16 : 0x7FC0u);
}
FASTCLIP_INLINE Halfwords bfloat16_bits(Floats y) {
  Words bits;
  std::memcpy(&bits, &y, sizeof(bits));
  const Words rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  return __builtin_convertvector(y == y ? rounded : Words{} + 0x7FC0u, Halfwords);
}

// One run of elements that share a channel: pixels and noise in, one output image's elements out.
template <typename out_t, bool kQuantize, bool kNormalize>
FASTCLIP_INLINE void perturb_loop(const float* pixels, const float* noise, int64_t count, float sigma, float mean,
                                  float std_dev, out_t* out) {
  int64_t i = 0;
  for (; i + kLanes <= count; i += kLanes) {
    Floats x, z;
    std::memcpy(&x, pixels + i, sizeof(x));
    std::memcpy(&z, noise + i, sizeof(z));
    const Floats y = perturb<kQuantize, kNormalize>(x, z, sigma, mean, std_dev);
    if constexpr (std::is_same_v<out_t, float>) {
      std::memcpy(out + i, &y, sizeof(y));
    } else {
      const Halfwords bits = bfloat16_bits(y);
      std::memcpy(out + i, &bits, sizeof(bits));
    }
  }
  for (; i < count; ++i) {
    const float y = perturb<kQuantize, kNormalize>(pixels[i], noise[i], sigma, mean, std_dev);
    if constexpr (std::is_same_v<out_t, float>) {
      out[i] = y;
    } else {
      out[i] = c10::BFloat16(bfloat16_bits(y), c10::BFloat16::from_bits());
    }
  }
}

#if defined(__GNUC__) && defined(__x86_64__)
// The same loop in 256-bit registers. AVX2 without FMA, so no multiply and add can be fused (that would change the
// rounding).
template <typename out_t, bool kQuantize, bool kNormalize>
__attribute__((target("avx2"))) void perturb_run_avx2(const float* pixels, const float* noise, int64_t count,
                                                      float sigma, float mean, float std_dev, out_t* out) {
  perturb_loop<out_t, kQuantize, kNormalize>(pixels, noise, count, sigma, mean, std_dev, out);
}
#endif

template <typename out_t, bool kQuantize, bool kNormalize>
void perturb_run(const float* pixels, const float* noise, int64_t count, float sigma, float mean, float std_dev,
                 out_t* out) {
#if defined(__GNUC__) && defined(__x86_64__)
  static const bool has_avx2 = __builtin_cpu_supports("avx2");
  if (has_avx2) return perturb_run_avx2<out_t, kQuantize, kNormalize>(pixels, noise, count, sigma, mean, std_dev, out);
#endif
  perturb_loop<out_t, kQuantize, kNormalize>(pixels, noise, count, sigma, mean, std_dev, out);
}

struct Problem {
  int64_t num_images, num_sigmas, image_numel, channel_numel, groups_per_image, blocks_per_image;
  uint64_t seed;
  const float* sigma_table;
  const int64_t* sample_ids;
  const float* mean;
  const float* std_dev;
};

template <typename in_t, typename out_t, bool kQuantize, bool kNormalize>
void gaussian_noise_kernel(const Problem& p, const in_t* images, out_t* out) {
  at::parallel_for(0, p.num_images * p.blocks_per_image, 1, [&](int64_t begin, int64_t end) {
    // Torch's log/sqrt/sin/cos on plain buffers need no autograd bookkeeping; this thread may not have inherited
    // the caller's mode.
    c10::InferenceMode inference_mode;
    Scratch scratch;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t image = task / p.blocks_per_image;
      const int64_t first_group = (task % p.blocks_per_image) * kGroupsPerBlock;
      const int64_t groups = std::min(kGroupsPerBlock, p.groups_per_image - first_group);
      const int64_t first = 4 * first_group, last = std::min(first + 4 * groups, p.image_numel);
      draw_normals(p.seed, static_cast<uint32_t>(p.sample_ids[image]), first_group, groups, scratch);
      load_pixels(images + image * p.image_numel + first, last - first, scratch.pixels.data());
      for (int64_t k = 0; k < p.num_sigmas; ++k) {
        const float sigma = p.sigma_table[k * p.num_images + image];
        out_t* target = out + (k * p.num_images + image) * p.image_numel;
        for (int64_t run = first; run < last;) {
          const int64_t channel = run / p.channel_numel;
          const int64_t run_end = std::min(last, (channel + 1) * p.channel_numel);
          perturb_run<out_t, kQuantize, kNormalize>(
              scratch.pixels.data() + (run - first), scratch.noise.data() + (run - first), run_end - run, sigma,
              kNormalize ? p.mean[channel] : 0.0f, kNormalize ? p.std_dev[channel] : 1.0f, target + run);
          run = run_end;
        }
      }
    }
  });
}

template <typename in_t, typename out_t>
void dispatch_flags(const Problem& p, const in_t* images, out_t* out, bool quantize, bool normalize) {
  if (quantize) {
    normalize ? gaussian_noise_kernel<in_t, out_t, true, true>(p, images, out)
              : gaussian_noise_kernel<in_t, out_t, true, false>(p, images, out);
  } else {
    normalize ? gaussian_noise_kernel<in_t, out_t, false, true>(p, images, out)
              : gaussian_noise_kernel<in_t, out_t, false, false>(p, images, out);
  }
}

template <typename in_t>
void dispatch_output(const Problem& p, const in_t* images, at::Tensor& out, bool quantize, bool normalize) {
  if (out.scalar_type() == at::kFloat) {
    dispatch_flags(p, images, out.mutable_data_ptr<float>(), quantize, normalize);
  } else {
    dispatch_flags(p, images, out.mutable_data_ptr<c10::BFloat16>(), quantize, normalize);
  }
}

void check_per_channel(const std::optional<at::Tensor>& values, const char* name, int64_t channels) {
  TORCH_CHECK(values->device().is_cpu() && values->scalar_type() == at::kFloat && values->dim() == 1 &&
                  values->size(0) == channels,
              "gaussian_noise: ", name, " must be a float32 CPU tensor of shape (", channels, ",), got ",
              values->scalar_type(), " ", values->sizes(), " on ", values->device());
}

at::Tensor gaussian_noise_cpu(const at::Tensor& images, const at::Tensor& sigma_table, int64_t seed,
                              const at::Tensor& sample_ids, bool quantize, const std::optional<at::Tensor>& mean,
                              const std::optional<at::Tensor>& std_dev, at::ScalarType out_dtype) {
  TORCH_CHECK(images.device().is_cpu(), "gaussian_noise_cpu: images must be a CPU tensor, got ", images.device());
  TORCH_CHECK(images.dim() == 4, "gaussian_noise: images must be (N,C,H,W), got ", images.dim(), "-D");
  const auto in_dtype = images.scalar_type();
  TORCH_CHECK(in_dtype == at::kByte || in_dtype == at::kFloat || in_dtype == at::kHalf || in_dtype == at::kBFloat16,
              "gaussian_noise: images must be uint8, float32, float16 or bfloat16, got ", in_dtype);
  const int64_t num_images = images.size(0), channels = images.size(1);
  TORCH_CHECK(sigma_table.device().is_cpu() && sigma_table.scalar_type() == at::kFloat && sigma_table.dim() == 2 &&
                  sigma_table.size(1) == num_images,
              "gaussian_noise: sigma_table must be a float32 CPU tensor of shape (K, ", num_images, "), got ",
              sigma_table.scalar_type(), " ", sigma_table.sizes());
  TORCH_CHECK(sample_ids.device().is_cpu() && sample_ids.scalar_type() == at::kLong && sample_ids.dim() == 1 &&
                  sample_ids.size(0) == num_images,
              "gaussian_noise: sample_ids must be an int64 CPU tensor of shape (", num_images, ",)");
  TORCH_CHECK(seed >= 0, "gaussian_noise: seed must be in [0, 2^63), got ", seed);
  TORCH_CHECK(mean.has_value() == std_dev.has_value(), "gaussian_noise: give both mean and std or neither");
  const bool normalize = mean.has_value();
  if (normalize) {
    check_per_channel(mean, "mean", channels);
    check_per_channel(std_dev, "std", channels);
  }
  TORCH_CHECK(out_dtype == at::kFloat || out_dtype == at::kBFloat16,
              "gaussian_noise: out_dtype must be float32 or bfloat16, got ", out_dtype);

  const at::Tensor input = images.contiguous(), sigmas = sigma_table.contiguous(), ids = sample_ids.contiguous();
  const int64_t image_numel = input.numel() / std::max<int64_t>(num_images, 1);
  const int64_t groups_per_image = (image_numel + 3) / 4;
  TORCH_CHECK(groups_per_image <= (int64_t(1) << 32),
              "gaussian_noise: an image may have at most 2^34 elements (the Philox counter is 32 bits)");
  if (num_images > 0) {
    const auto bounds = at::aminmax(ids);
    TORCH_CHECK(std::get<0>(bounds).item<int64_t>() >= 0 && std::get<1>(bounds).item<int64_t>() < (int64_t(1) << 31),
                "gaussian_noise: sample_ids must lie in [0, 2^31)");
  }
  at::Tensor out = at::empty({sigmas.size(0), num_images, channels, input.size(2), input.size(3)},
                             input.options().dtype(out_dtype));
  if (out.numel() == 0) return out;

  at::Tensor mean_c, std_c;
  if (normalize) {
    mean_c = mean->contiguous();
    std_c = std_dev->contiguous();
  }
  const Problem problem{
      num_images,
      sigmas.size(0),
      image_numel,
      input.size(2) * input.size(3),
      groups_per_image,
      (groups_per_image + kGroupsPerBlock - 1) / kGroupsPerBlock,
      static_cast<uint64_t>(seed),
      sigmas.const_data_ptr<float>(),
      ids.const_data_ptr<int64_t>(),
      normalize ? mean_c.const_data_ptr<float>() : nullptr,
      normalize ? std_c.const_data_ptr<float>() : nullptr,
  };
  switch (in_dtype) {
    case at::kByte:
      dispatch_output(problem, input.const_data_ptr<uint8_t>(), out, quantize, normalize);
      break;
    case at::kFloat:
      dispatch_output(problem, input.const_data_ptr<float>(), out, quantize, normalize);
      break;
    case at::kHalf:
      dispatch_output(problem, input.const_data_ptr<c10::Half>(), out, quantize, normalize);
      break;
    default:
      dispatch_output(problem, input.const_data_ptr<c10::BFloat16>(), out, quantize, normalize);
      break;
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  m.impl("gaussian_noise", &gaussian_noise_cpu);
}
