"""Stories as a level: with several stories, the headline's CI and the F / M statistics come from
the two-level bootstrap (stories, then subjects: `stats.two_level_draws`), each story gets its own
change rows, and every combined row says whether its sign holds without each story.

A run's story grids (`ScoreResult.stories`) carry, as attrs set by `run._tables`, `weight` (the
story's TRs, its weight in a subject's mean over stories) and `listeners` (the subjects of its fit
group). The statistic resampled is the one the tables report: per subject the TR-weighted mean over
the stories it heard, then the mean over subjects (`aggregate`); with one story nothing here runs
and the subject-level statistics stay as they were (`gains.paired_change`).

Why two levels: resampling subjects only treats the stories as fixed, so its CI and p answer
"would other listeners of these stories show it?", not "would other stories?". A change that one
story carries then looks significant: on 1000 simulated data sets with story effects and no mean
change (8 stories, 30 subjects hearing 1-3 each) the subject-only sign-flip test rejects 10.9 % at
alpha 0.05 (25.2 % with larger story effects), the two-level test 1.0 % (3.4 %)
(tests/test_story_level.py, docs/experiments.md "Stories as a level").
"""
from __future__ import annotations

import dataclasses

import numpy as np
import xarray as xr

from .. import results
from ..stats import two_level_ci_p, two_level_draws, two_level_means
from .aggregate import own_fits
from .conditions import by_story


def with_story_info(ds: xr.Dataset, weight: float, listeners, story: str | None = None) -> xr.Dataset:
    """A story grid carrying its TR weight, listeners and story (module doc; `story`: the story of a
    group of one listener condition, `conditions`; default: the grid's own name)."""
    return ds.assign_attrs(weight=float(weight), listeners=tuple(listeners),
                           stimulus=str(story if story is not None else ds["story"].item()))


def _story(ds: xr.Dataset) -> str:
    return str(ds.attrs.get("stimulus", ds["story"].item()))


def several(run) -> bool:
    """Whether a run combines several stories (then its statistics are two-level); the condition
    groups of one story are one story."""
    return len({_story(ds) for ds in getattr(run, "stories", ())}) > 1   # a stand-in with scores only has one


def story_matrix(run, subjects, like: xr.Dataset) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(S, X, G) each subject's own score per story on `like`'s present (layer, region, hemi) keys
    (NaN where the subject did not hear the story), the stories' TR weights and names; a story's
    condition groups merged into its column (`conditions.by_story`)."""
    out, weights, names = [], [], []
    for ds in run.stories:
        if "weight" not in ds.attrs:
            raise ValueError(f"story grid {ds['story'].item()!r} has no TR weight: made outside run.score")
        own = own_fits(ds, list(ds.attrs["listeners"]))
        a = (own["score"] if own is not None else xr.full_like(ds["score"], np.nan)).reindex(
            unit=list(subjects), layer=like["layer"], region=like["region"], hemi=like["hemi"])
        out.append(results.stacked(a, like["present"])[0])
        weights.append(ds.attrs["weight"])
        names.append(_story(ds))
    return by_story(np.stack(out, -1), np.asarray(weights, np.float64), names)


def _paired(base, new, subjects, like: xr.Dataset):
    """Both runs' (S, X, G) scores on the same stories (by name), NaN where either is missing."""
    b, w, names = story_matrix(base, subjects, like)
    n, _, new_names = story_matrix(new, subjects, like)
    if new_names != names:
        raise ValueError(f"the two conditions scored other stories: {names} and {new_names}")
    both = np.isfinite(b) & np.isfinite(n)
    return np.where(both, b, np.nan), np.where(both, n, np.nan), w, names


def loso_changes(base_SXG: np.ndarray, new_SXG: np.ndarray, w_G: np.ndarray) -> np.ndarray:
    """(G, X) the combined change (mean over subjects of the TR-weighted scores) without each story."""
    G, S = base_SXG.shape[-1], base_SXG.shape[0]
    leave_GG, everyone = 1.0 - np.eye(G), np.ones((G, S))
    return two_level_means(new_SXG, w_G, leave_GG, everyone) - two_level_means(base_SXG, w_G, leave_GG, everyone)


def two_level_change(base, new, subjects, like: xr.Dataset, st: dict, n_boot: int, ci: float,
                     seed: int) -> dict[str, np.ndarray]:
    """The headline statistics of a paired change over several stories: `st` (`gains.paired_change`
    on the subjects' combined scores: its estimates are kept) with CIs and p from the two-level
    bootstrap (`stats.two_level_ci_p`, t with stories - 1 df), and the leave-one-story-out columns.
    {} with one story."""
    if not several(base):
        return {}
    b, n, w, _ = _paired(base, new, subjects, like)
    return paired_two_level(b, n, w, st, n_boot, ci, seed)


def paired_two_level(b: np.ndarray, n: np.ndarray, w: np.ndarray, st: dict, n_boot: int, ci: float,
                     seed: int) -> dict[str, np.ndarray]:
    """`two_level_change` from the two conditions' (S, X, G) scores per subject, column and story
    (`w`: the stories' weights) and `st`'s estimates (change, relative); cells missing in either
    condition are left out of both."""
    both = np.isfinite(b) & np.isfinite(n)
    b, n = np.where(both, b, np.nan), np.where(both, n, np.nan)
    stories_IG, subjects_IS = two_level_draws(b.shape[0], b.shape[-1], n_boot, seed)
    boot_b, boot_n = two_level_means(b, w, stories_IG, subjects_IS), two_level_means(n, w, stories_IG, subjects_IS)
    n_stories = np.isfinite(b).any(0).sum(-1)                               # (X,) stories with a pair
    lo, hi, p = two_level_ci_p(st["change"], boot_n - boot_b, n_stories, ci)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot_m = (boot_n - boot_b) / np.where(boot_b > 0, boot_b, np.nan)
    m_lo, m_hi, _ = two_level_ci_p(st["relative"], boot_m, n_stories, ci)   # NaN where relative is (base too small)
    loso = loso_changes(b, n, w)
    with np.errstate(invalid="ignore"):
        holds = np.all(np.sign(loso) == np.sign(st["change"]), axis=0) & (st["change"] != 0)
    tested = np.isfinite(loso).all(0)
    return dict(change_ci_low=lo, change_ci_high=hi, p=p, relative_ci_low=m_lo, relative_ci_high=m_hi,
                loso_min_change=np.where(tested, loso.min(0), np.nan),
                loso_max_change=np.where(tested, loso.max(0), np.nan),
                loso_sign_holds=holds & tested)


def loso_units(head: dict, n_units: int, n_keys: int) -> dict[str, np.ndarray]:
    """The leave-one-story-out variables over every unit of a gains grid (`results.units` order):
    the headline's from `head`, NaN / False on each subject's and the mean fit's rows."""
    out = {}
    for k in results.STORY_GAIN_VARS:
        fill = False if k == "loso_sign_holds" else np.nan
        a = np.full((n_units, n_keys), fill, bool if k == "loso_sign_holds" else np.float64)
        if k in head:
            a[0] = head[k]
        out[k] = a
    return out


def story_gains(pair, base, new, comparison: str, kind: str) -> list[xr.Dataset]:
    """Each story's own gains grid (its listeners' scores in that story, subject-level statistics
    within the story, story = its name); [] with one story. `pair(base, new, comparison, kind)` is
    `compare.changes` with the run's options."""
    if not several(base):
        return []
    by_name = {str(ds["story"].item()): ds for ds in new.stories}
    one = lambda run, ds: dataclasses.replace(run, scores=ds, stories=(ds,))  # noqa: E731
    return [pair(one(base, ds), one(new, by_name[str(ds["story"].item())]), comparison, kind) for ds in base.stories]


def loso_text(base, new, gains: xr.Dataset, comparison: str, most: int = 5) -> list[str]:
    """gains.txt's lines on one comparison (both hemispheres): how many region x layer rows change sign
    without some story, and the largest of them, naming the story and the change without it."""
    if not several(base):
        return []
    g = gains.sel(comparison=comparison)
    if not results.has_fit(g, results.HEADLINE) or "both" not in g["hemi"].values:
        return []
    subjects = results.fit_units(g, results.SUBJECT)["unit"].values.tolist()
    like = base.scores.sel(hemi=["both"])
    b, n, w, names = _paired(base, new, subjects, like)
    loso = loso_changes(b, n, w)                                             # (G, X)
    head = g.sel(unit=results.ALL, hemi=["both"])
    keys = results.stacked(head["change"], like["present"])[1]
    change, q = (results.stacked(head[k], like["present"])[0] for k in ("change", "q"))
    flips = [j for j in np.argsort(-np.abs(change), kind="stable") if np.isfinite(change[j])
             and np.any(np.sign(loso[:, j]) != np.sign(change[j]))]
    lines = [f"  leave-one-story-out ({len(names)} stories): {len(flips)} of {len(keys)} region x layer rows change "
             "sign without some story" + (":" if flips else "")]
    for j in flips[:most]:
        layer, region, _ = keys[j]
        without = ", ".join(f"without {names[i]} {loso[i, j]:+.4f}" for i in range(len(names))
                            if np.sign(loso[i, j]) != np.sign(change[j]))
        lines.append(f"    {region:<16} layer {layer:>3}: {change[j]:+.4f} (q={q[j]:.3g}), {without}")
    if len(flips) > most:
        lines.append(f"    ... {len(flips) - most} more in gains.csv (loso_sign_holds)")
    return lines
