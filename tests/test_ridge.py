import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import Ridge as SkRidge

from assocjax.ridge import SOLVERS, Ridge, RidgeCV, grouped_kfold, make_folds, pad_folds, select_alphas
from ridge_reference import pearson, ridge_weights
from ridge_reference import ridge_cv as reference_cv

ALPHAS = np.logspace(0, 6, 7)


def make_data(n_groups=8, per_group=40, p=24, t=60, seed=0, noise=1.0):
    """Targets with planted weights of varied strength so different alphas win."""
    rng = np.random.default_rng(seed)
    n = n_groups * per_group
    x = rng.standard_normal((n, p))
    w = rng.standard_normal((p, t)) * np.logspace(-2, 0, t)
    y = x @ w + noise * rng.standard_normal((n, t)) + 3.0
    return x, y, np.repeat(np.arange(n_groups), per_group)


def rel(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


@pytest.mark.parametrize("solver", ["primal", "dual"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_fixed_alpha_matches_sklearn(solver, fit_intercept):
    x, y, g = make_data()
    ours = RidgeCV(alphas=[7.0], cv=4, solver=solver, fit_intercept=fit_intercept).fit(x, y, g)
    sk = SkRidge(alpha=7.0, fit_intercept=fit_intercept).fit(x, y)
    assert rel(ours.coef_, sk.coef_.T) < 1e-5
    assert rel(ours.predict(x), sk.predict(x)) < 1e-5
    if fit_intercept:
        assert rel(ours.intercept_, sk.intercept_) < 1e-5


@pytest.mark.parametrize("score", ["r", "r2"])
@pytest.mark.parametrize("solver", ["primal", "dual"])
def test_cv_matches_float64_reference(score, solver):
    x, y, g = make_data()
    folds = grouped_kfold(g, 4)
    cv_ref, best_ref, coef_ref, icpt_ref = reference_cv(x, y, folds, ALPHAS, score=score)
    ours = RidgeCV(alphas=ALPHAS, cv=4, scoring=score, solver=solver).fit(x, y, g)
    assert np.max(np.abs(ours.cv_scores_ - cv_ref)) < 1e-4 * np.max(np.abs(cv_ref))
    # Where float64 scores of the best two alphas differ by more than float32 noise the
    # choice must be identical; in near-ties our pick must score as well as the best.
    top2 = np.sort(cv_ref, axis=0)[-2:]
    determined = top2[1] - top2[0] > 1e-5
    assert determined.mean() > 0.7, "the data must decide most alphas"
    np.testing.assert_array_equal(ours.best_alphas_[determined], best_ref[determined])
    picked = cv_ref[np.searchsorted(np.sort(ALPHAS), ours.best_alphas_), np.arange(cv_ref.shape[1])]
    assert np.all(top2[1] - picked <= 1e-5)
    assert len(np.unique(best_ref)) >= 3, "data must make different alphas win"
    assert rel(ours.coef_, coef_ref) < 1e-4
    assert rel(ours.intercept_, icpt_ref) < 1e-4


def test_primal_equals_dual_when_features_exceed_samples():
    x, y, g = make_data(n_groups=5, per_group=12, p=150, t=30)
    kw = dict(alphas=ALPHAS, cv=5)
    primal = RidgeCV(solver="primal", **kw).fit(x, y, g)
    dual = RidgeCV(**kw).fit(x, y, g)
    assert dual.solver_ == "dual" and primal.solver_ == "primal"
    assert np.max(np.abs(primal.cv_scores_ - dual.cv_scores_)) < 1e-4
    np.testing.assert_array_equal(primal.best_alphas_, dual.best_alphas_)
    assert rel(dual.coef_, primal.coef_) < 1e-4
    assert rel(dual.predict(x[:7]), primal.predict(x[:7])) < 1e-4
    cv_ref, best_ref, _, _ = reference_cv(x, y, grouped_kfold(g, 5), ALPHAS)
    assert np.max(np.abs(dual.cv_scores_ - cv_ref)) < 1e-4


def test_grouped_folds_never_split_a_story():
    g = np.repeat(["a", "b", "c", "d", "e"], [30, 50, 20, 45, 10])
    folds = grouped_kfold(g, 3)
    covered = np.sort(np.concatenate([te for _, te in folds]))
    np.testing.assert_array_equal(covered, np.arange(len(g)))
    for tr, te in folds:
        assert not set(g[tr]) & set(g[te])
    x, y, groups = make_data()
    bad = [(np.arange(0, 150), np.arange(150, 320))]  # splits group 3 (rows 120..159)
    with pytest.raises(ValueError, match="splits group"):
        RidgeCV(cv=bad).fit(x, y, groups)


def test_leaky_cv_would_differ():
    """Guards the test above: grouping actually changes the folds versus contiguous K-fold."""
    g = np.repeat(np.arange(3), [10, 50, 20])
    grouped = grouped_kfold(g, 2)
    contiguous = make_folds(2, len(g))
    assert any(set(g[tr]) & set(g[te]) for tr, te in contiguous)
    assert not any(set(g[tr]) & set(g[te]) for tr, te in grouped)


def test_ties_go_to_larger_alpha():
    cv = np.array([[0.5, np.nan, 0.1], [0.5, np.nan, 0.3], [0.2, np.nan, 0.3]])
    np.testing.assert_array_equal(np.asarray(select_alphas(cv)), [1, 2, 2])


def test_nonfinite_and_constant_targets_do_not_poison_others():
    x, y, g = make_data()
    clean = RidgeCV(alphas=ALPHAS, cv=4).fit(x, y, g)
    bad = y.copy()
    bad[5, 3] = np.nan
    bad[:, 7] = np.inf
    bad[:, 9] = 2.5  # constant: no correlation is defined
    with pytest.warns(UserWarning, match="2 of 60 targets contain NaN/Inf"):
        fit = RidgeCV(alphas=ALPHAS, cv=4).fit(x, bad, g)
    assert fit.n_masked_targets_ == 2
    for col in (3, 7, 9):
        assert np.all(np.isnan(fit.cv_scores_[:, col]))
    assert np.all(np.isnan(fit.coef_[:, [3, 7]]))
    assert fit.best_alphas_[9] == ALPHAS.max()
    assert np.isnan(fit.score_per_target(x, bad)[9])
    keep = np.setdiff1d(np.arange(y.shape[1]), [3, 7, 9])
    np.testing.assert_allclose(fit.cv_scores_[:, keep], clean.cv_scores_[:, keep], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(fit.best_alphas_[keep], clean.best_alphas_[keep])


@pytest.mark.parametrize(
    "kwargs, x_rows, y_rows, groups, match",
    [
        (dict(), 100, 90, np.repeat([0, 1], 50), "samples"),
        (dict(), 100, 100, np.zeros(100), "at least 2 groups"),
        (dict(alphas=[1.0, 0.0]), 100, 100, np.repeat([0, 1], 50), "alphas"),
        (dict(alphas=[-1.0]), 100, 100, np.repeat([0, 1], 50), "alphas"),
        (dict(cv=[(np.arange(50), np.array([], int))]), 100, 100, None, "empty"),
        (dict(cv=5), 100, 100, np.repeat([0, 1], 50), "n_folds=5"),
        (dict(), 100, 100, np.arange(90), "groups has shape"),
    ],
)
def test_bad_input_errors(kwargs, x_rows, y_rows, groups, match):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=match):
        RidgeCV(**{"cv": 2, **kwargs}).fit(rng.standard_normal((x_rows, 5)), rng.standard_normal((y_rows, 3)), groups)


def test_chunks_layers_and_subjects_agree():
    x, y, g = make_data(t=50)
    whole = RidgeCV(alphas=ALPHAS, cv=4).fit(x, y, g)
    chunked = RidgeCV(alphas=ALPHAS, cv=4, target_chunk=16).fit(x, y, g)
    np.testing.assert_array_equal(chunked.best_alphas_, whole.best_alphas_)
    np.testing.assert_allclose(chunked.cv_scores_, whole.cv_scores_, rtol=1e-5, atol=1e-6)

    x2 = np.tanh(x) + 0.1 * x[:, ::-1]
    layered = RidgeCV(alphas=ALPHAS, cv=4, target_chunk=16).fit(np.stack([x, x2]), y, g)
    second = RidgeCV(alphas=ALPHAS, cv=4).fit(x2, y, g)
    assert layered.cv_scores_.shape == (2, len(ALPHAS), 50)
    np.testing.assert_allclose(layered.cv_scores_[0], whole.cv_scores_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layered.cv_scores_[1], second.cv_scores_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layered.predict(np.stack([x, x2]))[1], second.predict(x2), rtol=1e-4, atol=1e-4)

    subjects = RidgeCV(alphas=ALPHAS, cv=4).fit(x, y.reshape(len(y), 5, 10), g)
    assert subjects.best_alphas_.shape == (50,)
    assert subjects.predict(x).shape == (len(y), 5, 10)
    np.testing.assert_array_equal(subjects.best_alphas_, whole.best_alphas_)


def test_solve_makes_no_host_round_trip():
    x, y, g = make_data(t=20)
    est = RidgeCV(alphas=ALPHAS, cv=4)
    est.fit(x, y, g)  # compile outside the guard
    with jax.transfer_guard("disallow"):
        est.fit(x, y, g)
    assert est.cv_scores_.shape == (len(ALPHAS), 20)


@pytest.mark.slow
def test_sharded_equals_unsharded():
    script = textwrap.dedent(
        """
        import numpy as np, jax, sys
        sys.path.insert(0, "tests")
        from test_ridge import make_data, ALPHAS
        from assocjax.ridge import RidgeCV
        assert jax.local_device_count() == 8
        x, y, g = make_data(t=43)
        one = RidgeCV(alphas=ALPHAS, cv=4, shard_targets=False).fit(x, y, g)
        many = RidgeCV(alphas=ALPHAS, cv=4, target_chunk=20).fit(x, y, g)
        from assocjax.ridge.chunks import target_mesh
        assert target_mesh().size == 8
        np.testing.assert_array_equal(one.best_alphas_, many.best_alphas_)
        np.testing.assert_allclose(one.cv_scores_, many.cv_scores_, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(one.coef_, many.coef_, rtol=1e-5, atol=1e-6 * np.abs(one.coef_).max())
        from assocjax.ridge import brain_score
        b_one = brain_score(x, y, g, alphas=ALPHAS, outer_folds=4, inner_folds=3, buffer=2, shard_targets=False)
        b_many = brain_score(x, y, g, alphas=ALPHAS, outer_folds=4, inner_folds=3, buffer=2, target_chunk=20)
        np.testing.assert_array_equal(b_one.alpha_idx, b_many.alpha_idx)
        np.testing.assert_allclose(b_one.r_folds, b_many.r_folds, rtol=1e-5, atol=1e-6)
        print("sharded-ok")
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "sharded-ok" in out.stdout


def test_dual_fit_never_forms_primal_weights():
    """n_train << n_features (fMRI: ~200 TRs, thousands of features, ~10^6 targets): the
    P x T primal weights would dwarf everything else, so fit must keep only dual weights."""
    import re
    import tracemalloc

    from assocjax.ridge import estimator

    n_groups, per, p, t, chunk = 4, 12, 1500, 3000, 1000
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_groups * per, p)).astype(np.float32)
    y = rng.standard_normal((n_groups * per, t)).astype(np.float32)
    g = np.repeat(np.arange(n_groups), per)
    RidgeCV(alphas=ALPHAS, cv=4, target_chunk=chunk).fit(x, y, g)  # compile outside the measurement
    est = RidgeCV(alphas=ALPHAS, cv=4, target_chunk=chunk)
    tracemalloc.start()
    est.fit(x, y, g)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert est.solver_ == "dual"
    assert peak < p * t * 4 / 4, f"host allocations during fit peaked at {peak} bytes; P x T float32 is {p * t * 4}"
    assert all(np.size(v) < p * t / 4 for v in vars(est).values()), "a fitted attribute has primal size"

    pf = pad_folds(make_folds(4, len(g), g), len(g))
    prep = estimator._prepare_layers(x[None], *pf, solver="dual", fit_intercept=True)
    hlo = estimator._solve_layers.lower(*prep, y[:, :chunk], ALPHAS.astype(np.float32), solver="dual", score="r",
                                        fit_intercept=True).as_text()
    shapes = [set(map(int, dims.split("x")[:-1])) for dims in re.findall(r"tensor<([0-9x]+x?f32)>", hlo)]
    assert shapes and not any({p, chunk} <= dims for dims in shapes), "the compiled solve forms a (P, T) array"

    # coef_ is still there on request, and equals the explicit X_c.T @ dual_coef_.
    xc = x - x.mean(0)
    assert rel(est.coef_, xc.T.astype(np.float64) @ est.dual_coef_) < 1e-5
    est.fit(x, y[:, :7], g)  # a refit leaves no stale weights behind
    assert est.coef_.shape == (p, 7) and est.intercept_.shape == (7,)


@pytest.mark.parametrize("solver", ["primal", "dual"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_fixed_alpha_ridge_matches_float64_reference(solver, fit_intercept):
    # dual: more features than samples, where it is the natural solver
    x, y, _ = make_data(n_groups=3, per_group=20, p=80, t=12) if solver == "dual" else make_data(t=12)
    y[:, 5] = np.nan  # a target without data: NaN weights, the others untouched
    ok = np.ones(12, bool)
    ok[5] = False
    ours = Ridge(alpha=7.0, solver=solver, fit_intercept=fit_intercept)
    with pytest.warns(UserWarning, match="1 of 12 targets"):
        assert ours.fit(x, y) is ours
    mx = x.mean(0) if fit_intercept else np.zeros(x.shape[1])
    my = y[:, ok].mean(0) if fit_intercept else np.zeros(ok.sum())
    w = ridge_weights(x - mx, y[:, ok] - my, 7.0)
    assert ours.solver_ == solver and ours.n_masked_targets_ == 1
    assert rel(ours.coef_[:, ok], w) < 1e-5 and np.isnan(ours.coef_[:, 5]).all()
    np.testing.assert_allclose(ours.intercept_[ok], my - mx @ w, rtol=1e-5, atol=1e-5)  # 0 without an intercept
    pred = (x[:9] - mx) @ w + my
    assert rel(ours.predict(x[:9])[:, ok], pred) < 1e-5
    np.testing.assert_allclose(ours.score_per_target(x[:9], y[:9])[ok], pearson(pred, y[:9, ok]), atol=1e-5)


def test_fixed_alpha_ridge_fits_layers_like_single_designs():
    x, y, _ = make_data(t=9)
    rng = np.random.default_rng(1)
    layers = np.stack([x, x @ rng.standard_normal((x.shape[1], x.shape[1]))])
    both = Ridge(alpha=3.0, target_chunk=4).fit(layers, y.reshape(-1, 3, 3))
    assert both.coef_.shape == (2, x.shape[1], 9) and both.predict(layers[:, :5]).shape == (2, 5, 3, 3)
    for i in range(2):
        alone = Ridge(alpha=3.0).fit(layers[i], y)
        assert rel(both.coef_[i], alone.coef_) < 1e-5
        assert rel(both.intercept_[i], alone.intercept_) < 1e-5


def test_estimators_follow_the_sklearn_protocol():
    est = RidgeCV(alphas=(1.0, 10.0), cv=3, solver="dual", target_chunk=16)
    params = est.get_params()
    assert sorted(params) == ["alphas", "cv", "dtype", "fit_intercept", "progress", "scoring", "shard_targets",
                              "solver", "target_chunk"]
    assert (params["alphas"], params["cv"], params["solver"], params["target_chunk"]) == ((1.0, 10.0), 3, "dual", 16)
    assert repr(est) == "RidgeCV(alphas=(1.0, 10.0), cv=3, solver='dual', target_chunk=16)"
    x, y, g = make_data(n_groups=4, per_group=10, t=5)
    fitted = est.fit(x, y, g)
    twin = clone(fitted)
    assert type(twin) is RidgeCV and twin.get_params() == params and not hasattr(twin, "best_alphas_")
    assert est.set_params(cv=4, solver="primal") is est and (est.cv, est.solver) == (4, "primal")
    with pytest.raises(ValueError, match="invalid parameter 'alpha' for RidgeCV"):
        est.set_params(alpha=1.0)
    fixed = Ridge(alpha=2.0)
    assert fixed.get_params()["alpha"] == 2.0 and repr(fixed) == "Ridge(alpha=2.0)"
    grid = [clone(fixed).set_params(alpha=a).fit(x, y).coef_ for a in (1e-2, 1e4)]
    assert fixed.alpha == 2.0 and np.abs(grid[1]).max() < np.abs(grid[0]).max()


def test_solvers_come_from_one_table():
    assert sorted(SOLVERS) == ["dual", "primal"] and SOLVERS["dual"].dual and not SOLVERS["primal"].dual
    x, y, g = make_data(n_groups=4, per_group=10, t=5)
    for bad in (lambda: RidgeCV(solver="cholesky", cv=2).fit(x, y, g), lambda: Ridge(solver="cholesky").fit(x, y)):
        with pytest.raises(ValueError, match=r"solver must be 'auto' or one of \('primal', 'dual'\), got 'cholesky'"):
            bad()


def test_exact_matmuls_lowers_full_float32_products():
    """The ridge engine's jitted functions are traced with full float32 products (no TF32 or
    single bf16 pass on accelerators); a plain jit keeps JAX's default."""
    from assocjax.numerics import exact_matmuls
    from assocjax.ridge import nested

    x = jax.numpy.ones((8, 8), jax.numpy.float32)
    with jax.default_matmul_precision("bfloat16"):  # a caller's (or the platform's) fast default
        assert "HIGHEST" in exact_matmuls(jax.jit(lambda a, b: a @ b)).lower(x, x).as_text()
        assert "HIGHEST" not in jax.jit(lambda a, b: jax.numpy.dot(a, b)).lower(x, x).as_text()
    jitted = [f for f in vars(nested).values() if callable(f) and hasattr(f, "lower") and hasattr(f, "__wrapped__")]
    assert jitted and all(f.lower.__qualname__.startswith("exact_matmuls") for f in jitted)
