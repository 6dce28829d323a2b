"""Triton kernels and their launchers, one file per op; installed as fastclip.kernels.

Modules here import triton at their top, so only fastclip.ops dispatchers import them, and only when a Triton
backend has been chosen.
"""
