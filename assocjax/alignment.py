"""Word-level features -> fMRI TR features: resampling, FIR delays, trimming, z-scoring.

Shape suffixes: W words, T TRs, D feature dims, R runs (stories). Everything except
the input-parsing helpers (`interpolate_missing_times`, `run_ids_from_lengths`,
`trim_runs`, `words_outside`) is pure JAX and jit-able, with the documented arguments
static; the z-scoring functions also take NumPy arrays and then stay in NumPy (float64
kept), so the package has one z-scoring for device and host arrays.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

METHODS = ("lanczos", "mean", "sum", "last")


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _float(x) -> jnp.ndarray:
    x = jnp.asarray(x)
    return x.astype(jnp.result_type(x.dtype, jnp.float32))


def interpolate_missing_times(times_W) -> tuple[np.ndarray, int]:
    """Fill NaN word onsets (words the forced aligner did not find) -> (times_W, n_interpolated).

    Interior gaps are interpolated linearly by word index between the nearest timed
    neighbours; leading/trailing gaps copy the nearest timed word (np.interp clamps).
    Host-side NumPy: it runs once while parsing transcripts.
    """
    t = np.asarray(times_W, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(f"times_W must be 1-D, got shape {t.shape}")
    missing = np.isnan(t)
    if missing.all():
        raise ValueError("no word has a time: cannot interpolate missing onsets (all NaN or empty)")
    idx = np.arange(t.size)
    out = t.copy()
    out[missing] = np.interp(idx[missing], idx[~missing], t[~missing])
    return out, int(missing.sum())


def tr_times(n_trs: int, tr: float, offset: float = 0.5) -> jnp.ndarray:
    """(T,) reference time of each TR: (k + offset) * tr.

    offset=0.5 puts it at the midpoint of the volume's acquisition window.
    """
    return (jnp.arange(n_trs, dtype=jnp.float32) + offset) * tr


def lanczos_matrix(word_times_W, tr_times_N, tr, window: int = 3, cutoff_mult: float = 1.0) -> jnp.ndarray:
    """(T, W) Lanczos resampling weights (Huth lab `lanczosinterp2D` / `lanczosfun`).

    cutoff = cutoff_mult / tr, so the kernel's band limit is the TR's Nyquist rate. With
    t = (tr_time - word_time) * cutoff the weight is window*sin(pi t)*sin(pi t/window)/(pi t)^2
    (1 at t == 0, 0 beyond |t| > window). Like Huth's, rows are NOT normalised by word
    density: a TR with more words gets a larger sum, which is part of the signal they model
    (divide by `lanczos_matrix(...).sum(1)` if a density-free average is wanted).
    """
    cutoff = cutoff_mult / tr
    t_NW = (_float(tr_times_N)[:, None] - _float(word_times_W)[None, :]) * cutoff
    at_zero = t_NW == 0
    # Safe denominator so neither value nor gradient becomes NaN at t == 0.
    s = jnp.where(at_zero, 1.0, t_NW)
    val = window * jnp.sin(jnp.pi * s) * jnp.sin(jnp.pi * s / window) / (jnp.pi**2 * s**2)
    val = jnp.where(at_zero, 1.0, val)
    return jnp.where(jnp.abs(t_NW) > window, 0.0, val)


def _tr_bins(times_W, n_trs: int, tr):
    """TR index k with k*tr <= onset < (k+1)*tr, and whether it lies inside the scan."""
    k = jnp.floor(times_W / tr).astype(jnp.int32)
    # floor(onset/tr) can be off by one from the multiplicative definition through rounding.
    k = jnp.where(times_W < k * tr, k - 1, k)
    k = jnp.where(times_W >= (k + 1) * tr, k + 1, k)
    valid = (k >= 0) & (k < n_trs)
    return k, valid


@partial(jax.jit, static_argnames=("n_trs", "method", "window", "offset"))
def _downsample(features_WD, word_times_W, tr, n_trs, method, window, offset):
    x = _float(features_WD)
    times = _float(word_times_W)
    k, valid = _tr_bins(times, n_trs, tr)
    n_dropped = jnp.sum(~valid).astype(jnp.int32)
    if method == "lanczos":
        w_NW = lanczos_matrix(times, tr_times(n_trs, tr, offset), tr, window)
        w_NW = jnp.where(valid[None, :], w_NW, 0.0).astype(x.dtype)
        return jnp.matmul(w_NW, x, precision=jax.lax.Precision.HIGHEST), n_dropped
    # Out-of-scan words go to an extra trash segment that is sliced off.
    seg = jnp.where(valid, k, n_trs)
    count_N = jax.ops.segment_sum(jnp.ones_like(times), seg, num_segments=n_trs + 1)[:n_trs]
    if method in ("sum", "mean"):
        sum_ND = jax.ops.segment_sum(x, seg, num_segments=n_trs + 1)[:n_trs]
        if method == "sum":
            return sum_ND, n_dropped
        return sum_ND / jnp.maximum(count_N, 1.0)[:, None], n_dropped
    # "last": latest onset, ties broken by transcript order (stable sort), via max rank.
    order_W = jnp.argsort(times, stable=True)
    rank_W = jnp.zeros_like(order_W).at[order_W].set(jnp.arange(times.shape[0], dtype=order_W.dtype))
    last_rank_N = jax.ops.segment_max(rank_W, seg, num_segments=n_trs + 1)[:n_trs]
    src_N = order_W[jnp.clip(last_rank_N, 0, times.shape[0] - 1)]
    return jnp.where((count_N > 0)[:, None], x[src_N], 0.0), n_dropped


def downsample(features_WD, word_times_W, n_trs: int, tr, method: str = "lanczos", window: int = 3,
               offset: float = 0.5) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Resample word features onto TRs -> (x_ND, n_dropped).

    "lanczos": Huth-style `lanczos_matrix` evaluated at `tr_times(n_trs, tr, offset)`.
    "mean"/"sum"/"last": word w belongs to TR k when k*tr <= onset_w < (k+1)*tr; empty TRs
    are 0; "last" takes the word with the latest onset (ties: later in the transcript).
    Words outside the scan [0, n_trs*tr) are dropped by every method (for Lanczos they get
    no weight even if they are within the kernel's reach) and counted in n_dropped
    (int32 scalar array). n_trs, method, window and offset must be static under jit.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods are {METHODS}")
    f_shape, t_shape = jnp.shape(features_WD), jnp.shape(word_times_W)
    if len(f_shape) != 2 or len(t_shape) != 1 or f_shape[0] != t_shape[0]:
        raise ValueError(f"features_WD {f_shape} must be (W, D) and word_times_W {t_shape} must be (W,) "
                         "with the same number of words")
    if _is_concrete(word_times_W) and bool(np.isnan(np.asarray(word_times_W, dtype=np.float64)).any()):
        raise ValueError("word_times_W contains NaN onsets; call interpolate_missing_times first")
    return _downsample(features_WD, word_times_W, tr, n_trs=int(n_trs), method=method, window=window,
                       offset=float(offset))


def run_ids_from_lengths(lengths) -> jnp.ndarray:
    """(T,) int32 run index of each row for runs of the given lengths, concatenated in order."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.ndim != 1 or (lengths < 0).any():
        raise ValueError(f"lengths must be a 1-D sequence of non-negative ints, got {lengths}")
    return jnp.asarray(np.repeat(np.arange(lengths.size, dtype=np.int32), lengths))


def fir_delays(x_ND, delays: tuple[int, ...] = (1, 2, 3, 4), run_ids_N=None) -> jnp.ndarray:
    """(T, D*len(delays)) finite-impulse-response design; block j is x delayed by delays[j].

    Delay d > 0: out[t] = x[t-d] (the response now depends on the stimulus d TRs ago);
    d < 0: out[t] = x[t+|d|]. A row is taken only when its source lies in [0, T) and has
    the same run id as row t; otherwise it is 0. So, unlike np.roll, one story's end never
    leaks into the next story's start. delays must be static under jit.
    """
    delays = tuple(int(d) for d in delays)
    x = jnp.asarray(x_ND)
    n = x.shape[0]
    t = jnp.arange(n)
    runs = jnp.zeros(n, jnp.int32) if run_ids_N is None else jnp.asarray(run_ids_N)
    if runs.shape != (n,):
        raise ValueError(f"run_ids_N {runs.shape} must have one entry per row of x_ND {x.shape}")
    blocks = []
    for d in delays:
        src = t - d
        src_c = jnp.clip(src, 0, n - 1)
        ok = (src >= 0) & (src < n) & (runs[src_c] == runs)
        blocks.append(jnp.where(ok[:, None], x[src_c], jnp.zeros((), x.dtype)))
    return jnp.concatenate(blocks, axis=1)


def trim(x_ND, start: int, end: int) -> jnp.ndarray:
    """Drop `start` rows at the beginning and `end` at the end of a single run."""
    n = x_ND.shape[0]
    if start < 0 or end < 0 or start + end > n:
        raise ValueError(f"cannot trim start={start}, end={end} from {n} rows")
    return x_ND[start:n - end]


def trim_mask(run_ids_N, start: int, end: int, n_runs: int) -> jnp.ndarray:
    """(T,) bool: rows kept after dropping `start`/`end` rows of every (contiguous) run."""
    runs = jnp.asarray(run_ids_N)
    t = jnp.arange(runs.shape[0])
    first_U = jax.ops.segment_min(t, runs, num_segments=n_runs)
    last_U = jax.ops.segment_max(t, runs, num_segments=n_runs)
    return (t - first_U[runs] >= start) & (t <= last_U[runs] - end)


def trim_runs(x_ND, run_ids_N, start: int, end: int):
    """Per-run `trim` -> (x_ND, run_ids_N, keep_N). Host-side (the output length is data-dependent)."""
    runs = np.asarray(run_ids_N)
    n_runs = int(runs.max()) + 1 if runs.size else 0
    keep = np.asarray(trim_mask(runs, start, end, n_runs))
    if n_runs and np.setdiff1d(np.unique(runs), np.unique(runs[keep])).size:
        raise ValueError(f"trimming start={start}, end={end} removes every row of some run")
    return jnp.asarray(x_ND)[keep], jnp.asarray(runs[keep]), jnp.asarray(keep)


CONSTANT_POLICIES = ("one", "nan")


def _namespace(x):
    """NumPy for host arrays (they stay on the host in their own float precision, float64
    included), jax.numpy for everything else (device arrays, tracers under jit)."""
    return np if isinstance(x, np.ndarray) else jnp


def _float_of(x, xp):
    if xp is np:
        return x.astype(np.result_type(x.dtype, np.float32), copy=False)
    return _float(x)


def _check_constant(constant: str) -> None:
    if constant not in CONSTANT_POLICIES:
        raise ValueError(f"constant must be one of {CONSTANT_POLICIES}, got {constant!r}")


def _flat(var_D, meansq_D, xp=jnp):
    # A column whose spread is only rounding noise relative to its magnitude is constant.
    tiny = 100 * xp.finfo(var_D.dtype).eps
    return var_D <= (tiny**2) * meansq_D


def _std(var_D, meansq_D, constant: str = "one", xp=jnp):
    """Column std; a constant column gets 1 (z-scoring just centres it) or NaN (it is left out)."""
    flat = _flat(var_D, meansq_D, xp)
    return xp.where(flat, 1.0 if constant == "one" else xp.nan, xp.sqrt(xp.where(flat, 1.0, var_D)))


def zscore_fit(x_ND, mask_N=None, constant: str = "one") -> tuple:
    """Column (mean_D, std_D) from the rows where mask_N is true (population std, ddof=0).

    Fit on training rows only, so no statistic of the held-out stories leaks into the
    transform applied to them. constant: the std of a column that is constant over those
    rows (its spread within rounding of its magnitude): "one" (z-scoring only centres it) or
    "nan" (it becomes NaN: left out). An empty mask raises on concrete input and gives NaN
    under jit.

    The one z-scoring of the package, for both kinds of arrays: JAX arrays (pure, jit-able;
    the mask enters as weights) and NumPy arrays, which stay NumPy in their own precision
    (float64 kept): the masked rows are taken and reduced with NumPy's own arithmetic, so
    the result is bit-identical to `x[mask].mean(0)` / `x[mask].std(0)`.
    """
    _check_constant(constant)
    xp = _namespace(x_ND)
    x = _float_of(x_ND, xp)
    if mask_N is not None and np.shape(mask_N) != (x.shape[0],):
        raise ValueError(f"mask_N {np.shape(mask_N)} must have one entry per row of x_ND {x.shape}")
    if xp is np:
        rows = x if mask_N is None else x[np.asarray(mask_N, bool)]
        if rows.shape[0] == 0:
            raise ValueError("zscore_fit: mask_N selects no rows")
        mean = rows.mean(0)
        var = ((rows - mean) ** 2).mean(0)
        meansq = (rows**2).mean(0)
        return mean, _std(var, meansq, constant, np)
    w = jnp.ones(x.shape[0], x.dtype) if mask_N is None else jnp.asarray(mask_N).astype(x.dtype)
    n = jnp.sum(w)
    if _is_concrete(n) and float(n) == 0:
        raise ValueError("zscore_fit: mask_N selects no rows")
    mean = jnp.sum(x * w[:, None], axis=0) / n
    var = jnp.sum((x - mean) ** 2 * w[:, None], axis=0) / n
    meansq = jnp.sum(x**2 * w[:, None], axis=0) / n
    return mean, _std(var, meansq, constant)


def zscore_apply(x_ND, mean_D, std_D):
    """(x - mean) / std with parameters from `zscore_fit` (NumPy in, NumPy out)."""
    return (_float_of(x_ND, _namespace(x_ND)) - mean_D) / std_D


def zscore_per_run(x_ND, run_ids_N, n_runs: int, constant: str = "one"):
    """Z-score each run with its own column statistics (the usual per-story BOLD treatment).

    constant: what a column that is constant within a run becomes in that run's rows: "one"
    divides by 1 (it is only centred, e.g. a feature silent in one story), "nan" makes it NaN
    (e.g. a vertex without signal in one scan, which must then be left out). A non-finite
    value stays non-finite in its run's rows only. n_runs and constant must be static under
    jit. NumPy input: `zscore_fit`/`zscore_apply` on each run's rows, on the host.
    """
    _check_constant(constant)
    xp = _namespace(x_ND)
    x = _float_of(x_ND, xp)
    if xp is np:
        runs = np.asarray(run_ids_N)
        out = np.full_like(x, np.nan)
        for r in range(n_runs):
            rows = runs == r
            if rows.any():
                out[rows] = zscore_apply(x[rows], *zscore_fit(x[rows], constant=constant))
        return out
    runs = jnp.asarray(run_ids_N)
    count_U = jnp.maximum(jax.ops.segment_sum(jnp.ones(x.shape[0], x.dtype), runs, num_segments=n_runs), 1.0)
    mean_UD = jax.ops.segment_sum(x, runs, num_segments=n_runs) / count_U[:, None]
    centred = x - mean_UD[runs]
    var_UD = jax.ops.segment_sum(centred**2, runs, num_segments=n_runs) / count_U[:, None]
    meansq_UD = jax.ops.segment_sum(x**2, runs, num_segments=n_runs) / count_U[:, None]
    return centred / _std(var_UD, meansq_UD, constant)[runs]
