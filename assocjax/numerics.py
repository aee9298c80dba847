"""Numerical policy shared by the solvers.

`exact_matmuls`: a function traced with full float32 matrix products. JAX's default lets an
accelerator round float32 products (TF32 on NVIDIA GPUs, one bfloat16 pass on TPUs); for
ridge spectra, held-out predictions and correlations that costs two to three digits.
Measured on an H200 (benchmarks/README.md, nested problem, 262144 targets): with the default,
the chosen alpha differed from himalaya's (full float32) for 2.8 % of the targets and r by up
to 1.9e-2 where the alphas agreed; with full float32, 99.99 % and 1.3e-3, for 10 % more time.
CPUs compute float32 products in full precision either way (results unchanged there).
"""
from __future__ import annotations

import functools

import jax


def exact_matmuls(fn):
    """`fn` (typically jitted) traced and run under jax.default_matmul_precision("highest"):
    the setting is part of jit's cache key, so callers' own defaults are untouched."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision("highest"):
            return fn(*args, **kwargs)

    if hasattr(fn, "lower"):  # jitted: lowering (memory analysis, HLO) sees the same precision
        def lower(*args, **kwargs):
            with jax.default_matmul_precision("highest"):
                return fn.lower(*args, **kwargs)

        wrapped.lower = lower
    return wrapped
