"""`nested_ridge` inside user code: jit, vmap over subjects and layers, grad w.r.t. the features;
equal to the shells (`brain_score`, `RidgeCV`) and to float64 references."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from assocjax.ridge import RidgeCV, brain_score, nested_folds, nested_ridge, prepare_nested, solve_nested
from ridge_reference import pearson, ridge_cv as reference_cv
from test_nested import float32_r_tolerance
from test_ridge import ALPHAS, make_data


def subjects(n_subjects=3, **kw):
    """One design heard by every subject; each subject's targets have their own planted weights."""
    x, y, g = make_data(**kw)
    rng = np.random.default_rng(7)
    w_SPT = rng.standard_normal((n_subjects, x.shape[1], y.shape[1])) * np.logspace(-2, 0, y.shape[1])
    return x, np.einsum("np,spt->snt", x, w_SPT) + rng.standard_normal((n_subjects, *y.shape)) + 3.0, g


def test_jit_vmap_over_subjects_equals_brain_score():
    x, y_SNT, g = subjects(n_groups=5, per_group=30, p=12, t=10)
    folds = nested_folds(g, inner_folds=3, buffer=2)

    @jax.jit
    def score_subjects(x_NP, y_SNT):  # what a user writes: one design, a batch of subjects
        res = jax.vmap(lambda y_NT: nested_ridge(x_NP, y_NT, folds, ALPHAS, return_predictions=True))(y_SNT)
        return res.r_folds_KT, res.r_T, res.alpha_idx_KT, res.predictions_NT

    r_SKT, r_ST, idx_SKT, pred_SNT = score_subjects(jnp.asarray(x, jnp.float32), jnp.asarray(y_SNT, jnp.float32))
    shell = brain_score(x, np.moveaxis(y_SNT, 0, 1), g, alphas=ALPHAS, inner_folds=3, buffer=2, return_predictions=True)
    np.testing.assert_array_equal(np.moveaxis(np.asarray(idx_SKT), 0, 1), shell.alpha_idx)
    np.testing.assert_allclose(np.moveaxis(np.asarray(r_SKT), 0, 1), shell.r_folds, rtol=0, atol=2e-6)
    np.testing.assert_allclose(np.asarray(r_ST), shell.r, rtol=0, atol=2e-6)
    np.testing.assert_allclose(np.moveaxis(np.asarray(pred_SNT), 0, 1), shell.predictions, rtol=0,
                               atol=1e-5 * np.abs(shell.predictions).max())
    assert len(np.unique(shell.alpha_idx)) >= 2, "the data must make different alphas win"


def test_vmap_over_layers_equals_brain_score():
    x, y, g = make_data(n_groups=4, per_group=30, p=10, t=6)
    x_LNP = np.stack([x, np.tanh(x), x ** 2]).astype(np.float32)
    folds = nested_folds(g, outer_folds=2, inner_folds=2)
    per_layer = jax.jit(jax.vmap(lambda x_NP: nested_ridge(x_NP, jnp.asarray(y, jnp.float32), folds, ALPHAS).r_T))
    shell = brain_score(x_LNP, y, g, alphas=ALPHAS, outer_folds=2, inner_folds=2)
    np.testing.assert_allclose(np.asarray(per_layer(x_LNP)), shell.r, rtol=0, atol=2e-6)


def test_equals_ridgecv_fitted_on_each_outer_fold():
    """Without z-scoring, each outer fold's held-out predictions are RidgeCV's, fitted on the
    outer-training rows with that fold's inner folds as cv."""
    x, y, g = make_data(n_groups=5, per_group=30, p=12, t=10)
    folds = nested_folds(g, inner_folds=3, buffer=2)
    res = nested_ridge(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), folds, ALPHAS, standardize=False,
                       return_predictions=True)
    alphas = np.sort(ALPHAS)
    for k, ((tr, te), inner) in enumerate(zip(folds.outer, folds.inner)):
        local = [(np.searchsorted(tr, a), np.searchsorted(tr, b)) for a, b in inner]
        est = RidgeCV(alphas=ALPHAS, cv=local).fit(x[tr], y[tr])
        np.testing.assert_array_equal(alphas[np.asarray(res.alpha_idx_KT[k])], est.best_alphas_)
        pred = est.predict(x[te])
        np.testing.assert_allclose(np.asarray(res.predictions_NT)[te], pred, rtol=0, atol=2e-5 * np.abs(pred).max())
        assert np.all(np.abs(np.asarray(res.r_folds_KT[k]) - pearson(pred, y[te])) <= float32_r_tolerance(pred))


@pytest.mark.parametrize("p", [12, 150])  # primal (SVD), dual (eigh of a kernel with a null space)
def test_float64_matches_numpy_reference(p):
    x, y, g = make_data(n_groups=5, per_group=30, p=p, t=12, seed=p)
    folds = nested_folds(g, inner_folds=3, buffer=2)
    with jax.enable_x64(True):
        res = nested_ridge(jnp.asarray(x), jnp.asarray(y), folds, ALPHAS, return_predictions=True)
        assert res.r_T.dtype == jnp.float64
    alphas, preds = np.sort(ALPHAS), np.zeros_like(y)
    for k, ((tr, te), inner) in enumerate(zip(folds.outer, folds.inner)):
        mu, sd = x[tr].mean(0), x[tr].std(0)
        local = [(np.searchsorted(tr, a), np.searchsorted(tr, b)) for a, b in inner]
        _, best, coef, icpt = reference_cv((x[tr] - mu) / sd, y[tr], local, ALPHAS)
        np.testing.assert_array_equal(alphas[np.asarray(res.alpha_idx_KT[k])], best)
        preds[te] = ((x[te] - mu) / sd) @ coef + icpt
        np.testing.assert_allclose(np.asarray(res.r_folds_KT[k]), pearson(preds[te], y[te]), rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.asarray(res.predictions_NT), preds, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.asarray(res.r_T), pearson(preds, y), rtol=0, atol=1e-10)


def mean_r_at(x, y, folds, alpha_KT):
    """The scalar of the gradient tests written out in JAX float64 with linear solves (no
    eigendecomposition), at fixed alphas: each outer fold z-scores with its training rows,
    refits every target and correlates on the held-out rows."""
    total = 0.0
    for (tr, te), alpha_T in zip(folds.outer, alpha_KT):
        mu, sd = x[tr].mean(0), x[tr].std(0)
        xtr, xte = (x[tr] - mu) / sd, (x[te] - mu) / sd
        xc, yc = xtr - xtr.mean(0), y[tr] - y[tr].mean(0)
        for alpha in np.unique(alpha_T):
            cols = np.flatnonzero(alpha_T == alpha)
            dual_NT = jnp.linalg.solve(xc @ xc.T + alpha * jnp.eye(len(tr)), yc[:, cols])  # any P: the dual system
            pred = (xte - xtr.mean(0)) @ (xc.T @ dual_NT)
            pc, ytc = pred - pred.mean(0), y[te][:, cols] - y[te][:, cols].mean(0)
            total = total + jnp.sum(jnp.sum(pc * ytc, 0) / jnp.sqrt(jnp.sum(pc * pc, 0) * jnp.sum(ytc * ytc, 0)))
    return total / (len(folds.outer) * y.shape[1])


@pytest.mark.parametrize("p", [12, 150])
def test_grad_wrt_features_matches_finite_differences_and_solve_reference(p):
    x, y, g = make_data(n_groups=5, per_group=30, p=p, t=8)
    folds = nested_folds(g, inner_folds=3, buffer=2)
    with jax.enable_x64(True):
        x, y = jnp.asarray(x), jnp.asarray(y)

        @jax.jit
        def loss(x_NP):  # a brain-tuning objective: mean held-out r
            return jnp.mean(nested_ridge(x_NP, y, folds, ALPHAS).r_folds_KT)

        grad = jax.grad(loss)(x)
        assert bool(jnp.all(jnp.isfinite(grad)))
        rng = np.random.default_rng(123)
        for _ in range(2):
            d = jnp.asarray(rng.standard_normal(x.shape))
            h = 1e-3  # Richardson-extrapolated central differences: error O(h^4)
            c = lambda s: loss(x + s * d) - loss(x - s * d)  # noqa: E731
            fd = (8 * c(h / 2) - c(h)) / (6 * h)
            np.testing.assert_allclose(float(jnp.vdot(grad, d)), float(fd), rtol=1e-7)
        # The whole gradient against an independent route: linear solves at the chosen alphas.
        alpha_KT = np.sort(ALPHAS)[np.asarray(nested_ridge(x, y, folds, ALPHAS).alpha_idx_KT)]
        ref_value, ref_grad = jax.jit(jax.value_and_grad(lambda x_NP: mean_r_at(x_NP, y, folds, alpha_KT)))(x)
        np.testing.assert_allclose(float(loss(x)), float(ref_value), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(grad), np.asarray(ref_grad), rtol=0, atol=1e-9 * np.abs(ref_grad).max())


def test_folds_are_a_static_argument():
    x, y, g = make_data(n_groups=4, per_group=20, p=8, t=4)
    score = jax.jit(nested_ridge, static_argnames=("folds",))
    a, b = nested_folds(g, inner_folds=2), nested_folds(g, inner_folds=2, buffer=3)
    assert a == nested_folds(g, inner_folds=2) and hash(a) == hash(nested_folds(g, inner_folds=2)) and a != b
    x32, y32 = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    np.testing.assert_allclose(score(x32, y32, a, ALPHAS).r_T, nested_ridge(x32, y32, a, ALPHAS).r_T, rtol=0, atol=1e-6)
    assert not np.allclose(score(x32, y32, b, ALPHAS).r_T, score(x32, y32, a, ALPHAS).r_T)


def test_runs_z_score_targets_as_the_pipeline_does():
    """runs_N: the pipeline's per-story target z-scoring inside each fold (prepare_nested's
    target_runs_N), which changes the result."""
    x, y, g = make_data(n_groups=4, per_group=24, p=8, t=5)
    y = y * np.repeat([1.0, 4.0, 0.5, 2.0], 24)[:, None]  # stories at different scales
    chunk = np.repeat(np.arange(8), 12)  # two chunks per story
    folds = nested_folds(chunk, outer_folds=4, inner_folds=3, runs_N=g, buffer=2)
    x32, y32 = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    ours = jax.jit(lambda x_NP, y_NT: nested_ridge(x_NP, y_NT, folds, ALPHAS, runs_N=g))(x32, y32)
    plan, _ = prepare_nested(x, folds, ALPHAS, target_runs_N=g)
    shell = solve_nested(plan, y32)
    np.testing.assert_array_equal(ours.alpha_idx_KT, shell.alpha_idx_KT)
    np.testing.assert_allclose(ours.r_T, shell.r_T, rtol=0, atol=2e-6)
    assert not np.allclose(ours.r_T, nested_ridge(x32, y32, folds, ALPHAS).r_T, atol=1e-3)
