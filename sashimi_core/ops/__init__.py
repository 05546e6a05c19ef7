"""Numeric building blocks with no knowledge of models or files: the Cauchy kernel and its backends (numba on
CPU, Triton on GPU), the numba step kernels and their SIMD helpers, mu-law / linear quantisation, and the
numbers everything reports (bits, confidence intervals, log-mel). Imports nothing else from sashimi_core."""
