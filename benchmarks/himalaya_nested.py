"""The nested brain-score procedure a researcher writes with himalaya, as the peer of
`assocjax.ridge.brain_score` (reused by the ridge and pipeline benchmarks).

For each outer fold: z-score the features with the outer-training rows' statistics, fit
`himalaya.kernel_ridge.KernelRidgeCV` (per-target alphas chosen on the same inner folds,
Pearson r as the CV score, intercept fitted) on the outer-training rows, predict the held-out
rows, and take Pearson r per target. Folds come from `assocjax.ridge.nested_folds`, so both
libraries see identical (buffered) training and test rows.
"""
from __future__ import annotations

import numpy as np


def himalaya_brain_score(x_NP, y_NT, folds, alphas, backend: str = "numpy", targets_batch: int | None = None,
                         standardize: bool = True) -> dict:
    """-> dict(r_folds (K, T), r (T,) over the concatenated held-out predictions,
    best_alphas (K, T), predictions (N, T)); x_NP float32 (N, P), y_NT float32 (N, T)."""
    from himalaya.backend import set_backend
    from himalaya.kernel_ridge import KernelRidgeCV
    from himalaya.scoring import correlation_score

    backend_module = set_backend(backend, on_error="raise")
    to_np = lambda a: np.asarray(backend_module.to_numpy(a))  # noqa: E731
    params = dict(score_func=correlation_score, n_targets_batch=targets_batch, n_targets_batch_refit=targets_batch)
    preds = np.full(y_NT.shape, np.nan, dtype=np.float32)
    r_folds, best = [], []
    for (train, test), inner in zip(folds.outer, folds.inner):
        x_tr, x_te = x_NP[train], x_NP[test]
        if standardize:
            mean, std = x_tr.mean(0), x_tr.std(0)
            std[std == 0] = 1.0
            x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
        cv = [(np.searchsorted(train, a), np.searchsorted(train, b)) for a, b in inner]  # inner folds, local rows
        model = KernelRidgeCV(alphas=alphas, kernel="linear", cv=cv, fit_intercept=True, solver_params=params)
        model.fit(x_tr, y_NT[train])
        pred = to_np(model.predict(x_te)).astype(np.float32)
        preds[test] = pred
        r_folds.append(to_np(correlation_score(y_NT[test], pred)))
        best.append(to_np(model.best_alphas_))
    tested = ~np.isnan(preds[:, 0])
    set_backend("numpy")
    return dict(r_folds=np.stack(r_folds), r=_pearson(preds[tested], y_NT[tested]), best_alphas=np.stack(best),
                predictions=preds)


def _pearson(a, b):
    a = a - a.mean(0)
    b = b - b.mean(0)
    return (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))
