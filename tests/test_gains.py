import numpy as np
import pytest
from scipy import stats

from assocjax.gains import paired_change
from assocjax.stats import bh_fdr, sign_flip_pvalues


def test_bh_fdr_matches_scipy_and_keeps_nan():
    p = np.random.default_rng(0).uniform(size=40) ** 3
    np.testing.assert_allclose(bh_fdr(p), stats.false_discovery_control(p, method="bh"), rtol=1e-12)
    with_nan = np.concatenate([p[:5], [np.nan]])
    q = bh_fdr(with_nan)
    assert np.isnan(q[-1])
    np.testing.assert_allclose(q[:5], stats.false_discovery_control(p[:5], method="bh"), rtol=1e-12)


def test_sign_flip_exact_matches_scipy_permutation_test():
    d = np.random.default_rng(1).normal(0.3, 1.0, size=(9, 3))
    ours = sign_flip_pvalues(d, n_perm=10000)
    for j in range(3):
        ref = stats.permutation_test((d[:, j],), np.sum, permutation_type="samples", n_resamples=np.inf,
                                     alternative="two-sided")
        assert ours[j] == pytest.approx(ref.pvalue, rel=1e-12)


def test_sign_flip_monte_carlo_is_seeded_and_calibrated():
    rng = np.random.default_rng(2)
    null = rng.normal(size=(20, 400))  # 2^20 patterns > n_perm: Monte Carlo
    p = sign_flip_pvalues(null, n_perm=2000, seed=3)
    np.testing.assert_array_equal(p, sign_flip_pvalues(null, n_perm=2000, seed=3))
    assert 0.02 < (p < 0.05).mean() < 0.09  # ~5 % false positives under H0
    strong = sign_flip_pvalues(rng.normal(1.0, 0.5, size=(20, 1)), n_perm=2000)
    assert strong[0] == pytest.approx(1 / 2001)


def test_paired_change_statistics():
    rng = np.random.default_rng(4)
    base = rng.uniform(0.2, 0.4, size=(12, 3))
    base[:, 2] = 0.01   # baseline too small for a ratio
    gain = np.array([0.05, 0.0, -0.05])
    new = base + gain + rng.normal(0, 0.01, size=base.shape)
    new[0, 1] = np.nan  # a subject missing in one condition drops out of that column only
    out = paired_change(base, new, n_boot=500, seed=0)
    np.testing.assert_array_equal(out["n_subjects"], [12, 11, 12])
    ok = np.isfinite(new[:, 1])
    np.testing.assert_allclose(out["change"][:2], [np.mean(new[:, 0] - base[:, 0]), np.mean(new[ok, 1] - base[ok, 1])])
    assert out["change_ci_low"][0] > 0 and out["change_ci_high"][2] < 0
    assert out["change_ci_low"][1] < 0 < out["change_ci_high"][1]
    assert out["p"][0] < 0.01 and out["p"][1] > 0.05
    m0 = (new[:, 0].mean() - base[:, 0].mean()) / base[:, 0].mean()
    assert out["relative"][0] == pytest.approx(m0)
    assert out["relative_ci_low"][0] < m0 < out["relative_ci_high"][0]
    assert out["base_too_small"].tolist() == [False, False, True]
    assert np.isnan(out["relative"][2]) and np.isnan(out["relative_ci_low"][2])
    with pytest.raises(ValueError, match="subjects, columns"):
        paired_change(base, new[:, :2])


def _run(score_SR, mean_R):
    """A stand-in for a score run: its score grid (`assocjax.results`) at layer 3, regions all/mtl (both)."""
    from types import SimpleNamespace

    from assocjax import results

    s = np.vstack([np.mean(score_SR, 0), score_SR, mean_R])
    nan = np.full_like(s, np.nan)
    return SimpleNamespace(scores=results.scores(3, ("s1", "s2", "s3", "s4"), [("all", "both"), ("mtl", "both")],
                                                 score=s, ci_low=nan, ci_high=nan, ceiling=nan, normalized=nan,
                                                 alpha=nan, n_vertices=np.ones(s.shape, int)))


def test_changes_pair_the_subjects_by_axis_and_write_the_gains_columns():
    from assocjax import results
    from assocjax.pipeline.config import CompareOptions
    from assocjax.pipeline.compare import changes, summary_text

    base_SR = np.array([[0.10, 0.02], [0.12, 0.03], [0.08, 0.01], [0.11, 0.02]])
    new_SR = base_SR + np.array([[0.02, -0.01]])
    opts = CompareOptions(n_perm=1000, min_base=0.05, fdr=0.2)
    g = changes(_run(base_SR, [0.2, 0.01]), _run(new_SR, [0.25, 0.02]), "x vs plain", "F", opts, 200, 0.95, 0)
    rows = results.to_rows(g)
    assert tuple(rows[0]) == results.GAIN_COLUMNS and len(rows) == 2 * (1 + 4 + 1)
    own = g.sel(layer=3, hemi="both", comparison="x vs plain")
    np.testing.assert_array_equal(own["change"].sel(unit=["s1", "s2", "s3", "s4"]).values, new_SR - base_SR)
    want = paired_change(base_SR, new_SR, 200, 0.95, 0, 1000, 0.05)
    np.testing.assert_array_equal(own["change"].sel(unit="all").values, want["change"])
    mean = own.sel(unit="mean")
    assert mean["relative"].values[0] == (0.25 - 0.2) / 0.2 and np.isnan(mean["relative"].values[1])
    assert mean["base_too_small"].values.tolist() == [False, True]
    text = summary_text(g, opts.fdr)
    assert text.startswith("x vs plain [F]: ") and "of 2 region x layer rows" in text
