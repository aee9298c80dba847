"""Per-vertex results -> tidy rows: layer x fit x subject x region x hemisphere.

score = Pearson r on each held-out fold (stories), averaged over folds (per-fold r is
    blind to offsets and scales that differ between folds, which the r of the concatenated
    predictions would count as misfit).
fit = "mean": the subject-mean response's fit; its CI is a bootstrap over the held-out
    folds of the fold scores, its ceiling the split-half max r.
fit = "subject": one subject's fit; ceiling = the r a noise-free model would reach against
    that subject (`store.subject_max_r`: its leave-one-out ISC over the others' max r); no CI.
fit = "subjects": the mean over subjects of their region scores, with a subject-bootstrap CI.
A region's score is the mean of its vertices' r; its ceiling the mean of their ceilings;
normalized = score / ceiling (NaN when the ceiling is below min_ceiling); alpha = the median
alpha chosen over its vertices and outer folds.
"""
from __future__ import annotations

import numpy as np

from .. import rois

WHOLE = "all"


def regions(atlas: rois.Atlas | None, hemi_V: np.ndarray, keep_V: np.ndarray) -> list[tuple[str, str, np.ndarray]]:
    """(region, hemi, mask over the kept vertices): every kept vertex ("all") and the atlas's
    region groups, per hemisphere and both."""
    hemis = sorted(set(hemi_V.tolist()) - {""})
    groups = [(WHOLE, np.ones(keep_V.size, bool))]
    if atlas is not None:
        for g, by_src in rois.REGION_GROUPS.items():
            if atlas.source in by_src and g != "cortex":
                groups.append((g, rois.group_mask(atlas, g, strict=False)))
    out = []
    for name, mask in groups:
        for h in hemis + (["both"] if len(hemis) != 1 else []):
            m = (mask & ((hemi_V == h) if h != "both" else True))[keep_V]
            if m.any():
                out.append((name, h, m))
    return out


def region_means(values_XV: np.ndarray, masks_RV: np.ndarray) -> np.ndarray:
    """(X, R) mean of the finite values in each region (NaN where none is finite)."""
    ok = np.isfinite(values_XV)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(ok, values_XV, 0.0) @ masks_RV.T) / (ok.astype(float) @ masks_RV.T)


def _normalized(score, ceiling, min_ceiling):
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(score / ceiling) if ceiling >= min_ceiling else np.nan


def fold_mean(r_folds_KFV: np.ndarray) -> np.ndarray:
    ok = np.isfinite(r_folds_KFV)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, r_folds_KFV, 0.0).sum(0) / ok.sum(0)


def layer_rows(layer: int, res: dict, ceil: dict, alphas: np.ndarray, subjects, regs, min_ceiling: float,
               n_boot: int, ci: float, seed: int) -> list[dict]:
    """Rows of one layer; `res` holds r_folds (K, F, V) and alpha_idx (K, F, V) for
    F = the subjects then the mean (or the mean only)."""
    masks = np.stack([m for _, _, m in regs]).astype(float)
    r = region_means(fold_mean(res["r_folds"]), masks)                 # (F, R)
    alpha_FV = np.median(alphas[res["alpha_idx"]], axis=0)
    alpha = np.stack([[np.median(a[m]) for _, _, m in regs] for a in alpha_FV])
    fold = region_means(res["r_folds"][:, -1], masks)                   # (K, R) of the mean fit
    _, lo, hi, _ = rois.bootstrap_mean_ci(fold, rois.bootstrap_indices(fold.shape[0], n_boot, seed), ci)
    base = lambda name, h, m: dict(layer=layer, region=name, hemi=h, n_vertices=int(m.sum()))  # noqa: E731
    rows = []
    c_mean = region_means(ceil["max_r"][None], masks)[0]
    for i, (name, h, m) in enumerate(regs):
        rows.append(base(name, h, m) | dict(fit="mean", subject="mean", score=r[-1, i], ci_low=lo[i], ci_high=hi[i],
                                                ceiling=c_mean[i], normalized=_normalized(r[-1, i], c_mean[i], min_ceiling),
                                                alpha=alpha[-1, i]))
    n_sub = r.shape[0] - 1
    if n_sub:
        c_sub = region_means(ceil["subject_max_r"], masks)                       # (S, R)
        s_mean, s_lo, s_hi, _ = rois.bootstrap_mean_ci(r[:-1], rois.bootstrap_indices(n_sub, n_boot, seed), ci)
        for i, (name, h, m) in enumerate(regs):
            for s, sub in enumerate(subjects):
                rows.append(base(name, h, m) | dict(fit="subject", subject=sub, score=r[s, i], ci_low=np.nan,
                                                        ci_high=np.nan, ceiling=c_sub[s, i],
                                                        normalized=_normalized(r[s, i], c_sub[s, i], min_ceiling),
                                                        alpha=alpha[s, i]))
            c = np.nanmean(c_sub[:, i]) if np.isfinite(c_sub[:, i]).any() else np.nan
            rows.append(base(name, h, m) | dict(fit="subjects", subject="all", score=s_mean[i], ci_low=s_lo[i],
                                                    ci_high=s_hi[i], ceiling=c,
                                                    normalized=_normalized(s_mean[i], c, min_ceiling),
                                                    alpha=np.median(alpha[:-1, i])))
    return [{k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in row.items()} for row in rows]


def summary(rows: list[dict]) -> dict:
    """Best layer of the subject-mean fit over every vertex (region "all", both hemispheres)."""
    whole = [r for r in rows if r["fit"] == "mean" and r["region"] == WHOLE and r["hemi"] in ("both",)]
    whole = whole or [r for r in rows if r["fit"] == "mean" and r["region"] == WHOLE]
    best = max(whole, key=lambda r: -np.inf if np.isnan(r["score"]) else r["score"])
    return dict(best_layer=best["layer"], best_score=best["score"], best_ci=[best["ci_low"], best["ci_high"]],
                ceiling=best["ceiling"], normalized=best["normalized"], region=WHOLE, hemi=best["hemi"],
                layer_scores={r["layer"]: r["score"] for r in whole})
