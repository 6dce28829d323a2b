"""fastclip-eval's benchmarks, one module each; each registers itself with fastclip.eval.registry."""
