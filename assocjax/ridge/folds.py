"""Cross-validation folds grouped by story (or run), padded to static shapes for jit.

A fold never splits a group: BOLD is autocorrelated within a story, so a story that sits on
both sides of a split leaks its future into the training set.
"""
from __future__ import annotations

from typing import Iterable, NamedTuple, Sequence

import numpy as np

Fold = tuple[np.ndarray, np.ndarray]


def grouped_kfold(groups_N: Sequence, n_folds: int) -> list[Fold]:
    """K folds of whole groups with sizes as balanced as possible (deterministic).

    Groups are placed largest first into the fold with the fewest samples so far (the
    rule of scikit-learn's GroupKFold); ties keep the groups' first-appearance order.
    """
    groups = np.asarray(groups_N)
    if groups.ndim != 1:
        raise ValueError(f"groups must be 1-D (n_samples,), got shape {groups.shape}")
    names, first, inverse, counts = np.unique(groups, return_index=True, return_inverse=True, return_counts=True)
    if len(names) < 2:
        raise ValueError(f"grouped CV needs at least 2 groups (stories/runs); got {len(names)} in {groups.shape[0]} samples")
    if not 2 <= n_folds <= len(names):
        raise ValueError(f"n_folds={n_folds} must be between 2 and the number of groups ({len(names)})")
    order = sorted(range(len(names)), key=lambda g: (-counts[g], first[g]))
    fold_of_group = np.empty(len(names), dtype=int)
    load = np.zeros(n_folds, dtype=int)
    for g in order:
        f = int(np.argmin(load))
        fold_of_group[g] = f
        load[f] += counts[g]
    fold_N = fold_of_group[inverse]
    idx = np.arange(groups.shape[0])
    return [(idx[fold_N != f], idx[fold_N == f]) for f in range(n_folds)]


def contiguous_kfold(n_samples: int, n_folds: int) -> list[Fold]:
    """K contiguous blocks, for time series without group labels (never shuffled)."""
    if not 2 <= n_folds <= n_samples:
        raise ValueError(f"n_folds={n_folds} must be between 2 and n_samples={n_samples}")
    idx = np.arange(n_samples)
    return [(np.setdiff1d(idx, block), block) for block in np.array_split(idx, n_folds)]


def make_folds(cv: int | Iterable[Fold], n_samples: int, groups_N: Sequence | None = None) -> list[Fold]:
    """Folds from an int (grouped K-fold, or contiguous blocks without groups) or an iterable.

    Explicit folds are checked: indices in range, train and test non-empty and disjoint,
    and, when groups are given, no group on both sides of any split.
    """
    if groups_N is not None and np.shape(groups_N) != (n_samples,):
        raise ValueError(f"groups has shape {np.shape(groups_N)}, expected ({n_samples},) to match X and Y")
    if isinstance(cv, (int, np.integer)):
        return grouped_kfold(groups_N, int(cv)) if groups_N is not None else contiguous_kfold(n_samples, int(cv))
    folds = [(np.asarray(tr, dtype=int).ravel(), np.asarray(te, dtype=int).ravel()) for tr, te in cv]
    if len(folds) < 1:
        raise ValueError("cv yielded no folds")
    groups = None if groups_N is None else np.asarray(groups_N)
    for i, (tr, te) in enumerate(folds):
        if tr.size == 0 or te.size == 0:
            raise ValueError(f"fold {i} has an empty train ({tr.size}) or test ({te.size}) set")
        for name, ix in (("train", tr), ("test", te)):
            if ix.min() < 0 or ix.max() >= n_samples:
                raise ValueError(f"fold {i} {name} indices out of range for n_samples={n_samples}")
        if np.intersect1d(tr, te).size:
            raise ValueError(f"fold {i}: train and test share samples")
        if groups is not None:
            shared = np.intersect1d(groups[tr], groups[te])
            if shared.size:
                raise ValueError(f"fold {i} splits group(s) {shared[:5].tolist()} across train and test")
    return folds


class PaddedFolds(NamedTuple):
    """Fold indices padded to one shape; pad entries point past the data (index n_samples)
    so `jnp.take(..., mode="fill")` reads zeros there, and the masks drop them."""

    train_KM: np.ndarray
    test_KE: np.ndarray
    train_mask_KR: np.ndarray
    test_mask_KE: np.ndarray


def pad_folds(folds: list[Fold], n_samples: int) -> PaddedFolds:
    def pad(parts):
        width = max(len(p) for p in parts)
        idx = np.full((len(parts), width), n_samples, dtype=np.int32)
        mask = np.zeros((len(parts), width), dtype=bool)
        for k, p in enumerate(parts):
            idx[k, : len(p)] = p
            mask[k, : len(p)] = True
        return idx, mask

    tr, tr_m = pad([f[0] for f in folds])
    te, te_m = pad([f[1] for f in folds])
    return PaddedFolds(tr, te, tr_m, te_m)


def run_ids(runs_N: Sequence | None, n_samples: int) -> np.ndarray:
    """Integer run (story) id per row, checked: rows of a run must be contiguous (and are
    taken to be in time order). None = all rows are one run, the cautious reading for a
    buffer: every row-index distance then counts."""
    if runs_N is None:
        return np.zeros(n_samples, dtype=np.int64)
    runs = np.asarray(runs_N)
    if runs.shape != (n_samples,):
        raise ValueError(f"runs has shape {runs.shape}, expected ({n_samples},) to match the sample axis")
    starts = np.flatnonzero(np.r_[True, runs[1:] != runs[:-1]])
    if len(np.unique(runs)) != len(starts):
        raise ValueError("runs must list each run's rows contiguously (in time order); some run appears in "
                         f"{len(starts)} separate blocks for {len(np.unique(runs))} runs")
    return np.cumsum(np.r_[True, runs[1:] != runs[:-1]]) - 1


def buffered(folds: list[Fold], runs_N: Sequence | None, buffer: int) -> list[Fold]:
    """Drop training rows within `buffer` rows of any test row of the same run.

    BOLD and drifting features are autocorrelated, so training rows next to a test chunk of
    the same story carry its noise into the model (measured: pure AR(1) noise targets score
    r > 0 without a buffer). Distance is the row-index difference inside a run (rows of a
    run are contiguous and in time order); rows of other runs are never dropped.
    """
    if buffer < 0:
        raise ValueError(f"buffer must be >= 0 rows, got {buffer}")
    if buffer == 0:
        return [(np.asarray(tr), np.asarray(te)) for tr, te in folds]
    last = max(max(int(np.max(tr)), int(np.max(te))) for tr, te in folds)
    n = last + 1 if runs_N is None else len(runs_N)
    if last >= n:
        raise ValueError(f"fold indices reach row {last} but runs has only {n} rows")
    run = run_ids(runs_N, n)
    reach = min(buffer, n)  # rows of a run are < n apart: a larger buffer drops the same rows (and loops for nothing)
    out = []
    for i, (tr, te) in enumerate(folds):
        tr, te = np.asarray(tr), np.asarray(te)
        near = np.zeros(n, dtype=bool)
        for d in range(-reach, reach + 1):  # mark every row within `buffer` of a test row
            j = te + d
            ok = (j >= 0) & (j < n)
            j, src = j[ok], te[ok]
            near[j[run[j] == run[src]]] = True
        kept = tr[~near[tr]]
        if kept.size == 0:
            raise ValueError(f"fold {i}: a buffer of {buffer} rows around the test rows leaves no training rows")
        out.append((kept, te))
    return out


class NestedFolds(NamedTuple):
    """Outer folds (indices into the N rows), each outer fold's inner folds (also indices
    into the N rows, inside that fold's outer-training rows), and the groups each outer
    fold holds out. Training rows are already buffered (see `buffered`)."""

    outer: tuple[Fold, ...]
    inner: tuple[tuple[Fold, ...], ...]
    test_groups: tuple[tuple, ...]
    buffer: int

    # Hashable by value, so that folds can be a static argument of jax.jit (`functional`):
    # the tuple's own == would compare index arrays elementwise.
    def _key(self):
        idx = lambda a: np.asarray(a, np.int64).tobytes()  # noqa: E731
        pairs = lambda fs: tuple((idx(tr), idx(te)) for tr, te in fs)  # noqa: E731
        return pairs(self.outer), tuple(pairs(f) for f in self.inner), self.test_groups, self.buffer

    def __hash__(self):
        return hash(self._key())

    def __eq__(self, other):
        return isinstance(other, NestedFolds) and self._key() == other._key()

    def __ne__(self, other):
        return not self == other


def nested_folds(groups_N: Sequence, outer_folds: int | None = None, inner_folds: int = 5,
                 runs_N: Sequence | None = None, buffer: int = 0) -> NestedFolds:
    """Story-grouped nested CV folds with a buffer around every test set.

    outer_folds None holds each group out once (leave-one-group-out); inner folds are a
    grouped K-fold over the outer-training groups, capped at their number. The buffer drops
    outer-training rows near the outer test rows, and inner-training rows near the inner
    test rows (runs_N: the run/story of each row; None = one run in time order).
    """
    groups = np.asarray(groups_N)
    if groups.ndim != 1:
        raise ValueError(f"groups must be 1-D (n_samples,), got shape {groups.shape}")
    n = groups.shape[0]
    runs = run_ids(runs_N, n)
    n_groups = len(np.unique(groups))
    outer = buffered(grouped_kfold(groups, n_groups if outer_folds is None else outer_folds), runs, buffer)
    inner, test_groups = [], []
    for k, (tr, te) in enumerate(outer):
        n_inner = len(np.unique(groups[tr]))
        if n_inner < 2:
            raise ValueError(f"outer fold {k} (holding out {np.unique(groups[te]).tolist()}) leaves "
                             f"{n_inner} group for training; inner CV needs at least 2 groups")
        local = grouped_kfold(groups[tr], min(inner_folds, n_inner))
        inner.append(tuple(buffered([(tr[a], tr[b]) for a, b in local], runs, buffer)))
        test_groups.append(tuple(np.unique(groups[te]).tolist()))
    return NestedFolds(tuple(outer), tuple(inner), tuple(test_groups), int(buffer))
