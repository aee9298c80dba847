"""Every statistic of the package, in one place (as himalaya keeps its scores in `scoring.py`).

Per-vertex scores (pure JAX, jit-able; reduce over the leading time axis, so they vmap over
layers, splits or subjects): `pearson_r`, `r2_score`, `fisher_z_mean`, `spearman_brown`.

Statistics over subjects (host-side NumPy; a few subjects x regions, float64): the subject
bootstrap (`bootstrap_indices`, `draw_counts`, `bootstrap_means`, `bootstrap_mean_ci`), the paired
sign-flip permutation test (`sign_flip_pvalues`) and Benjamini-Hochberg FDR (`bh_fdr`).

Statistics over stories and subjects (several stories, crossed and unbalanced: a story's listeners
differ, some subjects heard several): the two-level bootstrap (`two_level_draws`, `two_level_means`)
and its studentized CI and p (`two_level_ci_p`).
"""
from __future__ import annotations

import itertools
import warnings

import jax.numpy as jnp
import numpy as np


def pearson_r(a_NX: jnp.ndarray, b_NX: jnp.ndarray, mask_N: jnp.ndarray | None = None) -> jnp.ndarray:
    """Pearson r per column between a_NX and b_NX (time on axis 0).

    mask_N selects the rows that count (padding rows are excluded). A column that is
    constant in either input has no defined correlation and gets NaN, never 0 or inf.
    """
    if mask_N is None:
        mask_N = jnp.ones(a_NX.shape[0], dtype=a_NX.dtype)
    w = mask_N.astype(a_NX.dtype)[:, None]
    n = jnp.sum(w)
    a = (a_NX - jnp.sum(a_NX * w, axis=0) / n) * w
    b = (b_NX - jnp.sum(b_NX * w, axis=0) / n) * w
    ss_a = jnp.sum(a * a, axis=0)
    ss_b = jnp.sum(b * b, axis=0)
    denom = jnp.sqrt(ss_a * ss_b)
    # A constant column still has a spread of rounding noise after centring (about eps *
    # |value| per entry): below (16 eps)^2 of its raw power it counts as constant.
    tiny = (16 * jnp.finfo(a_NX.dtype).eps) ** 2
    flat = (denom <= 0) | (ss_a <= tiny * jnp.sum(a_NX**2 * w, axis=0)) | (ss_b <= tiny * jnp.sum(b_NX**2 * w, axis=0))
    return jnp.where(flat, jnp.nan, jnp.sum(a * b, axis=0) / jnp.where(flat, 1.0, denom))


def r2_score(y_NT, pred_NT):
    """Coefficient of determination per target (NaN for constant targets)."""
    ss_tot = jnp.sum((y_NT - y_NT.mean(0)) ** 2, axis=0)
    ss_res = jnp.sum((y_NT - pred_NT) ** 2, axis=0)
    return jnp.where(ss_tot > 0, 1 - ss_res / jnp.where(ss_tot > 0, ss_tot, 1.0), jnp.nan)


def fisher_z_mean(r_SV: jnp.ndarray, axis: int = 0) -> jnp.ndarray:
    """Average correlations in Fisher-z space (NaNs ignored); values are clipped off +-1."""
    r = jnp.clip(r_SV, -1 + 1e-7, 1 - 1e-7)
    return jnp.tanh(jnp.nanmean(jnp.arctanh(r), axis=axis))


def spearman_brown(r: jnp.ndarray, factor: float = 2.0) -> jnp.ndarray:
    """Reliability of a measure `factor` times longer than the one that gave r."""
    return factor * r / (1 + (factor - 1) * r)


def bootstrap_indices(n_subjects: int, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """(n_boot, n_subjects) subjects drawn with replacement; one draw serves every region,
    layer and condition, so they are compared on the same resampled cohorts."""
    return np.random.default_rng(seed).integers(0, n_subjects, size=(n_boot, n_subjects))


def draw_counts(idx_IS: np.ndarray) -> np.ndarray:
    """(I, S) how often each of S items is drawn in each resample of (I, S) indices."""
    B, S = idx_IS.shape
    return np.bincount((idx_IS + S * np.arange(B)[:, None]).ravel(), minlength=B * S).reshape(B, S)


def bootstrap_means(values_SR, idx_IS: np.ndarray) -> np.ndarray:
    """(B, R) mean over each resampled cohort of the finite subjects, per column (NaN where a
    resample holds no finite subject)."""
    m = np.asarray(values_SR, dtype=np.float64)
    counts_IS = draw_counts(idx_IS)   # draws as counts, so a resample's mean is one matmul over all columns
    ok = np.isfinite(m)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts_IS @ np.where(ok, m, 0.0)) / (counts_IS @ ok)


def bootstrap_mean_ci(means_SR, idx_IS: np.ndarray, ci: float = 0.95):
    """(mean over subjects, CI low, CI high, finite subjects) per column: the percentile CI of
    `bootstrap_means`. NaN subjects (e.g. no finite vertex in a region) are skipped, in the
    estimate and inside each resample."""
    m = np.asarray(means_SR, dtype=np.float64)
    boot_IR = bootstrap_means(m, idx_IS)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanquantile(boot_IR, [(1 - ci) / 2, (1 + ci) / 2], axis=0)
        return np.nanmean(m, axis=0), lo, hi, np.isfinite(m).sum(0)


def sign_flip_pvalues(d_SR: np.ndarray, n_perm: int = 10000, seed: int = 0) -> np.ndarray:
    """(R,) two-sided p of H0 "paired differences are symmetric around 0", per column.

    Statistic: |sum of the finite differences| (the mean with the subject count fixed per
    column; NaN subjects contribute 0 under every flip). Exact over all 2^S sign patterns
    when 2^S <= n_perm, else n_perm seeded random patterns with p = (k + 1) / (n_perm + 1).
    """
    d = np.asarray(d_SR, np.float64)
    n_sub = d.shape[0]
    d0 = np.where(np.isfinite(d), d, 0.0)
    if 2**n_sub <= n_perm:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n_sub)))
        exact = True
    else:
        signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(n_perm, n_sub))
        exact = False
    observed = np.abs(d0.sum(0))
    null = np.abs(signs @ d0)                                   # (P, R)
    # a flipped sum equal to the observed one (up to rounding) counts as extreme
    k = (null >= observed - 1e-12 * np.maximum(1.0, observed)).sum(0)
    p = k / len(signs) if exact else (k + 1) / (len(signs) + 1)
    return np.where(np.isfinite(d).sum(0) > 0, p, np.nan)


def bh_fdr(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q); NaN entries stay NaN and do not count."""
    p = np.asarray(p, np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return q
    order = np.argsort(p[ok])
    ranked = p[ok][order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(1.0, np.minimum.accumulate(ranked[::-1])[::-1])
    out = np.empty(m)
    out[order] = adjusted
    q[ok] = out
    return q


def two_level_draws(n_subjects: int, n_stories: int, n_boot: int = 1000, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(stories_IG, subjects_IS): how often each story and each subject is drawn in each of n_boot
    resamples: stories with replacement, then subjects with replacement, independently (the
    pigeonhole bootstrap of crossed random effects, Owen 2007). A drawn subject counts on the drawn
    stories it heard, each as often as the story was drawn, so its own effect stays shared by its
    stories (drawing listeners anew in each story would make one subject's stories independent
    people and understate the subject variance). One draw serves every region, layer and condition."""
    rng = np.random.default_rng(seed)
    stories_IG = draw_counts(rng.integers(0, n_stories, size=(n_boot, n_stories)))
    subjects_IS = draw_counts(rng.integers(0, n_subjects, size=(n_boot, n_subjects)))
    return stories_IG.astype(np.float64), subjects_IS.astype(np.float64)


def two_level_means(values_SXG, weights_G, stories_IG: np.ndarray, subjects_IS: np.ndarray) -> np.ndarray:
    """(I, X) the statistic of each resample: per subject its weighted (TR-weighted) mean over the
    drawn stories it heard with a finite score, each story counted as often as drawn; then the mean of
    those over the drawn subjects, each counted as often as drawn (NaN where a resample has none).
    values_SXG: each subject's score per column and story (NaN where not heard). All-ones draws give
    the estimate itself; `stories_IG = 1 - eye(G)` with all-ones subjects leaves each story out."""
    v = np.asarray(values_SXG, np.float64)
    S, X, G = v.shape
    w_G = np.asarray(weights_G, np.float64)
    ok_SXG = np.isfinite(v)
    cell_s, cell_g = np.nonzero(ok_SXG.any(1))                      # (subject, story) cells with a score
    ok_XC = ok_SXG[cell_s, :, cell_g].T
    wv_CX = np.where(ok_SXG, v, 0.0)[cell_s, :, cell_g] * w_G[cell_g, None]
    out = np.full((stories_IG.shape[0], X), np.nan)
    # A subject's mean over its drawn stories divides by its drawn weight, which depends on the column
    # only through which of its cells are finite there: columns of one finite pattern (most share
    # one) then reduce to a single matmul, sum over cells of (subject draws / its drawn weight) x
    # (story draws) x (weight x score).
    patterns_PC, column_pattern = np.unique(ok_XC, axis=0, return_inverse=True)
    for k, ok_C in enumerate(patterns_PC):
        cols = np.flatnonzero(column_pattern.ravel() == k)
        den_IS = np.zeros((stories_IG.shape[0], S))
        np.add.at(den_IS.T, cell_s[ok_C], (stories_IG[:, cell_g[ok_C]] * w_G[cell_g[ok_C]]).T)
        has = den_IS > 0
        coef_IS = np.where(has, subjects_IS / np.where(has, den_IS, 1.0), 0.0)
        a_IC = np.where(ok_C, coef_IS[:, cell_s] * stories_IG[:, cell_g], 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, cols] = (a_IC @ wv_CX[:, cols]) / (subjects_IS * has).sum(1)[:, None]
    return out


def two_level_ci_p(estimate_X, boot_IX: np.ndarray, n_stories_X, ci: float = 0.95):
    """(CI low, CI high, two-sided p) per column, studentized: estimate +- t * the two-level bootstrap
    SD, and p of |estimate| / SD against Student's t with (stories - 1) degrees of freedom. The story
    is the coarsest level, so its count sets the df: with 3 stories the t quantile is 4.3, not 1.96 (a
    claim from few stories generalises to stories only as far as that allows); NaN below 2 stories.
    The percentile interval of a bootstrap over few stories is too narrow (its spread is that of
    G stories' (G-1)/G and lumpy), hence the t reference; its false-positive rate is measured in
    tests/test_story_level.py."""
    from scipy.stats import t as student_t   # scipy comes with nilearn; loaded only when several stories

    est = np.asarray(estimate_X, np.float64)
    df = np.asarray(n_stories_X, np.float64) - 1
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        sd = np.nanstd(boot_IX, axis=0, ddof=1)
        valid = (df >= 1) & np.isfinite(est) & (sd > 0)
        df = np.where(valid, df, 1.0)
        half = student_t.ppf((1 + ci) / 2, df) * sd
        p = 2 * student_t.sf(np.abs(est) / np.where(valid, sd, 1.0), df)
    nan_if = lambda a: np.where(valid, a, np.nan)  # noqa: E731
    return nan_if(est - half), nan_if(est + half), nan_if(p)


def two_level_mean_ci(values_SXG, weights_G, estimate_X, n_boot: int = 1000, ci: float = 0.95, seed: int = 0):
    """(CI low, CI high, two-sided p) of the mean over subjects of their weighted story means
    (`estimate_X`), from the two-level bootstrap (`two_level_draws`, `two_level_means`) studentized
    by `two_level_ci_p`: the one CI of a headline combined over stories (scores, the CV best layer,
    the partition)."""
    v = np.asarray(values_SXG, np.float64)
    boot_IX = two_level_means(v, weights_G, *two_level_draws(v.shape[0], v.shape[-1], n_boot, seed))
    return two_level_ci_p(estimate_X, boot_IX, np.isfinite(v).any(0).sum(-1), ci)
