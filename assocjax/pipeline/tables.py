"""Per-vertex results -> tidy rows: layer x fit x subject x region x hemisphere.

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
normalized = score / ceiling (NaN when the ceiling is below min_ceiling); alpha = the median
alpha chosen over the region's vertices and outer folds.
n_vertices = the region's vertices the row's score averages: a subject's own (where it has data),
    the subject-mean fit's, and for the headline those used by any subject (a subject without
    data at a vertex is left out there, never the other subjects).
"""
from __future__ import annotations

import warnings

import numpy as np

from .. import rois
from ..ceiling import others_reliability
from ..stats import bootstrap_indices, bootstrap_mean_ci

WHOLE = "all"
HEADLINE = "subjects"


def regions(atlas: rois.Atlas | None, hemi_V: np.ndarray, keep_V: np.ndarray) -> list[tuple[str, str, np.ndarray]]:
    """(region, hemi, mask over the kept vertices): every kept vertex ("all") and the atlas's
    region groups, per hemisphere and both (`rois.hemisphere_regions`)."""
    hemis = sorted(set(hemi_V.tolist()) - {""})
    areas = [(WHOLE, "all", np.ones(keep_V.size, bool))]
    if atlas is not None:
        areas += rois.atlas_areas(atlas, [g for g in rois.groups_for(atlas.source) if g != "cortex"], strict=False)
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


def _normalized(score, ceiling, min_ceiling):
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(score / ceiling) if ceiling >= min_ceiling else np.nan


def fold_mean(r_folds_KFV: np.ndarray) -> np.ndarray:
    ok = np.isfinite(r_folds_KFV)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, r_folds_KFV, 0.0).sum(0) / ok.sum(0)


def mean_fit_ceiling(split_half_V, score_V, masks_RV):
    """(score, ceiling, vertices used) per region of the subject-mean fit over the same
    vertices (module doc)."""
    score, rel, used = _score_and_ceiling_means(score_V[None], split_half_V[None], masks_RV)
    return score[0], np.sqrt(np.clip(rel[0], 0.0, None)), used[0]


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


def layer_rows(layer: int, res: dict, ceil: dict, alphas: np.ndarray, subjects, regs, min_ceiling: float,
               n_boot: int, ci: float, seed: int) -> list[dict]:
    """Rows of one layer; `res` holds r_folds (K, F, V) and alpha_idx (K, F, V) for
    F = the subjects then the mean (or the mean only)."""
    masks = np.stack([m for _, _, m in regs]).astype(float)
    r_FV = fold_mean(res["r_folds"])
    alpha_FV = np.median(alphas[res["alpha_idx"]], axis=0)
    alpha = np.stack([[np.median(a[m]) for _, _, m in regs] for a in alpha_FV])
    base = lambda name, h, n: dict(layer=layer, region=name, hemi=h, n_vertices=int(n))  # noqa: E731
    nan = np.nan
    rows = []
    n_sub = r_FV.shape[0] - 1
    if n_sub:
        s_score, s_ceil, s_used, valid_SV = subject_ceilings(ceil, r_FV[:-1], masks)            # (S, R)
        any_used = _counts(valid_SV.any(0)[None], masks)[0]
        mean, lo, hi, _ = bootstrap_mean_ci(s_score, bootstrap_indices(n_sub, n_boot, seed), ci)
        has_c = np.isfinite(s_ceil)
        with np.errstate(invalid="ignore", divide="ignore"):   # a region no subject has a ceiling for: NaN
            c_mean = np.where(has_c, s_ceil, 0.0).sum(0) / has_c.sum(0)
        for i, (name, h, m) in enumerate(regs):
            rows.append(base(name, h, any_used[i]) | dict(fit=HEADLINE, subject="all", score=mean[i], ci_low=lo[i],
                                                          ci_high=hi[i], ceiling=c_mean[i],
                                                          normalized=_normalized(mean[i], c_mean[i], min_ceiling),
                                                          alpha=np.median(alpha[:-1, i])))
            for s, sub in enumerate(subjects):
                rows.append(base(name, h, s_used[s, i]) | dict(
                    fit="subject", subject=sub, score=s_score[s, i], ci_low=nan, ci_high=nan, ceiling=s_ceil[s, i],
                    normalized=_normalized(s_score[s, i], s_ceil[s, i], min_ceiling), alpha=alpha[s, i]))
    m_score, m_ceil, m_used = mean_fit_ceiling(ceil["split_half"], r_FV[-1], masks)
    for i, (name, h, m) in enumerate(regs):
        rows.append(base(name, h, m_used[i]) | dict(fit="mean", subject="mean", score=m_score[i], ci_low=nan,
                                                    ci_high=nan, ceiling=m_ceil[i],
                                                    normalized=_normalized(m_score[i], m_ceil[i], min_ceiling),
                                                    alpha=alpha[-1, i]))
    return [{k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in row.items()} for row in rows]


def headline_fit(rows: list[dict]) -> str:
    """The fit the summary reports: per-subject fits averaged over subjects, when there are any."""
    return HEADLINE if any(r["fit"] == HEADLINE for r in rows) else "mean"


def fold_headline(res: dict, whole_V: np.ndarray) -> np.ndarray:
    """(K,) the headline score of each outer fold over the whole-brain vertices: mean over the
    subjects' fits (or the mean fit alone) of their mean r over the vertices."""
    r = res["r_folds"][:, :, whole_V]                                  # (K, F, V)
    fits = r[:, :-1] if r.shape[1] > 1 else r
    with warnings.catch_warnings():  # a fold where a fit has no finite vertex is NaN, not an error
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.nanmean(fits, axis=2), axis=1)


def cv_best_layer(layers, folds_LK: np.ndarray, weights_K=None) -> dict:
    """Best layer chosen without its test data: for each outer fold k, the layer with the best
    (weighted) mean score over the OTHER outer folds, scored on fold k; the (weighted) mean over
    k is the unbiased counterpart of the plain argmax (which picks and reports on the same
    data). Folds of several stories pool, weighted by their rows (`weights_K`)."""
    s = np.asarray(folds_LK, np.float64)
    n_folds = s.shape[1]
    w = np.ones(n_folds) if weights_K is None else np.asarray(weights_K, np.float64)
    chosen, scores = [], []
    for k in range(n_folds):
        rest, wr = np.delete(s, k, axis=1), np.delete(w, k)
        ok = np.isfinite(rest)
        with np.errstate(invalid="ignore", divide="ignore"):
            others = (np.where(ok, rest, 0) * wr).sum(1) / (ok * wr).sum(1)
        pick = int(np.argmax(np.where(np.isfinite(others), others, -np.inf)))
        chosen.append(int(layers[pick]))
        scores.append(float(s[pick, k]))
    ok = np.isfinite(scores)
    best = float(np.sum(np.asarray(scores)[ok] * w[ok]) / np.sum(w[ok])) if ok.any() else np.nan
    return dict(cv_best_score=best, cv_best_layers=chosen, cv_fold_scores=scores)


def summary(rows: list[dict], folds_LK: np.ndarray | None = None, layers=(), weights_K=None) -> dict:
    """Best layer of the headline fit over every vertex (region "all", both hemispheres), the
    subject-mean fit at that layer, and the cross-validated best layer (`cv_best_layer`)."""
    fit = headline_fit(rows)
    pick = lambda f: [r for r in rows if r["fit"] == f and r["region"] == WHOLE and r["hemi"] == "both"] or \
        [r for r in rows if r["fit"] == f and r["region"] == WHOLE]  # noqa: E731
    whole = pick(fit)
    finite = [r for r in whole if np.isfinite(r["score"])]
    if not finite:
        raise ValueError("every layer's brain score is NaN: no vertex had a usable fit "
                         "(check the delays, the story lengths and the data's vertices)")
    best = max(finite, key=lambda r: r["score"])
    mean_row = next((r for r in pick("mean") if r["layer"] == best["layer"]), None)
    out = dict(fit=fit, best_layer=best["layer"], best_score=best["score"], best_ci=[best["ci_low"], best["ci_high"]],
               ceiling=best["ceiling"], normalized=best["normalized"], region=WHOLE, hemi=best["hemi"],
               layer_scores={r["layer"]: r["score"] for r in whole},
               mean_fit_score=mean_row["score"] if mean_row else np.nan,
               mean_fit_ceiling=mean_row["ceiling"] if mean_row else np.nan)
    if folds_LK is not None and len(layers) > 1:
        out |= cv_best_layer(layers, folds_LK, weights_K)
    return out
