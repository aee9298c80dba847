"""`Ridge` / `RidgeCV` inside scikit-learn: its estimator checks, Pipeline, GridSearchCV and
clone, with numbers equal to scikit-learn's own Ridge / RidgeCV on the same alphas and folds
(to float32 precision: ours compute in float32), and its usual errors for bad input."""
import subprocess
import sys

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError as SkNotFittedError
from sklearn.linear_model import Ridge as SkRidge
from sklearn.linear_model import RidgeCV as SkRidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_is_fitted

from assocjax.ridge import Ridge, RidgeCV
from assocjax.ridge.validation import NotFittedError

ALPHAS = np.logspace(-2, 4, 7)


def make_data(n=60, p=8, t=4, seed=0):
    """Targets of graded signal strength, so the alphas' scores differ."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p)) * np.linspace(0.5, 3.0, p) + 1.0
    y = x @ rng.standard_normal((p, t)) * np.logspace(-1.5, 0, t) + rng.standard_normal((n, t)) + 2.0
    return x, y


# Every check of scikit-learn (1.9: 53) passes; none is listed as an expected failure.
@parametrize_with_checks([Ridge(), RidgeCV(alphas=(0.1, 10.0, 1000.0), cv=3)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_importing_assocjax_does_not_import_sklearn():
    code = ("import sys, assocjax, assocjax.ridge; from assocjax.ridge import Ridge; Ridge().__sklearn_is_fitted__(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_pipeline_with_scaler_matches_sklearn_ridgecv():
    x, y = make_data(t=1)
    y = y[:, 0]  # one target: one alpha, as scikit-learn's RidgeCV chooses with cv folds
    folds = list(KFold(5).split(x[:50]))
    ours = make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS, cv=folds, scoring="r2")).fit(x[:50], y[:50])
    theirs = make_pipeline(StandardScaler(), SkRidgeCV(alphas=ALPHAS, cv=folds)).fit(x[:50], y[:50])
    est, sk = ours[-1], theirs[-1]
    assert est.best_alphas_.shape == (1,) and est.best_alphas_[0] == sk.alpha_
    assert abs(est.cv_scores_[:, 0].max() - sk.best_score_) < 1e-5  # mean R^2 over the same folds
    pred = ours.predict(x[50:])
    assert pred.shape == (10,) and pred.dtype == np.float64  # 1-D y: 1-D predictions, X's precision
    np.testing.assert_allclose(pred, theirs.predict(x[50:]), rtol=1e-5)
    np.testing.assert_allclose(est.coef_[:, 0], sk.coef_, rtol=1e-5)
    assert abs(ours.score(x[50:], y[50:]) - theirs.score(x[50:], y[50:])) < 1e-5


def test_grid_search_over_alpha_matches_sklearn_ridge():
    x, y = make_data()
    grid = {"alpha": list(ALPHAS)}
    ours = GridSearchCV(Ridge(), grid, cv=KFold(5)).fit(x, y)
    theirs = GridSearchCV(SkRidge(), grid, cv=KFold(5)).fit(x, y)
    scores = theirs.cv_results_["mean_test_score"]
    assert np.ptp(scores) > 0.1 and np.sort(scores)[-1] - np.sort(scores)[-2] > 1e-3, "the data must decide alpha"
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"], scores, atol=1e-5)
    assert ours.best_params_ == theirs.best_params_
    np.testing.assert_allclose(ours.best_estimator_.coef_, theirs.best_estimator_.coef_.T, rtol=1e-5, atol=1e-6)


def test_score_is_sklearns_mean_r2_and_per_target_scores_stay():
    x, y = make_data(t=5)
    y[:, 3] = 4.0  # constant: scikit-learn counts R^2 0 unless predicted exactly
    est = Ridge(alpha=3.0).fit(x[:40], y[:40])
    pred = est.predict(x[40:])
    assert abs(est.score(x[40:], y[40:]) - r2_score(y[40:], pred)) < 1e-6
    per = est.score_per_target(x[40:], y[40:])  # Pearson r by default, NaN for the constant target
    ok = [0, 1, 2, 4]
    np.testing.assert_allclose(per[ok], [np.corrcoef(pred[:, i], y[40:, i])[0, 1] for i in ok], atol=1e-5)
    assert np.isnan(per[3])
    assert np.isnan(est.score_per_target(x[40:], np.full_like(y[40:], np.nan))).all()  # no data: NaN, no error
    r2_T = Ridge(alpha=3.0, scoring="r2").fit(x[:40], y[:40]).score_per_target(x[40:], y[40:])
    np.testing.assert_allclose(r2_T[ok], r2_score(y[40:, ok], pred[:, ok], multioutput="raw_values"), atol=1e-5)
    layered = Ridge(alpha=3.0).fit(np.stack([x[:40], 2 * x[:40]]), y[:40])  # one mean R^2 per layer
    np.testing.assert_allclose(layered.score(np.stack([x[40:], 2 * x[40:]]), y[40:]),
                               [est.score(x[40:], y[40:]), Ridge(alpha=3.0).fit(2 * x[:40], y[:40]).score(2 * x[40:], y[40:])],
                               atol=1e-6)


def test_predictions_keep_the_float_precision_of_x():
    x, y = make_data()
    est = Ridge().fit(x, y)
    assert est.predict(x).dtype == np.float64 and est.predict(x.astype(np.float32)).dtype == np.float32
    np.testing.assert_array_equal(est.predict(x.astype(int)), est.predict(x.astype(int).astype(float)))


def test_clone_and_fitted_checks():
    x, y = make_data()
    est = RidgeCV(alphas=(1.0, 10.0), cv=4, solver="dual")
    for unfitted in (RidgeCV(), clone(RidgeCV(alphas=(1.0, 10.0), cv=4, solver="dual").fit(x, y))):
        assert not hasattr(unfitted, "coef_") and not hasattr(unfitted, "n_features_in_")
        with pytest.raises(SkNotFittedError, match="This RidgeCV instance is not fitted yet"):
            check_is_fitted(unfitted)
        for use in (lambda: unfitted.predict(x), lambda: unfitted.score(x, y), lambda: unfitted.intercept_):
            with pytest.raises(NotFittedError) as caught:
                use()
            assert isinstance(caught.value, (SkNotFittedError, ValueError, AttributeError))
    twin = clone(est.fit(x, y))
    assert twin is not est and twin.get_params() == est.get_params()
    check_is_fitted(est)
    assert est.n_features_in_ == x.shape[1]


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda x, y: (np.where(x > 2.5, np.nan, x), y), ValueError, r"^Input X contains NaN\."),
        (lambda x, y: (np.where(x > 2.5, np.inf, x), y), ValueError, r"^Input X contains infinity"),
        (lambda x, y: (x[:0], y[:0]), ValueError, r"Found array with 0 sample\(s\) \(shape=\(0, 8\)\) .* by Ridge"),
        (lambda x, y: (x[:, :0], y), ValueError, r"Found array with 0 feature\(s\)"),
        (lambda x, y: (x + 1j, y), ValueError, "Complex data not supported"),
        (lambda x, y: (x, y + 1j), ValueError, "Complex data not supported"),
        (lambda x, y: (x[:, 0], y), ValueError, "Expected 2D array, got 1D array instead"),
        (lambda x, y: (x, y[:-1]), ValueError, r"inconsistent numbers of samples: \[60, 59\]"),
        (lambda x, y: (x, None), ValueError, "Ridge requires y to be passed, but the target y is None"),
        (lambda x, y: (x, np.full_like(y, np.nan)), ValueError, r"Input y contains NaN in every target column \(4 of 4"),
    ],
)
def test_bad_input_gets_sklearns_errors(change, error, match):
    x, y = make_data()
    with pytest.raises(error, match=match):
        Ridge().fit(*change(x, y))


def test_sparse_input_is_refused_like_sklearn():
    import scipy.sparse

    x, y = make_data()
    with pytest.raises(TypeError, match="Sparse data was passed for X, but dense data is required"):
        Ridge().fit(scipy.sparse.csr_matrix(x), y)


def test_predict_and_score_check_x_against_the_fit():
    x, y = make_data()
    est = Ridge().fit(x, y)
    with pytest.raises(ValueError, match="X has 3 features, but Ridge is expecting 8 features as input"):
        est.predict(x[:, :3])
    with pytest.raises(ValueError, match="Input X contains NaN"):
        est.predict(np.where(x > 2.5, np.nan, x))
    with pytest.raises(ValueError, match=r"y has 3 targets \(shape \(60, 3\)\), but Ridge was fitted on 4"):
        est.score(x, y[:, :3])
    with pytest.raises(ValueError, match="Input y contains NaN"):  # scikit-learn's metrics refuse NaN too
        est.score(x, np.where(y > 3, np.nan, y))


def test_story_grouped_cv_inside_a_pipeline():
    x, y = make_data()
    stories = np.arange(60) % 4  # not contiguous: grouped folds differ from contiguous blocks
    pipe = make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS, cv=4)).fit(x, y, ridgecv__groups=stories)
    scaled = StandardScaler().fit_transform(x)
    alone = RidgeCV(alphas=ALPHAS, cv=4).fit(scaled, y, groups=stories)
    np.testing.assert_array_equal(pipe[-1].cv_scores_, alone.cv_scores_)
    np.testing.assert_array_equal(pipe.predict(x), alone.predict(scaled))
    assert not np.allclose(RidgeCV(alphas=ALPHAS, cv=4).fit(scaled, y).cv_scores_, alone.cv_scores_)


def test_integer_targets_are_read_in_place(tmp_path):
    """An int16 BOLD memmap is not copied to float64 at fit (chunks are cast as read); it
    fits as its float values do."""
    from assocjax.ridge.validation import check_targets

    x, y = make_data()
    bold = np.lib.format.open_memmap(tmp_path / "bold.npy", mode="w+", dtype=np.int16, shape=y.shape)
    bold[:] = np.round(100 * y)
    est = Ridge(alpha=3.0)
    assert np.shares_memory(check_targets(bold, len(x), est), bold)
    np.testing.assert_array_equal(est.fit(x, bold).coef_, Ridge(alpha=3.0).fit(x, np.asarray(bold, float)).coef_)
