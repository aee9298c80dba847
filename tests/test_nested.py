import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from assocjax.ridge import brain_score, grouped_kfold, nested_folds, prepare_nested, solve_nested, target_bytes
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


def reference_nested(x, y, groups, buffer, inner_folds, score="r"):
    """The nested procedure written out in float64, folds built independently of assocjax:
    one story in contiguous chunks, training rows within `buffer` rows of a test row dropped."""
    idx = np.arange(len(groups))

    def split(rows, test_rows):
        far = np.min(np.abs(rows[:, None] - test_rows[None, :]), axis=1) > buffer
        return rows[far & ~np.isin(rows, test_rows)]

    preds, alphas = np.zeros_like(y), []
    for held in np.unique(groups):
        te = idx[groups == held]
        tr = split(idx, te)
        local = []
        for inner_held in np.unique(groups[tr]):  # as many inner folds as training chunks here
            ite = tr[groups[tr] == inner_held]
            local.append((np.searchsorted(tr, split(tr, ite)), np.searchsorted(tr, ite)))
        assert len(local) <= inner_folds
        mu, sd = x[tr].mean(0), x[tr].std(0)
        _, best, coef, icpt = reference_cv((x[tr] - mu) / sd, y[tr], local, ALPHAS, score=score)
        preds[te] = ((x[te] - mu) / sd) @ coef + icpt
        alphas.append(best)
    return preds, np.array(alphas)


def test_buffered_chunks_of_one_story_match_float64_reference():
    for p, score in ((12, "r2"), (150, "r")):  # primal choosing alphas by R^2, dual by r
        x, y, _ = make_data(n_groups=4, per_group=30, p=p, t=20, seed=p)
        groups = np.repeat(np.arange(4), 30)
        ours = brain_score(x, y, groups, alphas=ALPHAS, buffer=3, return_predictions=True, scoring=score)
        assert ours.solver == ("primal" if p == 12 else "dual") and ours.buffer == 3
        preds, best = reference_nested(x, y, groups, buffer=3, inner_folds=5, score=score)
        assert len(np.unique(best)) >= 2, "the data must make different alphas win"
        np.testing.assert_array_equal(ours.best_alphas, best)
        np.testing.assert_allclose(ours.predictions, preds, rtol=1e-4, atol=1e-5 * np.abs(preds).max())
        for k in range(4):
            te = groups == k
            assert np.all(np.abs(ours.r_folds[k] - pearson(preds[te], y[te])) <= float32_r_tolerance(preds[te]))
        assert np.all(np.abs(ours.r - pearson(preds, y)) <= float32_r_tolerance(preds))


def test_chunks_memmap_nonfinite_and_constant_targets():
    x, y, g = make_data(n_groups=4, per_group=30, t=37)
    y[3, 5] = np.nan
    y[:, 8] = np.inf
    y[:, 11] = 4.0
    y = y.astype(np.float32)
    with pytest.warns(UserWarning, match="2 of 37 targets contain NaN/Inf"):
        whole = brain_score(x, y, g, alphas=ALPHAS, buffer=2)
    assert whole.n_masked_targets == 2
    for col in (5, 8, 11):
        assert np.isnan(whole.r[col]) and np.all(np.isnan(whole.r_folds[:, col]))
    clean = np.setdiff1d(np.arange(37), [5, 8, 11])
    assert np.all(np.isfinite(whole.r[clean]))
    ok = y.copy()
    ok[:, [5, 8, 11]] = np.random.default_rng(0).standard_normal((len(y), 3))
    alone = brain_score(x, ok, g, alphas=ALPHAS, buffer=2)
    np.testing.assert_array_equal(alone.r[clean], whole.r[clean])  # the bad columns touch nothing else

    path = Path(tempfile.mkdtemp()) / "y.npy"
    np.save(path, ok.reshape(len(y), 37, 1))
    mm = np.load(path, mmap_mode="r")
    chunked = brain_score(x, mm, g, alphas=ALPHAS, buffer=2, target_chunk=8)
    assert chunked.r.shape == (37, 1) and chunked.alpha_idx.dtype == np.uint16
    np.testing.assert_allclose(chunked.r[:, 0], alone.r, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(chunked.best_alphas[..., 0], alone.best_alphas)


@pytest.mark.slow
def test_target_bytes_bounds_compiled_memory():
    """The chunk-size rule must not under-estimate what XLA allocates (checked against the
    compiled program's memory_analysis: arguments + outputs + temporaries)."""
    rng = np.random.default_rng(0)
    cases = {(120, 200, 4, 5, 4): ((None, False, 512), (None, False, 2048), (None, True, 2048), (128, False, 2048)),
             (150, 20, 5, 2, 0): ((None, False, 2048),)}  # dual (alpha products) and primal (Gram route)
    for (n, p, n_groups, inner, buffer), runs in cases.items():
        x = rng.standard_normal((n, p)).astype(np.float32)
        groups = np.repeat(np.arange(n_groups), n // n_groups)
        plan, _ = prepare_nested(x, nested_folds(groups, inner_folds=inner, buffer=buffer), ALPHAS)
        for tile, preds, t in runs:
            compiled = solve_nested.lower(plan, jax.ShapeDtypeStruct((n, t), jnp.float32), return_predictions=preds,
                                          tile=tile).compile().memory_analysis()
            measured = compiled.argument_size_in_bytes + compiled.output_size_in_bytes + compiled.temp_size_in_bytes
            per, fixed = target_bytes(plan, preds, tile)
            assert 1.0 <= (per * t + fixed) / measured <= 1.6, (n, p, tile, preds, t, per * t + fixed, measured)


@pytest.mark.slow
def test_buffer_removes_leakage_between_chunks_of_one_story():
    """Pure AR(1) noise targets and AR(1) features through FIR delays: with contiguous chunks
    of one story, training rows next to the test chunk share its noise, so held-out r > 0
    without a buffer. Six independent feature draws (stacked as layers), one call."""
    rng = np.random.default_rng(0)
    n, base, t, draws = 160, 64, 400, 6

    def ar1(shape, rho):
        e = rng.standard_normal(shape)
        out = np.empty(shape)
        out[0] = e[0]
        for i in range(1, shape[0]):
            out[i] = rho * out[i - 1] + np.sqrt(1 - rho**2) * e[i]
        return out

    def fir(x):
        return np.concatenate([np.r_[np.zeros((d, x.shape[1])), x[: len(x) - d]] for d in (1, 2, 3, 4)], axis=1)

    x = np.stack([fir(ar1((n, base), 0.7)) for _ in range(draws)]).astype(np.float32)
    y = ar1((n, t), 0.8).astype(np.float32)
    groups = np.repeat(np.arange(4), n // 4)
    leak = [float(np.nanmean(brain_score(x, y, groups, buffer=b).r_folds)) for b in (0, 8)]
    assert leak[0] > 0.03, leak
    assert abs(leak[1]) < 0.25 * leak[0], leak



@pytest.mark.parametrize("score", ["r", "r2"])
def test_inner_maps_give_the_spectral_route_s_scores(score):
    """Every inner fold of a dual plan scored through its per-alpha maps of the raw training rows
    (`solvers.fold_maps`, what `solve_nested` runs there) equals the projection on the basis,
    for every alpha and target, in float64 (1e-10), r and R^2, with buffers, z-scored targets and
    the padded rows; with a leading layer axis too. The maps pay on the dual route and not on the
    primal one with few features."""
    from assocjax.ridge import nested as nested_mod, solvers

    rng = np.random.default_rng(3)
    n, p, t = 96, 150, 40
    groups = np.repeat(np.arange(4), n // 4)
    folds = nested_folds(groups, inner_folds=3, buffer=2)
    with jax.enable_x64(True):
        x = rng.standard_normal((n, p))
        y = jnp.asarray(x[:, :5] @ rng.standard_normal((5, t)) + rng.standard_normal((n, t)))
        plan, solver = prepare_nested(x, folds, ALPHAS, dtype=jnp.float64)
        assert solver == "dual" and nested_mod._uses_maps(plan)
        alphas = plan.alphas_A
        for k in range(plan.inner_valid_KJ.shape[0]):
            for j in range(plan.inner_valid_KJ.shape[1]):
                fold = jax.tree.map(lambda a: a[k, j], plan.inner)
                maps = solvers.fold_maps(fold, alphas, score=score, fit_intercept=True)
                via_maps = solvers.fold_scores(fold, y, alphas, score=score, fit_intercept=True, maps_AER=maps)
                spectral = solvers.fold_scores(fold, y, alphas, score=score, fit_intercept=True)
                np.testing.assert_allclose(via_maps, spectral, rtol=0, atol=1e-10)
                layered = solvers.fold_scores(fold, y, alphas, score=score, fit_intercept=True,
                                              maps_AER=jnp.stack([maps, 2 * maps]))
                np.testing.assert_allclose(layered[0], spectral, rtol=0, atol=1e-10)
                if score == "r":  # r ignores the predictions' scale
                    np.testing.assert_allclose(layered[1], spectral, rtol=0, atol=1e-10)
    small, solver = prepare_nested(x[:, :6], folds, ALPHAS)
    assert solver == "primal" and not nested_mod._uses_maps(small)
