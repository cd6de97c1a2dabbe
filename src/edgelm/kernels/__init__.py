"""Compute kernels: the only place that knows SIMD, threads and ISAs.

`reference` holds a NumPy implementation of every kernel: the oracle the native kernels are tested
against, and the portable path when no native kernel applies.
"""
