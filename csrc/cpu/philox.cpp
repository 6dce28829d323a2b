// CPU kernel of fastclip::philox_uint32: every four consecutive words are one Philox call, made 16 calls at a time
// (philox4x32_batch); rows and runs of counters go in parallel (at::parallel_for).
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdint>

#include "../philox.h"

namespace {

at::Tensor philox_uint32_cpu(int64_t seed, int64_t stream, const at::Tensor& a, const at::Tensor& b, int64_t length) {
  TORCH_CHECK(a.device().is_cpu() && b.device().is_cpu(), "philox_uint32_cpu: a and b must be CPU tensors");
  TORCH_CHECK(a.dim() == 1 && b.dim() == 1 && a.scalar_type() == at::kLong && b.scalar_type() == at::kLong,
              "philox_uint32: a and b must be 1-D int64 tensors");
  TORCH_CHECK(seed >= 0, "philox_uint32: seed must be non-negative, got ", seed);
  TORCH_CHECK(stream >= 0 && stream < (int64_t(1) << 32), "philox_uint32: stream must fit in 32 bits, got ", stream);
  TORCH_CHECK(length >= 0 && (length + 3) / 4 <= (int64_t(1) << 32), "philox_uint32: length out of range: ", length);
  const at::Tensor as = a.contiguous(), bs = b.contiguous();
  const int64_t rows_a = as.size(0), rows_b = bs.size(0);
  at::Tensor out = at::empty({rows_a, rows_b, length}, as.options());
  const int64_t blocks = (length + 3) / 4;
  const int64_t* a_data = as.const_data_ptr<int64_t>();
  const int64_t* b_data = bs.const_data_ptr<int64_t>();
  int64_t* out_data = out.mutable_data_ptr<int64_t>();
  constexpr int kCalls = fastclip::kBatch;
  const int64_t groups = (blocks + kCalls - 1) / kCalls;  // kCalls counters per Philox batch
  at::parallel_for(0, rows_a * rows_b * groups, 256, [&](int64_t begin, int64_t end) {
    uint32_t counters[kCalls];
    uint32_t words[4][kCalls];
    for (int64_t index = begin; index < end; ++index) {
      const int64_t row = index / groups, first_block = (index % groups) * kCalls;
      for (int i = 0; i < kCalls; ++i) counters[i] = static_cast<uint32_t>(first_block + i);
      fastclip::philox4x32_batch(counters, static_cast<uint32_t>(b_data[row % rows_b]), static_cast<uint32_t>(stream),
                                 static_cast<uint32_t>(a_data[row / rows_b]), static_cast<uint64_t>(seed), words);
      int64_t* target = out_data + row * length;
      const int64_t first_word = first_block * 4, count = std::min<int64_t>(4 * kCalls, length - first_word);
      for (int64_t j = 0; j < count; ++j) target[first_word + j] = words[j % 4][j / 4];
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  m.impl("philox_uint32", &philox_uint32_cpu);
}
