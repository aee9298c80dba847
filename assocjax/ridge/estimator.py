"""`RidgeCV` and `Ridge`: scikit-learn style shells over the functional core in `solvers`.

The shell only moves data: it builds the folds, decomposes each fold once, then streams
chunks of targets through one compiled call each (CV scores, alpha choice and refit), as
predict, score and coef_ do (`chunks.stream`). Peak memory is set by `target_chunk`. With
several local devices the targets of a chunk are sharded over a 1-D mesh and the
decompositions replicated; every target is solved independently, so sharded and unsharded
results agree. For multi-host runs call
`jax.distributed.initialize()` first; nothing else changes.

Both follow scikit-learn's estimator protocol (`get_params` / `set_params`, constructor
arguments stored unchanged, fitted attributes ending in `_`, `n_features_in_`, tags, its
input errors and `NotFittedError`, `score` as R^2 averaged over targets), so `clone`,
`Pipeline`, `GridSearchCV` and `check_estimator` work on them. The protocol is implemented
here (`_Params`, `validation`) rather than inherited from `sklearn.base.BaseEstimator`:
importing scikit-learn costs every `import assocjax.ridge` more than a second.
"""
from __future__ import annotations

import inspect
import warnings
from functools import partial
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..stats import pearson_r, r2_score  # r2_score: also re-exported by assocjax.ridge
from . import chunks, solvers
from .folds import Fold, make_folds, pad_folds
from .validation import check_features, check_targets, not_fitted, sklearn_tags
from ..numerics import exact_matmuls

DEFAULT_ALPHAS = tuple(np.logspace(-1, 7, 9).tolist())


def _over_layers(fn):
    """Map a single-design function over a leading layer axis (sequentially: bounded memory)."""

    def mapped(layered, *rest, **kw):
        return jax.lax.map(lambda one: fn(*one, *rest, **kw), layered)

    return mapped


@exact_matmuls
@partial(jax.jit, static_argnames=("solver", "fit_intercept"))
def _prepare_layers(x_LNP, train_KM, test_KE, train_mask_KR, test_mask_KE, *, solver, fit_intercept):
    def one(x):
        folds = solvers.prepare_folds(x, train_KM, test_KE, train_mask_KR, test_mask_KE, solver=solver, fit_intercept=fit_intercept)
        full, mu = solvers.prepare_full(x, solver=solver, fit_intercept=fit_intercept)
        return folds, full, mu

    return jax.lax.map(one, x_LNP)


@exact_matmuls
@partial(jax.jit, static_argnames=("solver", "score", "fit_intercept"))
def _solve_layers(folds_L, full_L, mean_LP, y_NT, alphas_A, *, solver, score, fit_intercept):
    step = partial(solvers.solve_chunk, solver=solver, score=score, fit_intercept=fit_intercept)
    return _over_layers(step)((folds_L, full_L, mean_LP), y_NT, alphas_A)


@exact_matmuls
@partial(jax.jit, static_argnames=("solver", "fit_intercept"))
def _prepare_full_layers(x_LNP, *, solver, fit_intercept):
    return jax.lax.map(lambda x: solvers.prepare_full(x, solver=solver, fit_intercept=fit_intercept), x_LNP)


def _refit_one(full, x_mean_P, y_NT, alpha_1, *, solver, fit_intercept):
    """One design's refit of every target with the same alpha: (Fit, n_masked)."""
    y, finite_T, _ = solvers.clean_targets(y_NT)
    alpha_T = jnp.broadcast_to(alpha_1, y.shape[1:])
    fit = solvers.refit(full, y, x_mean_P, alpha_T, fit_intercept=fit_intercept, solver=solver)
    return solvers.nan_where_masked(fit, finite_T), jnp.sum(~finite_T)


@exact_matmuls
@partial(jax.jit, static_argnames=("solver", "fit_intercept"))
def _refit_layers(full_L, mean_LP, y_NT, alpha_1, *, solver, fit_intercept):
    step = partial(_refit_one, solver=solver, fit_intercept=fit_intercept)
    return _over_layers(step)((full_L, mean_LP), y_NT, alpha_1)


def _check_alphas(alphas, name: str = "alphas"):
    if alphas.ndim != 1 or alphas.size == 0 or np.any(~np.isfinite(alphas)) or np.any(alphas <= 0):
        raise ValueError(f"{name} must be a non-empty 1-D array of finite values > 0; got {alphas}")


def _same(a, b) -> bool:
    try:
        return a is b or bool(a == b)
    except (TypeError, ValueError):  # arrays: == is elementwise
        return False


class _Params:
    """scikit-learn's estimator protocol: the constructor's arguments are the parameters,
    stored under their own names (module docstring)."""

    @classmethod
    def _get_param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values()
                      if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))

    def get_params(self, deep: bool = True) -> dict:
        out = {}
        for name in self._get_param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params().items())
            out[name] = value
        return out

    def set_params(self, **params):
        valid = self._get_param_names()
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}; valid: {', '.join(valid)}")
            if sub:
                getattr(self, name).set_params(**{sub: value})
            else:
                setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        changed = [f"{k}={v!r}" for k, v in self.get_params(deep=False).items() if not _same(v, defaults.get(k))]
        return f"{type(self).__name__}({', '.join(changed)})"


class _RidgeShell(_Params):
    """What both estimators share: streaming targets through one compiled call per chunk,
    and using the fit (coef_, intercept_, predict, score)."""

    _estimator_type = "regressor"  # scikit-learn < 1.6 reads this instead of the tags

    def __sklearn_tags__(self):
        return sklearn_tags()

    def __sklearn_is_fitted__(self) -> bool:
        return "n_features_in_" in self.__dict__

    def _check_fitted(self) -> None:
        if not self.__sklearn_is_fitted__():
            raise not_fitted(self)

    def _begin_fit(self, X, Y, alphas, name: str = "alphas"):
        """Checked inputs -> (x_LNP, y_NT, layered, alphas sorted); forgets an earlier fit."""
        for stale in ("coef_", "dual_coef_", "_x_train", "n_features_in_"):  # a refit may switch solver: no stale weights
            self.__dict__.pop(stale, None)
        X = check_features(X, self)
        Y = check_targets(Y, X.shape[-2], self)
        alphas = np.sort(np.asarray(alphas, dtype=np.float64).ravel())
        _check_alphas(alphas, name)
        if self.scoring not in solvers.SCORES:
            raise ValueError(f"scoring must be one of {solvers.SCORES}, got {self.scoring!r}")
        layered = X.ndim == 3
        x_LNP = X if layered else X[None]
        self._target_shape = Y.shape[1:]
        return x_LNP, Y.reshape(x_LNP.shape[1], -1), layered, alphas

    def _finish_fit(self, x_LNP, mean_LP, solver, weights, y_mean, n_masked, n_targets, layered) -> None:
        self.solver_ = solver
        self.n_masked_targets_ = int(n_masked)
        if n_masked:
            warnings.warn(f"{n_masked} of {n_targets} targets contain NaN/Inf (e.g. medial wall); "
                          "they were left out of the solve and get NaN scores and weights", stacklevel=3)
        self._x_mean, self._y_mean = jax.device_get(mean_LP), y_mean
        if not solvers.SOLVERS[solver].dual:
            self.coef_ = weights
        else:
            self.dual_coef_ = weights
            self._x_train = x_LNP.astype(self.dtype)
        if not layered:
            self._squeeze_layer_axis()
        self._layered = layered
        self.n_features_in_ = x_LNP.shape[-1]  # last: it marks the estimator fitted

    def _stream(self, y_NT, mesh, solve, fetch):
        """Run `solve` over balanced chunks of Y's target columns (`chunks.stream`);
        `fetch(out, used)` -> (arrays with the targets last..., n_masked): the arrays are
        concatenated over chunks, the counts summed."""
        layout = chunks.chunk_layout(y_NT.shape[1], self.target_chunk, n_devices=mesh.size if mesh else 1)
        pieces = [fetch(out, chunk.used) for chunk, out in chunks.stream(
            solve, lambda start, stop: y_NT[:, start:stop], layout, mesh, self.dtype, self.progress,
            "ridge target chunks")]
        arrays = [np.concatenate([pc[i] for pc in pieces], axis=-1) for i in range(len(pieces[0]) - 1)]
        return (*arrays, int(sum(int(pc[-1]) for pc in pieces)))

    def _squeeze_layer_axis(self):
        # Only stored arrays: coef_ is a property in the dual form, and evaluating it here
        # would form the P x T primal weights on every fit.
        for name in ("cv_scores_", "best_alphas_", "coef_", "dual_coef_", "_x_mean", "_y_mean", "_x_train"):
            if name in self.__dict__:
                self.__dict__[name] = self.__dict__[name][0]

    # -- using the fit ---------------------------------------------------------------
    @property
    def coef_(self):
        """Primal weights (..., P, T). In the dual form they are computed on each access
        (X_train_centred.T @ dual_coef_, chunked over targets): P x T can be far larger than
        everything else the fit keeps, so fit never forms them."""
        if "coef_" in self.__dict__:
            return self.__dict__["coef_"]
        if "dual_coef_" not in self.__dict__:
            raise not_fitted(self)
        mesh = chunks.target_mesh(self.shard_targets)
        xc_t = chunks.replicate(np.swapaxes(self._x_train - self._x_mean[..., None, :], -1, -2), mesh)
        return self._by_target_chunks(partial(_matmul, xc_t), lambda cols: self.dual_coef_[..., cols], mesh)

    @coef_.setter
    def coef_(self, value):
        self.__dict__["coef_"] = value

    @property
    def intercept_(self):
        """y_mean - x_mean @ coef_ (zero without fit_intercept); in the dual form computed as
        y_mean - ((X_train - x_mean) @ x_mean) @ dual_coef_, without primal weights."""
        self._check_fitted()
        if not solvers.SOLVERS[self.solver_].dual:
            return self._y_mean - np.einsum("...p,...pt->...t", self._x_mean, self.coef_)
        k_N = np.einsum("...np,...p->...n", self._x_train - self._x_mean[..., None, :], self._x_mean)
        return self._y_mean - np.einsum("...n,...nt->...t", k_N, self.dual_coef_)

    def predict(self, X) -> np.ndarray:
        """Predictions with the fitted per-target alphas, shaped (..., M, *target_shape), in
        X's float precision (float64 for float64 or integer X; computed in `dtype`)."""
        X, mesh = self._checked_test_features(X), chunks.target_mesh(self.shard_targets)
        design = self._test_design(X, mesh)
        pred = self._by_target_chunks(lambda w: _predict_chunk(design, *w), self._weights, mesh)
        pred = pred.astype(np.promote_types(X.dtype, self.dtype), copy=False)
        return pred.reshape(pred.shape[:-1] + self._target_shape)

    def score(self, X, y):
        """R^2 of the predictions averaged uniformly over targets, as scikit-learn's
        regressors score (what `Pipeline`, `GridSearchCV` and `cross_val_score` use); a
        target constant in y counts 1 if predicted exactly, else 0, as there. A float, or
        (L,) with a layer axis. y must be finite, and the mean is NaN if a target was masked
        at fit (NaN weights); per-target scores: `score_per_target`."""
        terms = self._by_scored_chunks(X, y, _r2_terms_chunk, nonfinite="refuse")
        ss_res, ss_tot = terms[..., 0, :], terms[..., 1, :]
        constant = ss_tot == 0
        r2_T = np.where(constant, (ss_res == 0).astype(float), 1 - ss_res / np.where(constant, 1.0, ss_tot))
        r2 = r2_T.mean(axis=-1, dtype=np.float64)
        return float(r2) if r2.ndim == 0 else r2

    def score_per_target(self, X, y) -> np.ndarray:
        """Score of the predictions per target (Pearson r or R^2, as `scoring`), shaped
        (..., *target_shape); NaN for a target that is constant or non-finite in y."""
        out = self._by_scored_chunks(X, y, partial(_score_chunk, scoring=self.scoring), nonfinite="keep")
        return out.reshape(out.shape[:-1] + self._target_shape)

    def _by_scored_chunks(self, X, y, score, nonfinite: str):
        """score(design, weights, y_mean, y_NT) over chunks of targets (predictions for all
        targets are never held at once), concatenated on the target axis."""
        X, mesh = self._checked_test_features(X), chunks.target_mesh(self.shard_targets)
        y_NT = check_targets(y, X.shape[-2], self, nonfinite=nonfinite).reshape(X.shape[-2], -1)
        if y_NT.shape[1] != self._y_mean.shape[-1]:
            raise ValueError(f"y has {y_NT.shape[1]} targets (shape {np.shape(y)}), but {type(self).__name__} was "
                             f"fitted on {self._y_mean.shape[-1]} (target shape {self._target_shape})")
        design = self._test_design(X, mesh)
        return self._by_target_chunks(lambda w_y: score(design, *w_y), lambda cols: (*self._weights(cols), y_NT[:, cols]),
                                      mesh)

    def _checked_test_features(self, X) -> np.ndarray:
        """X for predict / score: fitted first, then as at fit (layer axis, feature count)."""
        self._check_fitted()
        X = check_features(X, self, layered=self._layered)
        name, expected = type(self).__name__, self.n_features_in_
        if X.shape[-1] != expected:
            raise ValueError(f"X has {X.shape[-1]} features, but {name} is expecting {expected} features as input.")
        if self._layered and X.shape[0] != self._x_mean.shape[0]:
            raise ValueError(f"X has {X.shape[0]} layers, but {name} was fitted on {self._x_mean.shape[0]}.")
        return X

    def _test_design(self, X, mesh):
        """The design the weights act on: centred X (primal) or its kernel with the centred
        training rows (dual), (..., M, P or N), on the device(s) of `mesh`."""
        X = np.asarray(X, dtype=self.dtype)
        x_train = self._x_train if solvers.SOLVERS[self.solver_].dual else None
        return _test_design(*chunks.replicate((X, self._x_mean, x_train), mesh))

    def _weights(self, cols):
        weights = self.dual_coef_ if solvers.SOLVERS[self.solver_].dual else self.coef_
        return weights[..., cols], self._y_mean[..., cols]

    def _by_target_chunks(self, solve, read, mesh):
        """solve(read(columns)) over chunks of at most `target_chunk` targets (`chunks.stream`),
        concatenated on the host."""
        layout = chunks.chunk_layout(self._y_mean.shape[-1], self.target_chunk, n_devices=mesh.size if mesh else 1)
        parts = [out[..., :chunk.used] for chunk, out in chunks.stream(
            solve, lambda start, stop: read(slice(start, stop)), layout, mesh, self.dtype)]
        return np.concatenate(parts, axis=-1)


class RidgeCV(_RidgeShell):
    """Ridge regression with one alpha per target chosen by (grouped) cross-validation.

    Parameters
    ----------
    alphas : candidate regularisation strengths (> 0); stored sorted in `alphas_`.
    cv : int (K folds: whole groups per fold when `groups` is given, else contiguous
        blocks) or an iterable of (train_idx, test_idx).
    scoring : "r" (Pearson r, default) or "r2", used to choose alphas and by
        `score_per_target` (`score` is scikit-learn's: R^2 averaged over targets).
    solver : "auto", "primal" (thin SVD) or "dual" (eigh of X X.T); "auto" picks primal
        when the training folds have at least as many samples as features.
    fit_intercept : centre X and Y with training means (per fold in CV).
    target_chunk : targets solved per compiled call; bounds peak memory.
    shard_targets : spread each chunk's targets over all local devices.
    dtype : compute dtype (float32 by default; float64 needs jax_enable_x64).

    X may carry a leading layer axis (L, N, P): every layer is fitted in one call and all
    fitted attributes gain that leading axis. Y may be (N, ...) (e.g. subjects x vertices):
    trailing axes are flattened into targets, so all subjects that heard the same stories
    share one decomposition.

    Fitted attributes: alphas_ (A,), cv_scores_ (A, T), best_alphas_ (T,), coef_ (P, T)
    (primal; computed from dual_coef_ for dual), dual_coef_ (N, T) (dual only),
    intercept_ (T,), solver_, n_features_in_ (P), n_masked_targets_ (non-finite target
    columns: NaN results; a Y with no finite column is refused).
    A target that is constant gets NaN Pearson r (no correlation is defined) and its
    largest alpha.
    """

    def __init__(self, alphas: Sequence[float] = DEFAULT_ALPHAS, cv: int | Iterable[Fold] = 5, scoring: str = "r",
                 solver: str = "auto", fit_intercept: bool = True, target_chunk: int = 8192,
                 shard_targets: bool = True, dtype=jnp.float32, progress: bool = False):
        self.alphas, self.cv, self.scoring, self.solver = alphas, cv, scoring, solver
        self.fit_intercept, self.target_chunk, self.shard_targets = fit_intercept, target_chunk, shard_targets
        self.dtype, self.progress = dtype, progress

    # -- fitting ---------------------------------------------------------------------
    def fit(self, X, Y, groups=None) -> "RidgeCV":
        x_LNP, y_NT, layered, alphas = self._begin_fit(X, Y, self.alphas)
        n, p = x_LNP.shape[1:]
        folds = make_folds(self.cv, n, groups)
        pf = pad_folds(folds, n)
        solver = solvers.resolve_solver(self.solver, pf.train_KM.shape[1], p)

        mesh = chunks.target_mesh(self.shard_targets)
        x_dev, pf, alphas_dev = chunks.replicate((x_LNP.astype(self.dtype), tuple(pf), alphas.astype(self.dtype)), mesh)
        folds_L, full_L, mean_LP = _prepare_layers(x_dev, *pf, solver=solver, fit_intercept=self.fit_intercept)

        outs = self._stream(y_NT, mesh, lambda y: _solve_layers(
            folds_L, full_L, mean_LP, y, alphas_dev, solver=solver, score=self.scoring, fit_intercept=self.fit_intercept),
            _fetch_cv)
        cv, best, weights, y_mean, n_masked = outs
        self.alphas_, self.n_folds_ = alphas, len(folds)
        self.cv_scores_ = cv
        self.best_alphas_ = alphas[best]
        self._finish_fit(x_LNP, mean_LP, solver, weights, y_mean, n_masked, y_NT.shape[1], layered)
        return self

class Ridge(_RidgeShell):
    """Ridge regression with one fixed alpha for every target (the refit half of `RidgeCV`).

    Parameters as `RidgeCV`'s, with `alpha` (> 0) in place of `alphas` and `cv`; `scoring`
    ("r" or "r2") is what `score_per_target` returns. X may carry a leading layer axis and Y
    trailing target axes, as in `RidgeCV`. Fitted attributes: coef_ (P, T) (primal; computed
    from dual_coef_ for dual), dual_coef_ (N, T) (dual only), intercept_ (T,), solver_,
    n_features_in_ (P), n_masked_targets_ (non-finite target columns: NaN weights).
    """

    def __init__(self, alpha: float = 1.0, scoring: str = "r", solver: str = "auto", fit_intercept: bool = True,
                 target_chunk: int = 8192, shard_targets: bool = True, dtype=jnp.float32, progress: bool = False):
        self.alpha, self.scoring, self.solver, self.fit_intercept = alpha, scoring, solver, fit_intercept
        self.target_chunk, self.shard_targets, self.dtype, self.progress = target_chunk, shard_targets, dtype, progress

    def fit(self, X, Y) -> "Ridge":
        x_LNP, y_NT, layered, alpha = self._begin_fit(X, Y, [self.alpha], "alpha")
        n, p = x_LNP.shape[1:]
        solver = solvers.resolve_solver(self.solver, n, p)
        mesh = chunks.target_mesh(self.shard_targets)
        x_dev, alpha_dev = chunks.replicate((x_LNP.astype(self.dtype), alpha.astype(self.dtype)), mesh)
        full_L, mean_LP = _prepare_full_layers(x_dev, solver=solver, fit_intercept=self.fit_intercept)
        weights, y_mean, n_masked = self._stream(y_NT, mesh, lambda y: _refit_layers(
            full_L, mean_LP, y, alpha_dev, solver=solver, fit_intercept=self.fit_intercept), _fetch_fit)
        self._finish_fit(x_LNP, mean_LP, solver, weights, y_mean, n_masked, y_NT.shape[1], layered)
        return self


@exact_matmuls
@jax.jit
def _matmul(a, b):
    return a @ b


@exact_matmuls
@jax.jit
def _test_design(x, x_mean, x_train):
    xc = x - x_mean[..., None, :]
    if x_train is None:
        return xc
    return xc @ jnp.swapaxes(x_train - x_mean[..., None, :], -1, -2)  # dual: kernel with the training rows


@exact_matmuls
@jax.jit
def _predict_chunk(design, weights, y_mean):
    return design @ weights + y_mean[..., None, :]


@exact_matmuls
@partial(jax.jit, static_argnames="scoring")
def _score_chunk(design, weights, y_mean, y_NT, *, scoring):
    pred = _predict_chunk(design, weights, y_mean)
    fn = (lambda p: pearson_r(p, y_NT)) if scoring == "r" else (lambda p: r2_score(y_NT, p))
    return fn(pred) if pred.ndim == 2 else jax.vmap(fn)(pred)


@exact_matmuls
@jax.jit
def _r2_terms_chunk(design, weights, y_mean, y_NT):
    """(..., 2, T): each target's residual and total sums of squares; the total is exactly
    0 for a target constant in y_NT (max == min), which centring would leave as rounding."""
    ss_res = jnp.sum((_predict_chunk(design, weights, y_mean) - y_NT) ** 2, axis=-2)
    ss_tot = jnp.where(jnp.max(y_NT, 0) == jnp.min(y_NT, 0), 0.0, jnp.sum((y_NT - y_NT.mean(0)) ** 2, axis=0))
    return jnp.stack([ss_res, jnp.broadcast_to(ss_tot, ss_res.shape)], axis=-2)


def _fetch_cv(out, used):
    cv, best, fit, n_masked = jax.device_get(out)
    return cv[..., :used], best[..., :used], fit.weights[..., :used], fit.y_mean_T[..., :used], n_masked.max()


def _fetch_fit(out, used):
    fit, n_masked = jax.device_get(out)
    return fit.weights[..., :used], fit.y_mean_T[..., :used], n_masked.max()
