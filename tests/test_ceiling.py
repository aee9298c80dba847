"""Tests for assocjax.ceiling: analytic values on synthetic data, reference NumPy, edge cases."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from assocjax.ceiling import (
    CeilingResult,
    draw_splits,
    loso_isc,
    max_r_from_reliability,
    noise_ceiling,
    normalized_score,
    split_half_ceiling,
)

NOISE_VAR = 1.0
SIGNAL_VARS = np.repeat([0.1, 0.3, 1.0, 3.0], 8)  # 4 SNR levels x 8 vertices each


# Small cases share one shape and split count so they share one compilation.
SMALL_S, SMALL_T, N_SPLITS = 7, 200, 10


def _synthetic_with_signal(S: int, T: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal((T, SIGNAL_VARS.size)) * np.sqrt(SIGNAL_VARS)
    noise = rng.standard_normal((S, T, SIGNAL_VARS.size)) * np.sqrt(NOISE_VAR)
    return (signal[None] + noise).astype(np.float32), signal


def _synthetic(S: int, T: int = 4000, seed: int = 0) -> np.ndarray:
    return _synthetic_with_signal(S, T, seed)[0]


def _small(seed: int = 0) -> np.ndarray:
    return _synthetic(SMALL_S, SMALL_T, seed)


def _expected_split_half(S: int) -> np.ndarray:
    a, b = S // 2, S - S // 2
    s2 = SIGNAL_VARS
    r_half = s2 / np.sqrt((s2 + NOISE_VAR / a) * (s2 + NOISE_VAR / b))
    return 2 * r_half / (1 + r_half)


def _expected_loso(S: int) -> np.ndarray:
    s2 = SIGNAL_VARS
    return s2 / np.sqrt((s2 + NOISE_VAR) * (s2 + NOISE_VAR / (S - 1)))


def _np_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(0)
    b = b - b.mean(0)
    return (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))


def _np_split_half(y: np.ndarray, perms: np.ndarray) -> np.ndarray:
    y = y.astype(np.float64)
    n_a = y.shape[0] // 2
    rel = []
    for perm in perms:
        r = _np_pearson(y[perm[:n_a]].mean(0), y[perm[n_a:]].mean(0))
        rel.append(2 * r / (1 + r))
    return np.tanh(np.mean(np.arctanh(np.array(rel)), axis=0))


# --- analytic values -------------------------------------------------------------------

@pytest.mark.parametrize("S", [10, 9])
def test_split_half_matches_analytic_reliability(S):
    got = np.asarray(split_half_ceiling(_synthetic(S), n_splits=50, seed=1))
    want = _expected_split_half(S)
    if S % 2 == 0:  # SB with factor 2 on equal halves is exactly the S-subject reliability
        s2 = SIGNAL_VARS
        np.testing.assert_allclose(want, s2 / (s2 + NOISE_VAR / S), rtol=1e-12)
    # With T=4000 the sampling SE of a correlation is <= (1 - rho^2)/sqrt(T) ~ 0.016, x ~1.1
    # after SB at the weakest SNR: 0.06 per vertex is ~4 SE. Averaging the 8 vertices of a
    # level cuts the SE to ~0.006, so 0.02 there is >3 SE and still far below the gaps
    # between levels or the SB correction (>= 0.15 at the weakest level).
    np.testing.assert_allclose(got, want, atol=0.06)
    np.testing.assert_allclose(got.reshape(4, 8).mean(1), want.reshape(4, 8).mean(1), atol=0.02)


@pytest.mark.parametrize("S", [10, 9])
def test_loso_isc_matches_analytic(S):
    isc = np.asarray(loso_isc(_synthetic(S)))
    assert isc.shape == (S, SIGNAL_VARS.size)
    want = _expected_loso(S)
    np.testing.assert_allclose(isc, np.broadcast_to(want, isc.shape), atol=0.06)
    np.testing.assert_allclose(isc.reshape(S, 4, 8).mean((0, 2)), want.reshape(4, 8).mean(1), atol=0.02)


def test_max_r_is_sqrt_of_reliability_and_matches_signal_correlation():
    # A noise-free model (the true signal) scored against the S-subject mean reaches
    # exactly sqrt(reliability): the documented meaning of max_r.
    S = 10
    y, signal = _synthetic_with_signal(S, seed=3)
    res = noise_ceiling(y, n_splits=50, seed=0)
    r_model = _np_pearson(signal, y.mean(0))
    max_r = np.asarray(res.max_r)
    # Both are estimates from the same T=4000 samples (SE ~0.01-0.02 at the weakest SNR
    # once the square root doubles small errors): 0.05 per vertex, 0.02 per SNR level.
    np.testing.assert_allclose(max_r, r_model, atol=0.05)
    np.testing.assert_allclose(max_r.reshape(4, 8).mean(1), r_model.reshape(4, 8).mean(1), atol=0.02)
    np.testing.assert_allclose(r_model.reshape(4, 8).mean(1), np.sqrt(_expected_split_half(S)).reshape(4, 8).mean(1), atol=0.02)
    np.testing.assert_allclose(np.asarray(res.max_r) ** 2, np.asarray(res.split_half), rtol=1e-5)


# --- splits, seeds, reference implementation -------------------------------------------

def test_draw_splits_are_permutations_and_prefix_stable():
    perms = np.asarray(draw_splits(9, 20, 4))
    assert perms.shape == (20, 9)
    assert (np.sort(perms, axis=1) == np.arange(9)).all()
    assert len({tuple(p[:4].tolist()) for p in perms}) > 1  # not the same split every time
    np.testing.assert_array_equal(np.asarray(draw_splits(9, 5, 4)), perms[:5])


def test_seed_reproducible_and_changes_splits():
    y = _small()
    a = np.asarray(split_half_ceiling(y, n_splits=N_SPLITS, seed=0))
    b = np.asarray(split_half_ceiling(y, n_splits=N_SPLITS, seed=0))
    c = np.asarray(split_half_ceiling(y, n_splits=N_SPLITS, seed=1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(np.asarray(draw_splits(SMALL_S, N_SPLITS, 0)), np.asarray(draw_splits(SMALL_S, N_SPLITS, 1)))
    assert not np.allclose(a, c, atol=1e-6, rtol=0)
    np.testing.assert_allclose(a, c, atol=0.1)  # another sample of splits, same quantity


@pytest.mark.parametrize("S, batch_size", [(SMALL_S, 8), (2, 3)])
def test_split_half_matches_float64_numpy_with_same_splits(S, batch_size):
    # Odd S (uneven halves), the S=2 minimum, and split counts that need batch padding.
    y = _synthetic(S, T=SMALL_T, seed=S)
    seed = 5
    perms = np.asarray(draw_splits(S, N_SPLITS, seed))
    got = np.asarray(split_half_ceiling(y, n_splits=N_SPLITS, seed=seed, batch_size=batch_size))
    np.testing.assert_allclose(got, _np_split_half(y, perms), atol=1e-5, rtol=0)


def test_loso_matches_float64_numpy():
    y = _small(seed=2)
    y64 = y.astype(np.float64)
    want = np.stack([_np_pearson(y64[s], np.delete(y64, s, axis=0).mean(0)) for s in range(SMALL_S)])
    np.testing.assert_allclose(np.asarray(loso_isc(y, batch_size=3)), want, atol=1e-5, rtol=0)


# --- bad vertices and bad input --------------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_vertex_is_nan_and_isolated(bad):
    y = _small()
    # Same shape as the clean run (one compilation); vertex 3 is the only one that differs.
    clean_sh = np.asarray(split_half_ceiling(y, n_splits=N_SPLITS, seed=2))
    clean_isc = np.asarray(loso_isc(np.delete(y, 3, axis=2)))  # and without the vertex at all
    y[4, 17, 3] = bad  # one subject, one TR
    sh = np.asarray(split_half_ceiling(y, n_splits=N_SPLITS, seed=2))
    isc = np.asarray(loso_isc(y))
    assert np.isnan(sh[3]) and np.isnan(isc[:, 3]).all()
    np.testing.assert_allclose(np.delete(sh, 3), np.delete(clean_sh, 3), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.delete(isc, 3, axis=1), clean_isc, rtol=1e-6, atol=1e-7)
    res = noise_ceiling(y, n_splits=N_SPLITS, seed=2)
    assert np.isnan(res.max_r[3]) and np.isnan(res.loso_isc_mean[3])
    assert np.isfinite(np.delete(np.asarray(res.max_r), 3)).all()


def _masked_reference(y_SNV, n_splits, seed):
    """float64 NumPy split-half and LOSO ISC where each subject counts only at the vertices
    where its whole series is finite (skip_missing)."""
    y = np.asarray(y_SNV, np.float64)
    s, _, v = y.shape
    has = np.isfinite(y).all(1)
    r = lambda a, b: np.corrcoef(a, b)[0, 1]  # noqa: E731
    perms = np.asarray(draw_splits(s, n_splits, seed))
    rel, isc = np.full(v, np.nan), np.full((s, v), np.nan)
    for j in range(v):
        z = []
        for p in perms:
            a, b = [q for q in p[:s // 2] if has[q, j]], [q for q in p[s // 2:] if has[q, j]]
            if a and b:
                c = r(y[a, :, j].mean(0), y[b, :, j].mean(0))
                z.append(np.arctanh(2 * c / (1 + c)))
        rel[j] = np.tanh(np.mean(z)) if has[:, j].sum() >= 2 else np.nan
        for i in np.flatnonzero(has[:, j]):
            others = [q for q in np.flatnonzero(has[:, j]) if q != i]
            if others:
                isc[i, j] = r(y[i, :, j], y[others, :, j].mean(0))
    return rel, isc


def test_skip_missing_leaves_out_only_the_subject_without_data():
    y = _small()
    y[4, 17, 3] = np.nan                 # one time point of one subject
    y[:, 60, 5] = np.inf                 # every subject: no ceiling there
    y[:SMALL_S - 1, :, 6] = np.nan       # one subject left: no ceiling there either
    sh = np.asarray(split_half_ceiling(y, n_splits=N_SPLITS, seed=2, skip_missing=True))
    isc = np.asarray(loso_isc(y, skip_missing=True))
    want_sh, want_isc = _masked_reference(y, N_SPLITS, 2)
    np.testing.assert_allclose(sh, want_sh, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(isc, want_isc, rtol=1e-4, atol=1e-5)
    assert np.isfinite(sh[3]) and np.isnan(isc[4, 3]) and np.isfinite(np.delete(isc[:, 3], 4)).all()
    assert np.isnan(sh[[5, 6]]).all() and np.isnan(isc[:, [5, 6]]).all()
    complete = [j for j in range(y.shape[2]) if j not in (3, 5, 6)]   # bit for bit the default there
    np.testing.assert_array_equal(sh[complete], np.asarray(split_half_ceiling(y, n_splits=N_SPLITS, seed=2))[complete])
    np.testing.assert_array_equal(isc[:, complete], np.asarray(loso_isc(y))[:, complete])


def test_constant_vertex_is_nan():
    y = _small()
    y[:, :, 0] = 2.5  # same constant in every subject
    y[:, :, 1] = np.arange(SMALL_S, dtype=np.float32)[:, None]  # constant in time, differs by subject
    sh = np.asarray(split_half_ceiling(y, n_splits=N_SPLITS, seed=0))
    isc = np.asarray(loso_isc(y))
    assert np.isnan(sh[:2]).all() and np.isnan(isc[:, :2]).all()
    assert np.isfinite(sh[2:]).all() and np.isfinite(isc[:, 2:]).all()


@pytest.mark.parametrize("shape", [(1, 50, 4), (50, 4)])
def test_bad_shapes_raise_with_shape_in_message(shape):
    y = np.zeros(shape, np.float32)
    for fn in (split_half_ceiling, loso_isc):
        with pytest.raises(ValueError, match=str(shape).replace("(", r"\(").replace(")", r"\)")):
            fn(y)


# --- normalisation ---------------------------------------------------------------------

def test_max_r_from_reliability():
    got = np.asarray(max_r_from_reliability(jnp.array([0.25, 0.0, 1.0, -0.1, jnp.nan])))
    np.testing.assert_allclose(got[:3], [0.5, 0.0, 1.0])
    assert np.isnan(got[3:]).all()


def test_normalized_score_edge_cases():
    r = jnp.array([0.3, 0.3, 0.3, 0.3, 0.3, 0.6, jnp.nan, -0.2, 0.01])
    ceil = jnp.array([0.6, jnp.nan, 0.0, -0.5, 0.04, 0.5, 0.5, 0.4, 0.05])
    got = np.asarray(normalized_score(r, ceil, min_ceiling=0.05))
    np.testing.assert_allclose(got[[0, 5, 7, 8]], [0.5, 1.2, -0.5, 0.2], rtol=1e-6)  # >1 kept
    assert np.isnan(got[[1, 2, 3, 4, 6]]).all()
    # min_ceiling=0 still refuses zero/negative ceilings; broadcasting a scalar ceiling works.
    got0 = np.asarray(normalized_score(r[:5], ceil[:5], min_ceiling=0.0))
    np.testing.assert_allclose(got0[[0, 4]], [0.5, 7.5], rtol=1e-6)
    assert np.isnan(got0[[1, 2, 3]]).all()
    np.testing.assert_allclose(np.asarray(normalized_score(jnp.array([0.1, 0.2]), 0.4)), [0.25, 0.5])


def test_noise_ceiling_result_fields_and_jit():
    y = _small()
    res = noise_ceiling(y, n_splits=N_SPLITS, seed=7, min_ceiling=0.1)
    assert isinstance(res, CeilingResult)
    assert (res.n_subjects, res.n_splits, int(res.seed), res.min_ceiling) == (SMALL_S, N_SPLITS, 7, 0.1)
    V = SIGNAL_VARS.size
    assert res.split_half.shape == res.max_r.shape == res.loso_isc_mean.shape == (V,)
    np.testing.assert_allclose(res.split_half, split_half_ceiling(y, n_splits=N_SPLITS, seed=7), rtol=1e-6)
    np.testing.assert_allclose(res.loso_isc_mean, jnp.tanh(jnp.mean(jnp.arctanh(loso_isc(y)), 0)), rtol=1e-5)
    np.testing.assert_allclose(res.normalize(res.max_r), np.ones(V), rtol=1e-6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.seed = 1
    jitted = jax.jit(noise_ceiling, static_argnames=("n_splits", "min_ceiling"))(y, n_splits=N_SPLITS, seed=jnp.int32(7))
    np.testing.assert_allclose(jitted.split_half, res.split_half, rtol=1e-6)

