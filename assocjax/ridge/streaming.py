"""`brain_score`: the thin shell that streams chunks of targets through the nested engine
(`chunks.stream`).

Y may be any (N, ...) array, including an np.memmap far larger than memory: it is read one
column chunk at a time (only that chunk is cast to float32), while the previous chunk
computes. Results for all targets are small (K x T). The features are decomposed once per
design (`prepare_nested`) and shared by every chunk.
"""
from __future__ import annotations

import dataclasses
import warnings
from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import chunks
from .chunks import chunk_layout, cpu_tile, replicate, target_mesh, targets_within
from .estimator import DEFAULT_ALPHAS
from .folds import nested_folds
from .nested import NestedPlan, prepare_nested, solve_nested, target_bytes
from ..numerics import exact_matmuls

DEFAULT_MEMORY_GB = 2.0


@dataclasses.dataclass(frozen=True)
class BrainScore:
    """r: (..., *targets) over the concatenated held-out predictions (all outer folds);
    r_folds: (n_outer, ..., *targets) per held-out fold; alpha_idx: (n_outer, ..., *targets)
    index into `alphas` (sorted) of each fold's chosen alpha (best_alphas gives the values);
    predictions: (..., N, *targets) when asked for. `...` is the layer axis when X was
    stacked (L, N, P). buffer: rows dropped from training around every test set."""

    r: np.ndarray
    r_folds: np.ndarray
    alpha_idx: np.ndarray
    alphas: np.ndarray
    test_groups: tuple[tuple, ...]
    solver: str
    n_masked_targets: int
    predictions: np.ndarray | None = None
    buffer: int = 0

    @property
    def best_alphas(self) -> np.ndarray:
        return self.alphas[self.alpha_idx]


def brain_score(X, Y, groups: Sequence, alphas: Sequence[float] = DEFAULT_ALPHAS, outer_folds: int | None = None,
                inner_folds: int = 5, standardize: bool = True, return_predictions: bool = False,
                runs: Sequence | None = None, buffer: int = 0, target_chunk: int | None = None,
                memory_gb: float | None = None, scoring: str = "r", solver: str = "auto", progress: bool = False,
                shard_targets: bool = True, dtype=jnp.float32) -> BrainScore:
    """Brain score with group-level nesting.

    X: (N, P) or (L, N, P) features; Y: (N, ...) targets (array or memmap, read per chunk);
    groups: (N,) CV group per row (a story, or a contiguous chunk of one).
    outer_folds: number of grouped outer folds; None holds out one group at a time.
    inner_folds: grouped folds over the outer-training groups (capped at their number).
    standardize: z-score features with the outer-training rows' statistics only.
    runs: (N,) run/story of each row (rows of a run contiguous, in time order); None = one run.
    buffer: training rows within `buffer` rows of a test row of the same run are dropped, in
        the outer and inner folds alike (autocorrelated BOLD leaks across chunk edges).
    target_chunk: targets per compiled call; default from memory_gb (default
        DEFAULT_MEMORY_GB) of memory per device for one chunk's working set (`chunks`).
    scoring: "r" or "r2", the inner-CV criterion for choosing alphas (scores are always r).
    """
    X = np.asarray(X)
    if X.ndim not in (2, 3):
        raise ValueError(f"X must be (n_samples, n_features) or (n_layers, n_samples, n_features); got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"X (shape {X.shape}) contains NaN or Inf; features must be finite")
    n = X.shape[-2]
    groups = np.asarray(groups)
    if np.ndim(Y) < 1 or np.shape(Y)[0] != n or groups.shape != (n,):
        raise ValueError(f"X {X.shape}, Y {np.shape(Y)} and groups {groups.shape} must share n_samples on their sample axis")
    alphas = np.sort(np.asarray(alphas, dtype=np.float64).ravel())
    if alphas.size == 0 or np.any(~np.isfinite(alphas)) or np.any(alphas <= 0):
        raise ValueError(f"alphas must be a non-empty 1-D array of finite values > 0; got {alphas}")
    if scoring not in ("r", "r2"):
        raise ValueError(f"scoring must be 'r' or 'r2', got {scoring!r}")
    target_shape = np.shape(Y)[1:]
    y_NT = Y.reshape(n, -1) if isinstance(Y, np.ndarray) else np.asarray(Y).reshape(n, -1)  # a view when contiguous

    folds = nested_folds(groups, outer_folds, inner_folds, runs, buffer)
    plan, solver = prepare_nested(X, folds, alphas, standardize=standardize, solver=solver, dtype=dtype)
    mesh = target_mesh(shard_targets)
    n_dev = mesh.size if mesh is not None else 1
    plan = replicate(plan, mesh)
    tile = cpu_tile()
    if target_chunk is None:
        budget = (DEFAULT_MEMORY_GB if memory_gb is None else memory_gb) * 2**30
        per, fixed = target_bytes(plan, return_predictions, tile)
        target_chunk = targets_within(budget, per, fixed, tile or 1, n_dev, what=f"memory_gb={budget / 2**30:g}")
    layout = chunk_layout(y_NT.shape[1], int(target_chunk), n_devices=n_dev, tile=tile)
    layered_plan = plan if X.ndim == 3 else jax.tree.map(lambda a: a[None], plan)
    solve = partial(_solve_layers, layered_plan, score=scoring, return_predictions=return_predictions, tile=layout.tile)
    stream = chunks.stream(solve, lambda start, stop: y_NT[:, start:stop], layout, mesh, dtype, progress,
                           "brain score target chunks")

    layered = X.ndim == 3
    n_t, k, lead = y_NT.shape[1], len(folds.outer), X.shape[:-2]
    r = np.full(lead + (n_t,), np.nan, np.float32)
    r_folds = np.full((k,) + lead + (n_t,), np.nan, np.float32)
    idx = np.zeros((k,) + lead + (n_t,), np.uint16 if len(alphas) < 2**16 else np.int32)
    preds = np.full(lead + (n, n_t), np.nan, np.float32) if return_predictions else None
    n_masked = 0
    for (start, stop, used), out in stream:
        cols = slice(start, stop)
        res = out if layered else jax.tree.map(lambda a: a[0], out)  # drop the layer axis of a single design
        r[..., cols] = res.r_T[..., :used]
        r_folds[..., cols] = np.moveaxis(res.r_folds_KT, -2, 0)[..., :used]
        idx[..., cols] = np.moveaxis(res.alpha_idx_KT, -2, 0)[..., :used]
        n_masked += int(np.max(res.n_masked))
        if preds is not None:
            preds[..., cols] = res.predictions_NT[..., :used]
    if n_masked:
        warnings.warn(f"{n_masked} of {n_t} targets contain NaN/Inf (e.g. medial wall); they were left out of "
                      "the solve and get NaN scores", stacklevel=2)
    shape = lambda a: a.reshape(a.shape[:-1] + target_shape)  # noqa: E731
    return BrainScore(r=shape(r), r_folds=shape(r_folds), alpha_idx=shape(idx), alphas=alphas,
                      test_groups=folds.test_groups, solver=solver, n_masked_targets=n_masked,
                      predictions=shape(preds) if preds is not None else None, buffer=folds.buffer)


@exact_matmuls
@partial(jax.jit, static_argnames=("score", "return_predictions", "tile"))
def _solve_layers(plan_L: NestedPlan, y_NT, *, score, return_predictions, tile):
    """Every layer's design for one chunk of targets, one layer at a time (bounded memory)."""
    solve = partial(solve_nested, score=score, return_predictions=return_predictions, tile=tile)
    return jax.lax.map(lambda plan: solve(plan, y_NT), plan_L)
