"""Scores over several fit groups (stories), as the paper reports them: per subject, the
score averaged over the stories that subject heard, weighted by each story's TRs; per
layer, region and hemisphere, the mean over subjects with a subject-bootstrap CI.

Rows of each group carry `story` = the group's name; the combined rows carry story "all":
    fit "subject":  each subject's TR-weighted mean over its stories (score and ceiling);
                    a story with one listener counts its only fit for that subject
    fit "subjects": the headline, the mean of those over subjects, subject-bootstrap CI
    fit "mean":     the TR-weighted mean over stories of each story's subject-mean fit
normalized = score / ceiling (NaN below min_ceiling); alpha = the median of the stories'.
n_vertices = the most vertices a story's row of that fit (and subject) used: a subject's own,
the headline's over its subjects, the mean fit's.
"""
from __future__ import annotations

import numpy as np

from .. import rois
from .tables import HEADLINE

ALL = "all"


def _key(row: dict) -> tuple:
    return row["layer"], row["region"], row["hemi"]


def _weighted(values, weights) -> float:
    v, w = np.asarray(values, np.float64), np.asarray(weights, np.float64)
    ok = np.isfinite(v)
    return float(np.sum(v[ok] * w[ok]) / np.sum(w[ok])) if ok.any() else np.nan


def _normalized(score, ceiling, min_ceiling):
    return float(score / ceiling) if np.isfinite(ceiling) and ceiling >= min_ceiling else np.nan


def subject_scores(parts: list[tuple[list[dict], float, tuple[str, ...]]]) -> dict:
    """(subject, layer, region, hemi) -> [(score, ceiling, alpha, weight, n_vertices), ...] over the groups."""
    out: dict = {}
    for rows, weight, subjects in parts:
        own = [r for r in rows if r["fit"] == "subject"]
        if not own and len(subjects) == 1:  # one listener: the group's only fit is that subject's
            own = [r | dict(subject=subjects[0]) for r in rows if r["fit"] == "mean"]
        for r in own:
            out.setdefault((r["subject"],) + _key(r), []).append((r["score"], r["ceiling"], r["alpha"], weight,
                                                                  r["n_vertices"]))
    return out


def combine(parts: list[tuple[list[dict], float, tuple[str, ...]]], n_boot: int, ci: float, seed: int,
            min_ceiling: float) -> list[dict]:
    """The combined rows (module docstring) from each group's (rows, TR weight, subjects)."""
    keys = list(dict.fromkeys(_key(r) for rows, _, _ in parts for r in rows))
    per = subject_scores(parts)
    subjects = sorted({s for s, *_ in per})
    head = lambda k, n: dict(story=ALL, layer=k[0], region=k[1], hemi=k[2], n_vertices=int(n))  # noqa: E731
    score_SK = np.full((len(subjects), len(keys)), np.nan)
    ceil_SK = np.full_like(score_SK, np.nan)
    alpha_SK = np.full_like(score_SK, np.nan)
    n_SK = np.zeros(score_SK.shape, np.int64)
    rows = []
    for i, sub in enumerate(subjects):
        for j, k in enumerate(keys):
            got = per.get((sub,) + k)
            if got:
                s, c, a, w, n = zip(*got)
                score_SK[i, j], ceil_SK[i, j], alpha_SK[i, j] = _weighted(s, w), _weighted(c, w), np.nanmedian(a)
                n_SK[i, j] = max(n)
    if subjects:
        mean, lo, hi, _ = rois.bootstrap_mean_ci(score_SK, rois.bootstrap_indices(len(subjects), n_boot, seed), ci)
        for j, k in enumerate(keys):
            c = float(np.nanmean(ceil_SK[:, j])) if np.isfinite(ceil_SK[:, j]).any() else np.nan
            rows.append(head(k, n_SK[:, j].max()) | dict(
                fit=HEADLINE, subject=ALL, score=float(mean[j]), ci_low=float(lo[j]), ci_high=float(hi[j]), ceiling=c,
                normalized=_normalized(mean[j], c, min_ceiling), alpha=float(np.nanmedian(alpha_SK[:, j]))))
            for i, sub in enumerate(subjects):
                rows.append(head(k, n_SK[i, j]) | dict(
                    fit="subject", subject=sub, score=score_SK[i, j], ci_low=np.nan, ci_high=np.nan,
                    ceiling=ceil_SK[i, j], normalized=_normalized(score_SK[i, j], ceil_SK[i, j], min_ceiling),
                    alpha=alpha_SK[i, j]))
    means = {}
    for prows, weight, _ in parts:
        for r in prows:
            if r["fit"] == "mean":
                means.setdefault(_key(r), []).append((r["score"], r["ceiling"], r["alpha"], weight, r["n_vertices"]))
    for k in keys:
        s, c, a, w, n = zip(*means[k])
        score, ceiling = _weighted(s, w), _weighted(c, w)
        rows.append(head(k, max(n)) | dict(fit="mean", subject="mean", score=score, ci_low=np.nan, ci_high=np.nan,
                                   ceiling=ceiling, normalized=_normalized(score, ceiling, min_ceiling),
                                   alpha=float(np.nanmedian(a))))
    return [{k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in row.items()} for row in rows]


def weighted_maps(maps_GXV: list[np.ndarray], weights) -> np.ndarray:
    """The TR-weighted mean over groups of per-vertex maps (NaN-aware: a vertex counts the
    groups that have it)."""
    m = np.stack(maps_GXV).astype(np.float64)
    w = np.asarray(weights, np.float64).reshape((-1,) + (1,) * (m.ndim - 1))
    ok = np.isfinite(m)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(ok, m, 0.0) * w).sum(0) / np.where(ok, w, 0.0).sum(0)
