"""Functional core of closed-form ridge with per-target alphas chosen by grouped CV.

Both exact solvers reduce a training design to a spectral form

    prediction(alpha) = P @ diag(gain(alpha)) @ B.T @ Y_train,   gain = scale / (eig + alpha)

primal: thin SVD X_train = U S V.T     -> B = U, P = X_test V,          eig = s**2, scale = s
dual:   eigh(X_train X_train.T) = Q L Q.T -> B = Q, P = X_test X_train.T Q, eig = L, scale = 1

so the targets are projected once per fold (B.T @ Y, k x t) and each alpha costs only
min(n_test, k) * k * n_targets. The correlation numerator of every alpha comes from one
(k, t) product (`lin` below), so only the prediction norm needs a product per alpha.

Every function here is pure and jit-able; shapes are in the names: N samples, P features,
R padded train rows, E padded test rows, k spectral components, A alphas, T targets,
K folds.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from ..numerics import exact_matmuls

SCORES = ("r", "r2")


class Spectral(NamedTuple):
    """A training design in spectral form (see module docstring)."""

    basis_Rk: jnp.ndarray  # B: U (primal) or Q (dual), rows = training samples
    eig_k: jnp.ndarray
    scale_k: jnp.ndarray
    right_Pk: jnp.ndarray  # maps features to components: V (primal) or X_train.T Q (dual)


class FoldSpec(NamedTuple):
    """One CV fold ready for any chunk of targets (stack of these over K under lax.map)."""

    spec: Spectral
    test_proj_Ek: jnp.ndarray  # P = X_test @ right, intercept-centred with train means
    train_idx_R: jnp.ndarray
    test_idx_E: jnp.ndarray
    train_mask_M: jnp.ndarray
    test_mask_E: jnp.ndarray


def choose_solver(n_train: int, n_features: int) -> str:
    """Primal when the training set has at least as many samples as features, else dual."""
    return "primal" if n_train >= n_features else "dual"


def _primal(x_MP: jnp.ndarray) -> Spectral:
    u, s, vt = jnp.linalg.svd(x_MP, full_matrices=False)
    return Spectral(u, s * s, s, vt.T)


@jax.custom_jvp
def eigh(a_RR: jnp.ndarray):
    """`jnp.linalg.eigh` whose derivative skips pairs of (numerically) equal eigenvalues.

    JAX's rule divides by every eigenvalue gap, so a repeated eigenvalue makes it inf, and
    a kernel always has one: the zero eigenvalues of its padded rows and of the centring
    (then inf * 0 = NaN in every gradient). Ridge predictions are spectral functions of the
    kernel (a degenerate eigenspace enters only through its projector, whatever basis eigh
    picks in it), so the rotation inside such a space contributes nothing and skipping it
    is exact; the null space has zero gain (`_dual`). Forward: plain eigh -> (w_R, q_RR)."""
    w_R, q_RR = jnp.linalg.eigh(a_RR)
    return w_R, q_RR


@eigh.defjvp
def _eigh_jvp(primals, tangents):
    (a_RR,), (da_RR,) = primals, tangents
    w_R, q_RR = eigh(a_RR)
    # Full float32 products spelled out: autodiff may trace this rule outside `exact_matmuls`.
    mm = partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)
    da_RR = (da_RR + da_RR.T) / 2
    dq_RR = mm(mm(q_RR.T, da_RR), q_RR)
    gap_RR = w_R[None, :] - w_R[:, None]
    tol = jnp.max(jnp.abs(w_R)) * jnp.finfo(w_R.dtype).eps * w_R.shape[0]
    far = jnp.abs(gap_RR) > tol
    f_RR = jnp.where(far, 1.0 / jnp.where(far, gap_RR, 1.0), 0.0)
    return (w_R, q_RR), (jnp.diagonal(dq_RR), mm(q_RR, f_RR * dq_RR))


def _dual(x_MP: jnp.ndarray) -> Spectral:
    lam, q = eigh(x_MP @ x_MP.T)
    lam = jnp.maximum(lam, 0.0)
    # Directions at round-off level are the kernel's null space: exactly they carry no
    # signal, but in float32 their X_train.T q is noise that 1/alpha would amplify.
    tol = jnp.max(lam) * jnp.finfo(lam.dtype).eps * x_MP.shape[0]
    keep = (lam > tol).astype(lam.dtype)
    return Spectral(q, lam, keep, x_MP.T @ q)


class Solver(NamedTuple):
    """One exact solver: how a training design is decomposed, and whether the fitted weights
    live in sample space (dual: one weight per training row, acting on the kernel with the
    training rows) or in feature space (primal)."""

    decompose: Callable[[jnp.ndarray], Spectral]
    dual: bool

    def weights(self, spec: Spectral, w_kT: jnp.ndarray) -> jnp.ndarray:
        """Refit weights from component weights: dual_coef (N, T) or coef (P, T)."""
        return spec.basis_Rk @ w_kT if self.dual else spec.right_Pk @ w_kT


# The one table of solvers: every dispatch on a solver name goes through it.
SOLVERS = {"primal": Solver(_primal, dual=False), "dual": Solver(_dual, dual=True)}


def get_solver(solver: str) -> Solver:
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; expected one of {tuple(SOLVERS)}")
    return SOLVERS[solver]


def resolve_solver(solver: str, n_train: int, n_features: int) -> str:
    """The solver name to use: `choose_solver` for "auto", else the name itself when known;
    ValueError otherwise."""
    if solver == "auto":
        return choose_solver(n_train, n_features)
    if solver not in SOLVERS:
        raise ValueError(f"solver must be 'auto' or one of {tuple(SOLVERS)}, got {solver!r}")
    return solver


def spectral(x_MP: jnp.ndarray, solver: str) -> Spectral:
    """Decompose a (centred, zero-padded) training design; padded zero rows are harmless."""
    return get_solver(solver).decompose(x_MP)


def _masked_mean(a_MX: jnp.ndarray, mask_M: jnp.ndarray) -> jnp.ndarray:
    w = mask_M.astype(a_MX.dtype)
    return (w @ a_MX) / jnp.maximum(jnp.sum(w), 1.0)


def _centre(a_MX, mask_M, mean_X):
    return (a_MX - mean_X) * mask_M[:, None].astype(a_MX.dtype)


def fold_spec(x_NP, train_M, test_E, train_mask_M, test_mask_E, *, solver: str, fit_intercept: bool) -> FoldSpec:
    """One fold's training design in spectral form, and its test rows projected on it."""
    xtr = jnp.take(x_NP, train_M, axis=0, mode="fill", fill_value=0)
    xte = jnp.take(x_NP, test_E, axis=0, mode="fill", fill_value=0)
    mu = _masked_mean(xtr, train_mask_M) if fit_intercept else jnp.zeros(x_NP.shape[1], x_NP.dtype)
    xtr, xte = _centre(xtr, train_mask_M, mu), _centre(xte, test_mask_E, mu)
    sp = spectral(xtr, solver)
    return FoldSpec(sp, xte @ sp.right_Pk, train_M, test_E, train_mask_M, test_mask_E)


@exact_matmuls
@partial(jax.jit, static_argnames=("solver", "fit_intercept"))
def prepare_folds(x_NP, train_KM, test_KE, train_mask_KR, test_mask_KE, *, solver: str, fit_intercept: bool) -> FoldSpec:
    """Decompose every fold's training design once; reused by all chunks of targets."""
    one = partial(fold_spec, x_NP, solver=solver, fit_intercept=fit_intercept)
    return jax.lax.map(lambda f: one(*f), (train_KM, test_KE, train_mask_KR, test_mask_KE))


def gains(spec: Spectral, alphas_A: jnp.ndarray) -> jnp.ndarray:
    """gain[a, j] = scale_j / (eig_j + alpha_a), shape (A, k)."""
    return spec.scale_k[None, :] / (spec.eig_k[None, :] + alphas_A[:, None])


def target_gains(spec: Spectral, alpha_T: jnp.ndarray) -> jnp.ndarray:
    """gain[j, t] = scale_j / (eig_j + alpha_t), shape (k, T): each target's chosen alpha (the refits)."""
    return spec.scale_k[:, None] / (spec.eig_k[:, None] + alpha_T[None, :])


def _lin_quad(p_Ek, g_Ak, uty_kT, target_ET):
    """lin[a, t] = <P diag(g_a) u_t, target_t> and quad[a, t] = |P diag(g_a) u_t|^2,
    via the cheaper of two exact routes.

    With fewer test rows than components, the test predictions of all alphas come from one
    (A E, k) @ (k, T) product and both sums from one pass over it. With more test rows than
    components the (k, k) Gram of P is cheaper.
    """
    n_test, k = p_Ek.shape
    a = g_Ak.shape[0]
    if n_test <= k:
        pred_AET = ((g_Ak[:, None, :] * p_Ek[None]).reshape(a * n_test, k) @ uty_kT).reshape(a, n_test, -1)
        return jnp.sum(pred_AET * target_ET[None], axis=1), jnp.sum(pred_AET * pred_AET, axis=1)
    lin = g_Ak @ ((p_Ek.T @ target_ET) * uty_kT)
    w_AkT = g_Ak[:, :, None] * uty_kT[None]
    return lin, jnp.einsum("akt,kj,ajt->at", w_AkT, p_Ek.T @ p_Ek, w_AkT)


def _score_proj(fold: FoldSpec, score: str) -> jnp.ndarray:
    """The test projection a score reads: centred over the test rows for r (whose predictions
    are compared after centring), as fitted for R^2."""
    if score == "r":
        p, tem = fold.test_proj_Ek, fold.test_mask_E
        return _centre(p, tem, _masked_mean(p, tem))
    if score == "r2":
        return fold.test_proj_Ek
    raise ValueError(f"unknown score {score!r}; expected one of {SCORES}")


def maps_pay(r: int, k: int, e: int, a: int, n_targets: int | None = None) -> bool:
    """Whether `fold_maps` saves work on a fold of R training rows, k components, E test rows and
    A alphas: A E R products per target against the projection on the basis (k R) plus the
    cheaper alpha route of `_lin_quad` (on the dual route, where k = R, the projection is all
    saved; not on the primal route with few features); with n_targets (the targets one set of
    maps serves), the maps' own A E k R products count too (long stories in narrow chunks)."""
    spectral_route = k * r + (a * e * k if e <= k else e * k + a * k * k)
    if n_targets is None:
        return a * e * r < spectral_route
    return a * e * r * n_targets + a * e * k * r < spectral_route * n_targets


def fold_maps(fold: FoldSpec, alphas_A: jnp.ndarray, *, score: str, fit_intercept: bool) -> jnp.ndarray:
    """(A, E, R): every alpha's map from the fold's raw training rows (as gathered, padding
    included) to its test predictions, M_a = P diag(gain_a) B.T C with C the centring on the
    training rows (the intercept) and P as the score reads it (`_score_proj`).

    A property of the design, not of the targets: computed once per solve, it turns each
    target's inner-fold work from a projection on the basis (k x R) and A x E x k alpha
    products into A x E x R products alone (on the dual route k = R: 1/(A E) + ... fewer).
    """
    b_Rk, m_R = fold.spec.basis_Rk, fold.train_mask_M.astype(fold.test_proj_Ek.dtype)
    bt_kR = b_Rk.T * m_R[None, :]
    if fit_intercept:  # B.T C y = B.T (y - mean) on the training rows
        bt_kR = bt_kR - jnp.outer(bt_kR.sum(1), m_R) / jnp.maximum(m_R.sum(), 1.0)
    p_Ek = _score_proj(fold, score)
    g_Ak = gains(fold.spec, alphas_A)
    return jnp.einsum("ek,ak,kr->aer", p_Ek, g_Ak, bt_kR)


def fold_scores(fold: FoldSpec, y_NT: jnp.ndarray, alphas_A: jnp.ndarray, *, score: str, fit_intercept: bool,
                maps_AER: jnp.ndarray | None = None) -> jnp.ndarray:
    """Score (Pearson r or R^2) on the fold's test rows for every alpha and target: (A, T).
    maps_AER: the fold's `fold_maps` (same score, alphas and intercept), when precomputed
    (`maps_pay`); the scores are the same up to float32 rounding. Maps with leading axes
    (e.g. layers: (L, A, E, R), each with its alphas_A row) give scores with those axes,
    all from one product with the shared training rows."""
    trm, tem = fold.train_mask_M, fold.test_mask_E
    ytr = jnp.take(y_NT, fold.train_idx_R, axis=0, mode="fill", fill_value=0)
    yte = jnp.take(y_NT, fold.test_idx_E, axis=0, mode="fill", fill_value=0)
    mu_tr = _masked_mean(ytr, trm) if fit_intercept else jnp.zeros(y_NT.shape[1], y_NT.dtype)
    yc = _centre(yte, tem, _masked_mean(yte, tem))
    target = yc if score == "r" else _centre(yte, tem, mu_tr)  # r2: residual of the intercept-only prediction
    if maps_AER is not None:
        *lead, e, r = maps_AER.shape  # reduced as one (A', E, T) block: XLA:CPU ran a 4-D (1, A, E, T) reduction 2x slower
        pred_AET = (maps_AER.reshape(-1, r) @ ytr).reshape(-1, e, ytr.shape[1])
        lin, quad = jnp.sum(pred_AET * target, axis=1), jnp.sum(pred_AET * pred_AET, axis=1)
        lin, quad = lin.reshape(*lead, -1), quad.reshape(*lead, -1)
    else:
        uty = fold.spec.basis_Rk.T @ _centre(ytr, trm, mu_tr)
        lin, quad = _lin_quad(_score_proj(fold, score), gains(fold.spec, alphas_A), uty, target)
    if score == "r":
        ss_tot = jnp.sum(yc * yc, axis=0)
        ok = (quad > 0) & (ss_tot > 0)
        return jnp.where(ok, lin / jnp.sqrt(jnp.where(ok, quad * ss_tot, 1.0)), jnp.nan)
    ss_res = jnp.sum(target * target, axis=0) - 2 * lin + quad
    ss_tot = jnp.sum(yc * yc, axis=0)
    return jnp.where(ss_tot > 0, 1 - ss_res / jnp.where(ss_tot > 0, ss_tot, 1.0), jnp.nan)


def select_alphas(cv_AT: jnp.ndarray) -> jnp.ndarray:
    """Index of the best alpha per target (alphas sorted ascending); ties and all-NaN
    columns go to the larger alpha, the safer (more regularised) choice."""
    flipped = jnp.where(jnp.isnan(cv_AT), -jnp.inf, cv_AT)[::-1]
    return cv_AT.shape[0] - 1 - jnp.argmax(flipped, axis=0)


class Fit(NamedTuple):
    """Refit on all training samples with each target's alpha."""

    weights: jnp.ndarray  # primal: coef (P, T); dual: dual_coef (N, T)
    x_mean_P: jnp.ndarray
    y_mean_T: jnp.ndarray


def refit(spec: Spectral, y_NT, x_mean_P, alpha_T, *, fit_intercept: bool, solver: str) -> Fit:
    y_mean = jnp.mean(y_NT, axis=0) if fit_intercept else jnp.zeros(y_NT.shape[1], y_NT.dtype)
    w = target_gains(spec, alpha_T) * (spec.basis_Rk.T @ (y_NT - y_mean))
    return Fit(get_solver(solver).weights(spec, w), x_mean_P, y_mean)


@exact_matmuls
@partial(jax.jit, static_argnames=("solver", "fit_intercept"))
def prepare_full(x_NP, *, solver: str, fit_intercept: bool):
    """Spectral form of the whole training design (for the refit) and its feature means."""
    mu = jnp.mean(x_NP, axis=0) if fit_intercept else jnp.zeros(x_NP.shape[1], x_NP.dtype)
    return spectral(x_NP - mu, solver), mu


def clean_targets(y_NT):
    """(y_NT with non-finite columns zeroed, finite_T, constant_T).

    Non-finite columns (e.g. medial-wall vertices) are zeroed so they never touch other
    targets; constant columns have no defined score. Both get NaN scores from the callers.
    Constancy is tested exactly (max == min): after centring, a constant column's rounding
    residue would otherwise give a spurious finite correlation.
    """
    finite_T = jnp.all(jnp.isfinite(y_NT), axis=0)
    y = jnp.where(finite_T[None, :], y_NT, 0)
    return y, finite_T, jnp.max(y, axis=0) == jnp.min(y, axis=0)


def nan_where_masked(fit: Fit, finite_T) -> Fit:
    """The fit with NaN weights and intercepts for the targets that were not finite."""
    nan_T = jnp.where(finite_T, 0.0, jnp.nan).astype(fit.y_mean_T.dtype)
    return Fit(fit.weights + nan_T[None, :], fit.x_mean_P, fit.y_mean_T + nan_T)


@exact_matmuls
@partial(jax.jit, static_argnames=("solver", "score", "fit_intercept"))
def solve_chunk(folds: FoldSpec, full: Spectral, x_mean_P, y_NT, alphas_A, *, solver: str, score: str, fit_intercept: bool):
    """CV scores, per-target alpha and refit for one chunk of targets, in one compiled call.

    Non-finite target columns (e.g. medial-wall vertices) are zeroed for the solve and
    get NaN scores and weights, so they never touch the other targets; constant targets get
    NaN scores (hence the largest alpha). Returns (cv_AT, best_idx_T, Fit, n_masked).
    """
    y, finite_T, constant_T = clean_targets(y_NT)
    per_fold = jax.lax.map(lambda f: fold_scores(f, y, alphas_A, score=score, fit_intercept=fit_intercept), folds)
    cv = jnp.nanmean(jnp.where((finite_T & ~constant_T)[None, None, :], per_fold, jnp.nan), axis=0)
    best = select_alphas(cv)
    fit = refit(full, y, x_mean_P, alphas_A[best], fit_intercept=fit_intercept, solver=solver)
    return cv, best, nan_where_masked(fit, finite_T), jnp.sum(~finite_T)

