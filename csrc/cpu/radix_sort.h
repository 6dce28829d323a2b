// Stable LSD radix sort of floating-point keys with a payload, shared by the CPU kernels that sort every row
// (rank_average, kendall_tau). Radix sort beats a comparison sort there because the keys are fixed-width and rows
// are a few thousand long; passes whose digit is the same for every key are skipped, which makes data with few
// distinct values (many ties) cheaper still.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <vector>

namespace fastclip {

template <typename scalar_t>
struct SortableKey;
template <>
struct SortableKey<float> {
  using type = uint32_t;
};
template <>
struct SortableKey<double> {
  using type = uint64_t;
};

// Maps a float to an unsigned integer with the same order. -0.0 is folded into +0.0 so that the two tie.
template <typename scalar_t>
inline typename SortableKey<scalar_t>::type sortable_key(scalar_t value) {
  using key_t = typename SortableKey<scalar_t>::type;
  constexpr key_t sign_bit = key_t(1) << (sizeof(key_t) * 8 - 1);
  if (value == scalar_t(0)) value = scalar_t(0);
  key_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return (bits & sign_bit) ? ~bits : (bits | sign_bit);
}

// Sorts (keys, payload)[0, m) by key, stably, 8 bits a pass. keys_tmp and payload_tmp are scratch at least m long;
// the sorted pairs end up in keys and payload (a pass writes into the scratch and swaps the vectors).
template <typename key_t, typename payload_t>
void radix_sort_pairs(std::vector<key_t>& keys, std::vector<key_t>& keys_tmp, std::vector<payload_t>& payload,
                      std::vector<payload_t>& payload_tmp, int64_t m) {
  constexpr int kDigitBits = 8;
  constexpr int kBuckets = 1 << kDigitBits;
  constexpr int kPasses = sizeof(key_t) * 8 / kDigitBits;
  std::array<std::array<int64_t, kBuckets>, kPasses> counts{};
  for (int64_t i = 0; i < m; ++i) {
    const key_t key = keys[i];
    for (int pass = 0; pass < kPasses; ++pass) ++counts[pass][(key >> (pass * kDigitBits)) & (kBuckets - 1)];
  }
  for (int pass = 0; pass < kPasses; ++pass) {
    auto& count = counts[pass];
    // Every key has this digit: the pass would not move anything.
    if (m == 0 || count[(keys[0] >> (pass * kDigitBits)) & (kBuckets - 1)] == m) continue;
    int64_t offset = 0;
    for (auto& c : count) {
      const int64_t size = c;
      c = offset;
      offset += size;
    }
    for (int64_t i = 0; i < m; ++i) {
      const int64_t target = count[(keys[i] >> (pass * kDigitBits)) & (kBuckets - 1)]++;
      keys_tmp[target] = keys[i];
      payload_tmp[target] = payload[i];
    }
    keys.swap(keys_tmp);
    payload.swap(payload_tmp);
  }
}

}  // namespace fastclip
