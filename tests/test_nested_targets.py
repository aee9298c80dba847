"""Targets z-scored per run inside each outer fold with that fold's training rows
(`prepare_nested(target_runs_N=...)`): a held-out chunk's values reach nothing of its model."""
import numpy as np

from assocjax.ridge import nested_folds, prepare_nested, solve_nested

ALPHAS = np.logspace(-1, 5, 7)


def _data(seed=0, n=(60, 50), p=12, t=40):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((sum(n), p)).astype(np.float32)
    y = (x @ rng.standard_normal((p, t)) + 3 * rng.standard_normal((sum(n), t))).astype(np.float32)
    runs = np.repeat(np.arange(len(n)), n)
    groups = np.concatenate([np.repeat(np.arange(3) + 3 * i, np.diff(np.linspace(0, m, 4).astype(int)))
                             for i, m in enumerate(n)])
    y[runs == 1] = 5 + 4 * y[runs == 1]  # another story: other offset and scale
    return x, y, runs, groups


def test_held_out_values_reach_nothing_of_their_model():
    x, y, runs, groups = _data()
    folds = nested_folds(groups, None, 3, runs_N=runs, buffer=2)
    plan, _ = prepare_nested(x, folds, ALPHAS, target_runs_N=runs)
    base = solve_nested(plan, y, return_predictions=True)
    te = folds.outer[0][1]
    y2 = y.copy()
    y2[te] = 100 * np.random.default_rng(1).standard_normal(y2[te].shape) - 50  # any values at all
    other = solve_nested(plan, y2, return_predictions=True)
    np.testing.assert_array_equal(np.asarray(other.predictions_NT)[te], np.asarray(base.predictions_NT)[te])
    np.testing.assert_array_equal(np.asarray(other.alpha_idx_KT)[0], np.asarray(base.alpha_idx_KT)[0])


def test_equals_targets_zscored_with_each_folds_training_rows():
    x, y, runs, groups = _data(seed=2)
    folds = nested_folds(groups, None, 3, runs_N=runs, buffer=2)
    plan, _ = prepare_nested(x, folds, ALPHAS, target_runs_N=runs)
    got = np.asarray(solve_nested(plan, y).r_folds_KT)
    plain, _ = prepare_nested(x, folds, ALPHAS)
    for k, (tr, _) in enumerate(folds.outer):
        z = y.astype(np.float64).copy()
        for r in np.unique(runs):
            rows = tr[runs[tr] == r] if np.any(runs[tr] == r) else np.flatnonzero(runs == r)
            z[runs == r] = (y[runs == r] - y[rows].mean(0)) / y[rows].std(0)
        want = np.asarray(solve_nested(plain, z.astype(np.float32)).r_folds_KT)[k]
        np.testing.assert_allclose(got[k], want, atol=2e-5)
    # without the per-run statistics the story offsets and scales change the fits
    assert np.abs(np.asarray(solve_nested(plain, y).r_folds_KT) - got).max() > 1e-3
