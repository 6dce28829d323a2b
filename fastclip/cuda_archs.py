"""CUDA architectures the extension is built for by default (setup.py, FASTCLIP_CUDA_ARCHS overrides)."""

DEFAULT_CUDA_ARCHS = "8.0;8.6;8.9;9.0;10.0+PTX"
