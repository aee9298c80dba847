"""Plain float64 NumPy ridge with grouped CV: the reference the JAX engine must match."""
import numpy as np


def ridge_weights(x, y, alpha):
    return np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ y)


def pearson(a, b):
    a = a - a.mean(0)
    b = b - b.mean(0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(0) / den, np.nan)


def r2(y, pred):
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ss_tot > 0, 1 - ((y - pred) ** 2).sum(0) / ss_tot, np.nan)


def fit_predict(xtr, ytr, xte, alpha, fit_intercept=True):
    mx = xtr.mean(0) if fit_intercept else 0.0
    my = ytr.mean(0) if fit_intercept else 0.0
    w = ridge_weights(xtr - mx, ytr - my, alpha)
    return (xte - mx) @ w + my, w


def ridge_cv(x, y, folds, alphas, score="r", fit_intercept=True):
    """Returns (cv_scores (A, T), best_alphas (T,), coef (P, T), intercept (T,))."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    alphas = np.sort(np.asarray(alphas, np.float64))
    scores = np.zeros((len(folds), len(alphas), y.shape[1]))
    fn = pearson if score == "r" else r2
    for k, (tr, te) in enumerate(folds):
        for a, alpha in enumerate(alphas):
            pred, _ = fit_predict(x[tr], y[tr], x[te], alpha, fit_intercept)
            scores[k, a] = fn(y[te], pred) if score == "r2" else fn(pred, y[te])
    cv = np.nanmean(scores, axis=0)
    flipped = np.where(np.isnan(cv), -np.inf, cv)[::-1]
    best = len(alphas) - 1 - np.argmax(flipped, axis=0)
    coef = np.zeros((x.shape[1], y.shape[1]))
    intercept = np.zeros(y.shape[1])
    mx = x.mean(0) if fit_intercept else np.zeros(x.shape[1])
    my = y.mean(0) if fit_intercept else np.zeros(y.shape[1])
    for a in np.unique(best):
        cols = best == a
        coef[:, cols] = ridge_weights(x - mx, y[:, cols] - my[cols], alphas[a])
    intercept = my - mx @ coef
    return cv, alphas[best], coef, intercept
