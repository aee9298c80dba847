"""Banded ridge: one design made of named bands (feature spaces), one scaling per band.

The design's columns belong to B bands (X_b, b = 1..B). A candidate gamma on the simplex
(gamma_b >= 0, sum 1) scales band b by sqrt(gamma_b): ridge on X_gamma = [sqrt(gamma_b) X_b]
with penalty alpha is the banded ridge with penalty alpha / gamma_b on band b's weights (the
kernel sum_b gamma_b X_b X_b.T of himalaya's multiple-kernel ridge, deltas = log(gamma / alpha)).
Each target's (gamma, alpha) is chosen by the nested, buffered, grouped CV of `nested` (its
inner folds): gammas are a fixed list (a grid or seeded Dirichlet draws: `simplex_grid`,
`dirichlet_gammas`, himalaya's random search), and for each gamma the existing spectral solve
scores every alpha at once (one decomposition per gamma and fold, shared by every alpha and
target: `solvers.fold_spec`, `solvers.fold_scores`). On the dual route (fewer training rows
than columns) the scaled design's kernel is sum_b gamma_b K_b: each band's kernel is formed
once per outer fold and each gamma costs an eigh (`_dual_gammas`), as himalaya's
multiple-kernel ridge does.

    folds = nested_folds(groups_N, runs_N=runs_N, buffer=8)
    plan = prepare_banded(x_NP, band_P, folds, alphas, gammas_GB)     # decompositions, once
    out = solve_banded(plan, y_NT_chunk)                              # one compiled call per chunk
    part = partition(x_NP, band_P, folds, alphas, gammas_GB, y_NT)    # unique / shared variance

Per target and outer fold: the chosen gamma and alpha, the held-out split predictions
pred_b = X_b W_b (the joint prediction is their sum), and the split scores with himalaya's
`r2_score_split` semantics: r2_b = sum_e (2 y_e pred_b,e - pred_b,e pred_e) / sum_e y_e^2 with
y the held-out targets minus the training intercept, so the split r2 sum to the joint r2 =
1 - |y - pred|^2 / |y|^2 (R^2 about the training mean; scikit-learn's R^2 when the held-out
rows' mean is the training mean, e.g. whole held-out stories z-scored on their own).

Variance partitioning (`partition`): the unique variance of band b is R2(all bands) - R2(all
but b), each model fitted with the same folds and its own (gamma, alpha) search; the shared
part is R2(all) - sum_b unique_b (two bands A, B: R2(A) + R2(B) - R2(AB)), as in de Heer et
al. (2017) and himalaya's examples.

Every function on arrays is pure and jit-able; shapes are in the names (G gammas, B bands,
K outer folds, J inner folds, E padded test rows, k components, A alphas, T targets).
"""
from __future__ import annotations

import itertools
from functools import partial
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..numerics import exact_matmuls
from ..stats import pearson_r
from . import solvers
from .chunks import tiled
from .folds import NestedFolds
from .nested import NestedLayout, _standardize_runs, nested_layout, outer_design, run_onehot
from .solvers import FoldSpec


# -- candidate gammas -------------------------------------------------------------------------
def band_columns(widths: Sequence[int]) -> np.ndarray:
    """(P,) band index of every design column, for bands of these widths laid side by side."""
    widths = [int(w) for w in widths]
    if not widths or min(widths) < 1:
        raise ValueError(f"band widths must be >= 1 columns each, got {widths}")
    return np.repeat(np.arange(len(widths)), widths)


def simplex_grid(n_bands: int, steps: int) -> np.ndarray:
    """(G, B) every gamma with entries in {0, 1/steps, ..., 1} summing to 1 (uniform first)."""
    if n_bands < 1 or steps < 1:
        raise ValueError(f"simplex_grid needs n_bands >= 1 and steps >= 1, got {n_bands}, {steps}")
    rows = [c for c in itertools.product(range(steps + 1), repeat=n_bands) if sum(c) == steps]
    grid = np.asarray(rows, np.float64) / steps
    return _uniform_first(grid)


def dirichlet_gammas(n_bands: int, n_iter: int, concentration: Sequence[float] = (0.1, 1.0), seed: int = 0) -> np.ndarray:
    """(n_iter, B) seeded Dirichlet draws, the concentrations taken in turn, the first row
    uniform (himalaya's random search: `generate_dirichlet_samples`, gammas[0] = 1 / B)."""
    if n_bands < 1 or n_iter < 1:
        raise ValueError(f"dirichlet_gammas needs n_bands >= 1 and n_iter >= 1, got {n_bands}, {n_iter}")
    rng = np.random.default_rng(seed)
    conc = list(concentration)
    draws = np.stack([rng.dirichlet(np.full(n_bands, conc[i % len(conc)])) for i in range(n_iter)])
    draws[0] = 1.0 / n_bands
    return draws


def _uniform_first(grid_GB: np.ndarray) -> np.ndarray:
    uniform = np.all(np.isclose(grid_GB, grid_GB.mean(1, keepdims=True)), axis=1)
    return np.concatenate([grid_GB[uniform], grid_GB[~uniform]])


def check_gammas(gammas_GB, n_bands: int) -> np.ndarray:
    """gammas as a float64 (G, B) array of rows on the simplex; a ValueError naming the shape."""
    g = np.asarray(gammas_GB, np.float64)
    if g.ndim != 2 or g.shape[1] != n_bands or g.shape[0] < 1:
        raise ValueError(f"gammas must be (n_gammas, n_bands={n_bands}), got shape {g.shape}")
    if np.any(~np.isfinite(g)) or np.any(g < 0) or not np.allclose(g.sum(1), 1.0, atol=1e-6):
        raise ValueError("gammas must be rows of non-negative weights summing to 1 (one per band)")
    return g


# -- plan: every (gamma, fold) decomposition, once per design --------------------------------
class BandedPlan(NamedTuple):
    """Device arrays for `solve_banded`: `outer` leaves stacked over (K, G), their per-band
    held-out projections split_KGBEk (sum over B = the joint projection), `inner` leaves over
    (K, G, J)."""

    outer: FoldSpec
    split_KGBEk: jnp.ndarray
    inner: FoldSpec
    inner_valid_KJ: jnp.ndarray
    tested_N: jnp.ndarray
    alphas_A: jnp.ndarray
    gammas_GB: jnp.ndarray
    runs_NU: jnp.ndarray | None = None


def plan_banded(x_NP, band_PB, layout: NestedLayout, alphas_A, gammas_GB, *, solver: str, standardize: bool = True,
                runs_NU=None) -> BandedPlan:
    """The pure half of `prepare_banded`: band_PB (P, B) one-hot band of each column; alphas
    sorted ascending; gammas (G, B) on the simplex."""
    outer, split, inner = _prepare(x_NP, band_PB, gammas_GB, pout=tuple(layout.outer), pin=tuple(layout.inner),
                                   solver=solver, standardize=standardize)
    return BandedPlan(outer, split, inner, jnp.asarray(layout.inner_valid_KJ), jnp.asarray(layout.tested_N), alphas_A,
                      gammas_GB, None if runs_NU is None else jnp.asarray(runs_NU))


def prepare_banded(x_NP, band_P, folds: NestedFolds, alphas, gammas_GB, *, standardize: bool = True,
                   solver: str = "auto", dtype=jnp.float32, target_runs_N=None) -> tuple[BandedPlan, str]:
    """Decompose every (outer fold, gamma) design and its inner folds once -> (plan, solver).

    band_P: (P,) band index of each column of x_NP (`band_columns`). standardize z-scores the
    features with each outer fold's training rows before the bands are scaled (scaling after
    z-scoring: z-scoring would undo it). target_runs_N: as `nested.prepare_nested` (targets
    z-scored per run inside each outer fold with its training rows)."""
    x = np.asarray(x_NP)
    if x.ndim != 2:
        raise ValueError(f"prepare_banded takes one design x_NP (N, P), got shape {x.shape}")
    n, p = x.shape
    band_PB = band_onehot(band_P, p)
    gammas = check_gammas(gammas_GB, band_PB.shape[1])
    layout = nested_layout(folds, n)
    solver = solvers.resolve_solver(solver, layout.n_train, p)
    alphas_A = jnp.asarray(np.sort(np.asarray(alphas, np.float64)), dtype)
    runs = None if target_runs_N is None else run_onehot(target_runs_N, n, dtype)
    return plan_banded(jnp.asarray(x, dtype), jnp.asarray(band_PB, dtype), layout, alphas_A, jnp.asarray(gammas, dtype),
                       solver=solver, standardize=standardize, runs_NU=runs), solver


def band_onehot(band_P, n_columns: int) -> np.ndarray:
    """(P, B) one-hot of `band_P` (bands 0..B-1, each with a column); a ValueError naming the shape."""
    band = np.asarray(band_P)
    if band.shape != (n_columns,) or band.dtype.kind not in "iu":
        raise ValueError(f"band_P must be ({n_columns},) integer band indices (one per design column), got "
                         f"shape {band.shape} dtype {band.dtype}")
    n_bands = int(band.max()) + 1
    missing = sorted(set(range(n_bands)) - set(band.tolist()))
    if band.min() < 0 or missing:
        raise ValueError(f"band_P must hold band indices 0..B-1, each at least once; missing {missing}")
    return np.eye(n_bands)[band]


@exact_matmuls
@partial(jax.jit, static_argnames=("solver", "standardize"))
def _prepare(x_NP, band_PB, gammas_GB, *, pout, pin, solver, standardize):
    def one_outer(args):
        tr, te, trm, tem, itr, ite, itrm, item = args
        x = outer_design(x_NP, tr, trm, standardize)

        if solver == "dual":
            return _dual_gammas(x, band_PB, gammas_GB, (tr, te, trm, tem), (itr, ite, itrm, item))

        def one_gamma(gamma_B):
            xg = x * jnp.sqrt(band_PB @ gamma_B)[None, :]
            spec = partial(solvers.fold_spec, xg, solver=solver, fit_intercept=True)
            outer = spec(tr, te, trm, tem)
            split = _split_projection(xg, band_PB, outer)
            inner = jax.lax.map(lambda f: _lean(spec(*f)), (itr, ite, itrm, item))
            return _lean(outer), split, inner

        return jax.lax.map(one_gamma, gammas_GB)

    return jax.lax.map(one_outer, (*pout, *pin))


def _dual_gammas(x_NP, band_PB, gammas_GB, outer_idx, inner_idx):
    """The dual route of `_prepare` in kernel space: the kernel of the scaled design is
    sum_b gamma_b K_b, so each band's kernel is formed once per outer fold (B N^2 P flops
    instead of G N^2 P) and every gamma costs only its eigh and projections. The same
    spectral form as `solvers._dual` on X_gamma (its round-off null space dropped alike)."""
    xb_BNP = x_NP[None] * band_PB.T[:, None, :]
    gram_BNN = xb_BNP @ x_NP.T  # Z_b Z_b.T of the z-scored design
    outer_k = _centred_kernels(gram_BNN, *outer_idx)
    inner_k = jax.lax.map(lambda f: _centred_kernels(gram_BNN, *f), inner_idx)

    def one_gamma(gamma_B):
        outer, split = _dual_fold(gamma_B, *outer_k, *outer_idx)
        inner = jax.lax.map(lambda a: _dual_fold(gamma_B, *a)[0], (*inner_k, *inner_idx))
        return outer, split, inner

    return jax.lax.map(one_gamma, gammas_GB)


def _centred_kernels(gram_BNN, tr, te, trm, tem):
    """Each band's fold kernels with the features centred on the fold's training rows:
    (B, R, R) training x training and (B, E, R) test x training, zero on padding."""
    w_R = trm.astype(gram_BNN.dtype)
    rows = lambda idx: jnp.take(gram_BNN, idx, axis=1, mode="fill", fill_value=0)  # noqa: E731
    k_tr = jnp.take(rows(tr), tr, axis=2, mode="fill", fill_value=0)
    k_te = jnp.take(rows(te), tr, axis=2, mode="fill", fill_value=0)
    count = jnp.maximum(jnp.sum(w_R), 1.0)
    mean_BR = jnp.einsum("brs,r->bs", k_tr, w_R) / count  # x_s . mu (mu: the training rows' mean)
    grand_B = (mean_BR @ w_R) / count                    # mu . mu
    te_mean_BE = jnp.einsum("bes,s->be", k_te, w_R) / count
    k_tr = (k_tr - mean_BR[:, None, :] - mean_BR[:, :, None] + grand_B[:, None, None]) * (w_R[:, None] * w_R[None, :])
    te_w = tem.astype(gram_BNN.dtype)[:, None] * w_R[None, :]
    k_te = (k_te - te_mean_BE[:, :, None] - mean_BR[:, None, :] + grand_B[:, None, None]) * te_w
    return k_tr, k_te


def _dual_fold(gamma_B, k_tr_BRR, k_te_BER, tr, te, trm, tem):
    """(FoldSpec, split projections (B, E, k)) of one fold of the gamma-scaled design."""
    lam, q = solvers.eigh(jnp.einsum("b,brs->rs", gamma_B, k_tr_BRR))
    lam = jnp.maximum(lam, 0.0)
    tol = jnp.max(lam) * jnp.finfo(lam.dtype).eps * k_tr_BRR.shape[1]  # as solvers._dual
    keep = (lam > tol).astype(lam.dtype)
    split = gamma_B[:, None, None] * (k_te_BER @ q)
    return FoldSpec(solvers.Spectral(q, lam, keep, None), jnp.sum(split, axis=0), tr, te, trm, tem), split


def _split_projection(x_NP, band_PB, fold: FoldSpec):
    """(B, E, k): each band's part of the held-out rows' projection (X_test,b @ right_b)."""
    xtr = jnp.take(x_NP, fold.train_idx_R, axis=0, mode="fill", fill_value=0)
    xte = jnp.take(x_NP, fold.test_idx_E, axis=0, mode="fill", fill_value=0)
    xte = solvers._centre(xte, fold.test_mask_E, solvers._masked_mean(xtr, fold.train_mask_M))
    return jnp.einsum("ep,pb,pk->bek", xte, band_PB, fold.spec.right_Pk)


def _lean(fold: FoldSpec) -> FoldSpec:
    return fold._replace(spec=fold.spec._replace(right_Pk=None))


# -- solve: one chunk of targets --------------------------------------------------------------
class BandedResult(NamedTuple):
    """Per chunk of T targets and outer fold: joint R^2 (K, T) (= the sum of the split),
    split R^2 per band (K, B, T), Pearson r of the joint prediction (K, T), the chosen gamma
    and alpha indices (K, T), the non-finite target columns, and (when asked) the held-out
    split predictions (N, B, T) without the intercept and the intercepts (N, T), in the
    targets' units."""

    r2_KT: jnp.ndarray
    r2_split_KBT: jnp.ndarray
    r_KT: jnp.ndarray
    gamma_idx_KT: jnp.ndarray
    alpha_idx_KT: jnp.ndarray
    n_masked: jnp.ndarray
    predictions_NBT: jnp.ndarray | None
    intercept_NT: jnp.ndarray | None


@exact_matmuls
@partial(jax.jit, static_argnames=("score", "return_predictions", "tile"))
def solve_banded(plan: BandedPlan, y_NT, score: str = "r2", return_predictions: bool = False,
                 tile: int | None = None) -> BandedResult:
    """Nested banded ridge for one chunk of targets in one compiled call (see BandedResult).

    Per outer fold and target, every gamma's best alpha is found by the inner folds' mean
    score ("r2", as himalaya's r2_score, or "r"); the best gamma is the first whose score
    beats the best so far by more than the dtype's eps (himalaya's update rule), ties of
    alphas go to the larger. Non-finite target columns get NaN results, constant ones NaN
    scores; neither touches the others. tile: solve the chunk in slices of this many targets
    one after another, each slice's intermediates in cache (a CPU setting, as
    `nested.solve_nested`: measured 129 us per target in 1024-target slices against 252 in one
    8192-target call); the chunk width must be a multiple of it."""
    y_raw, finite_T, constant_T = solvers.clean_targets(y_NT)
    out = tiled(lambda y_tile: _solve_tile(plan, y_tile, score, return_predictions), y_raw, tile)
    split_KBT, r_KT, g_KT, a_KT, preds, icpt = out
    nan_T = jnp.where(finite_T & ~constant_T, 0.0, jnp.nan).astype(y_raw.dtype)
    split_KBT = split_KBT + nan_T
    if return_predictions:
        nan_T1 = jnp.where(finite_T, 0.0, jnp.nan).astype(y_raw.dtype)
        preds, icpt = preds + nan_T1, icpt + nan_T1
    return BandedResult(jnp.sum(split_KBT, axis=1), split_KBT, r_KT + nan_T, g_KT, a_KT, jnp.sum(~finite_T), preds, icpt)


def _solve_tile(plan: BandedPlan, y_raw, score: str, return_predictions: bool):
    """`solve_banded` on cleaned targets -> (split_KBT, r_KT, gamma_KT, alpha_KT, held-out split
    predictions (N, B, T) or None, intercepts (N, T) or None), before the NaN masking."""
    alphas = plan.alphas_A
    n_gammas = plan.gammas_GB.shape[0]
    eps = jnp.finfo(y_raw.dtype).eps

    def one_outer(args):
        outer_G, split_GBEk, inner_G, valid_J = args
        outer0 = jax.tree.map(lambda a: a[0], outer_G)  # the rows are the same for every gamma
        y, shift_NT, scale_NT = _standardize_runs(y_raw, plan.runs_NU, outer0)
        ytr = jnp.take(y, outer0.train_idx_R, axis=0, mode="fill", fill_value=0)
        mu_T = solvers._masked_mean(ytr, outer0.train_mask_M)
        ytr_c = solvers._centre(ytr, outer0.train_mask_M, mu_T)

        def one_gamma(carry, g):
            best_s, best_g, best_a, best_dev = carry
            inner = jax.tree.map(lambda a: a[g], inner_G)

            def add_inner_fold(j, acc):
                total, count = acc
                s_AT = solvers.fold_scores(jax.tree.map(lambda a: a[j], inner), y, alphas, score=score,
                                           fit_intercept=True)
                ok = valid_J[j] & ~jnp.isnan(s_AT)
                return total + jnp.where(ok, s_AT, 0), count + ok

            zeros = jnp.zeros((alphas.shape[0], y.shape[1]), y.dtype)
            total, count = jax.lax.fori_loop(0, valid_J.shape[0], add_inner_fold, (zeros, zeros))
            cv_AT = jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)
            a_T = solvers.select_alphas(cv_AT)
            s_T = jnp.take_along_axis(cv_AT, a_T[None], axis=0)[0]
            s_T = jnp.where(jnp.isnan(s_T), -jnp.inf, s_T)
            spec = jax.tree.map(lambda a: a[g], outer_G).spec
            w_kT = solvers.target_gains(spec, alphas[a_T]) * (spec.basis_Rk.T @ ytr_c)
            dev_BET = jnp.einsum("bek,kt->bet", split_GBEk[g], w_kT)
            take = (s_T > best_s + eps) | (g == 0)
            return (jnp.where(take, s_T, best_s), jnp.where(take, g, best_g).astype(jnp.int32),
                    jnp.where(take, a_T, best_a).astype(jnp.int32),
                    jnp.where(take[None, None], dev_BET, best_dev)), None

        t = y.shape[1]
        n_bands, n_test = split_GBEk.shape[1:3]
        init = (jnp.full(t, -jnp.inf, y.dtype), jnp.zeros(t, jnp.int32), jnp.zeros(t, jnp.int32),
                jnp.zeros((n_bands, n_test, t), y.dtype))
        (_, best_g, best_a, dev_BET), _ = jax.lax.scan(one_gamma, init, jnp.arange(n_gammas))
        tem = outer0.test_mask_E
        yte = jnp.take(y, outer0.test_idx_E, axis=0, mode="fill", fill_value=0)
        resid_ET = solvers._centre(yte, tem, mu_T)  # held-out targets minus the training intercept
        dev_ET = jnp.sum(dev_BET, axis=0)
        sst_T = jnp.sum(resid_ET * resid_ET, axis=0)
        split_BT = jnp.sum(2 * resid_ET[None] * dev_BET - dev_BET * dev_ET[None], axis=1)
        split_BT = jnp.where(sst_T > 0, split_BT / jnp.where(sst_T > 0, sst_T, 1.0), jnp.nan)
        r_T = pearson_r(dev_ET, yte, tem)
        off_ET = jnp.broadcast_to(mu_T, dev_ET.shape)
        if shift_NT is not None:  # back to the targets' units (predictions only)
            back = lambda a: jnp.take(a, outer0.test_idx_E, axis=0, mode="fill", fill_value=0)  # noqa: E731
            dev_BET, off_ET = dev_BET * back(scale_NT)[None], off_ET * back(scale_NT) + back(shift_NT)
            ok_T = jnp.all(scale_NT > 0, axis=0)
            split_BT, r_T = jnp.where(ok_T[None], split_BT, jnp.nan), jnp.where(ok_T, r_T, jnp.nan)
        kept = (dev_BET, off_ET) if return_predictions else ()  # else not stacked over folds (memory)
        return split_BT, r_T, best_g, best_a, kept

    split_KBT, r_KT, g_KT, a_KT, kept = jax.lax.map(
        one_outer, (plan.outer, plan.split_KGBEk, plan.inner, plan.inner_valid_KJ))
    preds = icpt = None
    if return_predictions:
        dev_KBET, off_KET = kept
        n, t = y_raw.shape
        rows = plan.outer.test_idx_E[:, 0].ravel()  # padding points at row n: dropped
        preds = jnp.zeros((n, dev_KBET.shape[1], t), y_raw.dtype).at[rows].set(
            jnp.moveaxis(dev_KBET, 1, 2).reshape(-1, dev_KBET.shape[1], t), mode="drop")
        icpt = jnp.zeros((n, t), y_raw.dtype).at[rows].set(off_KET.reshape(-1, t), mode="drop")
    return split_KBT, r_KT, g_KT, a_KT, preds, icpt


def target_bytes(plan: BandedPlan, tile: int | None = None) -> tuple[int, int]:
    """Device bytes of `solve_banded` (no predictions) on a chunk of T targets = per_target * T
    + fixed: the plan (fixed) and, per target, the cleaned and per-run z-scored targets, one
    outer fold's training and held-out rows, one inner fold's alpha evaluation (as
    `nested.target_bytes`), and the best and current split predictions (2 B E) of the gamma
    loop; with `tile`, only the chunk-wide arrays (input, its cleaned copy, the tiles, the
    outputs) scale with T and one tile's work is fixed. Checked against `memory_analysis()` of
    compiled chunks (tests/test_banded.py)."""
    itemsize = np.dtype(plan.alphas_A.dtype).itemsize
    r_in, k_in = plan.inner.spec.basis_Rk.shape[-2:]
    e_in = plan.inner.test_proj_Ek.shape[-2]
    r_out, k_out = plan.outer.spec.basis_Rk.shape[-2:]
    n_bands, e_out = plan.split_KGBEk.shape[-3:-1]
    n, a, k_outer = plan.tested_N.shape[-1], plan.alphas_A.shape[-1], plan.outer.test_idx_E.shape[0]
    alpha_eval = a * e_in if e_in <= k_in else 3 * a * k_in
    inner = alpha_eval + 2 * r_in + 2 * k_in + 5 * e_in + 6 * a
    outer = 2 * r_out + 2 * k_out + (2 * n_bands + 4) * e_out
    runs = 4 * n if plan.runs_NU is not None else 0
    outputs = k_outer * (n_bands + 4)
    fixed = _plan_bytes(plan)
    if tile is None:
        return itemsize * (3 * n + runs + inner + outer + outputs), fixed
    return itemsize * (3 * n + 2 * outputs), fixed + itemsize * tile * (3 * n + runs + inner + outer + outputs)


# -- variance partitioning ----------------------------------------------------------------
def drop_band(gammas_GB: np.ndarray, band: int) -> np.ndarray:
    """The candidate gammas of the model without `band`: its column removed, rows renormalised,
    rows that put all weight on it and repeats dropped (order kept)."""
    g = np.delete(np.asarray(gammas_GB, np.float64), band, axis=1)
    g = g[g.sum(1) > 0]
    g = g / g.sum(1, keepdims=True)
    _, first = np.unique(np.round(g, 12), axis=0, return_index=True)
    return g[np.sort(first)]


class PartitionPlan(NamedTuple):
    """The plans of the full model (index 0) and of each all-but-b model (index 1 + b)."""

    full: BandedPlan
    without: tuple[BandedPlan, ...]


class Partition(NamedTuple):
    """Held-out R^2 per outer fold: the full model (K, T), each all-but-b model (B, K, T);
    unique variance of each band (B, K, T) = full - without_b; shared (K, T) = full - sum of
    the unique parts; the full model's split R^2 (K, B, T) and chosen gamma (K, T)."""

    r2_full_KT: jnp.ndarray
    r2_without_BKT: jnp.ndarray
    unique_BKT: jnp.ndarray
    shared_KT: jnp.ndarray
    r2_split_KBT: jnp.ndarray
    gamma_idx_KT: jnp.ndarray


def _plan_bytes(plan: BandedPlan) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(plan))


def partition_target_bytes(plan: PartitionPlan, tile: int | None = None) -> tuple[int, int]:
    """`target_bytes` of a partition chunk: its models are solved one after another, so the
    per-target work is the largest model's, plus every model's outputs; the plans add up."""
    parts = [target_bytes(p, tile) for p in (plan.full, *plan.without)]
    k_outer = plan.full.outer.test_idx_E.shape[0]
    n_bands = len(plan.without)
    itemsize = np.dtype(plan.full.alphas_A.dtype).itemsize
    outputs = itemsize * k_outer * (3 * n_bands + 4)
    plans = [_plan_bytes(p) for p in (plan.full, *plan.without)]
    tile_work = max(f - b for (_, f), b in zip(parts, plans))  # one tile of one model at a time (0 untiled)
    return max(p for p, _ in parts) + outputs, sum(plans) + tile_work


def prepare_partition(x_NP, band_P, folds: NestedFolds, alphas, gammas_GB, **kw) -> PartitionPlan:
    """Plans of the full banded model and of every all-but-one-band model (same folds, each
    with its own gamma search: `drop_band`); kw as `prepare_banded`."""
    band = np.asarray(band_P)
    n_bands = int(band.max()) + 1
    if n_bands < 2:
        raise ValueError(f"variance partitioning needs at least 2 bands, band_P has {n_bands}")
    gammas = check_gammas(gammas_GB, n_bands)
    full, _ = prepare_banded(x_NP, band, folds, alphas, gammas, **kw)
    x = np.asarray(x_NP)
    without = []
    for b in range(n_bands):
        keep = band != b
        rest = band[keep] - (band[keep] > b)
        without.append(prepare_banded(x[:, keep], rest, folds, alphas, drop_band(gammas, b), **kw)[0])
    return PartitionPlan(full, tuple(without))


@exact_matmuls
@partial(jax.jit, static_argnames=("score", "tile"))
def solve_partition(plan: PartitionPlan, y_NT, score: str = "r2", tile: int | None = None) -> Partition:
    """Variance partitioning of one chunk of targets (see Partition; tile as `solve_banded`)."""
    full = solve_banded(plan.full, y_NT, score=score, tile=tile)
    r2_without = jnp.stack([solve_banded(p, y_NT, score=score, tile=tile).r2_KT for p in plan.without])
    unique = full.r2_KT[None] - r2_without
    return Partition(full.r2_KT, r2_without, unique, full.r2_KT - jnp.sum(unique, axis=0), full.r2_split_KBT,
                     full.gamma_idx_KT)


def banded_ridge(x_NP, y_NT, band_P, folds: NestedFolds, alphas, gammas_GB, *, score: str = "r2",
                 return_predictions: bool = False, **kw) -> BandedResult:
    """`prepare_banded` then `solve_banded` on all of y_NT at once (small problems, tests)."""
    plan, _ = prepare_banded(x_NP, band_P, folds, alphas, gammas_GB, **kw)
    return solve_banded(plan, jnp.asarray(y_NT, plan.alphas_A.dtype), score=score, return_predictions=return_predictions)


def partition(x_NP, band_P, folds: NestedFolds, alphas, gammas_GB, y_NT, *, score: str = "r2", **kw) -> Partition:
    """`prepare_partition` then `solve_partition` on all of y_NT at once (small problems, tests)."""
    plan = prepare_partition(x_NP, band_P, folds, alphas, gammas_GB, **kw)
    return solve_partition(plan, jnp.asarray(y_NT, plan.full.alphas_A.dtype), score=score)
