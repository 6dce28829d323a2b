// Natural logarithm of an array of doubles in a form compilers vectorise: fdlibm's e_log.c algorithm (error below
// one ulp) written without branches, so one SIMD lane computes one element. std::log is a call per element, which
// dominates a pass that only adds up g * log(...) (the saliency KLD over every pixel of a dense fixation map).
// On x86-64 with GCC, target_clones adds an AVX2 copy chosen at load time beside the baseline SSE2 one; both do the
// same IEEE operations per element (no FMA), so they agree bit for bit. Arguments outside the positive normal
// range (zero, subnormal, negative, infinite, NaN) are handed to std::log.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FASTCLIP_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FASTCLIP_VECTOR_CLONES
#endif

namespace fastclip {

FASTCLIP_VECTOR_CLONES
inline void log_array(const double* __restrict x, double* __restrict out, int64_t n) {
  constexpr double kLn2Hi = 6.93147180369123816490e-01, kLn2Lo = 1.90821492927058770002e-10;
  constexpr double kLg1 = 6.666666666666735130e-01, kLg2 = 3.999999999940941908e-01;
  constexpr double kLg3 = 2.857142874366239149e-01, kLg4 = 2.222219843214978396e-01;
  constexpr double kLg5 = 1.818357216161805012e-01, kLg6 = 1.531383769920937332e-01;
  constexpr double kLg7 = 1.479819860511658591e-01;
  constexpr uint64_t kSqrt2Bits = 0x3FF6A09E667F3BCDull;  // 1.4142135623730951, sqrt(2) rounded
  // 2^52 + e as a double, minus 2^52 + 1023: the unbiased exponent as a double without an int64 -> double
  // conversion (which SSE2/AVX2 lack).
  constexpr uint64_t kMagicBits = 0x4330000000000000ull;
  constexpr double kMagicBias = 4503599627370496.0 + 1023.0;
  for (int64_t i = 0; i < n; ++i) {
    uint64_t bits;
    std::memcpy(&bits, &x[i], sizeof bits);
    const uint64_t mantissa_bits = (bits & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull;
    const uint64_t exponent_bits = kMagicBits | ((bits >> 52) & 0x7FFull);
    double m, k;
    std::memcpy(&m, &mantissa_bits, sizeof m);
    std::memcpy(&k, &exponent_bits, sizeof k);
    k -= kMagicBias;
    // x = m 2^k with m in [sqrt(2)/2, sqrt(2)), so that f = m - 1 is small.
    // Arithmetic, not a branch, so the loop vectorises (m * 0.5 and m * 1.0 are exact). The comparison is on the
    // bits (monotonic for positive doubles): a floating-point one may trap, which keeps GCC from vectorising.
    const double above = static_cast<double>(mantissa_bits > kSqrt2Bits);
    m *= 1.0 - 0.5 * above;
    k += above;
    const double f = m - 1.0;
    const double s = f / (2.0 + f);
    const double z = s * s, w = z * z;
    const double t1 = w * (kLg2 + w * (kLg4 + w * kLg6));
    const double t2 = z * (kLg1 + w * (kLg3 + w * (kLg5 + w * kLg7)));
    const double r = t2 + t1;
    const double half_f_squared = 0.5 * f * f;
    out[i] = k * kLn2Hi - ((half_f_squared - (s * (half_f_squared + r) + k * kLn2Lo)) - f);
  }
  for (int64_t i = 0; i < n; ++i) {
    if (!(x[i] >= DBL_MIN && x[i] <= DBL_MAX)) out[i] = std::log(x[i]);
  }
}

}  // namespace fastclip
