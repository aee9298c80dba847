import numpy as np

from assocjax.ridge import brain_score, grouped_kfold
from ridge_reference import pearson, ridge_cv as reference_cv
from test_ridge import ALPHAS, make_data


def float32_r_tolerance(pred):
    """2e-4, plus the float32 rounding of predictions whose spread is tiny next to their
    mean (heavily regularised targets: r then rests on the last digits of each value)."""
    return 2e-4 + 100 * np.finfo(np.float32).eps * np.abs(pred.mean(0)) / pred.std(0)


def test_nested_matches_float64_reference():
    x, y, g = make_data(n_groups=6, per_group=40, t=30)
    ours = brain_score(x, y, g, alphas=ALPHAS, inner_folds=3, return_predictions=True)
    outer = grouped_kfold(g, 6)
    assert len(ours.test_groups) == 6 and all(len(tg) == 1 for tg in ours.test_groups)
    preds = np.zeros_like(y)
    for k, (tr, te) in enumerate(outer):
        mu, sd = x[tr].mean(0), x[tr].std(0)
        xtr, xte = (x[tr] - mu) / sd, (x[te] - mu) / sd
        _, best, coef, icpt = reference_cv(xtr, y[tr], grouped_kfold(g[tr], 3), ALPHAS)
        preds[te] = xte @ coef + icpt
        np.testing.assert_array_equal(ours.best_alphas[k], best)
        assert np.all(np.abs(ours.r_folds[k] - pearson(preds[te], y[te])) <= float32_r_tolerance(preds[te]))
    np.testing.assert_allclose(ours.predictions, preds, rtol=1e-4, atol=1e-5 * np.abs(preds).max())
    assert np.all(np.abs(ours.r - pearson(preds, y)) <= float32_r_tolerance(preds))
    assert np.nanmean(ours.r) > 0.3, "planted signal should be recovered"


def test_held_out_story_cannot_leak_into_its_prediction():
    x, y, g = make_data(n_groups=5, per_group=30, t=12)
    held = g == 2
    base = brain_score(x, y, g, alphas=ALPHAS, inner_folds=2, return_predictions=True)
    y2 = y.copy()
    y2[held] = np.random.default_rng(1).standard_normal(y2[held].shape) * 50
    moved = brain_score(x, y2, g, alphas=ALPHAS, inner_folds=2, return_predictions=True)
    np.testing.assert_array_equal(moved.predictions[held], base.predictions[held])
    assert not np.allclose(moved.predictions[~held], base.predictions[~held]), "other stories do train on it"

    x2 = x.copy()
    x2[held] = x2[held] * 3.0 + 1.0  # must not move the scaler used for its own prediction
    scaled = brain_score(x2, y, g, alphas=ALPHAS, inner_folds=2, return_predictions=True)
    tr = ~held
    mu, sd = x2[tr].mean(0), x2[tr].std(0)
    _, _, coef, icpt = reference_cv((x2[tr] - mu) / sd, y[tr], grouped_kfold(g[tr], 2), ALPHAS)
    expected = ((x2[held] - mu) / sd) @ coef + icpt
    np.testing.assert_allclose(scaled.predictions[held], expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


def test_layers_share_one_call():
    x, y, g = make_data(n_groups=4, per_group=30, t=10)
    stacked = np.stack([x, np.tanh(x)])
    res = brain_score(stacked, y.reshape(len(y), 2, 5), g, alphas=ALPHAS, outer_folds=2, inner_folds=2)
    assert res.r.shape == (2, 2, 5) and res.r_folds.shape == (2, 2, 2, 5)
    single = brain_score(np.tanh(x), y, g, alphas=ALPHAS, outer_folds=2, inner_folds=2)
    np.testing.assert_allclose(res.r[1].ravel(), single.r, atol=1e-5)
