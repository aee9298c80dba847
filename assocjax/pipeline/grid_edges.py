"""Alpha-grid edges: how often the inner CV chose the smallest or the largest alpha of the grid.

A choice is one target's alpha in one outer fold (`alpha_idx` of a layer's results, (K, F, V));
only choices whose held-out score is finite count (vertices without data and padding have
none). Shares are kept per fit family, as the tables name them: the per-subject fits over all
(subject, vertex) targets (`results.HEADLINE`) and the subject-mean fit ("mean").

Why it matters: a target at an edge might have wanted an alpha outside the grid, so its score
is the grid's, not the ridge's. Measured per layer and fit (README: alpha grid edges), every
share below half with the default 9-alpha grid: the default built-in run and the tests' smaller
worlds at most 0.34 low, 0.44 high; pure AR(1) noise at most 0.26 low, 0.20 high (and 0.43 at
either edge of a 3-alpha grid); while a grid stopping too low (0.1 1 10) puts 0.53..0.82 of the
choices at its top, and one starting too high (1e5 1e6 1e7) 0.48..0.75 at its bottom. Hence one
threshold, `WARN_ABOVE`: a low-edge share above it always warns (smaller alphas were never
tried); a high-edge share above it warns only where the fit's mean score is positive (a target
without signal has a noise-flat CV curve, whose maximum often sits at an edge, ties going to the
larger alpha: there the grid is not the problem). With fewer than `MIN_GRID` alphas every
choice is an edge, so shares are reported but never warned about.
"""
from __future__ import annotations

import numpy as np

from ..results import HEADLINE
from .tables import fold_mean

WARN_ABOVE = 0.5
MIN_GRID = 3
MEAN = "mean"
FIT_NAMES = {HEADLINE: "per-subject", MEAN: "subject-mean"}  # in the order the shares are kept


def edge_shares(alpha_idx_KFV: np.ndarray, r_folds_KFV: np.ndarray, n_alphas: int) -> dict[str, dict]:
    """fit family -> dict(low, high, score, choices): the shares of the counted choices (module
    doc) at the smallest (index 0) and the largest (index n_alphas - 1) alpha, the family's mean
    fold-mean r over its targets, and how many choices were counted. F = the subjects then the
    mean, or the mean only."""
    fits = {HEADLINE: slice(0, -1), MEAN: slice(-1, None)} if alpha_idx_KFV.shape[1] > 1 else {MEAN: slice(None)}
    out = {}
    for name, cut in fits.items():
        idx_KFV, r_KFV = alpha_idx_KFV[:, cut], r_folds_KFV[:, cut]
        counted = np.isfinite(r_KFV)
        n = int(counted.sum())
        r_FV = fold_mean(r_KFV)
        out[name] = dict(low=float(np.sum(counted & (idx_KFV == 0)) / n) if n else np.nan,
                         high=float(np.sum(counted & (idx_KFV == n_alphas - 1)) / n) if n else np.nan,
                         score=float(np.nanmean(r_FV)) if np.isfinite(r_FV).any() else np.nan, choices=n)
    return out


def pooled(parts: list[dict]) -> dict:
    """Shares of several stories' (edge_shares of one layer) as one: weighted by their choices."""
    out = {}
    for name in dict.fromkeys(f for p in parts for f in p):
        got = [p[name] for p in parts if name in p and p[name]["choices"]]
        n = sum(g["choices"] for g in got)
        out[name] = {k: float(sum(g[k] * g["choices"] for g in got) / n) if n else np.nan
                     for k in ("low", "high", "score")} | dict(choices=n)
    return out


def run_edges(results: dict[str, dict], layers, alphas) -> dict:
    """The run's diagnostic from `results` (fit group name -> layer -> that layer's results,
    `fitting.Group.results`) and the sorted grid `alphas`: dict(alphas=[smallest, largest],
    n_alphas, warn_above, layers=layer -> fit -> shares pooled over the groups (`pooled`),
    stories=group -> layer -> fit -> shares (`edge_shares`))."""
    stories = {name: {int(l): edge_shares(res[l]["alpha_idx"], res[l]["r_folds"], len(alphas)) for l in layers}
               for name, res in results.items()}
    return dict(alphas=[float(alphas[0]), float(alphas[-1])], n_alphas=len(alphas), warn_above=WARN_ABOVE,
                layers={int(l): pooled([s[int(l)] for s in stories.values()]) for l in layers}, stories=stories)


def edge_notes(edges: dict) -> list[str]:
    """One note per edge over the run's stories, layers and fits past the threshold (module doc)."""
    if edges["n_alphas"] < MIN_GRID:
        return []
    lo, hi = edges["alphas"]
    hits = {"low": [], "high": []}
    for story, by_layer in edges["stories"].items():
        for layer, fits in by_layer.items():
            for fit, s in fits.items():
                if s["low"] > WARN_ABOVE:
                    hits["low"].append((story, layer, fit, s["low"]))
                if s["high"] > WARN_ABOVE and s["score"] > 0:
                    hits["high"].append((story, layer, fit, s["high"]))
    why = {"low": f"the smallest alpha ({lo:g}): the grid starts too high; add smaller --ridge.alphas",
           "high": f"the largest alpha ({hi:g}) where the fit scores r > 0: the grid stops too low; add larger "
                   "--ridge.alphas"}
    return [f"alpha grid: up to {max(h[3] for h in got):.0%} of the inner-CV choices (per target and outer fold) "
            f"are {why[edge]} (README: alpha grid edges); at " + "; ".join(_where(got))
            for edge, got in hits.items() if got]


def _where(hits) -> list[str]:
    """'story layer(s) ... (fits)' per story, from (story, layer, fit, share) tuples."""
    out = []
    for story in dict.fromkeys(h[0] for h in hits):
        mine = [h for h in hits if h[0] == story]
        layers = ", ".join(map(str, dict.fromkeys(h[1] for h in mine)))
        fits = " and ".join(name for f, name in FIT_NAMES.items() if any(h[2] == f for h in mine))
        out.append(f"{story} layer(s) {layers} ({fits} fits)")
    return out


def summary_line(edges: dict) -> str:
    """The summary's line: per layer, low/high shares of the per-subject fits | the subject-mean fit."""
    lo, hi = edges["alphas"]
    fmt = lambda s: f"{s['low']:.0%}/{s['high']:.0%}"  # noqa: E731
    per = ", ".join(f"{l}: " + " | ".join(fmt(s) for s in fits.values()) for l, fits in edges["layers"].items())
    fits = " | ".join(f"{FIT_NAMES[f]} fit" for f in next(iter(edges["layers"].values())))
    return (f"alpha at the grid's edges (share of inner-CV choices at the smallest {lo:g} / largest {hi:g}; {fits}), "
            f"per layer: {per}")
