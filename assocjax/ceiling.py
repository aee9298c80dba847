"""Noise ceilings: how well could any model score against noisy group-mean responses?

`split_half_ceiling` gives the reliability of the S-subject mean response (Spearman-Brown
corrected split-half r); `split_half_ceilings` gives it with, from the same splits, the paper's
half-vs-half r and a circular-shift p that the halves agree (docs/ceiling.md). A noise-free model that predicted the true shared signal exactly
would reach a Pearson r of sqrt(reliability) against that group mean, so brain scores
(Pearson r against the group mean) are normalised by `max_r_from_reliability(rel)`, not by
the reliability itself. `loso_isc` gives the per-subject view (subject vs. the rest).

The ceilings take y_SNV = (subjects, TRs, vertices), are pure and jit-able, and mark a
vertex NaN when it has any NaN/Inf (e.g. medial wall) or no variance, without touching
the result of any other vertex. With `skip_missing=True` a subject non-finite at a vertex
is left out there instead (the mean and the halves use the subjects that have data, as the
score pipeline's subject mean does), so one subject's bad vertex costs that subject only;
the vertex is NaN where fewer than 2 subjects remain. `others_reliability` and
`subject_max_r` turn a finished ceiling into per-subject ceilings (host-side NumPy on (V,)
and (S, V) results; their subject count may be per vertex).
"""
from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from assocjax.stats import fisher_z_mean, pearson_r, spearman_brown
from .numerics import exact_matmuls


def _check_y(y_SNV, name: str = "y_SNV") -> jnp.ndarray:
    y = jnp.asarray(y_SNV)
    if y.ndim != 3:
        raise ValueError(f"{name} must be (subjects, TRs, vertices); got shape {y.shape}")
    if y.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 subjects for a noise ceiling; got shape {y.shape}")
    # Half precision would swamp small reliabilities in rounding error; ints are not data.
    return y.astype(jnp.promote_types(y.dtype, jnp.float32))


def _zero_nonfinite(y_SNV: jnp.ndarray, skip_missing: bool = False) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """(y with non-finite columns zeroed, has_SV: the subjects counted at each vertex, bad_V).

    Every reduction here is per vertex, so NaN/Inf would stay in its own column anyway;
    zeroing makes that hold whatever XLA does to the reductions, and lets bad vertices
    be set NaN by rule instead of by however inf - inf happens to propagate."""
    finite_SV = jnp.all(jnp.isfinite(y_SNV), axis=1)
    if skip_missing:  # a subject's bad column is left out; the vertex needs 2 subjects
        has_SV = finite_SV
        bad_V = has_SV.sum(0) < 2
    else:
        bad_V = ~jnp.all(finite_SV, axis=0)
        has_SV = jnp.broadcast_to(~bad_V, finite_SV.shape)
    return jnp.where(has_SV[:, None, :], y_SNV, 0.0), has_SV, bad_V


@exact_matmuls
@partial(jax.jit, static_argnames=("n_subjects", "n_splits"))
def draw_splits(n_subjects: int, n_splits: int, seed: int | jnp.ndarray = 0) -> jnp.ndarray:
    """(n_splits, n_subjects) int permutations; row[:n_subjects // 2] is half A, the rest half B.

    Split i uses fold_in(key(seed), i), so the first k splits do not depend on n_splits:
    asking for more splits only adds splits.
    """
    key = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.permutation(jax.random.fold_in(key, i), n_subjects))(
        jnp.arange(n_splits)
    )


def split_half_ceiling(
    y_SNV: jnp.ndarray, n_splits: int = 100, seed: int | jnp.ndarray = 0, *, batch_size: int = 8,
    skip_missing: bool = False,
) -> jnp.ndarray:
    """Reliability of the S-subject mean response, per vertex: (V,).

    For each of n_splits random splits (halves of floor(S/2) and ceil(S/2) subjects, drawn
    by `draw_splits(S, n_splits, seed)`), correlate the two half-means per vertex, apply
    Spearman-Brown with factor 2 (each half has about S/2 subjects), and average the
    corrected values over splits in Fisher-z space. For odd S the factor 2 slightly
    over-states the step from (S-1)/2 to S subjects; the bias is small and this is the
    usual convention.

    The highest Pearson r a noise-free model can reach against the group mean is
    sqrt(reliability): use `max_r_from_reliability` before normalising a score.
    NaN for vertices that are non-finite in any subject/TR or constant (`skip_missing`:
    module docstring; a split whose half holds none of a vertex's subjects does not count
    there). Splits are processed `batch_size` at a time, so memory is about
    2 * batch_size * T * V floats.
    """
    return split_half_ceilings(y_SNV, n_splits, seed, n_null=0, batch_size=batch_size, skip_missing=skip_missing)[0]


NULL_STREAM = 2**31 - 1   # far above any split index (--ceiling.n-splits <= 1e5)


def null_shifts(n_trs: int, n_null: int, buffer: int, seed: int = 0) -> jnp.ndarray:
    """(n_null,) circular shifts in [buffer, n_trs - buffer] for the ceiling's null, seeded: drawn from
    fold_in(key(seed), NULL_STREAM), apart from the splits' stream (`draw_splits` folds in 0, 1, ...)."""
    if n_trs - 2 * buffer < 1:
        raise ValueError(f"--ceiling.null-buffer {buffer} leaves no circular shift of {n_trs} TRs: "
                         f"it must be below {n_trs // 2}")
    key = jax.random.fold_in(jax.random.key(seed), NULL_STREAM)
    return jax.random.randint(key, (n_null,), buffer, n_trs - buffer + 1)


def _shifted_r(a_TV: jnp.ndarray, b_TV: jnp.ndarray, shifts_K: jnp.ndarray) -> jnp.ndarray:
    """(K, V) Pearson r between a and b circularly shifted by each of shifts_K TRs, all shifts at
    once through one FFT cross-correlation (T log T per vertex instead of K x T); NaN where a or b
    is flat or NaN."""
    T = a_TV.shape[0]
    a = a_TV - a_TV.mean(0)
    b = b_TV - b_TV.mean(0)
    denom = jnp.sqrt(jnp.sum(a * a, 0) * jnp.sum(b * b, 0))
    cc_TV = jnp.fft.irfft(jnp.fft.rfft(a, axis=0) * jnp.conj(jnp.fft.rfft(b, axis=0)), n=T, axis=0)
    return jnp.where(denom > 0, cc_TV[shifts_K] / jnp.where(denom > 0, denom, 1.0), jnp.nan)


def _z(r):
    """Fisher z as `fisher_z_mean` takes it (clipped off +-1)."""
    return jnp.arctanh(jnp.clip(r, -1 + 1e-7, 1 - 1e-7))


@exact_matmuls
@partial(jax.jit, static_argnames=("n_splits", "n_null", "buffer", "batch_size", "skip_missing"))
def split_half_ceilings(
    y_SNV: jnp.ndarray, n_splits: int = 100, seed: int | jnp.ndarray = 0, *, n_null: int = 100, buffer: int = 20,
    batch_size: int = 8, skip_missing: bool = False,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """(split_half, half_r, p), each (V,), from one pass over the same splits.

    split_half: `split_half_ceiling`'s reliability (it is this function's first output).
    half_r: the paper's "half of the subjects predict the other half": Pearson r between the two
        half-means, Fisher-z averaged over the splits, no Spearman-Brown step (a ceiling on the r scale
        for a half-sized group; docs/ceiling.md says why this is the correlation and not a ridge).
    p: one-sided p of "the halves agree" (r > 0) against a circular-shift null, on the first split:
        half B's mean circularly shifted against half A's by each of n_null shifts (`null_shifts`, at
        least `buffer` TRs from 0), which keeps each half-mean's autocorrelation (AR noise, drifts) and
        breaks only their alignment; p is the normal tail of the split's Fisher z against the null draws'
        mean and SD (parametric, so a hundred draws reach the small p an FDR over ~1e5 vertices needs).
        One split, not the split average: the average over splits at lag 0 counts each pair of listeners
        once, a shifted one counts (s, s') and (s', s) apart, so its null is too narrow (measured: 9-10 % of
        white-noise vertices below p 0.05, 12 % on AR(1) noise); one split's lag-0 and shifted r count the same pairs.
        NaN where the ceiling is NaN; all NaN when n_null is 0.
    Memory: `split_half_ceiling`'s, and about 5 rows of T x V floats for the one split's FFT.
    """
    y = _check_y(y_SNV)
    if n_splits < 1:
        raise ValueError(f"n_splits must be >= 1; got {n_splits}")
    y, has_SV, bad_V = _zero_nonfinite(y, skip_missing)
    S, T, V = y.shape
    n_a = S // 2
    perms = draw_splits(S, n_splits, seed)
    has = has_SV.astype(y.dtype)

    def halves(perm_S):
        in_a = jnp.zeros(S, bool).at[perm_S[:n_a]].set(True)

        def half_mean(in_S, n):
            # Weighted sums instead of gathers: no (S/2, T, V) copies. HIGHEST keeps GPUs from using TF32,
            # whose ~1e-3 error is as large as the effects being measured. Where a subject of the half lacks
            # data the sum is rescaled to the ones present (a factor of exactly 1 elsewhere, so complete
            # vertices are unchanged bit for bit).
            w = in_S.astype(y.dtype)
            total = jnp.tensordot(w / n, y, axes=1, precision=lax.Precision.HIGHEST)
            present_V = w @ has
            return total * jnp.where(present_V > 0, n / jnp.where(present_V > 0, present_V, 1.0), jnp.nan)
        return half_mean(in_a, n_a), half_mean(~in_a, S - n_a)

    # Pad to whole batches with repeated splits (dropped below): lax.map would otherwise
    # compile a second copy of the body for the remainder, doubling compile time.
    bs = min(batch_size, n_splits)
    padded = jnp.concatenate([perms, perms[: -n_splits % bs]])
    r_IV = lax.map(lambda perm: pearson_r(*halves(perm)), padded, batch_size=bs)[:n_splits]
    # Zeroed vertices are constant, so pearson_r already gives NaN; stating it keeps the
    # rule independent of pearson_r's flatness threshold.
    rel = jnp.where(bad_V, jnp.nan, fisher_z_mean(spearman_brown(r_IV, 2.0), axis=0))
    half_r = jnp.where(bad_V, jnp.nan, fisher_z_mean(r_IV, axis=0))
    if not n_null:
        return rel, half_r, jnp.full(V, jnp.nan, y.dtype)
    a, b = halves(perms[0])
    null_KV = _z(_shifted_r(a, b, null_shifts(T, n_null, buffer, seed)))
    t = (_z(r_IV[0]) - null_KV.mean(0)) / jnp.std(null_KV, axis=0, ddof=1)
    return rel, half_r, jnp.where(jnp.isfinite(half_r), jax.scipy.stats.norm.sf(t), jnp.nan)


def max_r_from_reliability(rel: jnp.ndarray) -> jnp.ndarray:
    """Highest Pearson r a noise-free model can reach against the group mean: sqrt(rel).

    A negative reliability means no reproducible signal; its ceiling is undefined (NaN),
    not 0, so that normalising by it cannot silently give inf or 0.
    """
    rel = jnp.asarray(rel)
    return jnp.where(rel >= 0, jnp.sqrt(jnp.clip(rel, 0.0)), jnp.nan)


def others_reliability(split_half_V: np.ndarray, n_subjects) -> np.ndarray:
    """(V,) reliability of the mean of S-1 subjects, from the S-subject split-half reliability:
    a single subject's reliability by inverting Spearman-Brown, then Spearman-Brown up to S-1.
    n_subjects: S, or (V,) the subjects counted at each vertex (`skip_missing`)."""
    s = np.asarray(n_subjects, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        one = split_half_V / (s - (s - 1) * split_half_V)
        return ((s - 1) * one / (1 + (s - 2) * one)).astype(np.float32)


def subject_max_r(split_half_V: np.ndarray, loso_SV: np.ndarray, n_subjects=None) -> np.ndarray:
    """(S, V) the r a noise-free model reaches against each subject: its leave-one-out ISC
    divided by the max r of the other subjects' mean (`others_reliability`; n_subjects: as
    there, default all of loso's)."""
    others = others_reliability(split_half_V, loso_SV.shape[0] if n_subjects is None else n_subjects)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(others > 0, loso_SV / np.sqrt(np.where(others > 0, others, 1.0)), np.nan).astype(np.float32)


@exact_matmuls
@partial(jax.jit, static_argnames=("batch_size", "skip_missing"))
def loso_isc(y_SNV: jnp.ndarray, *, batch_size: int = 8, skip_missing: bool = False) -> jnp.ndarray:
    """Leave-one-subject-out inter-subject correlation: (S, V).

    Entry [s, v] is Pearson r between subject s and the mean of the other S-1 subjects.
    Average over subjects with `fisher_z_mean(isc_SV, axis=0)`, not a plain mean: r is
    bounded and skewed, and z-averaging is what the split-half ceiling uses too.
    NaN for vertices that are non-finite in any subject/TR or constant (`skip_missing`:
    module docstring; then also NaN for a subject without data at the vertex).
    """
    y = _check_y(y_SNV)
    y, has_SV, bad_V = _zero_nonfinite(y, skip_missing)
    total_NV = jnp.sum(y, axis=0)
    others_SV = has_SV.sum(0) - has_SV   # S - 1 where every subject has data
    isc_SV = lax.map(lambda a: pearson_r(a[0], (total_NV - a[0]) / a[1]), (y, others_SV.astype(y.dtype)),
                     batch_size=min(batch_size, y.shape[0]))
    return jnp.where(bad_V[None, :] | ~has_SV, jnp.nan, isc_SV)


def normalized_score(r: jnp.ndarray, ceiling: jnp.ndarray, min_ceiling: float = 0.05) -> jnp.ndarray:
    """r / ceiling, with NaN where the ceiling is NaN, <= 0 or < min_ceiling.

    `ceiling` must be on r's scale: for a Pearson r against the group mean pass
    `max_r_from_reliability(reliability)` (CeilingResult.max_r). Dividing by a tiny or
    negative ceiling gives huge or sign-flipped ratios that mean nothing, so those vertices
    are dropped rather than clipped. Ratios above 1 are kept: the ceiling is itself an
    estimate, and sampling noise can put a good model above it.
    """
    r = jnp.asarray(r)
    ceiling = jnp.asarray(ceiling)
    ok = (ceiling > 0) & (ceiling >= min_ceiling)  # False for NaN as well
    return jnp.where(ok, r / jnp.where(ok, ceiling, 1.0), jnp.nan)


@partial(
    jax.tree_util.register_dataclass,
    data_fields=["split_half", "max_r", "loso_isc_mean", "seed"],
    meta_fields=["n_subjects", "n_splits", "min_ceiling"],
)
@dataclasses.dataclass(frozen=True)
class CeilingResult:
    """Noise ceiling of one dataset; a pytree, so it passes through jit/vmap.

    split_half: (V,) reliability of the S-subject mean (SB-corrected split-half r).
    max_r: (V,) sqrt(split_half), the Pearson r ceiling for scores against the group mean.
    loso_isc_mean: (V,) Fisher-z mean over subjects of the leave-one-out ISC.
    seed: the seed the splits were drawn from (rerun with it to reproduce them).
    """

    split_half: jnp.ndarray
    max_r: jnp.ndarray
    loso_isc_mean: jnp.ndarray
    seed: jnp.ndarray
    n_subjects: int
    n_splits: int
    min_ceiling: float

    def normalize(self, r: jnp.ndarray) -> jnp.ndarray:
        """Score r (Pearson r against the group mean) as a fraction of max_r."""
        return normalized_score(r, self.max_r, self.min_ceiling)


def noise_ceiling(
    y_SNV: jnp.ndarray, n_splits: int = 100, seed: int | jnp.ndarray = 0, min_ceiling: float = 0.05
) -> CeilingResult:
    """Split-half reliability, its Pearson-r ceiling and the mean LOSO ISC in one result."""
    split_half = split_half_ceiling(y_SNV, n_splits=n_splits, seed=seed)
    return CeilingResult(
        split_half=split_half,
        max_r=max_r_from_reliability(split_half),
        loso_isc_mean=fisher_z_mean(loso_isc(y_SNV), axis=0),
        seed=jnp.asarray(seed),
        n_subjects=int(jnp.shape(y_SNV)[0]),
        n_splits=n_splits,
        min_ceiling=min_ceiling,
    )
