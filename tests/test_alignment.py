"""Tests for assocjax.alignment against float64 NumPy references."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from assocjax import alignment as al


# ---- float64 NumPy references -------------------------------------------------------

def huth_lanczosfun(cutoff, t, window=3):
    """Transcription of the Huth lab's interpdata.lanczosfun."""
    t = t * cutoff
    with np.errstate(divide="ignore", invalid="ignore"):
        val = window * np.sin(np.pi * t) * np.sin(np.pi * t / window) / (np.pi**2 * t**2)
    val[t == 0] = 1.0
    val[np.abs(t) > window] = 0.0
    return val


def huth_lanczosinterp2D(data, oldtime, newtime, window=3, cutoff_mult=1.0):
    """Transcription of the Huth lab's interpdata.lanczosinterp2D (returns the matrix too)."""
    cutoff = 1 / np.mean(np.diff(newtime)) * cutoff_mult
    sincmat = np.zeros((len(newtime), len(oldtime)))
    for ndi in range(len(newtime)):
        sincmat[ndi, :] = huth_lanczosfun(cutoff, newtime[ndi] - oldtime, window)
    return np.dot(sincmat, data), sincmat


def bin_reference(x, t, n_trs, tr, method):
    x, t = np.asarray(x, np.float64), np.asarray(t, np.float64)
    out = np.zeros((n_trs, x.shape[1]))
    for k in range(n_trs):
        idx = [w for w in range(len(t)) if k * tr <= t[w] < (k + 1) * tr]
        if not idx:
            continue
        if method == "sum":
            out[k] = x[idx].sum(0)
        elif method == "mean":
            out[k] = x[idx].mean(0)
        else:
            out[k] = x[max(idx, key=lambda w: (t[w], w))]
    dropped = int(np.sum((t < 0) | (t >= n_trs * tr)))
    return out, dropped


def fir_reference(x, delays, runs):
    x, runs = np.asarray(x), np.asarray(runs)
    n = len(x)
    blocks = []
    for d in delays:
        b = np.zeros_like(x)
        for t in range(n):
            s = t - d
            if 0 <= s < n and runs[s] == runs[t]:
                b[t] = x[s]
        blocks.append(b)
    return np.concatenate(blocks, axis=1)


# ---- small helpers ------------------------------------------------------------------

def test_tr_times_and_run_ids():
    np.testing.assert_allclose(al.tr_times(3, 2.0), [1.0, 3.0, 5.0])
    np.testing.assert_allclose(al.tr_times(2, 1.5, offset=0.0), [0.0, 1.5])
    ids = al.run_ids_from_lengths([2, 0, 3])
    assert ids.dtype == jnp.int32
    np.testing.assert_array_equal(ids, [0, 0, 2, 2, 2])
    with pytest.raises(ValueError):
        al.run_ids_from_lengths([2, -1])


def test_interpolate_missing_times():
    times = np.array([np.nan, 1.0, np.nan, np.nan, 4.0, 10.0, np.nan, np.nan])
    out, n = al.interpolate_missing_times(times)
    np.testing.assert_allclose(out, [1.0, 1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0])
    assert n == 5
    assert np.isnan(times[0])  # input not modified
    out, n = al.interpolate_missing_times([0.5, 1.5])
    np.testing.assert_allclose(out, [0.5, 1.5])
    assert n == 0
    with pytest.raises(ValueError, match="no word has a time"):
        al.interpolate_missing_times([np.nan, np.nan])


# ---- Lanczos ------------------------------------------------------------------------

@pytest.mark.parametrize("window,cutoff_mult", [(3, 1.0), (2, 0.8)])
def test_lanczos_matches_huth(window, cutoff_mult):
    rng = np.random.default_rng(0)
    tr, n_trs = 2.0, 20
    new = np.asarray(al.tr_times(n_trs, tr), np.float64)
    # Includes words exactly at TR times (t == 0) and words far beyond the window.
    old = np.sort(np.concatenate([rng.uniform(0, n_trs * tr, 150), new[[0, 7, 19]]])).astype(np.float32)
    data = rng.standard_normal((old.size, 5))
    ref, ref_mat = huth_lanczosinterp2D(data, old.astype(np.float64), new, window, cutoff_mult)
    assert (ref_mat == 1.0).sum() >= 3 and (ref_mat == 0.0).any()
    mat = al.lanczos_matrix(old, al.tr_times(n_trs, tr), tr, window=window, cutoff_mult=cutoff_mult)
    assert mat.shape == (n_trs, old.size)
    np.testing.assert_allclose(mat, ref_mat, atol=1e-5)
    if cutoff_mult == 1.0:
        x, dropped = al.downsample(data.astype(np.float32), old, n_trs, tr, "lanczos", window=window)
        assert int(dropped) == 0
        np.testing.assert_allclose(x, ref, atol=2e-4, rtol=1e-4)


def test_lanczos_finite_gradient_at_zero_under_jit():
    tr_t = al.tr_times(4, 2.0)
    words = jnp.array([1.0, 3.0, 4.2, 9.0])  # first two sit exactly on TR times

    def f(w):
        return jnp.sum(al.lanczos_matrix(w, tr_t, 2.0) ** 2)

    val, grad = jax.jit(jax.value_and_grad(f))(words)
    assert np.isfinite(val) and np.all(np.isfinite(grad))
    mat = jax.jit(al.lanczos_matrix)(words, tr_t, 2.0)
    assert mat[0, 0] == 1.0 and mat[1, 1] == 1.0


def test_lanczos_reconstructs_band_limited_signal():
    rng = np.random.default_rng(1)
    tr, n_trs, spacing = 2.0, 100, 0.25
    times = np.arange(0.0, n_trs * tr, spacing) + rng.uniform(-0.08, 0.08, int(n_trs * tr / spacing))
    times = np.clip(times, 0.0, n_trs * tr - 1e-3)
    freq = 0.04  # Hz, far below the TR Nyquist rate of 0.25 Hz

    def signal(t):
        return np.sin(2 * np.pi * freq * t + 0.3)

    feats = np.stack([signal(times), 2 * signal(times)], 1).astype(np.float32)
    x, dropped = al.downsample(feats, times.astype(np.float32), n_trs, tr, "lanczos")
    weight_T = np.asarray(al.lanczos_matrix(times, al.tr_times(n_trs, tr), tr)).sum(1)
    inner = slice(5, n_trs - 5)
    # Not density-normalised: interior row sums are (words per second) * tr.
    np.testing.assert_allclose(weight_T[inner], tr / spacing, rtol=0.06)
    want = signal(np.asarray(al.tr_times(n_trs, tr), np.float64))
    rec = np.asarray(x) / weight_T[:, None]
    np.testing.assert_allclose(rec[inner, 0], want[inner], atol=0.02)
    np.testing.assert_allclose(rec[inner, 1], 2 * want[inner], atol=0.04)
    assert int(dropped) == 0


def test_lanczos_drops_out_of_scan_words():
    times = np.array([-0.5, 1.0, 3.0, 6.5], np.float32)
    feats = np.ones((4, 1), np.float32)
    x, dropped = al.downsample(feats, times, 3, 2.0, "lanczos")
    mat = np.asarray(al.lanczos_matrix(times, al.tr_times(3, 2.0), 2.0))
    assert int(dropped) == 2
    np.testing.assert_allclose(np.asarray(x)[:, 0], mat[:, 1:3].sum(1), atol=1e-6)


# ---- binning methods ------------------------------------------------------------------

def _random_words(rng, n_trs, tr, empty=(5, 6, 17)):
    t = rng.uniform(-3.0, n_trs * tr + 3.0, 400)
    t = t[~np.isin(np.floor(t / tr), empty)]
    frac = (t / tr) % 1.0
    t = t[(frac > 1e-3) & (frac < 1 - 1e-3)]  # keep float32 rounding off the bin edges
    t = np.concatenate([t, t[:10]])  # ties: same onset, later index wins for "last"
    return t.astype(np.float32)


@pytest.mark.parametrize("method", ["mean", "sum", "last"])
def test_binning_matches_loop_reference(method):
    rng = np.random.default_rng(2)
    n_trs, tr = 30, 1.5
    t = _random_words(rng, n_trs, tr)
    x = rng.standard_normal((t.size, 4)).astype(np.float32)
    x[-10:] += 10.0  # tied duplicates differ from their originals
    ref, ref_dropped = bin_reference(x, t, n_trs, tr, method)
    assert ref_dropped > 0 and not ref[[5, 6, 17]].any()
    out, dropped = al.downsample(x, t, n_trs, tr, method)
    assert out.shape == (n_trs, 4)
    assert int(dropped) == ref_dropped
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)
    jitted = jax.jit(al.downsample, static_argnames=("n_trs", "method", "window", "offset"))
    out_j, dropped_j = jitted(x, t, n_trs=n_trs, tr=tr, method=method)
    np.testing.assert_allclose(out_j, ref, atol=1e-5, rtol=1e-5)
    assert int(dropped_j) == ref_dropped


def test_binning_half_open_edges():
    t = np.array([0.0, 1.9, 2.0, 5.99, 6.0, -0.1], np.float32)
    x = np.arange(6, dtype=np.float32)[:, None] + 1
    mean, dropped = al.downsample(x, t, 3, 2.0, "mean")
    np.testing.assert_allclose(np.asarray(mean)[:, 0], [1.5, 3.0, 4.0])
    assert int(dropped) == 2
    last, _ = al.downsample(x, t, 3, 2.0, "last")
    np.testing.assert_allclose(np.asarray(last)[:, 0], [2.0, 3.0, 4.0])
    total, _ = al.downsample(x, t, 4, 2.0, "sum")  # a 4th TR now holds the word at 6.0
    np.testing.assert_allclose(np.asarray(total)[:, 0], [3.0, 3.0, 4.0, 5.0])


def test_downsample_errors():
    x, t = np.ones((3, 2), np.float32), np.array([0.1, 0.5, 1.0], np.float32)
    with pytest.raises(ValueError, match="valid methods"):
        al.downsample(x, t, 2, 1.0, method="median")
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(4,\)"):
        al.downsample(x, np.zeros(4, np.float32), 2, 1.0)
    with pytest.raises(ValueError, match="interpolate_missing_times"):
        al.downsample(x, np.array([0.1, np.nan, 1.0]), 2, 1.0)


# ---- FIR delays ---------------------------------------------------------------------

def test_fir_never_crosses_runs():
    lengths = (6, 5)
    runs = al.run_ids_from_lengths(lengths)
    x = np.ones((11, 2), np.float32)  # a leak from run 0 into run 1 would show up as a 1
    out = np.asarray(al.fir_delays(x, (1, 2, 3), runs))
    for j, d in enumerate((1, 2, 3)):
        block = out[:, 2 * j:2 * j + 2]
        for start, n in ((0, 6), (6, 5)):
            assert np.all(block[start:start + d] == 0), (d, start)
            assert np.all(block[start + d:start + n] == 1), (d, start)
    back = np.asarray(al.fir_delays(x, (-2,), runs))
    assert np.all(back[4:6] == 0) and np.all(back[9:] == 0) and np.all(back[6:9] == 1)


def test_fir_matches_reference_signed_delays():
    rng = np.random.default_rng(3)
    runs = np.asarray(al.run_ids_from_lengths([7, 4, 9]))
    x = rng.standard_normal((20, 3)).astype(np.float32)
    delays = (-2, 0, 1, 3)
    ref = fir_reference(x, delays, runs)
    out = al.fir_delays(x, delays, runs)
    assert out.shape == (20, 12)
    np.testing.assert_array_equal(out, ref)
    out_j = jax.jit(al.fir_delays, static_argnames="delays")(x, delays=delays, run_ids_N=runs)
    np.testing.assert_array_equal(out_j, ref)
    np.testing.assert_array_equal(al.fir_delays(x, (2, -1)), fir_reference(x, (2, -1), np.zeros(20)))


# ---- trimming -----------------------------------------------------------------------

def test_trim():
    x = jnp.arange(20.0).reshape(10, 2)
    np.testing.assert_array_equal(al.trim(x, 2, 1), x[2:9])
    np.testing.assert_array_equal(al.trim(x, 0, 0), x)
    with pytest.raises(ValueError):
        al.trim(x, 6, 5)
    runs = al.run_ids_from_lengths([5, 4])
    keep = jax.jit(al.trim_mask, static_argnames=("start", "end", "n_runs"))(runs, start=2, end=1, n_runs=2)
    np.testing.assert_array_equal(keep, [0, 0, 1, 1, 0, 0, 0, 1, 0])
    x_k, runs_k, keep2 = al.trim_runs(np.arange(9.0)[:, None], runs, 2, 1)
    np.testing.assert_array_equal(keep2, keep)
    np.testing.assert_array_equal(np.asarray(x_k)[:, 0], [2, 3, 7])
    np.testing.assert_array_equal(runs_k, [0, 0, 1])
    with pytest.raises(ValueError, match="removes every row"):
        al.trim_runs(np.zeros((9, 1)), runs, 3, 1)


# ---- z-scoring ----------------------------------------------------------------------

def test_zscore_fit_uses_only_masked_rows():
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((50, 4)) * [1.0, 3.0, 0.1, 1.0] + [0.0, 5.0, -2.0, 0.0]).astype(np.float32)
    x[:, 3] = 1e4  # constant column of large magnitude
    mask = np.zeros(50, bool)
    mask[:30] = True
    mean, std = al.zscore_fit(x, mask)
    np.testing.assert_allclose(mean[:3], x[:30, :3].astype(np.float64).mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std[:3], x[:30, :3].astype(np.float64).std(0), rtol=1e-5)
    assert std[3] == 1.0
    x2 = x.copy()
    x2[30:] = 1e6 * rng.standard_normal((20, 4))  # test rows must not affect the fit
    mean2, std2 = al.zscore_fit(x2, mask)
    np.testing.assert_array_equal(mean2, mean)
    np.testing.assert_array_equal(std2, std)
    z = np.asarray(al.zscore_apply(x, mean, std))[:30]
    np.testing.assert_allclose(z[:, :3].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z[:, :3].std(0), 1, atol=1e-5)
    assert np.all(np.isfinite(z)) and np.abs(z[:, 3]).max() < 1e-2
    with pytest.raises(ValueError, match="no rows"):
        al.zscore_fit(x, np.zeros(50, bool))


def test_zscore_per_run():
    rng = np.random.default_rng(5)
    lengths = [30, 12, 25]
    runs = al.run_ids_from_lengths(lengths)
    x = rng.standard_normal((67, 3)).astype(np.float32)
    x[30:42] = x[30:42] * 50 + 100  # runs with very different offsets/scales
    x[42:, 2] = 7.0  # constant within the last run
    z = np.asarray(jax.jit(al.zscore_per_run, static_argnames="n_runs")(x, runs, n_runs=3))
    start = 0
    for r, n in enumerate(lengths):
        seg = z[start:start + n]
        cols = [0, 1] if r == 2 else [0, 1, 2]
        np.testing.assert_allclose(seg[:, cols].mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(seg[:, cols].std(0), 1, atol=1e-5)
        m, s = al.zscore_fit(x[start:start + n])
        np.testing.assert_allclose(seg, al.zscore_apply(x[start:start + n], m, s), atol=1e-5)
        start += n
    assert np.all(np.isfinite(z)) and np.abs(z[42:, 2]).max() < 1e-5


def test_zscore_of_numpy_float64_is_numpys_own_arithmetic():
    # Host arrays stay NumPy in their precision: the fit is exactly x[mask].mean(0) / .std(0)
    # (the synthetic generator's bytes rely on it), and the transform is (x - mean) / std.
    rng = np.random.default_rng(6)
    x = rng.standard_normal((40, 5)) * [1.0, 1e-3, 50.0, 2.0, 1.0] + [0.0, 3.0, -7.0, 1e3, 0.0]
    mask = np.zeros(40, bool)
    mask[5:33] = True
    mean, std = al.zscore_fit(x, mask)
    assert isinstance(mean, np.ndarray) and mean.dtype == std.dtype == np.float64
    np.testing.assert_array_equal(mean, x[5:33].mean(0))
    np.testing.assert_array_equal(std, x[5:33].std(0))
    np.testing.assert_array_equal(al.zscore_apply(x, mean, std), (x - x[5:33].mean(0)) / x[5:33].std(0))


@pytest.mark.parametrize("constant", ["one", "nan"])
def test_zscore_numpy_and_jax_paths_agree(constant):
    rng = np.random.default_rng(7)
    lengths = [20, 9, 14]
    runs = np.repeat(np.arange(3), lengths)
    x = rng.standard_normal((43, 4)).astype(np.float32) * 3 + 1
    x[20:29, 1] = 5.0  # constant within run 1
    x[:, 3] = -2.0  # constant everywhere
    mask = rng.random(43) < 0.6
    host = al.zscore_fit(x, mask, constant=constant)
    dev = al.zscore_fit(jnp.asarray(x), jnp.asarray(mask), constant=constant)
    assert isinstance(host[0], np.ndarray) and isinstance(dev[0], jax.Array)
    for h, d in zip(host, dev):
        np.testing.assert_allclose(h, np.asarray(d), rtol=1e-5, atol=1e-6, equal_nan=True)
    assert (np.isnan(host[1][3]) and np.isnan(dev[1][3])) if constant == "nan" else host[1][3] == dev[1][3] == 1.0
    z_host = al.zscore_per_run(x, runs, 3, constant=constant)
    z_dev = jax.jit(al.zscore_per_run, static_argnames=("n_runs", "constant"))(jnp.asarray(x), runs, 3,
                                                                             constant=constant)
    assert isinstance(z_host, np.ndarray)
    np.testing.assert_allclose(z_host, np.asarray(z_dev), rtol=1e-5, atol=1e-5, equal_nan=True)
    flat = np.isnan(z_host[20:29, 1]).all() if constant == "nan" else np.abs(z_host[20:29, 1]).max() < 1e-5
    assert flat and np.isfinite(z_host[:20, 1]).all()


def test_zscore_rejects_a_bad_policy_and_a_mask_of_another_length():
    x = np.ones((5, 2))
    with pytest.raises(ValueError, match="constant must be one of"):
        al.zscore_fit(x, constant="zero")
    with pytest.raises(ValueError, match=r"mask_N \(4,\) must have one entry per row"):
        al.zscore_fit(jnp.asarray(x), np.ones(4, bool))
