"""Nested cross-validated brain scores, streamed over chunks of targets.

Outer folds hold out whole groups (stories, or contiguous chunks of one story); inner grouped
CV on the outer-training groups picks each target's alpha; the score is the Pearson r between
held-out predictions and the measured response. Functional core:

    folds = nested_folds(groups_N, runs_N=runs_N, buffer=8)        # indices, host
    plan = prepare_nested(x_NP, folds, alphas)                      # decompositions, once
    out = solve_nested(plan, y_NT_chunk)                            # one compiled call per chunk

`prepare_nested` is a host shell (fold padding, alphas, layers one by one) around the pure
`plan_nested`; `functional.nested_ridge` composes `plan_nested` and `solve_nested` for use
inside jit / vmap / grad.

Everything that depends only on the features (z-scoring with the outer-training rows,
every inner fold's spectral form, the outer-training decomposition for the refit and the
projection of the outer test rows on it) is computed once per design and shared by every
chunk of targets (all subjects, all vertices). Test predictions are P_test @ (g * B.T y):
no primal weights are ever formed.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..alignment import zscore_apply, zscore_fit
from ..stats import pearson_r
from . import solvers
from .chunks import tiled
from .folds import NestedFolds, PaddedFolds, pad_folds
from .solvers import FoldSpec
from ..numerics import exact_matmuls


class NestedPlan(NamedTuple):
    """Device arrays for `solve_nested`; leaves of `outer` are stacked over K outer folds,
    leaves of `inner` over (K, J) inner folds (J padded with empty folds, see inner_valid_KJ).
    The decompositions keep only what the solve reads (no feature-space maps)."""

    outer: FoldSpec
    inner: FoldSpec
    inner_valid_KJ: jnp.ndarray
    tested_N: jnp.ndarray  # rows held out by some outer fold (the concatenated-r rows)
    alphas_A: jnp.ndarray
    runs_NU: jnp.ndarray | None = None  # one-hot run of each row: targets z-scored per run inside each fold


class NestedResult(NamedTuple):
    """Per chunk of T targets: r per outer fold (K, T), r over the concatenated held-out
    predictions (T,), chosen alpha index (K, T), number of non-finite target columns, and
    the held-out predictions (N, T) when asked for (else None)."""

    r_folds_KT: jnp.ndarray
    r_T: jnp.ndarray
    alpha_idx_KT: jnp.ndarray
    n_masked: jnp.ndarray
    predictions_NT: jnp.ndarray | None


class NestedLayout(NamedTuple):
    """The host half of a nested plan: the folds as padded index arrays of one static shape
    each (numpy), known before any feature is seen. `nested_layout` builds it from
    `NestedFolds`; `plan_nested` (pure) turns it and a design into a `NestedPlan`."""

    outer: PaddedFolds  # leaves (K, ...)
    inner: PaddedFolds  # leaves (K, J, ...); missing inner folds are empty
    inner_valid_KJ: np.ndarray
    tested_N: np.ndarray
    n_train: int  # the most training rows of any fold (for `resolve_solver`)


def nested_layout(folds: NestedFolds, n_samples: int) -> NestedLayout:
    """Outer and inner folds padded to one static shape each; missing inner folds are empty."""
    n_inner = max(len(f) for f in folds.inner)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    flat = [f for inner in folds.inner for f in (*inner, *[empty] * (n_inner - len(inner)))]
    pin = pad_folds(flat, n_samples)
    pin = type(pin)(*(a.reshape(len(folds.inner), n_inner, -1) for a in pin))
    valid = np.array([[j < len(inner) for j in range(n_inner)] for inner in folds.inner])
    pout = pad_folds(list(folds.outer), n_samples)
    tested = np.zeros(n_samples, dtype=bool)
    for _, te in folds.outer:
        tested[te] = True
    n_train = int(max(pout.train_mask_KR.sum(1).max(), pin.train_mask_KR.sum(-1).max()))
    return NestedLayout(pout, pin, valid, tested, n_train)


def run_onehot(target_runs_N, n_samples: int, dtype) -> np.ndarray:
    """(N, U) one-hot run (story) of each row, for `plan_nested`'s runs_NU."""
    ids = np.unique(np.asarray(target_runs_N), return_inverse=True)[1].reshape(-1)
    if ids.shape != (n_samples,):
        raise ValueError(f"target_runs_N has {ids.shape[0]} rows, the design {n_samples}")
    return np.eye(ids.max() + 1, dtype=np.dtype(dtype))[ids]


def plan_nested(x_NP, layout: NestedLayout, alphas_A, *, solver: str, standardize: bool = True,
                runs_NU=None) -> NestedPlan:
    """The pure half of `prepare_nested` (jit-able, vmap-able, differentiable in x_NP): one
    design's plan. alphas_A sorted ascending; solver "primal" or "dual" (see
    `solvers.resolve_solver`); runs_NU from `run_onehot` or None."""
    outer, inner = _prepare_one(x_NP, pout=tuple(layout.outer), pin=tuple(layout.inner), solver=solver,
                                standardize=standardize)
    return NestedPlan(outer, inner, jnp.asarray(layout.inner_valid_KJ), jnp.asarray(layout.tested_N),
                      alphas_A, None if runs_NU is None else jnp.asarray(runs_NU))


def prepare_nested(x_NP, folds: NestedFolds, alphas, *, standardize: bool = True, solver: str = "auto",
                   dtype=jnp.float32, target_runs_N=None) -> tuple[NestedPlan, str]:
    """Decompose every outer fold's designs once -> (plan, solver used): the host shell of
    `plan_nested` (fold bookkeeping, alphas sorted in float64, one layer at a time).

    x_NP may carry a leading layer axis (L, N, P); the plan's leaves then gain it too.
    standardize z-scores the features with the outer-training rows' statistics (training
    rows only: no statistic of a held-out row reaches its model).
    target_runs_N: the run (story) of each row; when given, `solve_nested` z-scores every
    target per run inside each outer fold with that fold's training rows, so neither the
    targets' offsets nor their scales carry anything of a held-out chunk into its model (a
    held-out whole run has no training rows and uses its own: its r is invariant to that).
    Predictions come back in the targets' own units.
    """
    x = np.asarray(x_NP)
    n, p = x.shape[-2:]
    layout = nested_layout(folds, n)
    solver = solvers.resolve_solver(solver, layout.n_train, p)
    alphas_A = jnp.asarray(np.sort(np.asarray(alphas, np.float64)), dtype)
    runs = None if target_runs_N is None else run_onehot(target_runs_N, n, dtype)
    layout = layout._replace(outer=jax.device_put(layout.outer), inner=jax.device_put(layout.inner))  # sent once
    plan = partial(plan_nested, layout=layout, alphas_A=alphas_A, solver=solver, standardize=standardize, runs_NU=runs)
    if x.ndim == 3:  # one layer at a time: bounded memory, one compilation
        return _stack([plan(jnp.asarray(xl, dtype)) for xl in x]), solver
    return plan(jnp.asarray(x, dtype)), solver


def outer_design(x_NP, tr, trm, standardize: bool):
    """The design of one outer fold: z-scored with its training rows (`tr` where `trm`) only, so no
    held-out row shifts the features the fold is fitted and scored on."""
    if not standardize:
        return x_NP
    mask_N = jnp.zeros(x_NP.shape[0], bool).at[tr].set(trm, mode="drop")
    return zscore_apply(x_NP, *zscore_fit(x_NP, mask_N))


def _stack(trees):
    return jax.tree.map(lambda *a: jnp.stack(a), *trees)


@exact_matmuls
@partial(jax.jit, static_argnames=("solver", "standardize"))
def _prepare_one(x_NP, *, pout, pin, solver, standardize):
    def one_outer(args):
        tr, te, trm, tem, itr, ite, itrm, item = args
        x = outer_design(x_NP, tr, trm, standardize)
        spec = partial(solvers.fold_spec, x, solver=solver, fit_intercept=True)
        outer = _lean(spec(tr, te, trm, tem))
        inner = jax.lax.map(lambda f: _lean(spec(*f)), (itr, ite, itrm, item))
        return outer, inner

    return jax.lax.map(one_outer, (*pout, *pin))


def _lean(fold: FoldSpec) -> FoldSpec:
    """Drop the feature-space map (P x k): the nested solve never needs it."""
    return fold._replace(spec=fold.spec._replace(right_Pk=None))


@exact_matmuls
@partial(jax.jit, static_argnames=("score", "return_predictions", "tile"))
def solve_nested(plan: NestedPlan, y_NT, score: str = "r", return_predictions: bool = False,
                 tile: int | None = None) -> NestedResult:
    """Nested CV for one chunk of targets in one compiled call (see NestedResult).

    Non-finite target columns are zeroed for the solve and get NaN results, constant
    targets NaN r; neither touches the other targets. A held-out row enters nothing of its
    own fold's model: not even a shared shift (its predictions are bitwise independent of it).
    tile: solve the chunk in slices of this many targets, one after another, so that every
    intermediate of a slice stays in cache (a CPU setting; the chunk width must be a
    multiple of it). None solves the whole chunk at once (accelerators).
    """
    y, finite_T, constant_T = solvers.clean_targets(y_NT)
    maps = inner_maps(plan, score, y_NT.shape[1])  # once per call, shared by every tile
    out = tiled(lambda y_tile: _solve_tile(plan, maps, y_tile, score, return_predictions), y, tile)
    r_KT, r_T, best_KT, pred_NT = out
    nan_T = jnp.where(finite_T & ~constant_T, 0.0, jnp.nan).astype(y.dtype)
    preds = pred_NT + jnp.where(finite_T, 0.0, jnp.nan).astype(y.dtype) if return_predictions else None
    return NestedResult(r_KT + nan_T, r_T + nan_T, best_KT, jnp.sum(~finite_T), preds)


def inner_maps(plan: NestedPlan, score: str, n_targets: int | None = None):
    """(K, J, A, E, R) every inner fold's `solvers.fold_maps`, or None where they do not pay
    (`solvers.maps_pay` for n_targets: the primal route with few features keeps the spectral
    products, and so does a chunk narrower than the maps' own cost)."""
    if not _uses_maps(plan, n_targets):
        return None
    one = partial(solvers.fold_maps, alphas_A=plan.alphas_A, score=score, fit_intercept=True)
    return jax.lax.map(lambda inner: jax.lax.map(one, inner), plan.inner)


def _uses_maps(plan: NestedPlan, n_targets: int | None = None) -> bool:
    """Whether `solve_nested` scores the inner folds of a chunk of n_targets through `inner_maps`
    (shapes only: also for stacked plans; None: per target, however wide the chunk)."""
    r, k = plan.inner.spec.basis_Rk.shape[-2:]
    return solvers.maps_pay(r, k, plan.inner.test_proj_Ek.shape[-2], plan.alphas_A.shape[-1], n_targets)


def _solve_tile(plan: NestedPlan, maps_KJAER, y_NT, score: str, return_predictions: bool):
    alphas = plan.alphas_A
    y_raw = y_NT

    def one_outer(args):
        outer, inner, valid_J, maps_JAER = args
        y_NT, shift_NT, scale_NT = _standardize_runs(y_raw, plan.runs_NU, outer)

        def add_inner_fold(j, acc):  # running nanmean of the inner folds' scores
            total, count = acc
            s_AT = solvers.fold_scores(jax.tree.map(lambda a: a[j], inner), y_NT, alphas, score=score, fit_intercept=True,
                                       maps_AER=None if maps_JAER is None else maps_JAER[j])
            ok = valid_J[j] & ~jnp.isnan(s_AT)
            return total + jnp.where(ok, s_AT, 0), count + ok

        zeros = jnp.zeros((alphas.shape[0], y_NT.shape[1]), y_NT.dtype)
        total, count = jax.lax.fori_loop(0, valid_J.shape[0], add_inner_fold, (zeros, zeros))
        best_T = solvers.select_alphas(jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan))
        dev_ET, mu_T = _refit_predict(outer, y_NT, alphas[best_T])
        yte = jnp.take(y_NT, outer.test_idx_E, axis=0, mode="fill", fill_value=0)
        # r of the deviations from the intercept: the same r, without the float32 rounding of
        # a large intercept added to a small spread (heavily regularised targets)
        r_T = pearson_r(dev_ET, yte, outer.test_mask_E)
        off_ET = jnp.broadcast_to(mu_T, dev_ET.shape)
        if shift_NT is not None:  # back to the targets' units (for the concatenated r and the predictions)
            take = lambda a: jnp.take(a, outer.test_idx_E, axis=0, mode="fill", fill_value=0)  # noqa: E731
            dev_ET, off_ET = dev_ET * take(scale_NT), off_ET * take(scale_NT) + take(shift_NT)
            r_T = jnp.where(jnp.all(scale_NT > 0, axis=0), r_T, jnp.nan)
        return r_T, best_T, dev_ET, off_ET

    r_KT, best_KT, dev_KET, off_KET = jax.lax.map(one_outer, (plan.outer, plan.inner, plan.inner_valid_KJ, maps_KJAER))
    n, t = y_NT.shape
    rows = plan.outer.test_idx_E.ravel()  # padding points at row n: dropped

    def scatter(pred_KET):
        return jnp.zeros((n, t), y_NT.dtype).at[rows].set(pred_KET.reshape(-1, t), mode="drop")

    # Concatenated r: the folds' intercepts differ, so they count; shifting every row by their
    # mean changes no r but keeps the float32 offsets small.
    r_T = pearson_r(scatter(dev_KET + (off_KET - off_KET.mean((0, 1)))), y_NT, plan.tested_N)
    return r_KT, r_T, best_KT.astype(jnp.int32), scatter(dev_KET + off_KET) if return_predictions else None


def _standardize_runs(y_NT, runs_NU, outer: FoldSpec):
    """(z-scored targets, shift, scale) with per-run statistics of the fold's training rows
    (a run without training rows uses its own rows); (y, None, None) without runs. A target
    flat in a run's training rows has scale 0 there: it is zeroed and scored NaN."""
    if runs_NU is None:
        return y_NT, None, None
    n = y_NT.shape[0]
    train_N = jnp.zeros(n, y_NT.dtype).at[outer.train_idx_R].set(outer.train_mask_M.astype(y_NT.dtype), mode="drop")
    w_NU = runs_NU * train_N[:, None]
    w_NU = jnp.where(jnp.sum(w_NU, axis=0) > 0, w_NU, runs_NU)
    count_U = jnp.maximum(jnp.sum(w_NU, axis=0), 1.0)[:, None]
    hi = jax.lax.Precision.HIGHEST
    mean_UT = jnp.matmul(w_NU.T, y_NT, precision=hi) / count_U
    shift_NT = jnp.matmul(runs_NU, mean_UT, precision=hi)
    c_NT = y_NT - shift_NT
    sd_UT = jnp.sqrt(jnp.matmul(w_NU.T, c_NT * c_NT, precision=hi) / count_U)
    sd_UT = jnp.where(sd_UT > 1e-6 * (jnp.abs(mean_UT) + 1.0), sd_UT, 0.0)
    scale_NT = jnp.matmul(runs_NU, sd_UT, precision=hi)
    return jnp.where(scale_NT > 0, c_NT / jnp.where(scale_NT > 0, scale_NT, 1.0), 0.0), shift_NT, scale_NT


def _refit_predict(outer: FoldSpec, y_NT, alpha_T):
    """Refit on the outer-training rows in spectral space -> (test predictions minus the
    intercept (E, T), the intercept = training mean (T,))."""
    spec, trm = outer.spec, outer.train_mask_M
    ytr = jnp.take(y_NT, outer.train_idx_R, axis=0, mode="fill", fill_value=0)
    mu_T = solvers._masked_mean(ytr, trm)
    g_kT = solvers.target_gains(spec, alpha_T)
    return outer.test_proj_Ek @ (g_kT * (spec.basis_Rk.T @ solvers._centre(ytr, trm, mu_T))), mu_T


def _tile_floats(plan: NestedPlan, return_predictions: bool) -> int:
    """Floats per target live at the peak of one untiled solve (see `target_bytes`)."""
    k_outer, _, r_in, k_in = plan.inner.spec.basis_Rk.shape[-4:]
    e_in = plan.inner.test_proj_Ek.shape[-2]
    r_out, k_out = plan.outer.spec.basis_Rk.shape[-2:]
    e_out = plan.outer.test_proj_Ek.shape[-2]
    n, a = plan.tested_N.shape[-1], plan.alphas_A.shape[-1]
    # Inner fold: the (A E) test predictions of all alphas (pred route), or the (A, k)
    # weighted projections with their Gram products (Gram route, E > k); its training and
    # test rows, the (k) projections (and their centred basis product) and the per-alpha sums.
    alpha_eval = a * e_in if e_in <= k_in or _uses_maps(plan) else 3 * a * k_in
    inner = alpha_eval + r_in + 2 * k_in + (6 if _uses_maps(plan) else 5) * e_in + 4 * a
    outer = r_out + k_out + 3 * e_out  # refit: training rows, weights, test predictions
    # Whole chunk: the cleaned/shifted targets, the held-out predictions scattered into
    # (N), Pearson's centred copies, and the outer folds' stacked test predictions (the
    # loop's carried and updated copies, and their per-row offsets).
    runs = 4 * n if plan.runs_NU is not None else 0  # per-fold z-scored targets, their shift, scale, centred copy
    return 4 * n + runs + 3 * k_outer * e_out + max(inner, outer) + (n if return_predictions else 0)


def target_bytes(plan: NestedPlan, return_predictions: bool = False, tile: int | None = None) -> tuple[int, int]:
    """Device bytes of `solve_nested` on a chunk of T targets = per_target * T + fixed.

    Returns (per_target, fixed). Untiled, every intermediate scales with T; with `tile`
    only the chunk-wide arrays do (input, its cleaned copy, tiles, outputs) and one tile's
    intermediates are a fixed cost. Layers of a stacked plan run one after another, so
    only their outputs add up. Derived from XLA's buffer assignment of this solve and
    checked against `memory_analysis()` of compiled chunks (tests/test_nested.py).
    """
    lead = int(np.prod(plan.alphas_A.shape[:-1], dtype=int))
    itemsize = np.dtype(plan.alphas_A.dtype).itemsize
    n, k_outer = plan.tested_N.shape[-1], plan.outer.test_idx_E.shape[-2]
    outputs = lead * (2 * k_outer + 1 + (n if return_predictions else 0))
    work = _tile_floats(plan, return_predictions)
    # The plan, and the per-fold matrices the solve derives from it (centred bases, the
    # alpha-weighted test projections): twice, for the folds in flight.
    _, _, r_in, k_in = plan.inner.spec.basis_Rk.shape[-4:]
    e_in = plan.inner.test_proj_Ek.shape[-2]
    r_out, k_out = plan.outer.spec.basis_Rk.shape[-2:]
    e_out = plan.outer.test_proj_Ek.shape[-2]
    a = plan.alphas_A.shape[-1]
    derived = 2 * ((a + 1) * e_in * k_in + r_in * k_in + (r_out + e_out) * k_out)
    maps = k_outer * plan.inner.test_proj_Ek.shape[-3] * a * e_in * r_in if _uses_maps(plan) else 0  # `inner_maps`: one layer at a time
    fixed = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(plan)) + itemsize * (derived + maps)
    if tile is None:
        return itemsize * (n + work + outputs), fixed
    tiles_out = n if return_predictions else 0  # the tiles' predictions, then reassembled
    return itemsize * (3 * n + outputs + tiles_out), fixed + itemsize * tile * (work + n)  # + a tile of input
