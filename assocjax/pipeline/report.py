"""Files a run leaves in --output: tables, score maps, figures, and the printed summary."""
from __future__ import annotations

import gzip
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import xarray as xr

from .. import results
from ..io import atomic_write_bytes, write_csv, write_json
from ..outputs import disk_full
from ..results import WHOLE
from . import ceilings, grid_edges
from .bold import Bold

MAP_ARRAYS = ("r", "ceiling_max_r", "normalized")


def clean_nans(x):
    """NaN -> None, so the JSON is standard (CSV writes the same values as 'nan')."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: clean_nans(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean_nans(v) for v in x]
    return x


def write_tables(out: Path, grids, summary: dict, best: xr.Dataset) -> list[Path]:
    """scores.csv and scores.json: the rows of every score grid (`results.to_rows`), in turn;
    best_layer.csv: the rows of the best-layer grid of the grid the summary reads (`best_layer`)."""
    rows = [r for ds in grids for r in results.to_rows(ds)]
    return [write_csv(out / "scores.csv", rows), write_json(out / "scores.json", clean_nans(dict(summary=summary, rows=rows))),
            write_csv(out / "best_layer.csv", results.to_rows(best))]


def full(values_XV: np.ndarray, keep_V: np.ndarray) -> np.ndarray:
    """Kept-vertex values back on every vertex of the space (NaN elsewhere)."""
    out = np.full(values_XV.shape[:-1] + keep_V.shape, np.nan, np.float32)
    out[..., keep_V] = values_XV
    return out


def write_maps(out: Path, bold: Bold, layer: int, maps_XV: np.ndarray) -> list[Path]:
    """The subject-mean fit's maps of one layer (rows of MAP_ARRAYS): GIfTI per hemisphere
    for surfaces, one 4-D NIfTI (a volume per map) for volumes."""
    if bold.brain_mask is not None:
        vol = np.full(bold.brain_mask.shape + (len(maps_XV),), np.nan, np.float32)
        vol[bold.brain_mask] = maps_XV.T
        img = nib.Nifti1Image(vol, bold.affine)
        return [atomic_write_bytes(out / "maps" / f"layer-{layer:03d}_score.nii.gz", gzip.compress(img.to_bytes(), mtime=0))]
    paths, start = [], 0
    for hemi, n in zip(bold.hemis, bold.hemi_sizes):
        structure = {"L": "CortexLeft", "R": "CortexRight"}[hemi]
        arrays = [nib.gifti.GiftiDataArray(m[start:start + n].astype(np.float32), intent="NIFTI_INTENT_NONE",
                                           datatype="NIFTI_TYPE_FLOAT32", meta={"Name": name})
                  for name, m in zip(MAP_ARRAYS, maps_XV)]
        img = nib.gifti.GiftiImage(meta=nib.gifti.GiftiMetaData({"AnatomicalStructurePrimary": structure}),
                                   darrays=arrays)
        paths.append(atomic_write_bytes(out / "maps" / f"layer-{layer:03d}_hemi-{hemi}_score.func.gii", img.to_bytes()))
        start += n
    return paths


def write_figures(out: Path, scores: xr.Dataset, summary: dict, best_map_V: np.ndarray, bold: Bold,
                  title: str) -> tuple[list[Path], str | None]:
    """Layer curve, region bars at the best layer, and the best layer's surface map, via
    assocjax.plots; (paths written, a note when figures were skipped)."""
    try:
        from .. import plots
    except ImportError as e:
        return [], f"figures skipped: assocjax.plots is not available ({e})"
    try:
        return _figures(plots, out, scores, summary, best_map_V, bold, title), None
    except Exception as e:  # the tables and maps are written already; a plotting bug must not lose the run
        if disk_full(e):
            raise  # not a plotting bug: the run's outputs cannot be written (outputs.OutputFolder says so)
        return [], f"figures failed: {type(e).__name__}: {e}"


def _figures(plots, out, scores, summary, best_map_V, bold, title) -> list[Path]:
    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    fit = results.headline_fit(scores)
    head = results.present_regions(scores.sel(unit=results.headline_unit(fit)), summary["hemi"])
    paths = [figs / "layer_curve.png", figs / "region_bars.png"]
    what = "per-subject fits, mean over subjects (subject-bootstrap CI)" if fit == results.HEADLINE else "subject-mean fit"
    s = summary
    cv = f"CV best layer {s['cv_best_layer']}: r = {s['cv_best_score']:.3f}"
    plots.plot_layer_curve(head, paths[0], title=f"{title}: {what}\n{cv} ({s['region']}; optimistic argmax "
                           f"layer {s['optimistic_layer']}: {s['optimistic_score']:.3f})",
                           best=dict(region=s["region"], layer=s["cv_best_layer"], score=s["cv_best_score"],
                                     ci=s["cv_best_ci"], optimistic=(s["optimistic_layer"], s["optimistic_score"])))
    layer = s["cv_best_layer"]
    plots.plot_region_bars(head.sel(layer=layer), paths[1], title=f"{title}: layer {layer} (CV best layer)")
    if bold.brain_mask is None:
        n = max(bold.hemi_sizes)
        per_hemi = {h: best_map_V[sum(bold.hemi_sizes[:i]):sum(bold.hemi_sizes[:i + 1])] for i, h in enumerate(bold.hemis)}
        values = np.concatenate([per_hemi.get(h, np.full(n, np.nan, np.float32)) for h in "LR"])
        surface = figs / "surface_best_layer.png"
        plots.plot_surface(values, n, surface, title=f"{title}: layer {layer} (CV best layer) r")
        paths.append(surface)  # absent when the mesh is not fsaverage5/6/7: filtered below
    return [p for p in paths if p.is_file()]


def _incomplete(info: dict) -> str:
    """Who lacks data at some vertices (`info["incomplete"]`), said where the headline says "all"."""
    subs = info.get("incomplete") or ()
    if not subs:
        return ""
    who = ", ".join(subs[:5]) + (f" and {len(subs) - 5} more" if len(subs) > 5 else "")
    return f" with data; {who} without data at some, left out there: see the notes"


def summary_text(summary: dict, info: dict) -> str:
    s = summary
    per_subject = s["fit"] == results.HEADLINE
    over = "subjects" if info.get("pooled", True) else "stories and subjects"   # two-level: story_level.py
    ci = lambda lo, hi: "" if lo is None or np.isnan(lo) else f" (95% CI over {over} {lo:.3f}..{hi:.3f})"  # noqa: E731
    what = (f"per-subject fits averaged over {info['n_subjects']} subjects" if per_subject else "subject-mean fit")
    if not info.get("pooled", True):
        what += ("; each story fitted with its own listeners, a subject's score averaged over its stories "
                 "weighted by TRs" if per_subject else "; stories averaged weighted by TRs")
    counts = ", ".join(f"{l}: {c}" for l, c in s["cv_layer_counts"].items())
    unit = "each subject's" if per_subject else "the fit's"
    lines = [
        f"{info['n_layers']} layers of {info['model']} on {info['n_subjects']} subject(s), {info['n_stories']} "
        f"stories ({info['n_trs']} TRs, {info['n_targets']} {info['targets']})",
        f"cross-validated best layer {s['cv_best_layer']}: brain score r = {s['cv_best_score']:.3f}"
        f"{ci(*s['cv_best_ci'])} ({what}, mean over {WHOLE} {info['targets']}{_incomplete(info)}; for each outer "
        f"fold the layer best on {unit} other folds, scored on the held-out fold; layers chosen over the folds: "
        f"{counts})",
        f"ceiling (max r) {s['ceiling']:.3f}, normalized score {s['normalized']:.3f}",
        f"optimistic best layer {s['optimistic_layer']}: r = {s['optimistic_score']:.3f}{ci(*s['optimistic_ci'])} "
        "(the argmax over layers, chosen and scored on the same folds: biased upwards)",
    ]
    if per_subject and np.isfinite(s.get("mean_fit_score", np.nan)):
        lines.append(f"subject-mean fit at layer {s['cv_best_layer']}: r = {s['mean_fit_score']:.3f} "
                     f"(ceiling {s['mean_fit_ceiling']:.3f}; its cross-validated best: {s['mean_fit_cv_score']:.3f})")
    lines.append("per layer: " + ", ".join(f"{l}: {v:.3f}" for l, v in s["layer_scores"].items()))
    if "alpha_grid_edges" in s:
        lines.append(grid_edges.summary_line(s["alpha_grid_edges"]))
    if s.get("ceilings"):
        lines.append(ceilings.summary_line(s["ceilings"]))
    return "\n".join(lines)
