// fastclip::philox_uint32: a block of Philox4x32-10 words in fastclip's counter layout (csrc/philox.h): out[i, k, j]
// is lane j % 4 of the output for counter (j / 4, b[k], stream, a[i]) and key (seed mod 2^32, seed div 2^32).
// a and b are int64 index vectors; returns int64 (len(a), len(b), length) holding values in [0, 2^32).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastclip, m) {
  m.def("philox_uint32(int seed, int stream, Tensor a, Tensor b, int length) -> Tensor");
}
