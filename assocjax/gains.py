"""Score changes between two conditions of the same subjects: the paper's F and M scores.

F = R(X_mem) - R(X): the change of a brain score when the model reads the story with
    associative memory (an augmentation) instead of the plain story.
M = (R(X_sft) - R(X)) / R(X): the relative change after instruction tuning, always
    reported beside the absolute change; a ratio over a baseline near zero means nothing,
    so rows whose baseline group score is below `min_base` are flagged.

Statistics are over subjects, paired (each subject's region score in both conditions):
a percentile bootstrap of subjects (one draw of cohorts shared by every region, layer and
condition), a two-sided sign-flip permutation test of the mean paired difference, and
Benjamini-Hochberg FDR over the tested rows of one comparison; all from `assocjax.stats`.
"""
from __future__ import annotations

import warnings

import numpy as np

from .stats import bootstrap_indices, bootstrap_means, sign_flip_pvalues


def _nanmean(x, axis=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def paired_change(base_SR: np.ndarray, new_SR: np.ndarray, n_boot: int = 1000, ci: float = 0.95, seed: int = 0,
                  n_perm: int = 10000, min_base: float = 0.05) -> dict[str, np.ndarray]:
    """Per column (region x layer ...): the subject-mean scores of both conditions, the
    change F = new - base with its paired subject-bootstrap CI and sign-flip p, and the
    relative change M = (mean new - mean base) / mean base with its bootstrap CI (the same
    draws), NaN with `m_flag` set where mean base < min_base. Subjects missing in either
    condition (NaN) are left out of that column.
    """
    base, new = np.asarray(base_SR, np.float64), np.asarray(new_SR, np.float64)
    if base.shape != new.shape or base.ndim != 2:
        raise ValueError(f"paired scores must be (subjects, columns) of one shape; got {base.shape} and {new.shape}")
    both = np.isfinite(base) & np.isfinite(new)
    base, new = np.where(both, base, np.nan), np.where(both, new, np.nan)
    d = new - base
    idx = bootstrap_indices(base.shape[0], n_boot, seed)
    boot_base, boot_new = bootstrap_means(base, idx), bootstrap_means(new, idx)   # (B, R)
    lo_q, hi_q = (1 - ci) / 2, (1 + ci) / 2
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        f_lo, f_hi = np.nanquantile(boot_new - boot_base, [lo_q, hi_q], axis=0)
        mean_base, mean_new = _nanmean(base), _nanmean(new)
        flag = ~(mean_base >= min_base)
        boot_m = (boot_new - boot_base) / np.where(boot_base > 0, boot_base, np.nan)
        m_lo, m_hi = np.nanquantile(boot_m, [lo_q, hi_q], axis=0)
        m = (mean_new - mean_base) / mean_base
    nan_if = lambda a: np.where(flag, np.nan, a)  # noqa: E731
    return dict(base=mean_base, new=mean_new, change=_nanmean(d), change_ci_low=f_lo, change_ci_high=f_hi,
                p=sign_flip_pvalues(d, n_perm, seed), relative=nan_if(m), relative_ci_low=nan_if(m_lo),
                relative_ci_high=nan_if(m_hi), base_too_small=flag, n_subjects=both.sum(0))
