"""Per-vertex results -> the score grid (`assocjax.results`): layer x unit (fit, subject) x region x
hemisphere.

score = Pearson r on each held-out fold, averaged over folds (per-fold r is blind to offsets
    and scales that differ between folds, which the r of the concatenated predictions would
    count as misfit).
fit = "subjects" (the headline, the paper's metric): every subject's own fit, its region
    score averaged over subjects, with a subject-bootstrap CI (subjects resampled).
fit = "subject": one subject's fit; no CI.
fit = "mean": the fit of the subject-mean response; no CI (one fit, and its few held-out folds
    are too few units for an interval).
A region's score is the mean r over its vertices; its ceiling is computed over THE SAME
vertices from reliabilities averaged over all of them (negative ones included), so pure noise
gives a ceiling near 0 instead of the mean of the lucky positive ones (a vertex where fewer
than 2 subjects have data has no ceiling: it keeps its score and the ceiling averages the
others; a story with one listener has no ceiling at all):
    mean fit:      sqrt(max(mean reliability of the S-subject mean, 0))
    subject fit:   max(mean LOSO ISC, 0) / sqrt(mean reliability of the other S-1 subjects' mean)
    subjects:      the mean of the subjects' ceilings
normalized = score / ceiling (`results.normalized`: NaN when the ceiling is below min_ceiling); alpha = the median
alpha chosen over the region's vertices and outer folds.
n_vertices = the region's vertices the unit's score averages: a subject's own (where it has data),
    the subject-mean fit's, and for the headline those used by any subject (a subject without
    data at a vertex is left out there, never the other subjects).
"""
from __future__ import annotations

import numpy as np

import xarray as xr

from .. import results, rois
from . import best_layer, ceilings
from ..ceiling import others_reliability
from ..results import MEAN, WHOLE, normalized
from ..stats import bootstrap_indices, bootstrap_mean_ci


def regions(atlas: rois.Atlas | None, hemi_V: np.ndarray, keep_V: np.ndarray) -> list[tuple[str, str, np.ndarray]]:
    """(region, hemi, mask over the kept vertices): every kept vertex ("all") and the atlas's
    region groups, per hemisphere and both (`rois.hemisphere_regions`)."""
    hemis = sorted(set(hemi_V.tolist()) - {""})
    areas = [(WHOLE, "all", np.ones(keep_V.size, bool))]
    if atlas is not None:
        areas += rois.atlas_areas(atlas, rois.reported_groups(atlas), strict=False)
    kept = [(name, level, mask[keep_V]) for name, level, mask in areas]
    regs = rois.hemisphere_regions(kept, hemi_V[keep_V], hemis + (["both"] if len(hemis) != 1 else []))
    return [(r.name, r.hemi, r.mask_V) for r in regs]


def _score_and_ceiling_means(a_XV: np.ndarray, b_XV: np.ndarray, masks_RV: np.ndarray):
    """(X, R) each: region means of the scores a over their finite vertices, of the ceilings b
    over those of them where b is finite too, and how many vertices the scores use."""
    used = np.isfinite(a_XV)
    both = np.where(used & np.isfinite(b_XV), 1.0, np.nan)
    return rois.region_means(a_XV, masks_RV), rois.region_means(b_XV * both, masks_RV), _counts(used, masks_RV)


def _counts(used_XV: np.ndarray, masks_RV: np.ndarray) -> np.ndarray:
    """(X, R) how many of each region's vertices are used."""
    return (used_XV.astype(np.int64) @ masks_RV.T.astype(np.int64))


def fold_mean(r_folds_KFV: np.ndarray) -> np.ndarray:
    ok = np.isfinite(r_folds_KFV)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, r_folds_KFV, 0.0).sum(0) / ok.sum(0)


def mean_fit_ceiling(split_half_V, score_V, masks_RV):
    """(score, ceiling, vertices used) per region of the subject-mean fit over the same
    vertices (module doc)."""
    score, rel, used = _score_and_ceiling_means(score_V[None], split_half_V[None], masks_RV)
    return score[0], np.sqrt(np.clip(rel[0], 0.0, None)), used[0]


def half_ceiling(half_r_V, score_XV, masks_RV):
    """(X, R) the half-vs-half ceiling (`pipeline.ceilings`) of each unit: max(mean half_r, 0) over the
    vertices its score uses (module doc), the same for every subject (it is a property of the group)."""
    _, c, _ = _score_and_ceiling_means(score_XV, np.broadcast_to(half_r_V, score_XV.shape), masks_RV)
    return np.clip(c, 0.0, None)


def subject_ceilings(ceil: dict, score_SV, masks_RV):
    """(score, ceiling, vertices used, (S, R) each; the vertices used (S, V)) of each subject's
    fit, the ceiling over the same vertices (module doc). A subject's ceiling counts the subjects with data
    at each vertex (ceil["n_subjects"])."""
    loso = ceil["loso"]
    others = np.broadcast_to(others_reliability(ceil["split_half"], ceil["n_subjects"]), loso.shape)
    used = np.isfinite(score_SV)
    both = np.where(used & np.isfinite(loso) & np.isfinite(others), 1.0, np.nan)
    score = rois.region_means(score_SV, masks_RV)
    isc, rel = (rois.region_means(a * both, masks_RV) for a in (loso, others))
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(rel > 0, np.clip(isc, 0.0, None) / np.sqrt(np.where(rel > 0, rel, 1.0)), 0.0)
    return score, np.where(np.isfinite(rel), c, np.nan), _counts(used, masks_RV), used


def layer_scores(layer: int, res: dict, ceil: dict, alphas: np.ndarray, subjects, regs, min_ceiling: float,
                 n_boot: int, ci: float, seed: int, story: str | None = None) -> xr.Dataset:
    """The score grid of one layer (`results.scores`); `res` holds r_folds (K, F, V) and
    alpha_idx (K, F, V) for F = the subjects then the mean (or the mean only); `subjects` are
    those subjects (empty: the mean fit only)."""
    masks = np.stack([m for _, _, m in regs]).astype(float)
    r_FV = fold_mean(res["r_folds"])
    alpha_FV = np.median(alphas[res["alpha_idx"]], axis=0)
    alpha_FR = np.stack([[np.median(a[m]) for _, _, m in regs] for a in alpha_FV])
    m_score, m_ceil, m_used = mean_fit_ceiling(ceil["split_half"], r_FV[-1], masks)
    # the significance mask per region, and the paper's ceiling where it sets `normalized` (pipeline.ceilings)
    half = ceil.get("method") == ceilings.HALF
    m_ceil = ceilings.per_region(lambda c: half_ceiling(c["half_r"], r_FV[-1:], masks)[0] if half else
                                 mean_fit_ceiling(c["split_half"], r_FV[-1], masks)[1], ceil, masks)
    parts = [dict(score=m_score, ci_low=np.full_like(m_score, np.nan), ci_high=np.full_like(m_score, np.nan),
                  ceiling=m_ceil, alpha=alpha_FR[-1], n_vertices=m_used)]              # (R,) each: the mean fit
    n_sub = r_FV.shape[0] - 1
    if subjects:
        s_score, s_ceil, s_used, valid_SV = subject_ceilings(ceil, r_FV[:-1], masks)            # (S, R)
        s_ceil = ceilings.per_region(lambda c: half_ceiling(c["half_r"], r_FV[:-1], masks) if half else
                                     subject_ceilings(c, r_FV[:-1], masks)[1], ceil, masks)
        mean, lo, hi, _ = bootstrap_mean_ci(s_score, bootstrap_indices(n_sub, n_boot, seed), ci)
        has_c = np.isfinite(s_ceil)
        with np.errstate(invalid="ignore", divide="ignore"):   # a region no subject has a ceiling for: NaN
            c_mean = np.where(has_c, s_ceil, 0.0).sum(0) / has_c.sum(0)
        nan_SR = np.full_like(s_score, np.nan)
        head = dict(score=mean, ci_low=lo, ci_high=hi, ceiling=c_mean, alpha=np.median(alpha_FR[:-1], axis=0),
                    n_vertices=_counts(valid_SV.any(0)[None], masks)[0])
        own = dict(score=s_score, ci_low=nan_SR, ci_high=nan_SR, ceiling=s_ceil, alpha=alpha_FR[:-1], n_vertices=s_used)
        parts = [head, own, parts[0]]
    # units in `results.units` order: the headline, the subjects, the mean fit
    grid = {k: np.concatenate([np.reshape(p[k], (-1, len(regs))) for p in parts]) for k in parts[0]}
    grid["normalized"] = normalized(grid["score"], grid["ceiling"], min_ceiling)
    return results.scores(layer, subjects, [(name, h) for name, h, _ in regs], story, **grid)


def group_scores(layers, results_by_layer: dict, ceil: dict, alphas: np.ndarray, subjects, regs,
                 min_ceiling: float, n_boot: int, ci: float, seed: int, story: str | None = None) -> xr.Dataset:
    """The score grid of every layer of one fit group (`layer_scores`, joined along layer)."""
    return results.concat([layer_scores(l, results_by_layer[l], ceil, alphas, subjects, regs, min_ceiling, n_boot,
                                        ci, seed, story) for l in layers], "layer")


def summary(ds: xr.Dataset, best: xr.Dataset, min_ceiling: float = 0.05) -> dict:
    """The whole-brain summary (region "all", both hemispheres or the only one) of the headline fit:
    the cross-validated best layer and score (`best_layer`, the headline of every report), the
    optimistic argmax beside it, the ceiling and the subject-mean fit at the CV layer, the
    per-layer scores, and per region and hemisphere the headline's best-layer rows (`regions`).

    Keys (changed in issue 23: the old `best_layer` / `best_score` / `best_ci` were the argmax,
    chosen and scored on the same data; they are gone, so a script reading them fails instead
    of reading another number): cv_best_layer (the mode of the layers chosen over the folds),
    cv_best_score, cv_best_ci, cv_layer_counts; optimistic_layer, optimistic_score, optimistic_ci."""
    fit = results.headline_fit(ds)
    hemi = results.whole_hemi(ds)
    whole = ds.sel(region=WHOLE, hemi=hemi)
    head = whole.sel(unit=results.headline_unit(fit))
    score_L = head["score"].values
    if not np.isfinite(score_L).any():
        raise ValueError("every layer's brain score is NaN: no vertex had a usable fit "
                         "(check the delays, the story lengths and the data's vertices)")
    b = best.sel(unit=results.headline_unit(fit), region=WHOLE, hemi=hemi)
    layer = int(b["cv_layer"])
    at = head.sel(layer=layer) if layer in head["layer"].values else None
    ceiling = float(at["ceiling"]) if at is not None else np.nan
    mean = whole.sel(unit=MEAN, layer=layer) if at is not None else None
    counts = {int(l): int(c) for l, c in (x.split(":") for x in str(b["cv_layers"].item()).split())}
    rows = results.to_rows(best_layer.headline(best))
    return dict(fit=fit, region=WHOLE, hemi=hemi,
                cv_best_layer=layer, cv_best_score=float(b["cv_score"]),
                cv_best_ci=[float(b["cv_ci_low"]), float(b["cv_ci_high"])], cv_layer_counts=counts,
                optimistic_layer=int(b["optimistic_layer"]), optimistic_score=float(b["optimistic_score"]),
                optimistic_ci=[float(b["optimistic_ci_low"]), float(b["optimistic_ci_high"])],
                ceiling=ceiling, normalized=float(results.normalized(float(b["cv_score"]), ceiling, min_ceiling)),
                layer_scores=dict(zip(head["layer"].values.tolist(), score_L.tolist())),
                mean_fit_score=float(mean["score"]) if mean is not None else np.nan,
                mean_fit_ceiling=float(mean["ceiling"]) if mean is not None else np.nan,
                mean_fit_cv_score=float(best.sel(unit=MEAN, region=WHOLE, hemi=hemi)["cv_score"]),
                regions=[{k: r[k] for k in ("region", "hemi", "cv_score", "cv_ci_low", "cv_ci_high", "cv_layer",
                                             "optimistic_layer", "optimistic_score")} for r in rows])
