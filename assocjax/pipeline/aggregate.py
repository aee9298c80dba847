"""Scores over several fit groups (stories), as the paper reports them: per subject, the
score averaged over the stories that subject heard, weighted by each story's TRs; per
layer, region and hemisphere, the mean over subjects with a subject-bootstrap CI.

Each group's score grid carries `story` = the group's name; the combined grid carries story "all"
(units, `assocjax.results`):
    fit "subject":  each subject's TR-weighted mean over its stories (score and ceiling);
                    a story with one listener counts its only fit for that subject
    fit "subjects": the headline, the mean of those over subjects; its CI from the two-level bootstrap
                    (stories, then subjects: `stats.two_level_draws`; t with stories - 1 df; the
                    condition groups of one story are one story there: `conditions`)
    fit "mean":     the TR-weighted mean over stories of each story's subject-mean fit (a story split
                    into listener conditions counts once: `conditions.story_weights`)
normalized = score / ceiling (`results.normalized`: NaN below min_ceiling); alpha = the median of the stories'.
n_vertices = the most vertices a story's unit of that fit (and subject) used: a subject's own,
the headline's over its subjects, the mean fit's.
"""
from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from .. import results
from ..results import ALL, MEAN, SUBJECT
from ..stats import bootstrap_indices, bootstrap_mean_ci, two_level_mean_ci
from .conditions import several_stories, story_weights


def weighted_mean(values_XG: np.ndarray, weights_G) -> np.ndarray:
    """(X...) the weighted mean over the last axis (groups) of the finite values (NaN where none
    is). Each lane sums its finite values compacted in group order, as `np.sum(v[ok] * w[ok])`
    does for one lane, so the numbers do not depend on how many other groups a lane lacks."""
    v = np.asarray(values_XG, np.float64)
    w = np.broadcast_to(np.asarray(weights_G, np.float64), v.shape)
    ok = np.isfinite(v)
    first = np.argsort(~ok, axis=-1, kind="stable")                 # finite values first, in group order
    vw = np.take_along_axis(np.where(ok, v * w, 0.0), first, -1)
    ww = np.take_along_axis(np.where(ok, w, 0.0), first, -1)
    n = ok.sum(-1)
    out = np.full(v.shape[:-1], np.nan)
    for c in np.unique(n[n > 0]):   # lanes of one finite count sum the same length: numpy's pairwise order
        lane = n == c
        out[lane] = np.ascontiguousarray(vw[lane][:, :c]).sum(-1) / np.ascontiguousarray(ww[lane][:, :c]).sum(-1)
    return out


def _quiet(f, *args, **kw):
    """f without the RuntimeWarning of an all-NaN slice (it gives NaN, as meant)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return f(*args, **kw)


def own_fits(ds: xr.Dataset, subjects) -> xr.Dataset | None:
    """The subjects' own fits of one group; a group with one listener has only the mean fit,
    which is that subject's; None when the group has neither."""
    if results.has_fit(ds, SUBJECT):
        return results.fit_units(ds, SUBJECT)
    if len(subjects) == 1:
        return ds.sel(unit=[MEAN]).assign_coords(unit=[subjects[0]], fit=("unit", [SUBJECT]))
    return None


def combine(parts: list[tuple[xr.Dataset, float, tuple[str, ...]]], n_boot: int, ci: float, seed: int,
            min_ceiling: float, story_G=None) -> xr.Dataset:
    """The combined score grid (module docstring, story "all") from each group's (score grid,
    TR weight, subjects); `story_G`: each group's story where groups are conditions of one story
    (`conditions`; default: each group its own), merged before the two-level CI, and one story
    keeps the subject bootstrap of one group."""
    grids = [ds for ds, _, _ in parts]
    w_G = np.array([w for _, w, _ in parts], np.float64)
    union = lambda dim: list(dict.fromkeys(x for ds in grids for x in ds[dim].values.tolist()))  # noqa: E731
    axes = dict(layer=union("layer"), region=union("region"), hemi=union("hemi"))
    present = np.any([ds["present"].reindex(region=axes["region"], hemi=axes["hemi"], fill_value=False).values
                      for ds in grids], axis=0)
    # every group on the same axes, (..., X keys, G groups) over the present (layer, region, hemi) keys
    mask = xr.DataArray(present, coords=dict(region=axes["region"], hemi=axes["hemi"]), dims=("region", "hemi"))

    def keyed(ds: xr.Dataset, var: str, units) -> np.ndarray:
        a = ds[var].reindex(layer=axes["layer"], region=axes["region"], hemi=axes["hemi"], unit=units,
                            fill_value=0 if var == "n_vertices" else np.nan)
        return results.stacked(a, mask)[0]

    own = [own_fits(ds, subs) for ds, _, subs in parts]
    subjects = sorted({u for o in own if o is not None for u in o["unit"].values.tolist()})
    out = {}
    if subjects:
        n_keys = len(axes["layer"]) * int(present.sum())
        none = lambda k: np.full((len(subjects), n_keys), 0 if k == "n_vertices" else np.nan)  # noqa: E731
        per = {k: np.stack([none(k) if o is None else keyed(o, k, subjects) for o in own], -1)
               for k in ("score", "ceiling", "alpha", "n_vertices")}                               # (S, X, G)
        score_SX, ceil_SX = weighted_mean(per["score"], w_G), weighted_mean(per["ceiling"], w_G)
        alpha_SX, n_SX = _quiet(np.nanmedian, per["alpha"], axis=-1), per["n_vertices"].max(-1)
        mean = _quiet(np.nanmean, score_SX, axis=0)
        # stories are a level as subjects are: resample both (pipeline/story_level.py says why)
        stories = several_stories(per["score"], w_G, list(story_G) if story_G is not None else list(range(len(parts))))
        if stories is not None:
            lo, hi, _ = two_level_mean_ci(*stories, mean, n_boot, ci, seed)
        else:   # one story split by listener condition: each listener once, as in one group (`tables`)
            _, lo, hi, _ = bootstrap_mean_ci(score_SX, bootstrap_indices(len(subjects), n_boot, seed), ci)
        ceiling = _quiet(np.nanmean, np.ascontiguousarray(ceil_SX.T), axis=1)   # per key, over subjects
        nan_SX = np.full_like(score_SX, np.nan)
        out = dict(score=[mean[None], score_SX], ci_low=[lo[None], nan_SX], ci_high=[hi[None], nan_SX],
                   ceiling=[ceiling[None], ceil_SX], alpha=[_quiet(np.nanmedian, alpha_SX, axis=0)[None], alpha_SX],
                   n_vertices=[n_SX.max(0)[None], n_SX])
    m = {k: np.stack([keyed(ds, k, [MEAN])[0] for ds in grids], -1) for k in ("score", "ceiling", "alpha", "n_vertices")}
    w_mean = story_weights(w_G, story_G if story_G is not None else range(len(parts)))
    means = dict(score=weighted_mean(m["score"], w_mean), ceiling=weighted_mean(m["ceiling"], w_mean),
                 alpha=_quiet(np.nanmedian, m["alpha"], axis=-1), n_vertices=m["n_vertices"].max(-1))
    means |= dict(ci_low=np.full_like(means["score"], np.nan), ci_high=np.full_like(means["score"], np.nan))
    grid = {k: np.concatenate(out.get(k, []) + [means[k][None]]) for k in means}
    grid["normalized"] = results.normalized(grid["score"], grid["ceiling"], min_ceiling)
    return results.from_keys(axes["layer"], subjects, axes["region"], axes["hemi"], present, ALL, **grid)


def weighted_maps(maps_GXV: list[np.ndarray], weights) -> np.ndarray:
    """The TR-weighted mean over groups of per-vertex maps (NaN-aware: a vertex counts the
    groups that have it)."""
    m = np.stack(maps_GXV).astype(np.float64)
    w = np.asarray(weights, np.float64).reshape((-1,) + (1,) * (m.ndim - 1))
    ok = np.isfinite(m)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(ok, m, 0.0) * w).sum(0) / np.where(ok, w, 0.0).sum(0)
