"""fastclip: train CLIP models and measure, epoch by epoch, how their vision evolves.

Importing fastclip touches neither CUDA, Triton nor DALI, and never fails because one of them (or the compiled
extension) is missing; a call that needs one says what is missing and how to get it.
"""

from fastclip._source_layout import map_checkout_kernels as _map_checkout_kernels

__version__ = "0.1.0"

# A checkout used without an install (build_ext --inplace, PYTHONPATH) still finds its Triton kernels.
_map_checkout_kernels(__path__[0])
