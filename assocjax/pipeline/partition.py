"""`--augment.partition`: what the associations explain beyond the plain story (timed mode).

Timed mode's design has two bands side by side (`design.layer_design`): the heard words'
features ("plain") and the inserted words' features at their anchors' times ("associations").
Each scored layer is fitted as a banded ridge of the two (`ridge.banded`: one scaling per band
on a grid of the simplex times the alphas, chosen per target by the run's own nested, buffered
CV), and as each band alone, with the same folds. Per target (every subject's fit and the
subject-mean fit at every vertex), held-out R^2 per outer fold gives

    unique associations = R2(both) - R2(plain)       (what the associations add beyond the story)
    unique plain        = R2(both) - R2(associations)
    shared              = R2(plain) + R2(associations) - R2(both)

averaged over folds and over each region's vertices, then over subjects with the headline's CI
(`best_layer.subject_ci`): the subject bootstrap (over listeners of these stories), or with
several stories fitted one by one the two-level one over stories, then subjects (a subject's
value is then its stories' mean weighted by TRs).
Each scored layer gets its own partition (the layer axis is kept, as in scores.csv). Results
are cached per layer beside the layer files; vertices stream in chunks sized by the memory
budget (`ridge.banded.partition_target_bytes`), as the plain ridge does.
"""
from __future__ import annotations

from functools import partial

import numpy as np

from .. import rois
from ..fingerprint import bytes_digest
from ..ridge import banded, chunks
from . import budget as budget_mod
from . import store, tables
from .best_layer import subject_ci
from .conditions import several_stories
from .design import layer_design
from .fitting import Fitting, Group

BANDS = ("plain", "associations")
GAMMA_STEPS = 10
"""The band weights tried: every multiple of 1/GAMMA_STEPS on the simplex (11 for two bands)."""
COMPONENTS = ("unique_associations", "unique_plain", "shared", "r2_both", "r2_plain", "r2_associations")


def component_names(bands=BANDS) -> tuple[str, ...]:
    """The components of two bands (a, b) in `COMPONENTS`' order: unique_b, unique_a, shared,
    r2_both, r2_a, r2_b (the low-level band's partition names them too: `pipeline.nuisance`)."""
    a, b = bands
    return (f"unique_{b}", f"unique_{a}", "shared", "r2_both", f"r2_{a}", f"r2_{b}")
FIELDS = ("r2_both", "r2_without", "gamma_idx")


def gammas() -> np.ndarray:
    return banded.simplex_grid(len(BANDS), GAMMA_STEPS)


def partition_path(g: Group, layer: int):
    digest = bytes_digest([gammas().tobytes()], 8)  # another grid: another file
    return g.folder / f"partition-{digest}-layer-{layer:03d}.npz"


def solve_partition_layer(x_NP: np.ndarray, bold, fit: Fitting, progress: bool = False, desc: str = "",
                          widths: tuple[int, int] | None = None) -> dict:
    """One layer's partition over every fit and kept vertex: r2_both (K, F, V), r2_without
    (2, K, F, V) (without the first band, without the second: plain, associations), gamma_idx
    (K, F, V) of the joint model, and the chunk width; streamed like `fitting.solve_layer`.
    widths: the two bands' columns (unset: two equal halves, the timed design)."""
    if widths is None and x_NP.shape[1] % 2:
        raise ValueError(f"--augment.partition: the timed design has {x_NP.shape[1]} columns, not two equal bands")
    band = banded.band_columns(widths or [x_NP.shape[1] // 2] * 2)
    plan = banded.prepare_partition(x_NP, band, fit.folds, fit.alphas, gammas(), target_runs_N=fit.runs)
    tile = chunks.cpu_tile()
    mesh = chunks.target_mesh()
    n_dev = mesh.size if mesh is not None else 1
    n, f, v = bold.n_rows, fit.fits(bold), bold.n_vertices
    per, fixed = banded.partition_target_bytes(plan, tile)
    layout = chunks.chunk_layout(v, budget_mod.chunk_targets(fit.budget, per, fixed, n, fit.target_chunk, tile, n_dev),
                                 per_item=f, n_devices=n_dev, tile=tile)
    solve = partial(banded.solve_partition, chunks.replicate(plan, mesh), tile=layout.tile)
    read = lambda a, b: bold.chunk(a, b, fit.runs, fit.per_subject).reshape(n, -1)  # noqa: E731  (N, F * Vc)
    k = len(fit.folds.outer)
    both = np.full((k, f, v), np.nan, np.float32)
    without = np.full((2, k, f, v), np.nan, np.float32)
    gamma_idx = np.zeros((k, f, v), np.uint16)
    for (a, b, used), got in chunks.stream(solve, read, layout, mesh, progress=progress, desc=desc, leave=False):
        both[:, :, a:b] = got.r2_full_KT[:, :used].reshape(k, f, b - a)
        without[:, :, :, a:b] = got.r2_without_BKT[:, :, :used].reshape(2, k, f, b - a)
        gamma_idx[:, :, a:b] = got.gamma_idx_KT[:, :used].reshape(k, f, b - a)
    return dict(r2_both=both, r2_without=without, gamma_idx=gamma_idx, chunk_vertices=np.asarray(layout.items),
                target_bytes=np.asarray([per, fixed]))


def fit_partitions(cfg, groups: list[Group], feats_of, path_of=None, second_band=None, what: str = "partition",
                   option: str = "--augment.partition") -> dict:
    """{(group name, layer): partition arrays} for every group and scored layer, from the
    cache where there, else fitted (word features through `feats_of`, only when needed). The
    bands: the timed design's two halves, or with `second_band(group)` -> (N, P2) the layer's
    design and that one (`nuisance.fit_bands`); `path_of(group, layer)`: the cache file."""
    path_of = path_of or partition_path
    out, todo = {}, []
    for g in groups:
        for layer in g.sel.layers:
            got = store.load(path_of(g, layer), FIELDS)
            if got is not None and got["r2_both"].shape == (len(g.fit.folds.outer), g.fit.fits(g.bold), g.bold.n_vertices):
                out[g.name, layer] = got
            else:
                todo.append((g, layer))
    if todo and cfg.aggregate:
        missing = ", ".join(f"{g.name} layer {layer}" for g, layer in todo)
        raise FileNotFoundError(f"--aggregate: {option} results missing for {missing}; run the jobs with "
                                f"{option} first, or drop --aggregate to compute them here")
    if todo:
        feats = feats_of(list({id(g): g for g, _ in todo}.values()))
        for g, layer in todo:
            x = layer_design([feats[s.name] for s in g.sel.stories], g.sel, layer, cfg.features, cfg.data.trim_start)
            widths = None
            if second_band is not None:
                z = second_band(g)
                x, widths = np.concatenate([x, z], axis=1), (x.shape[1], z.shape[1])
            got = solve_partition_layer(x, g.bold, g.fit, cfg.progress, f"{g.name} layer {layer}: {what}", widths)
            store.save(path_of(g, layer), **got)
            out[g.name, layer] = got
    return out


def components(part: dict, bands=BANDS) -> dict[str, np.ndarray]:
    """Fold-mean held-out R^2 pieces per fit and vertex (F, V), keyed by `component_names(bands)`
    (COMPONENTS for the timed design's bands)."""
    both = tables.fold_mean(part["r2_both"])
    # r2_without[b]: the model without band b, i.e. the other band alone
    b_alone, a_alone = (tables.fold_mean(w) for w in part["r2_without"])
    values = (both - a_alone, both - b_alone, a_alone + b_alone - both, both, a_alone, b_alone)
    return dict(zip(component_names(bands), values))


def partition_rows(groups: list[Group], parts: dict, regs_of, n_boot: int, ci: float, seed: int,
                   bands=BANDS) -> list[dict]:
    """Tidy rows (partition.csv): per layer, region, hemisphere and component, the subjects'
    mean with its bootstrap CI (unit "all"), each subject's value (unit = the subject) and the
    subject-mean fit's value (unit "mean").
    Several groups: a subject's value is the TR-weighted mean over the groups it is in."""
    rows = []
    layers = groups[0].sel.layers
    regs = regs_of(groups[0])
    for layer in layers:
        per_group = []
        for g in groups:
            masks = np.stack([m for _, _, m in regs_of(g)]).astype(float)
            comps = components(parts[g.name, layer], bands)
            per_group.append({c: rois.region_means(v, masks) for c, v in comps.items()})  # (F, R)
        subjects = sorted({s for g in groups if g.fit.per_subject for s in g.sel.subjects})
        weights = np.array([g.bold.n_rows for g in groups], np.float64)
        for c in component_names(bands):
            mean_fit = _weighted([pg[c][-1] for pg in per_group], weights)
            s_vals = np.stack([_subject_value(s, groups, per_group, c, weights) for s in subjects]) if subjects else None
            if s_vals is not None and len(subjects) > 1:
                stories = (several_stories(_by_story(subjects, groups, per_group, c), weights,
                                           [g.sel.story_name for g in groups]) if len(groups) > 1 else None)
                mean, lo, hi, n_sub = subject_ci(s_vals, n_boot, ci, seed, stories)
            else:
                mean = lo = hi = np.full(len(regs), np.nan)
                n_sub = np.zeros(len(regs), int)
            for i, (region, hemi, _) in enumerate(regs):
                base = dict(story="all" if len(groups) > 1 else groups[0].name, layer=layer, region=region, hemi=hemi,
                            component=c)
                rows.append(base | dict(unit="all", value=mean[i], ci_low=lo[i], ci_high=hi[i], n_subjects=int(n_sub[i])))
                rows += [base | dict(unit=s, value=s_vals[j, i], ci_low=np.nan, ci_high=np.nan, n_subjects=1)
                         for j, s in enumerate(subjects)]
                rows.append(base | dict(unit="mean", value=mean_fit[i], ci_low=np.nan, ci_high=np.nan, n_subjects=0))
    return rows


def _by_story(subjects, groups, per_group, component) -> np.ndarray:
    """(S, R, G) each subject's value per group (story), NaN where the subject was not fitted there."""
    out = np.full((len(subjects), per_group[0][component].shape[-1], len(groups)), np.nan)
    for k, (g, pg) in enumerate(zip(groups, per_group)):
        if g.fit.per_subject:
            for j, s in enumerate(subjects):
                if s in g.sel.subjects:
                    out[j, :, k] = pg[component][list(g.sel.subjects).index(s)]
    return out


def _weighted(values_GR, weights_G) -> np.ndarray:
    v = np.stack(values_GR).astype(np.float64)
    ok = np.isfinite(v)
    w = weights_G[:, None] * ok
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(ok, v, 0.0) * weights_G[:, None]).sum(0) / w.sum(0)


def _subject_value(subject, groups, per_group, component, weights) -> np.ndarray:
    """(R,) one subject's value: TR-weighted over the groups it was fitted in."""
    vals, ws = [], []
    for g, pg, w in zip(groups, per_group, weights):
        if g.fit.per_subject and subject in g.sel.subjects:
            vals.append(pg[component][list(g.sel.subjects).index(subject)])
            ws.append(w)
    return _weighted(vals, np.asarray(ws))


def summary_line(rows: list[dict], ci: float, component: str = "unique_associations",
                 what: str = "the associations beyond the plain story") -> str:
    """One line: a component (the associations' unique variance) over all vertices at each layer
    (subjects' mean and CI where there are several subjects, else the subject-mean fit)."""
    whole = [r for r in rows if r["component"] == component and r["region"] == tables.WHOLE]
    hemi = "both" if any(r["hemi"] == "both" for r in whole) else whole[0]["hemi"]
    pick = [r for r in whole if r["hemi"] == hemi]
    unit = "all" if any(r["unit"] == "all" and np.isfinite(r["value"]) for r in pick) else "mean"
    parts = []
    for r in (r for r in pick if r["unit"] == unit):
        interval = f" [{r['ci_low']:.4f}, {r['ci_high']:.4f}]" if unit == "all" else ""
        parts.append(f"layer {r['layer']}: {r['value']:.4f}{interval}")
    fit = f"subjects' mean, {ci:.0%} CI" if unit == "all" else "subject-mean fit"
    return f"unique variance of {what} (held-out R^2, {fit}): " + ", ".join(parts)
