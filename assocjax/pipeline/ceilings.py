"""Which ceiling a run reads, and where it holds: the significance mask and the two methods side by side.

`store.ceiling` computes, per vertex, the split-half reliability (`split_half`), the paper's
half-vs-half r (`half_r`) and the circular-shift p that the halves agree (`p_null`). Here:
    significant = Benjamini-Hochberg q <= --ceiling.alpha (every vertex when --ceiling.n-null is 0 or
        alpha is 1). The map (`masked`'s `max_r`: `ceiling_max_r`, the normalized maps' divisor, the chosen
        method's per-vertex ceiling) is NaN outside the BH over all vertices.
    A region's ceiling (`per_region`, used by `tables`; `region_rows`) counts the vertices significant by
        the BH over THAT region's vertices, and the others as no agreement, 0 (their reliability,
        half-vs-half r and LOSO ISC), so it stays over the same vertices as the region's score. Why per
        region and why zeros, measured on the built-in world's pure-noise region (`visual_control`,
        expected ceiling 0; the unmasked mean over all its vertices, negatives included, gave 0): the BH
        over all vertices, where 80 % carry signal, lets 2-6 of its 90 vertices through; over them alone
        the split-half ceiling read 0.33-0.58, with the others as zeros 0.05 on average (up to 0.14); a BH
        over the region's own vertices keeps none of a pure-noise region at rate 1 - alpha.
    `region_rows` = ceilings.csv: per region, both methods' ceilings and `ceiling_n_significant`.
Region ceilings: split_half = sqrt(max(mean reliability, 0)) (`tables.mean_fit_ceiling`'s rule),
half_predicts_half = max(mean half_r, 0).
"""
from __future__ import annotations

import numpy as np

from ..results import WHOLE
from ..stats import bh_fdr

SPLIT_HALF, HALF = "split_half", "half_predicts_half"


def significant(p_V: np.ndarray, alpha: float) -> np.ndarray:
    """(V,) bool: BH q <= alpha over the vertices with a p; every vertex when there is no test (all p NaN)
    or alpha is 1."""
    p_V = np.asarray(p_V, np.float64)
    if alpha >= 1 or not np.isfinite(p_V).any():
        return np.ones(p_V.shape, bool)
    return bh_fdr(p_V) <= alpha   # NaN q (no ceiling) compares False


def masked(ceil: dict, alpha: float, method: str) -> dict:
    """The cached ceiling as a run reads it: `max_r` is the chosen method's per-vertex ceiling, NaN
    where not significant (the map); adds `significant` (V,), `alpha`, `method`. The other arrays stay
    as computed: the region means mask them per region (`per_region`)."""
    keep_V = significant(ceil["p_null"], alpha)
    max_r = np.where(keep_V, ceil["half_r" if method == HALF else "max_r"], np.nan).astype(np.float32)
    return dict(ceil) | dict(max_r=max_r, significant=keep_V, alpha=alpha, method=method)


def region_significant(ceil: dict, masks_RV: np.ndarray) -> np.ndarray:
    """(R, V) bool: the vertices of each region significant by the BH over that region's vertices."""
    return np.stack([significant(np.where(m > 0, ceil["p_null"], np.nan), ceil["alpha"]) & (m > 0)
                     for m in masks_RV])


def _zero_outside(ceil: dict, keep_V: np.ndarray) -> dict:
    """ceil with the reliability, half-vs-half r and LOSO ISC 0 outside keep_V (NaN stays NaN)."""
    return dict(ceil) | {k: np.where(keep_V | np.isnan(ceil[k]), ceil[k], 0.0).astype(ceil[k].dtype)
                         for k in ("split_half", "half_r", "loso")}


def per_region(region_fn, ceil: dict, masks_RV: np.ndarray) -> np.ndarray:
    """(..., R): column r of region_fn(ceil zero outside region r's significant vertices), region_fn giving
    (..., R) region values from a ceiling dict. Each column comes out of the same computation on the same
    shapes, so a region whose vertices all pass gets the unmasked numbers bit for bit. A ceiling without
    a test (`masked` not applied) is read as it is."""
    if "alpha" not in ceil:
        return region_fn(ceil)
    masks_RV = np.asarray(masks_RV)
    sig_RV = region_significant(ceil, masks_RV)
    done: dict[bytes, np.ndarray] = {}   # regions with the same significant vertices share one call
    cols = []
    for r in range(masks_RV.shape[0]):
        key = np.packbits(sig_RV[r]).tobytes()
        if key not in done:
            done[key] = region_fn(_zero_outside(ceil, sig_RV[r]))
        cols.append(done[key][..., r])
    return np.stack(cols, -1)


def region_rows(story: str, regs, ceil: dict) -> list[dict]:
    """ceilings.csv rows of one fit group (`masked` ceiling; regs: `tables.regions`): over the region's
    vertices with a ceiling, those not significant in the region as 0."""
    masks_RV = np.stack([m for _, _, m in regs])
    sig_RV = region_significant(ceil, masks_RV)
    rows = []
    for (name, hemi, mask_V), sig_V in zip(regs, sig_RV):
        has = mask_V & np.isfinite(ceil["split_half"])
        n = int(has.sum())
        c = _zero_outside(ceil, sig_V)
        rel = float(np.mean(c["split_half"][has])) if n else np.nan
        half = float(np.mean(c["half_r"][has])) if n else np.nan
        rows.append(dict(story=story, region=name, hemi=hemi, n_vertices=n,
                         ceiling_n_significant=int((has & sig_V).sum()),
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
    return (f"ceiling: vertices above the circular-shift null (FDR) and the whole-brain ceilings, the others "
            f"counted as 0 ({method} sets normalized): " + "; ".join(parts))
