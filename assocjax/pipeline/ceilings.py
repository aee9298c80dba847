"""Which ceiling a run reads, and where it holds: the significance mask and the two methods side by side.

`store.ceiling` computes, per vertex, the split-half reliability (`split_half`), the paper's
half-vs-half r (`half_r`) and the circular-shift p that the halves agree (`p_null`). Here:
    significant = Benjamini-Hochberg q <= --ceiling.alpha over the vertices with a p (every vertex
        when --ceiling.n-null is 0 or alpha is 1);
    `masked` = the ceiling as the tables and maps read it: the per-vertex ceiling of the chosen method
        (`max_r`: the map's `ceiling_max_r`, the normalized maps' divisor) NaN where not significant;
        for the region means a vertex that is not significant counts as no agreement, 0 (its
        reliability, half-vs-half r and LOSO ISC), so a region's ceiling stays over the same vertices
        as its score (`tables`) and a noise region gets ~0, not the mean of its few lucky survivors
        (on the built-in world's pure-noise region 4-6 of 90 vertices pass; over them alone the
        ceiling would read 0.33-0.58 where the truth is 0);
    `region_rows` = ceilings.csv: per region, both methods' ceilings and how many of its vertices are
        significant (`ceiling_n_significant`).
Region ceilings: split_half = sqrt(max(mean reliability, 0)) (`tables.mean_fit_ceiling`'s rule),
half_predicts_half = max(mean half_r, 0).
"""
from __future__ import annotations

import numpy as np

from ..results import WHOLE
from ..stats import bh_fdr

SPLIT_HALF, HALF = "split_half", "half_predicts_half"


def significant(p_V: np.ndarray, alpha: float) -> np.ndarray:
    """(V,) bool: BH q <= alpha; every vertex when there is no test (all p NaN) or alpha is 1."""
    p_V = np.asarray(p_V, np.float64)
    if alpha >= 1 or not np.isfinite(p_V).any():
        return np.ones(p_V.shape, bool)
    return bh_fdr(p_V) <= alpha   # NaN q (no ceiling) compares False


def masked(ceil: dict, alpha: float, method: str) -> dict:
    """The cached ceiling as the tables and maps read it (module doc); adds `significant` (V,), `method`
    and `raw` (the unmasked dict)."""
    keep_V = significant(ceil["p_null"], alpha)
    out = dict(ceil)
    for k in ("split_half", "half_r", "loso"):   # NaN (no ceiling) stays NaN
        out[k] = np.where(keep_V | np.isnan(ceil[k]), ceil[k], 0.0).astype(np.float32)
    out["max_r"] = np.where(keep_V, ceil["half_r" if method == HALF else "max_r"], np.nan).astype(np.float32)
    out["subject_max_r"] = np.where(keep_V, ceil["subject_max_r"], np.nan).astype(np.float32)
    return out | dict(significant=keep_V, method=method, raw=ceil)


def region_rows(story: str, regs, ceil: dict) -> list[dict]:
    """ceilings.csv rows of one fit group (`masked` ceiling; regs: `tables.regions`): over the region's
    vertices with a ceiling."""
    rows = []
    for name, hemi, mask_V in regs:
        has = mask_V & np.isfinite(ceil["split_half"])
        n = int(has.sum())
        rel = float(np.mean(ceil["split_half"][has])) if n else np.nan
        half = float(np.mean(ceil["half_r"][has])) if n else np.nan
        rows.append(dict(story=story, region=name, hemi=hemi, n_vertices=n,
                         ceiling_n_significant=int((has & ceil["significant"]).sum()),
                         ceiling_split_half=float(np.sqrt(max(rel, 0.0))) if n else np.nan,
                         ceiling_half_predicts_half=max(half, 0.0) if n else np.nan, method=ceil["method"]))
    return rows


def whole(rows: list[dict]) -> dict:
    """The whole-brain rows (region "all", both hemispheres or the only one) by story: for run.json."""
    out = {}
    for r in rows:
        if r["region"] == WHOLE and (r["hemi"] == "both" or r["story"] not in out):
            out[r["story"]] = {k: v for k, v in r.items() if k not in ("story", "region")}
    return out



def summary_line(whole_by_story: dict) -> str:
    """summary.txt's line: per story, the significant vertices and both whole-brain ceilings."""
    parts = [f"{story} {w['ceiling_n_significant']} of {w['n_vertices']}, split_half {w['ceiling_split_half']:.3f}, "
             f"half_predicts_half {w['ceiling_half_predicts_half']:.3f}" for story, w in whole_by_story.items()]
    method = next(iter(whole_by_story.values()))["method"] if whole_by_story else SPLIT_HALF
    return (f"ceiling vertices above the circular-shift null (FDR) and whole-brain ceilings over them "
            f"({method} sets normalized): " + "; ".join(parts))
