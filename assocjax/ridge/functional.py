"""`nested_ridge`: the nested-CV ridge as one pure function, for use inside your own JAX code.

    folds = nested_folds(groups_N, inner_folds=3, buffer=4)          # host, once (numpy)
    res = nested_ridge(x_NP, y_NT, folds, alphas)                    # pure: jit, vmap, grad
    res.r_folds_KT, res.r_T, res.alpha_idx_KT, res.predictions_NT

It is `plan_nested` (the features' decompositions) then `solve_nested` (one chunk of
targets): the very functions `brain_score` and the pipeline run, which add only the host
work around them (input checks, streaming targets in memory-bounded chunks over devices,
layers one by one). The folds are static: their indices are numpy arrays fixed before the
features are seen, so `NestedFolds` is hashable and can be a static argument of `jax.jit`
(or be closed over). x_NP and y_NT may be traced; so may alphas (any order: sorted here).

Transformations:
- `jax.vmap` over a leading axis of y (subjects sharing stories: the plan is built once and
  not batched) or of x (layers, or models: one plan per design).
- `jax.grad` w.r.t. x_NP (or y_NT) of any scalar of the result. The alpha chosen per target
  and outer fold (argmax of the inner-CV score) is piecewise constant in x: the gradient
  is that of the outer refit and its held-out r at the chosen alphas, as for any argmax.
  The decompositions' derivative rules are what carry it (thin SVD on the primal route,
  `eigh` of the kernel on the dual route, `solvers.eigh`): see docs/jax.md for where
  they are exact.
"""
from __future__ import annotations

import jax.numpy as jnp

from . import solvers
from .folds import NestedFolds
from .nested import NestedResult, nested_layout, plan_nested, run_onehot, solve_nested


def nested_ridge(x_NP, y_NT, folds: NestedFolds, alphas_A, *, standardize: bool = True, solver: str = "auto",
                 score: str = "r", return_predictions: bool = False, runs_N=None) -> NestedResult:
    """Nested cross-validated ridge of targets y_NT on features x_NP -> `NestedResult`:
    r_folds_KT (held-out Pearson r per outer fold), r_T (r over the concatenated held-out
    predictions), alpha_idx_KT (index into the sorted alphas of each outer fold's choice),
    n_masked (non-finite target columns: NaN results) and predictions_NT (held-out
    predictions, when return_predictions).

    folds: `nested_folds(...)` (concrete, host). alphas_A: candidate alphas (> 0).
    standardize: z-score the features with each outer fold's training rows.
    solver: "auto" (primal when the training rows outnumber the features), "primal", "dual".
    score: the inner-CV criterion, "r" or "r2". runs_N: (N,) run of each row (concrete):
    z-score the targets per run inside each fold with its training rows (as the pipeline).
    Computes in x_NP's dtype (float32, or float64 under jax_enable_x64).
    """
    if x_NP.ndim != 2 or y_NT.ndim != 2 or x_NP.shape[0] != y_NT.shape[0]:
        raise ValueError(f"nested_ridge takes x_NP (N, P) and y_NT (N, T) with the same N; got {x_NP.shape} and "
                         f"{y_NT.shape} (map leading subject/layer axes with jax.vmap)")
    n, p = x_NP.shape
    dtype = jnp.result_type(x_NP.dtype, jnp.float32)  # integer features compute in float32
    layout = nested_layout(folds, n)
    solver = solvers.resolve_solver(solver, layout.n_train, p)
    runs_NU = None if runs_N is None else run_onehot(runs_N, n, dtype)
    plan = plan_nested(jnp.asarray(x_NP, dtype), layout, jnp.sort(jnp.asarray(alphas_A, dtype)), solver=solver,
                       standardize=standardize, runs_NU=runs_NU)
    return solve_nested(plan, jnp.asarray(y_NT, dtype), score=score, return_predictions=return_predictions)
