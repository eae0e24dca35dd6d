"""Numba CPU kernels, one module per algorithm or operation."""
