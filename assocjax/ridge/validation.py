"""The estimators' side of scikit-learn's contract, without importing scikit-learn.

Input checks raise the errors (type and message) that scikit-learn's own `check_array` /
`validate_data` raise, so `Pipeline`, `GridSearchCV` and `check_estimator` see what they
expect; `NotFittedError` is both a ValueError and an AttributeError, as scikit-learn's, and
is scikit-learn's too once scikit-learn is loaded; `sklearn_tags` imports scikit-learn only
when scikit-learn itself asks for the tags. Importing assocjax never imports scikit-learn
(more than a second, and not a run-time dependency).
"""
from __future__ import annotations

import functools
import sys

import numpy as np


class NotFittedError(ValueError, AttributeError):
    """An estimator was used (predict, score, coef_) before `fit`."""


@functools.cache
def _also_sklearns(sklearn_error: type) -> type:
    # One class that `except` clauses for ours and for scikit-learn's both catch.
    return type("NotFittedError", (NotFittedError, sklearn_error), {"__module__": __name__})


def not_fitted(owner) -> NotFittedError:
    """The error for using `owner` before fit (scikit-learn's wording; its class too when
    scikit-learn is loaded, which is when anyone can be catching it)."""
    sklearn = sys.modules.get("sklearn.exceptions")
    cls = _also_sklearns(sklearn.NotFittedError) if sklearn is not None else NotFittedError
    return cls(f"This {type(owner).__name__} instance is not fitted yet. Call 'fit' with appropriate arguments "
               "before using this estimator.")


def sklearn_tags():
    """scikit-learn's `Tags` for a multi-output regressor of dense, finite features (built
    lazily: only scikit-learn calls `__sklearn_tags__`). NaN in X is refused; non-finite
    target columns are masked, but the tag is about X."""
    from sklearn.utils import InputTags, RegressorTags, Tags, TargetTags

    return Tags(estimator_type="regressor", target_tags=TargetTags(required=True, multi_output=True, single_output=True),
                regressor_tags=RegressorTags(), input_tags=InputTags(allow_nan=False, sparse=False))


def _is_sparse(a) -> bool:
    sparse = sys.modules.get("scipy.sparse")  # not loaded: nothing can be a scipy sparse array
    return sparse is not None and sparse.issparse(a)


def _as_real(a, name: str, owner, keep: str) -> np.ndarray:
    """A dense real array: dtype kinds in `keep` stay as they are, others (numbers held as
    objects, strings of numbers) become float64."""
    if a is None:
        raise ValueError(f"{type(owner).__name__} requires {name} to be passed, but the target {name} is None.")
    if _is_sparse(a):
        raise TypeError(f"Sparse data was passed for {name}, but dense data is required. Use '.toarray()' to "
                        "convert to a dense numpy array.")
    a = np.asarray(a)
    if np.iscomplexobj(a):
        raise ValueError(f"Complex data not supported\n{a}\n")
    return a if a.dtype.kind in keep else a.astype(np.float64)  # objects: TypeError naming the bad value


def _refuse_nonfinite(a: np.ndarray, name: str, owner) -> None:
    if not np.isfinite(a).all():
        what = "NaN" if np.isnan(a).any() else f"infinity or a value too large for dtype({a.dtype.name!r})"
        raise ValueError(f"Input {name} contains {what}.\n{type(owner).__name__} does not accept missing or "
                         f"infinite values here ({name} has shape {a.shape}).")


def check_features(X, owner, *, layered: bool | None = None) -> np.ndarray:
    """X as a finite float array (n_samples, n_features), or (n_layers, n_samples,
    n_features) where the estimator takes layers (`layered`: None = either, as at fit)."""
    X = _as_real(X, "X", owner, keep="f")  # float32 X gives float32 predictions, as in scikit-learn
    ndims = (2, 3) if layered is None else (3 if layered else 2,)
    if X.ndim < 2:
        kind = "scalar" if X.ndim == 0 else "1D"
        raise ValueError(f"Expected 2D array, got {kind} array instead:\narray={X}.\nReshape your data either using "
                         "array.reshape(-1, 1) if your data has a single feature or array.reshape(1, -1) if it "
                         "contains a single sample.")
    if X.ndim not in ndims:
        expected = " or ".join({2: "(n_samples, n_features)", 3: "(n_layers, n_samples, n_features)"}[d] for d in ndims)
        raise ValueError(f"Found array with dim {X.ndim}: X has shape {X.shape}; {type(owner).__name__} expected "
                         f"{expected}{'' if layered is None else ', as at fit'}.")
    for axis, what in ((-2, "sample(s)"), (-1, "feature(s)")):
        if X.shape[axis] == 0:
            raise ValueError(f"Found array with 0 {what} (shape={X.shape}) while a minimum of 1 is required by "
                             f"{type(owner).__name__}.")
    _refuse_nonfinite(X, "X", owner)
    return X


def check_targets(Y, n_samples: int, owner, *, nonfinite: str = "mask") -> np.ndarray:
    """Y as a real array (n_samples, ...): trailing axes are targets. `nonfinite` says what a
    NaN/Inf does: "mask" (fit) leaves its column out of the solve (medial wall), but if every
    column has one there is nothing to fit; "refuse" (score) refuses any, as scikit-learn's
    metrics do; "keep" (per-target scores) lets its column score NaN."""
    Y = _as_real(Y, "y", owner, keep="biuf")  # an int16 memmap stays one: chunks are cast as they are read
    if Y.ndim == 0:
        raise ValueError(f"y should be a 1d array, got an array of shape {Y.shape} instead.")
    if Y.shape[0] != n_samples:
        raise ValueError(f"Found input variables with inconsistent numbers of samples: [{n_samples}, {Y.shape[0]}] "
                         f"(X has {n_samples} samples, y has shape {Y.shape})")
    if Y.size == 0:
        raise ValueError(f"Found array with 0 target(s) (shape={Y.shape}) while a minimum of 1 is required by "
                         f"{type(owner).__name__}.")
    if nonfinite == "refuse":
        _refuse_nonfinite(Y, "y", owner)
    y_NT = Y.reshape(n_samples, -1)
    if nonfinite == "mask" and not np.isfinite(y_NT[:, 0]).all() and not np.isfinite(y_NT).all(axis=0).any():
        what = "NaN" if np.isnan(y_NT).any() else "infinity"  # (column 0 finite: the common case, checked alone)
        raise ValueError(f"Input y contains {what} in every target column ({y_NT.shape[1]} of {y_NT.shape[1]}, "
                         f"y shape {Y.shape}): nothing to fit (a column with non-finite values is left out of the "
                         "solve and gets NaN results).")
    return Y
