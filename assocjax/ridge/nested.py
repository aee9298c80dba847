"""Nested cross-validated brain scores: outer folds hold out whole stories, inner grouped
CV on the remaining stories picks each target's alpha, and the score is the Pearson r
between held-out predictions and the measured response."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import numpy as np

from ..alignment import zscore_apply, zscore_fit
from ..stats import pearson_r
from .estimator import DEFAULT_ALPHAS, RidgeCV
from .folds import grouped_kfold


@dataclasses.dataclass(frozen=True)
class BrainScore:
    """r: (..., *targets) over the concatenated held-out predictions (all stories);
    r_folds: (n_outer, ..., *targets) per held-out fold; best_alphas: (n_outer, ..., *targets);
    `...` is the layer axis when X was stacked (L, N, P)."""

    r: np.ndarray
    r_folds: np.ndarray
    best_alphas: np.ndarray
    test_groups: tuple[tuple, ...]
    solver: str
    n_masked_targets: int
    predictions: np.ndarray | None = None


def brain_score(X, Y, groups: Sequence, alphas: Sequence[float] = DEFAULT_ALPHAS, outer_folds: int | None = None,
                inner_folds: int = 5, standardize: bool = True, return_predictions: bool = False,
                **ridge_kwargs) -> BrainScore:
    """Brain score with story-level nesting.

    outer_folds: number of grouped outer folds; None holds out one story (group) at a time.
    inner_folds: grouped folds over the outer-training stories (capped at their number).
    standardize: z-score features with means/stds of the outer-training rows only, so no
        statistic of a held-out story reaches the model. (Inner validation stories do share
        the outer-training scaler; that affects only alpha choice, never the test score.)
    Extra keyword arguments go to `RidgeCV` (scoring, solver, target_chunk, ...).
    """
    X = np.asarray(X)
    Y = np.asarray(Y)
    groups = np.asarray(groups)
    n = X.shape[-2]
    if Y.shape[:1] != (n,) or groups.shape != (n,):
        raise ValueError(f"X {X.shape}, Y {Y.shape} and groups {groups.shape} must share n_samples on their sample axis")
    n_groups = len(np.unique(groups))
    outer = grouped_kfold(groups, n_groups if outer_folds is None else outer_folds)
    target_shape = Y.shape[1:]
    y_NT = Y.reshape(n, -1)
    lead = X.shape[:-2]
    preds = np.full(lead + y_NT.shape, np.nan, dtype=np.float32)
    r_folds, alphas_folds, test_groups = [], [], []
    solver, n_masked = None, 0
    for train, test in outer:
        x_tr, x_te = X[..., train, :], X[..., test, :]
        if standardize:
            x_tr, x_te = _standardize(x_tr, x_te)
        inner = min(inner_folds, len(np.unique(groups[train])))
        est = RidgeCV(alphas=alphas, cv=inner, **ridge_kwargs).fit(x_tr, y_NT[train], groups[train])
        pred = est.predict(x_te)
        preds[..., test, :] = pred
        r_folds.append(_pearson(pred, y_NT[test]))
        alphas_folds.append(est.best_alphas_)
        test_groups.append(tuple(np.unique(groups[test]).tolist()))
        solver, n_masked = est.solver_, est.n_masked_targets_
    r = _pearson(preds, y_NT)
    shape = lambda a: a.reshape(a.shape[:-1] + target_shape)  # noqa: E731
    return BrainScore(
        r=shape(r), r_folds=shape(np.stack(r_folds)), best_alphas=shape(np.stack(alphas_folds)),
        test_groups=tuple(test_groups), solver=solver, n_masked_targets=n_masked,
        predictions=shape(preds) if return_predictions else None,
    )


def _standardize(x_tr, x_te):
    fit = zscore_fit if x_tr.ndim == 2 else jax.vmap(zscore_fit)
    apply = zscore_apply if x_tr.ndim == 2 else jax.vmap(zscore_apply)
    mean, std = fit(x_tr)
    return np.asarray(apply(x_tr, mean, std)), np.asarray(apply(x_te, mean, std))


def _pearson(pred, y_NT):
    y = y_NT.astype(pred.dtype)
    if pred.ndim == 2:
        return np.asarray(pearson_r(pred, y))
    return np.asarray(jax.vmap(lambda p: pearson_r(p, y))(pred))
