"""Small statistics shared by the alignment, ridge and ceiling stages.

All functions are pure JAX and reduce over the leading (time) axis, so they vmap over
layers, splits or subjects.
"""
from __future__ import annotations

import jax.numpy as jnp


def pearson_r(a_TV: jnp.ndarray, b_TV: jnp.ndarray, mask_T: jnp.ndarray | None = None) -> jnp.ndarray:
    """Pearson r per column between a_TV and b_TV (time on axis 0).

    mask_T selects the rows that count (padding rows are excluded). A column that is
    constant in either input has no defined correlation and gets NaN, never 0 or inf.
    """
    if mask_T is None:
        mask_T = jnp.ones(a_TV.shape[0], dtype=a_TV.dtype)
    w = mask_T.astype(a_TV.dtype)[:, None]
    n = jnp.sum(w)
    a = (a_TV - jnp.sum(a_TV * w, axis=0) / n) * w
    b = (b_TV - jnp.sum(b_TV * w, axis=0) / n) * w
    ss_a = jnp.sum(a * a, axis=0)
    ss_b = jnp.sum(b * b, axis=0)
    denom = jnp.sqrt(ss_a * ss_b)
    # A constant column still has a spread of rounding noise after centring (about eps *
    # |value| per entry): below (16 eps)^2 of its raw power it counts as constant.
    tiny = (16 * jnp.finfo(a_TV.dtype).eps) ** 2
    flat = (denom <= 0) | (ss_a <= tiny * jnp.sum(a_TV**2 * w, axis=0)) | (ss_b <= tiny * jnp.sum(b_TV**2 * w, axis=0))
    return jnp.where(flat, jnp.nan, jnp.sum(a * b, axis=0) / jnp.where(flat, 1.0, denom))


def fisher_z_mean(r_SV: jnp.ndarray, axis: int = 0) -> jnp.ndarray:
    """Average correlations in Fisher-z space (NaNs ignored); values are clipped off +-1."""
    r = jnp.clip(r_SV, -1 + 1e-7, 1 - 1e-7)
    return jnp.tanh(jnp.nanmean(jnp.arctanh(r), axis=axis))


def spearman_brown(r: jnp.ndarray, factor: float = 2.0) -> jnp.ndarray:
    """Reliability of a measure `factor` times longer than the one that gave r."""
    return factor * r / (1 + (factor - 1) * r)
