"""Which ceiling a run reads, and where it holds: the significance mask and the two methods side by side.

`store.ceiling` computes, per vertex, the split-half reliability (`split_half`), the paper's
half-vs-half r (`half_r`) and the circular-shift p that the halves agree (`p_null`). Here:
    significant = Benjamini-Hochberg q <= --ceiling.alpha over the vertices with a p (every vertex
        when --ceiling.n-null is 0 or alpha is 1);
    `masked` = the ceiling with every per-vertex ceiling NaN where not significant, so the map shows
        NaN there and the region ceilings (`tables`) leave those vertices out; its `max_r` (the map's
        `ceiling_max_r`, the normalized maps' divisor) is the chosen method's per-vertex ceiling;
    `region_rows` = ceilings.csv: per region, both methods' ceilings over its significant vertices
        and how many there are (`ceiling_n_significant`; 0: both ceilings NaN).
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
    """The cached ceiling with the per-vertex ceilings NaN outside `significant`; adds `significant`,
    `method` and `raw` (the unmasked dict)."""
    keep_V = significant(ceil["p_null"], alpha)
    out = dict(ceil)
    for k in ("split_half", "max_r", "half_r"):
        out[k] = np.where(keep_V, ceil[k], np.nan).astype(np.float32)
    out["subject_max_r"] = np.where(keep_V, ceil["subject_max_r"], np.nan).astype(np.float32)
    if method == HALF:
        out["max_r"] = out["half_r"]
    return out | dict(significant=keep_V, method=method, raw=ceil)


def region_rows(story: str, regs, ceil: dict) -> list[dict]:
    """ceilings.csv rows of one fit group (`masked` ceiling; regs: `tables.regions`)."""
    rows = []
    has_V = np.isfinite(ceil["raw"]["split_half"])
    for name, hemi, mask_V in regs:
        keep = mask_V & np.isfinite(ceil["split_half"])
        n = int(keep.sum())
        with np.errstate(invalid="ignore"):
            rel = float(np.mean(ceil["split_half"][keep])) if n else np.nan
            half = float(np.mean(ceil["half_r"][keep])) if n else np.nan
        rows.append(dict(story=story, region=name, hemi=hemi, n_vertices=int((mask_V & has_V).sum()),
                         ceiling_n_significant=n, ceiling_split_half=float(np.sqrt(max(rel, 0.0))) if n else np.nan,
                         ceiling_half_predicts_half=max(half, 0.0) if n else np.nan, method=ceil["method"]))
    return rows


def whole(rows: list[dict]) -> dict:
    """The whole-brain rows (region "all", both hemispheres or the only one) by story: for run.json."""
    out = {}
    for r in rows:
        if r["region"] == WHOLE and (r["hemi"] == "both" or r["story"] not in out):
            out[r["story"]] = {k: v for k, v in r.items() if k not in ("story", "region")}
    return out

