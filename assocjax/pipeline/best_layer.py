"""The best layer without double dipping: chosen on some outer folds, scored on another.

The argmax over layers of a score grid picks the layer and reports its score on the same
held-out data, so on noise alone it reports the largest of L noisy means (> 0). Here, for each
fit unit (each subject's own fit, the subject-mean fit) and each region x hemisphere:

    for each outer fold k of the unit: the layer whose (weighted) mean region score over the
        unit's OTHER outer folds is largest, scored on fold k (ties: the lower layer)
    the unit's cross-validated (CV) best score = the weighted mean over its folds of those scores

Folds of several stories (fit groups) pool: a fold of a story of T TRs cut into K folds weighs
T / K, so the mean over a unit's folds is the TR-weighted mean over its stories of each story's
fold mean, as `aggregate` combines a subject's scores. A subject absent from a story has no
folds there; a story with one listener counts its only fit as that listener's (as `aggregate`).
The headline (fit "subjects", unit "all") is the mean over subjects of their CV best scores
with the CI of the headline scores, exactly as they are averaged: the subject bootstrap of
`tables.layer_scores` (`stats.bootstrap_mean_ci`, the same seed, so the same cohorts), and with
several stories the two-level CI of `aggregate` (stories, then subjects: `stats.two_level_means`
over each subject's CV score per story, its folds' weighted mean there). The layer the headline
names (`cv_layer`) is the mode of the layers chosen over every fold of its units (ties: the
lower layer); `cv_layers` counts them ("layer:count ..."). The argmax is kept as
`optimistic_layer` / `optimistic_score` (and its CI), named for what it is.

The best-layer grid (dims unit, region, hemi; `fit` on unit, scalar `story`) has `BEST_VARS`
and `present` (with several stories, attrs `cv_by_story`: `per_story`'s (subjects, present
(region, hemi) pairs, stories) CV scores and the stories' weights); its rows are best_layer.csv (`results.to_rows`, `results.BEST_COLUMNS`).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import xarray as xr

from .. import results, rois
from ..results import ALL, HEADLINE, MEAN, SUBJECT
from ..stats import bootstrap_indices, bootstrap_mean_ci, two_level_mean_ci
from .conditions import several_stories

NO_LAYER = -1   # a unit with no finite held-out score chose no layer


@dataclasses.dataclass(frozen=True)
class FoldScores:
    """One fit group's region score (mean r over the region's finite vertices) per layer, outer
    fold, fit unit and (region, hemi) pair; `weight` = the group's TRs."""

    layers: tuple[int, ...]
    units: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]
    scores_LKUR: np.ndarray
    weight: float


def fold_scores(results_by_layer: dict, layers, units, regs, weight: float) -> FoldScores:
    """`FoldScores` of one group from its per-layer results (r_folds (K, F, V), F = the fits in
    `units` order) and its regions (`tables.regions`). One fold at a time: no per-vertex array
    beyond the (F, V) the layer's score grid makes anyway."""
    masks_RV = np.stack([m for _, _, m in regs]).astype(float)
    per = [np.stack([rois.region_means(r_KFV[k], masks_RV) for k in range(r_KFV.shape[0])])
           for r_KFV in (results_by_layer[l]["r_folds"] for l in layers)]
    return FoldScores(tuple(int(l) for l in layers), tuple(units), tuple((n, h) for n, h, _ in regs),
                      np.stack(per), float(weight))


def group_units(subjects, per_subject: bool, several_groups: bool) -> tuple[list[str], str | None]:
    """(the units of a group's fits, the listener its only fit also stands for, or None): the
    subjects then the mean with per-subject fits; else the mean fit, which is the listener's own
    fit in a combination of several groups when the group has one listener (`aggregate.own_fits`)."""
    if per_subject:
        return list(subjects) + [MEAN], None
    return [MEAN], subjects[0] if several_groups and len(subjects) == 1 else None


def cv_select(scores_LKX: np.ndarray, weights_K) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(chosen layer index (K, X), its held-out score (K, X), the CV score (X,)) per column x
    (module doc). A fold with no finite score at any layer, or whose other folds have none,
    chooses nothing (index NO_LAYER, score NaN) and is left out of the mean."""
    s = np.asarray(scores_LKX, np.float64)
    n_folds = s.shape[1]
    w = np.asarray(weights_K, np.float64)
    ok = np.isfinite(s)
    leave_out = w[None, :] * (1.0 - np.eye(n_folds))                        # (K held out, K') weights of the others
    with np.errstate(invalid="ignore", divide="ignore"):
        others_LKX = np.einsum("lmx,km->lkx", np.where(ok, s, 0.0), leave_out) / np.einsum("lmx,km->lkx", ok * 1.0,
                                                                                          leave_out)
    finite = np.isfinite(others_LKX)
    pick_KX = np.argmax(np.where(finite, others_LKX, -np.inf), axis=0)
    held_KX = np.take_along_axis(s, pick_KX[None], 0)[0]
    none = ~finite.any(0) | ~np.isfinite(held_KX)
    pick_KX, held_KX = np.where(none, NO_LAYER, pick_KX), np.where(none, np.nan, held_KX)
    wk = np.where(none, 0.0, w[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        cv_X = (np.where(none, 0.0, held_KX) * wk).sum(0) / wk.sum(0)
    return pick_KX, held_KX, cv_X


def _pooled(parts: list[tuple[FoldScores, str | None]], units, pairs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(L, K, U, R) every group's fold scores on the same units and pairs (NaN where a group lacks
    one), the groups' folds one after another; (K,) each fold's weight = its group's TRs / folds;
    (K,) each fold's group."""
    blocks, weights, group = [], [], []
    for fs, alone in parts:
        have = dict(zip(fs.units, range(len(fs.units))))
        if alone is not None:   # the one listener's own fit is the group's only (mean) fit
            have[alone] = have[MEAN]
        at = dict(zip(fs.pairs, range(len(fs.pairs))))
        out = np.full(fs.scores_LKUR.shape[:2] + (len(units), len(pairs)), np.nan)
        ui = [(i, have[u]) for i, u in enumerate(units) if u in have]
        ri = [(i, at[p]) for i, p in enumerate(pairs) if p in at]
        if ui and ri:
            (u_to, u_from), (r_to, r_from) = zip(*ui), zip(*ri)
            out[:, :, np.array(u_to)[:, None], np.array(r_to)] = fs.scores_LKUR[:, :, np.array(u_from)[:, None],
                                                                                np.array(r_from)]
        blocks.append(out)
        k = fs.scores_LKUR.shape[1]
        weights += [fs.weight / k] * k
        group += [len(blocks) - 1] * k
    return np.concatenate(blocks, axis=1), np.asarray(weights), np.asarray(group)


def _counts(pick_KX: np.ndarray, layers) -> tuple[np.ndarray, list[str]]:
    """(X,) the mode of the layers chosen per column (NO_LAYER where none), and their counts
    as "layer:count ..." in layer order."""
    n_layers = len(layers)
    hist_XL = np.stack([(pick_KX == i).sum(0) for i in range(n_layers)], -1).reshape(-1, n_layers)
    mode = np.where(hist_XL.sum(1) > 0, np.asarray(layers)[hist_XL.argmax(1)], NO_LAYER)
    text = [" ".join(f"{layers[i]}:{c}" for i, c in enumerate(h) if c) for h in hist_XL]
    return mode, text


def subject_ci(scores_SX: np.ndarray, n_boot: int, ci: float, seed: int, stories=None):
    """(mean, CI low, CI high, finite subjects) over subjects of their CV scores (S, X), with the
    headline's CI (one place, so that a change of the headline's CI reaches the best layer too): the
    subject bootstrap, or with several stories (`stories` = `per_story`'s (S, X, G) scores and (G,)
    weights) the two-level CI of `aggregate` (stories, then subjects)."""
    mean, lo, hi, n = bootstrap_mean_ci(scores_SX, bootstrap_indices(scores_SX.shape[0], n_boot, seed), ci)
    if stories is not None:
        lo, hi, _ = two_level_mean_ci(*stories, mean, n_boot, ci, seed)
    return mean, lo, hi, n


def per_story(held_KSX: np.ndarray, w_K: np.ndarray, group_K: np.ndarray):
    """((S, X, G) each unit's CV score per story: the weighted mean of its held-out fold scores
    there (NaN: no fold), (G,) the stories' weights), or None with one story."""
    groups = np.unique(group_K)
    if groups.size < 2:
        return None
    ok = np.isfinite(held_KSX)
    per = []
    for g in groups:
        at = group_K == g
        wk = np.where(ok[at], w_K[at, None, None], 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            per.append((np.where(ok[at], held_KSX[at], 0.0) * wk).sum(0) / wk.sum(0))
    return np.stack(per, -1), np.array([w_K[group_K == g].sum() for g in groups])


def best_layers(grid: xr.Dataset, parts: list[tuple[FoldScores, str | None]], n_boot: int, ci: float,
                seed: int, story_G=None) -> xr.Dataset:
    """The best-layer grid (module doc) of a score grid (one group's, or the combined one) from
    its groups' fold scores (`fold_scores`, each with `group_units`' listener or None); `story_G`:
    each group's story where groups are conditions of one story (`aggregate.combine`)."""
    layers = [int(l) for l in grid["layer"].values]
    if any(list(fs.layers) != layers for fs, _ in parts):
        raise ValueError(f"best layer: the groups' layers {[fs.layers for fs, _ in parts]} differ from the grid's {layers}")
    subjects = results.fit_units(grid, SUBJECT)["unit"].values.tolist()
    present = grid["present"]
    rr, hh = np.nonzero(present.values)
    pairs = [(str(grid["region"].values[r]), str(grid["hemi"].values[h])) for r, h in zip(rr, hh)]
    units = subjects + [MEAN]
    s_LKUR, w_K, group_K = _pooled(parts, units, pairs)
    n_l, n_k, n_u, n_r = s_LKUR.shape
    pick_KX, held_KX, cv_X = cv_select(s_LKUR.reshape(n_l, n_k, -1), w_K)
    pick_KUR, cv_UR = pick_KX.reshape(n_k, n_u, n_r), cv_X.reshape(n_u, n_r)
    mode_UR, text_UR = (np.asarray(a).reshape(n_u, n_r) for a in _counts(pick_KX, layers))
    folds_UR = (pick_KUR != NO_LAYER).sum(0)
    nan_UR = np.full((n_u, n_r), np.nan)
    head, stories = {}, None
    if subjects:
        stories = per_story(held_KX.reshape(n_k, n_u, n_r)[:, :-1], w_K, group_K)
        if stories is not None and story_G is not None:   # a story's condition groups are one story
            stories = several_stories(*stories, list(story_G))
        mean, lo, hi, n = subject_ci(cv_UR[:-1], n_boot, ci, seed, stories)
        h_mode, h_text = _counts(pick_KUR[:, :-1].reshape(-1, n_r), layers)
        head = dict(cv_score=mean, cv_ci_low=lo, cv_ci_high=hi, cv_layer=h_mode, cv_layers=h_text,
                    n_folds=folds_UR[:-1].sum(0), n_subjects=n)
    own = dict(cv_score=cv_UR, cv_ci_low=nan_UR, cv_ci_high=nan_UR, cv_layer=mode_UR, cv_layers=text_UR,
               n_folds=folds_UR, n_subjects=np.r_[np.ones(n_u - 1, int), [max(len(subjects), 1)]][:, None]
               * np.ones(n_r, int))
    vars_FR = {k: np.concatenate(([np.asarray(head[k])[None]] if head else []) + [np.asarray(v)]) for k, v in own.items()}
    vars_FR |= _optimistic(grid, subjects, rr, hh)
    best = _grid(subjects, grid, vars_FR, rr, hh)
    if stories is not None:   # each subject's CV score per story, for two-level statistics (`models_compare`)
        best.attrs["cv_by_story"] = stories
    return best


def _optimistic(grid: xr.Dataset, subjects, rr, hh) -> dict:
    """(F, R) each: the argmax over layers of the grid's score per unit and present (region, hemi)
    pair (rr, hh: their grid indices), its score and CI."""
    unit, _ = results.units(subjects)
    at = grid.reindex(unit=unit)
    v = {k: at[k].transpose("layer", "unit", "region", "hemi").values[:, :, rr, hh] for k in ("score", "ci_low", "ci_high")}
    finite = np.isfinite(v["score"])                                              # (L, F, R)
    i_FR = np.argmax(np.where(finite, v["score"], -np.inf), 0)
    has = finite.any(0)
    pick = lambda a: np.where(has, np.take_along_axis(a, i_FR[None], 0)[0], np.nan)  # noqa: E731
    layers = np.asarray(grid["layer"].values, int)
    return dict(optimistic_layer=np.where(has, layers[i_FR], NO_LAYER), optimistic_score=pick(v["score"]),
                optimistic_ci_low=pick(v["ci_low"]), optimistic_ci_high=pick(v["ci_high"]))


def _grid(subjects, grid: xr.Dataset, vars_FR: dict, rr, hh) -> xr.Dataset:
    unit, fit = results.units(subjects)
    shape = (len(unit), grid.sizes["region"], grid.sizes["hemi"])
    data = {}
    for k, v in vars_FR.items():
        v = np.asarray(v)
        fill = "" if v.dtype.kind in "UO" else NO_LAYER if k.endswith("layer") else 0 if v.dtype.kind == "i" else np.nan
        out = np.full(shape, fill, object if v.dtype.kind in "UO" else v.dtype)
        out[:, rr, hh] = v
        data[k] = (("unit", "region", "hemi"), out)
    data["present"] = grid["present"].variable
    coords = dict(unit=unit, fit=("unit", fit), region=grid["region"].values, hemi=grid["hemi"].values)
    if "story" in grid.coords:
        coords["story"] = grid["story"].item()
    return xr.Dataset(data, coords=coords)


def headline(best: xr.Dataset) -> xr.Dataset:
    """The best-layer grid's headline unit (per-subject fits averaged, or the subject-mean fit)."""
    return best.sel(unit=ALL if results.has_fit(best, HEADLINE) else MEAN)
