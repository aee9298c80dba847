"""Base models of another architecture or depth against --model.path: each at its own best layer.

M = (R(tuned) - R(base)) / R(base) pairs layer i of one model with layer i of the other, which
means something only when both are the same network before and after tuning. A 2-block GPT-2
and a 3-block LLaMA have no common layer i. When a --compare.models entry differs from
--model.path in architecture (`ModelConfig.arch`) or number of blocks, `compare` computes no M
for it (a warning says so) and this module compares, per region and hemisphere:

    each model's cross-validated best score (`best_layer`: per subject, the layer chosen on the
        subject's other outer folds, scored on the held-out fold) and the layer most often chosen,
        also as relative depth = layer / number of blocks (0 = embeddings, 1 = the last block);
    the paired per-subject difference new - base of those scores (the same subjects and stories),
        with the subject-bootstrap CI and sign-flip p of `gains.paired_change` (with several stories
        fitted one by one: the two-level CI and p over stories, then subjects, of `story_level`),
        BH q over the region x hemisphere rows of one comparison.

One row per model pair and region x hemisphere (kind "depth"), not per layer: models.csv
(`results.to_rows`, `results.DEPTH_COLUMNS`), lines in gains.txt, and layer_depth.png: every
model's headline layer curve against relative depth, one panel per region.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from .. import results
from ..gains import paired_change
from ..io import write_csv
from ..stats import bh_fdr
from . import best_layer, story_level, tuned

KIND = "depth"


def model_config(run):
    """The architecture of the model(s) a run scored with (`tuned.resolve`)."""
    return tuned.resolve(str(run.model_path)).cfg


def other_architectures(base_run, runs: dict, names) -> dict[str, str]:
    """name -> a warning, for each of `names` whose model differs from the base run's in
    architecture or number of blocks (no M for those; they are compared at their best layers)."""
    base = model_config(base_run)
    out = {}
    for name in names:
        new = model_config(runs[name])
        if (new.arch, new.n_layers) != (base.arch, base.n_layers):
            out[name] = (f"--compare.models {name}: {new.arch} with {new.n_layers} blocks against --model.path's "
                         f"{base.arch} with {base.n_layers}: layer i of one is not layer i of the other, so M is not "
                         "computed across architectures; each model is scored at its own cross-validated best layer "
                         "(models.csv, layer_depth.png)")
    return out


def _matrix(best: xr.Dataset, units, pairs, var: str) -> np.ndarray:
    """(units, pairs) of one best-layer variable, NaN where a unit or pair is absent."""
    a = best[var].reindex(unit=units)
    return np.stack([a.sel(region=r, hemi=h).values for r, h in pairs], -1) if pairs else np.zeros((len(units), 0))


def depth_change(base, new, comparison: str, opts, n_boot: int, ci: float, seed: int) -> xr.Dataset:
    """The depth grid of one comparison (dims comparison, region, hemi; `results.DEPTH_COLUMNS`):
    `new` run against `base` run at their cross-validated best layers (module doc)."""
    b_best, n_best = base.best, new.best
    present = b_best["present"]
    rr, hh = np.nonzero(present.values)
    pairs = [(str(b_best["region"].values[r]), str(b_best["hemi"].values[h])) for r, h in zip(rr, hh)]
    subjects = results.fit_units(b_best, results.SUBJECT)["unit"].values.tolist()
    unit = results.ALL if subjects else results.MEAN
    depth = {k: model_config(run).n_layers for k, run in (("base", base), ("new", new))}
    out = {}
    for side, best in (("base", b_best), ("new", n_best)):
        layer = _matrix(best, [unit], pairs, "cv_layer")[0]
        out[f"{side}_layer"] = layer.astype(np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"{side}_depth"] = np.where(layer >= 0, layer / depth[side], np.nan)
    if subjects:
        st = paired_change(_matrix(b_best, subjects, pairs, "cv_score"), _matrix(n_best, subjects, pairs, "cv_score"),
                           n_boot, ci, seed, opts.n_perm, opts.min_base)
        st |= _two_level(b_best, n_best, st, n_boot, ci, seed)
        q = bh_fdr(st["p"])
        out |= {k: st[k] for k in ("n_subjects", "base", "new", "change", "change_ci_low", "change_ci_high", "p")}
        out |= dict(q=q, significant=q < opts.fdr)
    else:   # the subject-mean fits: one score each, no statistics
        b, n = _matrix(b_best, [unit], pairs, "cv_score")[0], _matrix(n_best, [unit], pairs, "cv_score")[0]
        nan = np.full_like(b, np.nan)
        out |= dict(n_subjects=np.ones(len(pairs), np.int64), base=b, new=n, change=n - b, change_ci_low=nan,
                    change_ci_high=nan, p=nan, q=nan, significant=np.zeros(len(pairs), bool))
    shape = present.shape
    data = {}
    for k, v in out.items():
        v = np.asarray(v)
        fill = False if v.dtype == bool else -1 if v.dtype.kind == "i" else np.nan
        grid = np.full(shape, fill, v.dtype)
        grid[rr, hh] = v
        data[k] = (("region", "hemi"), grid)
    data["present"] = present.variable
    ds = xr.Dataset(data, coords=dict(region=b_best["region"].values, hemi=b_best["hemi"].values))
    return ds.expand_dims(comparison=[comparison]).assign_coords(
        kind=("comparison", [KIND]), base_model=("comparison", [_label(base)]), new_model=("comparison", [_label(new)]))


def _two_level(b_best: xr.Dataset, n_best: xr.Dataset, st: dict, n_boot: int, ci: float, seed: int) -> dict:
    """With several stories: the CI and p of the paired change from the two-level bootstrap over
    each subject's CV score per story (`best_layer` attrs `cv_by_story`; `stats.two_level_ci_p`,
    t with stories - 1 df), as every F / M of `story_level`; {} with one story."""
    b_by, n_by = b_best.attrs.get("cv_by_story"), n_best.attrs.get("cv_by_story")
    if b_by is None or n_by is None:
        return {}
    (b, w), (n, w_new) = b_by, n_by
    if b.shape != n.shape or not np.array_equal(w, w_new):
        raise ValueError(f"the two models scored other stories or subjects: CV scores {b.shape} and {n.shape}, "
                         f"story weights {list(w)} and {list(w_new)}")
    two = story_level.paired_two_level(b, n, w, st, n_boot, ci, seed)
    return {k: two[k] for k in ("change_ci_low", "change_ci_high", "p")}


def _label(run) -> str:
    cfg = model_config(run)
    return f"{Path(run.model_path).name} ({cfg.arch}, {cfg.n_layers} blocks)"


def compare_depths(runs: dict, baseline: str, names, cfg) -> tuple[xr.Dataset | None, list[str]]:
    """(the depth grid of every comparison, None when no model differs; the warnings): each model
    of another architecture or depth against the baseline, and each pair of them."""
    notes = other_architectures(runs[baseline], runs, names)
    for note in notes.values():
        warnings.warn(note, stacklevel=3)
    deep = list(notes)
    if not deep:
        return None, []
    r = cfg.report
    pairs = [(baseline, n) for n in deep] + [(b, a) for i, a in enumerate(deep) for b in deep[i + 1:]]
    parts = [depth_change(runs[b], runs[a], f"{a} vs {b}", cfg.compare, r.n_boot, r.ci, cfg.seed) for b, a in pairs]
    return xr.concat(parts, "comparison"), list(notes.values())


def summary_text(depth: xr.Dataset, fdr: float) -> str:
    """Per depth comparison: each model's best layer (relative depth) and the change per region."""
    lines = []
    for comp in depth["comparison"].values.tolist():
        g = depth.sel(comparison=comp)
        hemi = "both" if "both" in g["hemi"].values and bool(g["present"].sel(hemi="both").any()) else \
            str(g["hemi"].values[0])
        at = g.sel(hemi=hemi)
        regions = [str(r) for r, p in zip(at["region"].values, at["present"].values) if p]
        lines.append(f"{comp} [{KIND}]: {g['new_model'].item()} vs {g['base_model'].item()}, each at its cross-validated "
                     f"best layer (M is not computed across architectures), hemisphere {hemi}:")
        for region in regions:
            v = at.sel(region=region)
            ci = "" if np.isnan(float(v["change_ci_low"])) else \
                f" [{float(v['change_ci_low']):+.4f}, {float(v['change_ci_high']):+.4f}] q={float(v['q']):.3g}"
            star = " *" if bool(v["significant"]) else ""
            lines.append(f"  {region:<16} base layer {int(v['base_layer'])} (depth {float(v['base_depth']):.2f}) "
                         f"{float(v['base']):.4f}, new layer {int(v['new_layer'])} (depth {float(v['new_depth']):.2f}) "
                         f"{float(v['new']):.4f}: {float(v['change']):+.4f}{ci}{star}")
        lines.append(f"  (* q < {fdr})")
    return "\n".join(lines)


def write(stage: Path, depth: xr.Dataset, runs: dict, baseline: str, figures: bool) -> list[Path]:
    """models.csv and, with figures, layer_depth.png."""
    files = [write_csv(stage / "models.csv", results.to_rows(depth))]
    if figures:
        from ..plots import plot_depth_curves

        names = [baseline] + [n for n in dict.fromkeys(c.split(" vs ")[0] for c in depth["comparison"].values.tolist())]
        curves = {n: (runs[n].scores, best_layer.headline(runs[n].best), model_config(runs[n]).n_layers) for n in names}
        files.append(plot_depth_curves(curves, stage / "layer_depth.png",
                                       title="each model's headline score against relative depth"))
    return files
