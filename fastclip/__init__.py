"""fastclip: train CLIP models and measure, epoch by epoch, how their vision evolves.

Importing fastclip touches neither CUDA, Triton nor DALI, and never fails because one of them (or the compiled
extension) is missing; a call that needs one says what is missing and how to get it.
"""

__version__ = "0.1.0"
