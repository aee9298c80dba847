"""The low-level baseline (`--features.nuisance`): what word rate, onsets and phoneme rate alone predict.

The regressors (`features.nuisance`) of every story, through the features' delays and cut to the
story exactly as a layer's design (`design.layer_design`), are fitted with the fit group's own
nested, buffered CV (`fitting.solve_layer`: the same folds, alphas, fits and per-fold training-row
z-scoring as every layer) and scored like a layer (`tables.group_scores`, combined over stories
by `aggregate.combine`). Its grid carries the layer label "nuisance"; its rows are nuisance.csv
(`results.SCORE_COLUMNS`, then `COMPARE_COLUMNS`: the language model's cross-validated best layer
and score for the same story, unit, region and hemisphere from best_layer.csv, and by how much it
is above the baseline). scores.csv is left as it was (its layer column stays integer).
The results are cached beside the layer files (`baseline_path`: the regressors in the name; the
results folder's key leaves `--features.nuisance` out, so adding or dropping the baseline
reuses every finished layer).

With `--features.nuisance-band` every layer is also fitted as a banded ridge of two bands, the
layer's design and the regressors' (`partition.solve_partition_layer`: per-target band weights
on `partition.gammas()` and alpha by the same nested CV, and each band alone), and the layer's
unique variance beyond the regressors, R2(both) - R2(regressors alone), is reported with the
other components per layer, region, hemisphere and subject (nuisance_partition.csv, the rows
of `partition.partition_rows` with components `BAND_COMPONENTS`).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import xarray as xr

from .. import results
from ..features.nuisance import nuisance_design
from ..gains import paired_change
from ..fingerprint import bytes_digest
from ..results import WHOLE
from . import aggregate, conditions, delays, partition, story_level, store, tables
from .fitting import Group, solve_layer
from .inputs import Selection

LABEL = "nuisance"   # the layer label of the baseline's rows
COMPARE_COLUMNS = ("model_cv_layer", "model_cv_score", "above_baseline", "above_ci_low", "above_ci_high", "above_p")
BANDS = ("layer", LABEL)
BAND_COMPONENTS = partition.component_names(BANDS)  # unique_nuisance, unique_layer, shared, r2_both, r2_layer, ...


def design(sel: Selection, opts, trim_start: int = 0) -> np.ndarray:
    """(N, regressors * delays) the baseline's design over the selection's stories, each built on
    its reference scan's TRs and cut to the story minus `trim_start`, as `design.layer_design`."""
    parts = []
    for s in sel.stories:
        x = nuisance_design(s.transcript, s.audio_onset, s.scan_trs, s.tr, opts.nuisance, opts.downsample,
                            delays.story_delays(opts, s.tr), s.name)
        parts.append(x[s.onset_tr + trim_start:])
    return np.concatenate(parts, 0).astype(np.float32)


def baseline_path(g: Group, names):
    return g.folder / f"{LABEL}-{'+'.join(names)}.npz"


def missing_designs(cfg):
    """group -> {baseline file: design} when --features.nuisance names regressors and the group's
    baseline is not cached: `fitting.fit_layers` solves it in its pass over the BOLD."""
    names = tuple(cfg.features.nuisance)

    def missing(g: Group) -> dict:
        if not names or _cached(g, names) is not None:
            return {}
        return {baseline_path(g, names): design(g.sel, cfg.features, cfg.data.trim_start)}
    return missing


def _cached(g: Group, names):
    got = store.load(baseline_path(g, names), store.LAYER_FIELDS)
    shape = (len(g.fit.folds.outer), g.fit.fits(g.bold), g.bold.n_vertices)
    return got if got is not None and got["r_folds"].shape == shape else None


def fit_baselines(cfg, groups: list[Group]) -> dict | None:
    """{group name: the baseline's results (as a layer's: r_folds, alpha_idx, ...)}, from the cache
    or fitted; None without --features.nuisance."""
    names = tuple(cfg.features.nuisance)
    if not names:
        return None
    out = {}
    for g in groups:
        path = baseline_path(g, names)
        got = _cached(g, names)
        if got is None:
            if cfg.aggregate:
                raise FileNotFoundError(f"--aggregate: the low-level baseline of {g.name} is missing ({path}); run its "
                                        "job first, or pass --features.nuisance with no names")
            got = solve_layer(design(g.sel, cfg.features, cfg.data.trim_start), g.bold, g.fit, cfg.progress,
                              f"{g.name} {LABEL}: vertex chunks")
            store.save(path, **got)
        out[g.name] = got
    return out


@dataclasses.dataclass
class Baseline:
    stories: tuple[xr.Dataset, ...]   # each group's grid (layer "nuisance")
    scores: xr.Dataset                # the grid the summary reads (combined over groups when several)
    rows: list[dict]                  # nuisance.csv
    summary: dict                     # run.json / scores.json "nuisance"


def baseline(cfg, groups: list[Group], fitted: dict, regs_of, best: xr.Dataset, summary: dict) -> Baseline:
    """The baseline's grids (scored as a layer), rows and summary, against the run's best-layer grid
    `best` and its summary (`tables.summary`)."""
    grids = []
    for g in groups:
        subjects = g.sel.subjects if g.fit.per_subject else ()
        ds = tables.group_scores([0], {0: fitted[g.name]}, g.ceiling, g.fit.alphas, subjects, regs_of(g),
                                 cfg.ceiling.min_ceiling, cfg.report.n_boot, cfg.report.ci, cfg.seed, story=g.name)
        grids.append(story_level.with_story_info(ds, g.bold.n_rows, g.sel.subjects, g.sel.story_name))
    if len(grids) == 1:
        scores = grids[0]
    else:
        scores = aggregate.combine([(ds, g.bold.n_rows, g.sel.subjects) for ds, g in zip(grids, groups)],
                                   cfg.report.n_boot, cfg.report.ci, cfg.seed, cfg.ceiling.min_ceiling,
                                   [g.sel.story_name for g in groups])   # a story's condition groups: one story
    label = lambda ds: ds.assign_coords(layer=[LABEL])  # noqa: E731
    grids, scores = tuple(label(ds) for ds in grids), label(scores)
    shown = grids if len(grids) == 1 else grids + (scores,)
    tested = margin(best, grids, scores, cfg.report.n_boot, cfg.report.ci, cfg.seed)
    rows = [r | compare(r, best, tested) for ds in shown for r in results.to_rows(ds)]
    return Baseline(grids, scores, rows, baseline_summary(cfg.features.nuisance, scores, summary, tested))


def margin(best: xr.Dataset, grids, scores: xr.Dataset, n_boot: int, ci: float, seed: int) -> dict:
    """{(region, hemi): (CI low, CI high, p)} of the headline's margin above the baseline, each
    subject paired with itself: its CV best-layer score minus its baseline score. One story: the
    subject bootstrap and sign-flip p of every F (`gains.paired_change`); several: the two-level
    CI and p over stories and subjects (`story_level.paired_two_level`, from each subject's CV
    score per story, best_layer attrs `cv_by_story`). {} without per-subject fits."""
    subjects = results.fit_units(best, results.SUBJECT)["unit"].values.tolist()
    if not subjects:
        return {}
    rr, hh = np.nonzero(best["present"].values)
    pairs = [(str(best["region"].values[r]), str(best["hemi"].values[h])) for r, h in zip(rr, hh)]
    by_story = best.attrs.get("cv_by_story")
    if by_story is None:
        new = np.stack([best["cv_score"].sel(unit=subjects, region=r, hemi=h).values for r, h in pairs], -1)
        base = _own_scores(scores, subjects, pairs)
        st = paired_change(base, new, n_boot, ci, seed)
        lo, hi, p = st["change_ci_low"], st["change_ci_high"], st["p"]
    else:
        new, w = by_story
        base, w_base, _ = conditions.by_story(np.stack([_own_scores(ds, subjects, pairs) for ds in grids], -1),
                                              [ds.attrs["weight"] for ds in grids],
                                              [ds.attrs["stimulus"] for ds in grids])
        if base.shape != new.shape or not np.allclose(w, w_base):
            raise ValueError(f"the baseline's per-story scores {base.shape} (weights {list(w_base)}) do not match the "
                             f"best layer's {new.shape} (weights {list(w)})")
        # the estimate is the headline's, as above_baseline: the mean CV score minus the baseline's mean
        change = np.array([float(best["cv_score"].sel(unit=results.ALL, region=r, hemi=h))
                           - float(scores["score"].sel(unit=results.ALL, layer=LABEL, region=r, hemi=h))
                           for r, h in pairs])
        two = story_level.paired_two_level(base, new, w, dict(change=change, relative=np.full_like(change, np.nan)),
                                           n_boot, ci, seed)
        lo, hi, p = two["change_ci_low"], two["change_ci_high"], two["p"]
    return {pair: (float(a), float(b), float(c)) for pair, a, b, c in zip(pairs, lo, hi, p)}


def _own_scores(ds: xr.Dataset, subjects, pairs) -> np.ndarray:
    """(S, X) each subject's own baseline score on the (region, hemi) pairs; NaN where it has none."""
    own = results.fit_units(ds, results.SUBJECT)
    at = own["score"].sel(layer=LABEL).reindex(unit=list(subjects))
    return np.stack([at.sel(region=r, hemi=h).values for r, h in pairs], -1).astype(np.float64)


def compare(row: dict, best: xr.Dataset, tested: dict | None = None) -> dict:
    """`COMPARE_COLUMNS` of one baseline row: the model's CV best layer and score of the same story,
    unit, region and hemisphere (best_layer.csv), and that score minus the baseline's; NaN (layer
    -1) where best_layer.csv has no such row (a single story's rows of a run combining several).
    A difference of two estimates, with no interval of its own: read it beside both CIs."""
    none = dict(model_cv_layer=-1, model_cv_score=np.nan, above_baseline=np.nan, above_ci_low=np.nan,
                above_ci_high=np.nan, above_p=np.nan)
    if "story" in best.coords and str(best["story"].values) != row["story"]:
        return none
    try:
        at = best.sel(unit=row["subject"], region=row["region"], hemi=row["hemi"])
    except KeyError:
        return none
    if not bool(at["present"]):
        return none
    model = float(at["cv_score"])
    lo, hi, p = (tested or {}).get((row["region"], row["hemi"]), (np.nan,) * 3) if row["subject"] == results.ALL \
        else (np.nan,) * 3
    return dict(model_cv_layer=int(at["cv_layer"]), model_cv_score=model, above_baseline=model - float(row["score"]),
                above_ci_low=lo, above_ci_high=hi, above_p=p)


def baseline_summary(names, scores: xr.Dataset, summary: dict, tested: dict | None = None) -> dict:
    """The whole-brain headline of the baseline, read as `tables.summary` reads a layer's, and the
    run's CV best score above it (with `margin`'s CI and p where there are per-subject fits)."""
    at = scores.sel(unit=results.headline_unit(summary["fit"]), region=summary["region"], hemi=summary["hemi"],
                    layer=LABEL)
    score = float(at["score"])
    return dict(regressors=list(names), score=score, ci=[float(at["ci_low"]), float(at["ci_high"])],
                ceiling=float(at["ceiling"]), above_baseline=summary["cv_best_score"] - score,
                above_ci=list((tested or {}).get((summary["region"], summary["hemi"]), (np.nan,) * 3)[:2]),
                above_p=(tested or {}).get((summary["region"], summary["hemi"]), (np.nan,) * 3)[2])


def summary_line(s: dict) -> str:
    """One line of summary.txt: the baseline's whole-brain score and the CV best layer above it."""
    ci = "" if not np.isfinite(s["ci"][0]) else f" (95% CI {s['ci'][0]:.3f}..{s['ci'][1]:.3f})"
    above = s.get("above_ci", [np.nan])
    test = "" if not np.isfinite(above[0]) else \
        f" (95% CI {above[0]:.3f}..{above[1]:.3f}, paired over subjects, p = {s['above_p']:.3g})"
    return (f"low-level baseline ({', '.join(s['regressors'])}, same delays and CV): r = {s['score']:.3f}{ci} over "
            f"{WHOLE}; the CV best layer is above the low-level baseline by {s['above_baseline']:.3f}{test} "
            "(nuisance.csv: per region)")


def band_path(g: Group, names, layer: int):
    digest = bytes_digest([partition.gammas().tobytes()], 8)  # another grid: another file
    return g.folder / f"{LABEL}-band-{'+'.join(names)}-{digest}-layer-{layer:03d}.npz"


def fit_bands(cfg, groups: list[Group], feats_of) -> dict:
    """{(group name, layer): partition arrays (`partition.fit_partitions`)} of every layer's
    design beside the regressors' band, from the cache or fitted (features through `feats_of`,
    only when one is missing)."""
    names = tuple(cfg.features.nuisance)
    return partition.fit_partitions(cfg, groups, feats_of, path_of=lambda g, layer: band_path(g, names, layer),
                                    second_band=lambda g: design(g.sel, cfg.features, cfg.data.trim_start),
                                    what=f"{LABEL} band", option="--features.nuisance-band")


def band_rows(cfg, groups: list[Group], parts: dict, regs_of) -> list[dict]:
    """nuisance_partition.csv: `partition.partition_rows` of the layer and regressor bands."""
    return partition.partition_rows(groups, parts, regs_of, cfg.report.n_boot, cfg.report.ci, cfg.seed, BANDS)


def band_summary_line(rows: list[dict], ci: float) -> str:
    return partition.summary_line(rows, ci, "unique_layer", "each layer beyond the low-level regressors")
