// Philox4x32-10 (Salmon et al., SC'11; Random123), the counter-based generator of fastclip's statistics ops.
// Bit for bit the function fastclip/ops/_philox.py computes with torch, so the C++ kernels and the torch paths
// draw the same resamples for a seed. Value (a, b, j) of a stream is lane j % 4 of the output for counter
// (j / 4, b, stream, a) and key (seed mod 2^32, seed div 2^32).
#pragma once

#include <array>
#include <cstdint>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

namespace fastclip {

enum PhiloxStream : uint32_t {
  kStreamBootstrap = 0,
};

inline std::array<uint32_t, 4> philox4x32(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint64_t seed) {
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t product_0 = uint64_t(0xD2511F53u) * c0;
    const uint64_t product_1 = uint64_t(0xCD9E8D57u) * c2;
    const uint32_t next_0 = static_cast<uint32_t>(product_1 >> 32) ^ c1 ^ k0;
    const uint32_t next_2 = static_cast<uint32_t>(product_0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(product_1);
    c3 = static_cast<uint32_t>(product_0);
    c0 = next_0;
    c2 = next_2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {c0, c1, c2, c3};
}

// kBatch Philox calls at once, for counters (c0[i], c1, c2, c3); words[lane][i] is output word `lane` of call i.
// With AVX2 (checked at run time) the calls go four to a register, 32x32->64-bit multiplies in vpmuludq, about five
// times the throughput of one call at a time; the portable loop below computes the same words.
constexpr int kBatch = 16;

inline void philox4x32_batch_portable(const uint32_t* c0, uint32_t c1, uint32_t c2, uint32_t c3, uint64_t seed,
                                      uint32_t (&words)[4][kBatch]) {
  for (int i = 0; i < kBatch; ++i) {
    const auto out = philox4x32(c0[i], c1, c2, c3, seed);
    for (int lane = 0; lane < 4; ++lane) words[lane][i] = out[lane];
  }
}

#if defined(__GNUC__) && defined(__x86_64__)
__attribute__((target("avx2"))) inline void philox4x32_batch_avx2(const uint32_t* c0, uint32_t c1, uint32_t c2,
                                                                   uint32_t c3, uint64_t seed,
                                                                   uint32_t (&words)[4][kBatch]) {
  constexpr int kGroups = kBatch / 4;  // four calls per register: one 32-bit value in each 64-bit lane
  __m256i x0[kGroups], x1[kGroups], x2[kGroups], x3[kGroups];
  for (int g = 0; g < kGroups; ++g) {
    x0[g] = _mm256_cvtepu32_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c0 + 4 * g)));
    x1[g] = _mm256_set1_epi64x(c1);
    x2[g] = _mm256_set1_epi64x(c2);
    x3[g] = _mm256_set1_epi64x(c3);
  }
  const __m256i multiplier_0 = _mm256_set1_epi64x(0xD2511F53u), multiplier_1 = _mm256_set1_epi64x(0xCD9E8D57u);
  const __m256i low_half = _mm256_set1_epi64x(0xFFFFFFFFu);
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    const __m256i key_0 = _mm256_set1_epi64x(k0), key_1 = _mm256_set1_epi64x(k1);
    for (int g = 0; g < kGroups; ++g) {
      const __m256i product_0 = _mm256_mul_epu32(x0[g], multiplier_0);
      const __m256i product_1 = _mm256_mul_epu32(x2[g], multiplier_1);
      const __m256i next_0 = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(product_1, 32), x1[g]), key_0);
      const __m256i next_2 = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(product_0, 32), x3[g]), key_1);
      x1[g] = _mm256_and_si256(product_1, low_half);
      x3[g] = _mm256_and_si256(product_0, low_half);
      x0[g] = next_0;
      x2[g] = next_2;
    }
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  const __m256i low_words_first = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  const __m256i* state[4] = {x0, x1, x2, x3};
  for (int lane = 0; lane < 4; ++lane) {
    for (int g = 0; g < kGroups; ++g) {
      const __m256i packed = _mm256_permutevar8x32_epi32(state[lane][g], low_words_first);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(words[lane] + 4 * g), _mm256_castsi256_si128(packed));
    }
  }
}
#endif

inline void philox4x32_batch(const uint32_t* c0, uint32_t c1, uint32_t c2, uint32_t c3, uint64_t seed,
                             uint32_t (&words)[4][kBatch]) {
#if defined(__GNUC__) && defined(__x86_64__)
  static const bool has_avx2 = __builtin_cpu_supports("avx2");
  if (has_avx2) return philox4x32_batch_avx2(c0, c1, c2, c3, seed, words);
#endif
  philox4x32_batch_portable(c0, c1, c2, c3, seed, words);
}

// Multiply-shift map of a 32-bit word to [0, n); the bias is below n / 2^32.
inline int64_t uniform_index(uint32_t word, int64_t n) {
  return static_cast<int64_t>((static_cast<uint64_t>(word) * static_cast<uint64_t>(n)) >> 32);
}

}  // namespace fastclip
