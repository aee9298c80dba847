"""Random controls as a distribution: an association against K seeded draws of a control.

One random control is one draw: an association that beats it may not beat the next one. With
`augment.py random-match --draws K` (or `oracle --draws K`) each control is K files marked
`control`, `draw`, `draws` in their provenance (`augment.random_control.control_draws`); each
draw is an ordinary condition of `--augment.compare` (scored into its own folder, cached like
any other, F against the plain stories in gains.csv), and this module adds, for every
association condition (an F condition that is no draw) and every control, the comparison
"<association> vs <control> draws" (kind "draws"), per layer, region, hemisphere and unit:

    change, CI, relative    R(association) - mean over draws of R(draw), each subject paired
                            (`compare.changes` against the draws' mean scores)
    association_change      F(association) = R(association) - R(plain)
    draws_n                 K, the draws with a finite F
    draws_mean, draws_sd    mean and sample sd (ddof 1) of F(draw) = R(draw) - R(plain)
    draws_rank              1 + #{draws with F(draw) >= F(association)}: 1 = above every draw
    draws_p                 draws_rank / (K + 1): the rank (permutation) p of "the association
                            gains more than a random draw", exact when the association is
                            exchangeable with the draws (ties count against it)
    subject_p               the sign-flip p over subjects of association vs the draws' mean (with several
                            stories fitted one by one the two-level p of `story_level`, as every comparison)
    p, q, significant       the headline's combined test: p = max(subject_p, draws_p), BH q over
                            the comparison's keys, significant = q < --compare.fdr

Why the maximum: the claim "the association gains more than random insertions" has to hold
for other listeners (subject_p) and for other draws of the control (draws_p). It is false when
either null holds, so the test is an intersection-union test: rejecting only when both
reject has level alpha without any correction (Berger 1982), and max(p1, p2) is its p-value,
valid for BH like any p-value. draws_p is one-sided (a gain); a loss shows in the change, the
rank and subject_p. The smallest draws_p is 1 / (K + 1): K >= 19 for 0.05, K >= 99 for 0.01,
and BH over N keys needs p <= 0.05 / N for a lone key (K + 1 >= 20 N).
"""
from __future__ import annotations

import types
import warnings
from typing import Callable

import numpy as np
import xarray as xr

from .. import results
from ..stats import bh_fdr
from .inputs import condition_name, read_augmentations

KIND = "draws"


def draw_groups(files) -> dict[str, list[str]]:
    """control -> its draw conditions in draw order, from the provenance of the augmentation
    files (`control`, `draw`); files of one condition (one per story) must agree."""
    groups: dict[str, dict[int, str]] = {}
    for path, aug in read_augmentations(files):
        prov = aug.provenance
        if "draw" not in prov:
            continue
        control, draw = prov.get("control"), prov.get("draw")
        if not isinstance(control, str) or not control or not isinstance(draw, int) or isinstance(draw, bool):
            raise ValueError(f"--augment.files {path}: provenance draw {draw!r} of control {control!r}: a draw needs "
                             "an int draw and its control's name (augment.py random-match --draws writes both)")
        name, known = condition_name(aug), groups.setdefault(control, {}).get(draw)
        if known is not None and known != name:
            raise ValueError(f"--augment.files {path}: draw {draw} of control {control!r} is condition {name!r}, "
                             f"another file's is {known!r}")
        groups[control][draw] = name
    return {control: [by_draw[d] for d in sorted(by_draw)] for control, by_draw in groups.items()}


def is_draw(name: str, groups: dict[str, list[str]]) -> bool:
    return any(name in names for names in groups.values())


def wanted_contrast(a: str, b: str, groups: dict[str, list[str]]) -> bool:
    """Whether `compare` pairs conditions a and b: not when either is a draw (a draw against
    the association is one row of the draws comparison; draw against draw means nothing)."""
    return not (is_draw(a, groups) or is_draw(b, groups))


def distribution(f_X: np.ndarray, f_KX: np.ndarray) -> dict[str, np.ndarray]:
    """The association's F (any shape X) among the K draws' F (K, X): association_change, draws_n, draws_mean,
    draws_sd, draws_rank, draws_p (module docstring); NaN where F or every draw is NaN."""
    f, d = np.asarray(f_X, np.float64), np.asarray(f_KX, np.float64)
    n = np.isfinite(d).sum(0)
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN keys give NaN, as wanted
        mean, sd = np.nanmean(d, 0), np.nanstd(d, 0, ddof=1)
    undefined = ~np.isfinite(f) | (n == 0)
    rank = np.where(undefined, np.nan, 1.0 + (d >= f).sum(0))   # NaN draws compare False: not above
    return dict(association_change=f, draws_n=n, draws_mean=mean, draws_sd=np.where(n >= 2, sd, np.nan), draws_rank=rank,
                draws_p=rank / (n + 1))


def _mean_grid(grids) -> xr.Dataset:
    """The first grid with the grids' mean score per key and unit (its attrs, e.g. a story's TR
    weight and listeners, kept)."""
    ds = grids[0].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ds["score"] = xr.concat([g["score"] for g in grids], "draw", join="outer").mean("draw")
    return ds


def _mean_run(runs) -> types.SimpleNamespace:
    """A stand-in run whose scores are the draws' mean score per key and unit (what `compare.changes`
    reads), and so are its stories' (so that several stories give the two-level statistics of
    `story_level`, as every other comparison)."""
    stories = tuple(_mean_grid(list(gs)) for gs in zip(*(getattr(r, "stories", ()) for r in runs)))
    return types.SimpleNamespace(scores=_mean_grid([r.scores for r in runs]), stories=stories)


def against_draws(runs: dict, vs_plain: dict[str, xr.Dataset], groups: dict[str, list[str]], kinds: dict[str, str],
                  changes: Callable, fdr: float) -> list[xr.Dataset]:
    """The gains grid of "<association> vs <control> draws" for every association and control
    (module docstring). runs: condition -> its run; vs_plain: condition -> its gains grid
    against the plain stories; changes(base, new, comparison) -> the subject-level gains grid
    (`compare.changes` with the comparison's options and kind `KIND`)."""
    associations = [n for n, k in kinds.items() if k == "F" and not is_draw(n, groups)]
    parts = []
    for control, names in groups.items():
        mean = _mean_run([runs[n] for n in names])
        f_K = xr.concat([vs_plain[n]["change"].isel(comparison=0, drop=True) for n in names], "draw")
        for a in associations:
            if _pos_class(a) != _pos_class(control):   # a part-of-speech subset against its own class's draws only
                continue
            g = changes(mean, runs[a], f"{a} vs {control} draws")
            f = vs_plain[a]["change"].isel(comparison=0, drop=True)
            stats = distribution(f.values, f_K.transpose("draw", *f.dims).values)
            for k, v in stats.items():
                g[k] = xr.DataArray(v, coords=f.coords, dims=f.dims).reindex_like(g["change"].isel(comparison=0))
                g[k] = g[k].expand_dims(comparison=g["comparison"].values).astype(results.gain_dtype(k))
            parts.append(_combine(g, fdr))
    return parts


def _pos_class(name: str) -> str:
    """The part-of-speech class of a subset condition ("oracle:NOUN" -> "NOUN", `augment.pos.subset_name`),
    "" for a whole one."""
    return name.rpartition(":")[2] if ":" in name else ""


def _combine(g: xr.Dataset, fdr: float) -> xr.Dataset:
    """The headline's p = max(subject sign-flip p, draws p), its BH q over the keys, significant
    (module docstring); subject_p keeps the sign-flip p. Other units carry no test."""
    head = g["fit"].values == results.HEADLINE
    p = g["p"].values.copy()
    subject_p = np.full(p.shape, np.nan)
    subject_p[:, :, head] = p[:, :, head]                # (comparison, layer, unit, region, hemi)
    combined = np.fmax(p, g["draws_p"].values)           # NaN only where both are
    combined = np.where(np.isfinite(p) & np.isfinite(g["draws_p"].values), combined, np.nan)
    q = np.full(p.shape, np.nan)
    at = (slice(None), slice(None), head)
    q[at] = bh_fdr(combined[at].ravel()).reshape(combined[at].shape)  # absent keys are NaN: BH skips them
    p[at] = combined[at]
    g["subject_p"] = (g["p"].dims, subject_p)
    g["p"], g["q"] = (g["p"].dims, p), (g["q"].dims, q)
    g["significant"] = (g["q"].dims, q < fdr)
    return g


def figure_comparisons(gains: xr.Dataset, groups: dict[str, list[str]]) -> xr.Dataset:
    """gains without the single draws' comparisons (K lines would hide the rest of gains.png)."""
    keep = [c for c in gains["comparison"].values.tolist() if not is_draw(c.split(" vs ")[0], groups)]
    return gains.sel(comparison=keep)


def summary_text(gains: xr.Dataset, fdr: float, top: int = 8) -> str:
    """gains.txt's words on each draws comparison: per region at hemisphere "both", the
    association's F, the draws' mean and sd, its rank among them and both p-values."""
    lines = []
    for comp in gains["comparison"].values.tolist():
        g = gains.sel(comparison=comp)
        if g["kind"].item() != KIND or not results.has_fit(g, results.HEADLINE) or "both" not in g["hemi"].values:
            continue
        at = g.sel(unit=results.ALL, hemi="both")
        names = ("association_change", "draws_n", "draws_mean", "draws_sd", "draws_rank", "draws_p", "subject_p",
                 "q", "significant")
        v = {k: results.stacked(at[k], at["present"])[0] for k in names}
        keys = results.stacked(at["change"], at["present"])[1]
        f = v["association_change"]
        n = int(np.nanmax(v["draws_n"], initial=0))
        lines.append(f"{comp}: the association's F against {n} random draws (rank 1 = above every draw; p_draws = "
                     f"rank / {n + 1}, at best {1 / (n + 1):.3g}); significant = both p_draws and the subjects' "
                     f"p (sign-flip; two-level with several stories) small (q of the larger < {fdr}): {int(v['significant'].sum())} of {len(keys)} rows")
        order = sorted(range(len(keys)), key=lambda j: (np.nan_to_num(v["draws_rank"][j], nan=np.inf), -f[j]))
        for j in order[:top]:
            (layer, region), star = keys[j], " *" if v["significant"][j] else ""
            lines.append(f"  {region:<16} layer {layer:>3}: F {f[j]:+.4f} vs draws {v['draws_mean'][j]:+.4f} "
                         f"(sd {v['draws_sd'][j]:.4f}), rank {v['draws_rank'][j]:.0f} of {int(v['draws_n'][j]) + 1}, "
                         f"p_draws {v['draws_p'][j]:.3g}, p_subjects {v['subject_p'][j]:.3g}, q {v['q'][j]:.3g}{star}")
    return "\n".join(lines)


__all__ = ["KIND", "against_draws", "distribution", "draw_groups", "figure_comparisons", "is_draw", "summary_text",
           "wanted_contrast"]
