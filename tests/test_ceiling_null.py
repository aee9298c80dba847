"""The paper's half-vs-half ceiling and the circular-shift significance mask (issue 24):
`ceiling.split_half_ceilings` against float64 NumPy, its null's false-positive rate on AR(1) noise
and its power on a planted signal, and `pipeline.ceilings` (the mask, the region rows)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from assocjax.ceiling import draw_splits, null_shifts, split_half_ceiling, split_half_ceilings
from assocjax.pipeline import ceilings, tables
from assocjax.stats import bh_fdr

S, T, N_SPLITS, N_NULL, BUFFER = 7, 200, 10, 50, 20


def _ar1(rng, shape, rho):
    """AR(1) along axis -2 (TRs), unit variance."""
    e = rng.standard_normal(shape)
    x = np.empty(shape)
    x[..., 0, :] = e[..., 0, :]
    for t in range(1, shape[-2]):
        x[..., t, :] = rho * x[..., t - 1, :] + np.sqrt(1 - rho**2) * e[..., t, :]
    return x


def _data(seed=0, V=40, amp=0.5):
    """(S, T, V) AR(1) noise, the second half of the vertices with a shared AR(1) signal."""
    rng = np.random.default_rng(seed)
    y = _ar1(rng, (S, T, V), 0.8)
    y[:, :, V // 2:] += amp * _ar1(rng, (T, V - V // 2), 0.8)
    return y.astype(np.float32)


def _np_pearson(a, b):
    a, b = a - a.mean(0), b - b.mean(0)
    return (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))


def _np_reference(y, seed):
    """float64: half_r (z-mean over the splits of the half-means' r) and p (first split's r against
    np.roll-shifted half B, normal tail)."""
    y = y.astype(np.float64)
    perms = np.asarray(draw_splits(S, N_SPLITS, seed))
    z = lambda r: np.arctanh(np.clip(r, -1 + 1e-7, 1 - 1e-7))  # noqa: E731
    halves = [(y[p[:S // 2]].mean(0), y[p[S // 2:]].mean(0)) for p in perms]
    r_I = np.stack([_np_pearson(a, b) for a, b in halves])
    a, b = halves[0]
    null = np.stack([z(_np_pearson(a, np.roll(b, k, axis=0))) for k in np.asarray(null_shifts(T, N_NULL, BUFFER, seed))])
    t = (z(r_I[0]) - null.mean(0)) / null.std(0, ddof=1)
    return np.tanh(z(r_I).mean(0)), norm.sf(t)


@pytest.mark.parametrize("skip_missing", [False, True])
def test_the_null_leaves_the_ceilings_bit_for_bit(skip_missing):
    """The pipeline runs with the null, `split_half_ceiling` without it (bitwise main's estimator: checked
    against its code when this was written, and by the pinned tables): the two must agree to the bit."""
    y = _data(1)
    y[2, 5, 3] = np.nan          # a subject's bad vertex (skip_missing leaves that subject out there)
    y[:, :, 4] = 1.0             # a constant vertex
    kw = dict(n_splits=N_SPLITS, seed=4, batch_size=3, skip_missing=skip_missing)
    without = split_half_ceilings(y, n_null=0, **kw)
    new = split_half_ceilings(y, n_null=N_NULL, buffer=BUFFER, **kw)
    np.testing.assert_array_equal(np.asarray(split_half_ceiling(y, **kw)), np.asarray(without[0]))
    for a, b in zip(without[:2], new[:2]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.isnan(np.asarray(new[1])[4]) and np.isnan(np.asarray(new[2])[4])


def test_half_r_and_p_match_float64_numpy():
    y = _data(2)
    rel, half_r, p = map(np.asarray, split_half_ceilings(y, n_splits=N_SPLITS, seed=7, n_null=N_NULL, buffer=BUFFER))
    want_r, want_p = _np_reference(y, 7)
    np.testing.assert_allclose(half_r, want_r, atol=2e-6, rtol=0)
    np.testing.assert_allclose(p, want_p, atol=1e-4, rtol=1e-3)
    # the split-half reliability is Spearman-Brown of the same per-split r: above half_r where half_r > 0
    assert np.all(rel[half_r > 0.05] > half_r[half_r > 0.05])


def test_null_shifts_seeded_and_a_buffer_from_zero():
    k = np.asarray(null_shifts(T, 1000, BUFFER, 3))
    assert k.min() >= BUFFER and k.max() <= T - BUFFER
    np.testing.assert_array_equal(k, np.asarray(null_shifts(T, 1000, BUFFER, 3)))
    assert not np.array_equal(k, np.asarray(null_shifts(T, 1000, BUFFER, 4)))
    with pytest.raises(ValueError, match="--ceiling.null-buffer 100"):
        null_shifts(T, 10, 100)


def test_no_null_gives_no_p_and_keeps_every_vertex():
    _, half_r, p = map(np.asarray, split_half_ceilings(_data(3), n_splits=N_SPLITS, n_null=0))
    assert np.isnan(p).all() and np.isfinite(half_r).all()
    assert ceilings.significant(p, 0.05).all()


def test_false_positives_on_ar1_noise_and_power_on_a_planted_signal():
    """The measured figures of docs/ceiling.md (seeded): 12 listeners, 600 TRs, rho 0.8, 2000 vertices
    of pure noise and 2000 with a shared signal of amplitude 0.3 (half-vs-half r ~0.35)."""
    rng = np.random.default_rng(0)
    n, V = 12, 2000
    y = _ar1(rng, (n, 600, 2 * V), 0.8)
    y[:, :, V:] += 0.3 * _ar1(rng, (600, V), 0.8)
    _, half_r, p = map(np.asarray, split_half_ceilings(y.astype(np.float32), n_splits=10, seed=0, n_null=100))
    noise = p[:V]
    assert 0.03 <= (noise < 0.05).mean() <= 0.065     # per vertex: near alpha (measured 0.050)
    assert (bh_fdr(noise) <= 0.05).mean() <= 0.005     # FDR on pure noise: (nearly) empty (measured 0.001)
    keep = ceilings.significant(p, 0.05)
    assert keep[V:].mean() >= 0.97                     # the signal's vertices stay (measured 0.996)
    assert keep[:V].sum() / keep.sum() <= 0.05         # noise among the kept: the FDR (measured 0.038)


def _regs(V):
    mask = np.ones(V, bool)
    first = np.arange(V) < V // 2
    return [("all", "both", mask), ("noise", "both", first), ("signal", "both", ~first)]


def test_masked_map_and_region_ceilings():
    y = _data(5, V=200, amp=1.0)
    rel, half_r, p = map(np.asarray, split_half_ceilings(y, n_splits=N_SPLITS, n_null=N_NULL, buffer=BUFFER))
    V = y.shape[2]
    raw = dict(split_half=rel, max_r=np.sqrt(np.clip(rel, 0, None)), half_r=half_r, p_null=p,
               loso=np.tile(half_r, (S, 1)), subject_max_r=np.ones((S, V), np.float32))
    regs = _regs(V)
    masks = np.stack([m for _, _, m in regs]).astype(float)
    score = np.zeros((1, V))
    for method in (ceilings.SPLIT_HALF, ceilings.HALF):
        c = ceilings.masked(raw, 0.05, method)
        keep = c["significant"]
        assert keep[:V // 2].mean() <= 0.1 and keep[V // 2:].mean() >= 0.95   # BH over all: measured 5 %, 100 %
        # the map: NaN where not significant, else the chosen method's per-vertex ceiling
        assert np.isnan(c["max_r"][~keep]).all()
        np.testing.assert_array_equal(c["max_r"][keep], (half_r if method == ceilings.HALF else raw["max_r"])[keep])
        rows = {r["region"]: r for r in ceilings.region_rows("s", regs, c)}
        # per region, the BH over the region's own vertices: the noise region keeps none (the BH over all
        # vertices let 5 of its 100 through), the signal region all, so its ceiling is the unmasked one
        assert rows["noise"]["ceiling_n_significant"] == 0 and rows["noise"]["ceiling_split_half"] == 0
        assert rows["signal"]["ceiling_n_significant"] == V // 2 and rows["all"]["method"] == method
        np.testing.assert_allclose(rows["signal"]["ceiling_split_half"], np.sqrt(rel[V // 2:].mean()), rtol=1e-6)
        np.testing.assert_allclose(rows["signal"]["ceiling_half_predicts_half"], half_r[V // 2:].mean(), rtol=1e-6)
        got = ceilings.per_region(lambda d: tables.mean_fit_ceiling(d["split_half"], score[0], masks)[1], c, masks)
        want = tables.mean_fit_ceiling(rel, score[0], masks)[1]
        assert got[1] == 0 and got[2] == want[2]     # bit for bit where every vertex passes
        lucky = keep & (np.arange(V) < V // 2)       # over the global BH's survivors alone it would read:
        assert np.sqrt(rel[lucky].mean()) > 0.3       # (measured 0.56)
    # pure noise: no significant vertex, both region ceilings 0 with count 0, the map empty
    noise = ceilings.masked(dict(raw, p_null=np.full(V, 0.5)), 0.05, ceilings.SPLIT_HALF)
    assert np.isnan(noise["max_r"]).all()
    assert all(r["ceiling_n_significant"] == 0 and r["ceiling_split_half"] == 0 == r["ceiling_half_predicts_half"]
               for r in ceilings.region_rows("s", regs, noise))


@pytest.mark.parametrize("field, value, match", [("n_null", 5, "--ceiling.n-null 5"), ("alpha", 0.0, "--ceiling.alpha"),
                                                 ("null_buffer", -1, "--ceiling.null-buffer")])
def test_options_checked(field, value, match):
    import dataclasses

    from assocjax.pipeline import CeilingOptions, ScoreConfig
    from assocjax.pipeline.config import check_options
    cfg = ScoreConfig(ceiling=dataclasses.replace(CeilingOptions(), **{field: value}))
    with pytest.raises(ValueError, match=match):
        check_options(cfg)


def test_layer_scores_read_the_chosen_ceiling():
    """tables.layer_scores: split_half keeps the old region ceilings where every vertex passes; under
    half_predicts_half every unit's ceiling is the region mean of half_r over the significant vertices,
    zeros elsewhere, and `normalized` divides by it."""
    rng = np.random.default_rng(0)
    V, n_sub, K = 60, 3, 2
    half_r = np.concatenate([np.full(30, 0.02), rng.uniform(0.2, 0.4, 30)]).astype(np.float32)
    p = np.concatenate([np.full(30, 0.5), np.full(30, 1e-6)])
    rel = (2 * half_r / (1 + half_r)).astype(np.float32)
    raw = dict(split_half=rel, max_r=np.sqrt(rel), half_r=half_r, p_null=p, loso=np.tile(half_r, (n_sub, 1)),
               subject_max_r=np.ones((n_sub, V), np.float32), n_subjects=np.full(V, n_sub))
    res = dict(r_folds=rng.uniform(0, 0.3, (K, n_sub + 1, V)), alpha_idx=np.zeros((K, n_sub + 1, V), int))
    regs = _regs(V)
    subjects = ("s1", "s2", "s3")
    grid = lambda c: tables.layer_scores(0, res, c, np.ones(1), subjects, regs, 0.05, 50, 0.95, 0)  # noqa: E731
    old, split, half = grid(raw), grid(ceilings.masked(raw, 0.05, ceilings.SPLIT_HALF)), \
        grid(ceilings.masked(raw, 0.05, ceilings.HALF))
    sig = dict(region="signal", hemi="both")
    np.testing.assert_array_equal(split["ceiling"].sel(**sig).values, old["ceiling"].sel(**sig).values)
    assert (split["ceiling"].sel(region="noise", hemi="both").values == 0).all()
    want = np.where(np.arange(V) >= 30, half_r, 0.0)
    for region, mask in (("all", slice(None)), ("signal", slice(30, None))):
        np.testing.assert_allclose(half["ceiling"].sel(region=region, hemi="both").values, want[mask].mean(), rtol=1e-6)
    h = half.sel(**sig)
    np.testing.assert_allclose(h["normalized"].values, h["score"].values / h["ceiling"].values, rtol=1e-12)
    assert np.isnan(half["normalized"].sel(region="noise", hemi="both").values).all()   # ceiling 0
