"""`score(config)`: the whole brain-score run behind `scripts/score.py`.

Order: inputs are checked first (`config.check_options`, `inputs.select`), then for every fit
group (a story with its listeners, or the pooled stories) the BOLD is cached vertex-major,
its ceiling computed and each layer's nested ridge fitted or taken from the results cache
(`fitting`); the groups' tables are combined over stories (`aggregate`) and the reports
written. Finished (story, layer) results are saved at once: a killed run resumes there.
"""
from __future__ import annotations

import contextlib
import dataclasses
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from .. import results, rois
from ..augment.lookahead import lookahead_record
from ..ceiling import normalized_score
from ..features import cache as feature_cache
from ..io import atomic_write_text, write_csv, write_json
from ..models import load_pretrained
from ..outputs import OutputFolder
from . import aggregate
from . import bold as bold_mod
from . import budget as budget_mod
from . import (best_layer, ceilings, conditions, grid_edges, nuisance, partition, report, store, story_level, tables,
               tuned, volume_atlas)
from .assets import ensure_builtin, planting
from .bold import Bold
from .config import ScoreConfig, check_options
from .design import word_feats
from .fitting import Group, fit_layers, fitting
from .inputs import Selection, describe, resolve_augmentations, select


@dataclasses.dataclass
class ScoreResult:
    """What a run produced. scores: the score grid the summary reads (`assocjax.results`; combined
    over stories when there are several, story "all"); stories: every story's own grid; `rows` /
    `story_rows`: the same as the tidy rows of scores.csv. r_LV / max_r_V: the subject-mean
    fit's per-vertex score (fold-mean r) of each scored layer and its ceiling, on every vertex of
    the space (TR-weighted over stories; NaN where there is no data). best: the best-layer grid of
    `scores` (`best_layer`; best_layer.csv): the cross-validated best layer per unit, region, hemi."""

    output: Path
    summary: dict
    scores: xr.Dataset
    stories: tuple[xr.Dataset, ...]
    layers: tuple[int, ...]
    r_LV: np.ndarray
    max_r_V: np.ndarray
    computed: dict
    results_dirs: dict
    data_root: Path
    model_path: Path
    manifest: dict | None
    files: list[Path]
    notes: tuple[str, ...]
    best: xr.Dataset | None = None
    nuisance: xr.Dataset | None = None  # the low-level baseline's grid (`pipeline.nuisance`; layer "nuisance")

    @property
    def rows(self) -> list[dict]:
        return results.to_rows(self.scores)

    @property
    def story_rows(self) -> list[dict]:
        return [r for ds in self.stories for r in results.to_rows(ds)]

    @property
    def computed_layers(self) -> tuple[int, ...]:
        """Layers fitted by this run in any story (the rest came from the results cache)."""
        return tuple(sorted({l for ls in self.computed.values() for l in ls}))

    @property
    def reused_layers(self) -> tuple[int, ...]:
        return tuple(l for l in self.layers if l not in self.computed_layers)

    @property
    def results_dir(self) -> Path:
        """The results folder of the only story (group) of the run."""
        if len(self.results_dirs) != 1:
            raise AttributeError(f"{len(self.results_dirs)} stories have their own results folders: see results_dirs")
        return next(iter(self.results_dirs.values()))


def _sources(cfg: ScoreConfig):
    """(data root, model path, default space, built-in manifest or None)."""
    if cfg.data.root is not None:
        if cfg.model.path is None:
            raise ValueError("--data.root needs --model.path: the built-in model only knows the synthetic vocabulary")
        if not Path(cfg.data.root).is_dir():
            raise FileNotFoundError(f"dataset root not found: {cfg.data.root}")
        return Path(cfg.data.root), cfg.model.path, "fsaverage6", None
    if cfg.model.path is not None:
        tuned.resolve(cfg.model.path, cfg.model.hub)  # a bad path fails before the built-in data is generated
    b = ensure_builtin(cfg.synthetic, cfg.cache_dir, cfg.progress)
    return b.root, cfg.model.path or str(b.model), b.space, b.manifest


def _atlas(sel: Selection, bold: Bold) -> rois.Atlas | None:
    if sel.atlas is None:
        return None
    if sel.kind == "volume":  # on the BOLD grid, a label per brain-mask voxel
        return volume_atlas.load(sel.atlas, bold.brain_mask, bold.affine)
    atlas = rois.load_surface_atlas(*sel.atlas)
    if sel.hemi != "both":
        keep = atlas.hemi_V == sel.hemi
        atlas = rois.Atlas(atlas.labels_V[keep], atlas.names, atlas.hemi_V[keep], atlas.source)
    if atlas.labels_V.size != bold.keep_V.size:
        raise ValueError(f"atlas {sel.atlas[0]} has {atlas.labels_V.size} vertices ({sel.hemi}), the data "
                         f"{bold.keep_V.size}")
    return atlas


def _print_notes(notes, most: int = 10) -> None:
    for note in list(notes)[:most]:
        print(f"note: {note}", file=sys.stderr)
    if len(notes) > most:
        print(f"note: ... {len(notes) - most} more in run.json", file=sys.stderr)


def _versions() -> dict:
    import flax
    import nibabel
    import tokenizers
    import transformers

    return dict(python=platform.python_version(), jax=jax.__version__, jaxlib=jax.lib.__version__,
                flax=flax.__version__, numpy=np.__version__, nibabel=nibabel.__version__,
                transformers=transformers.__version__, tokenizers=tokenizers.__version__,
                devices=[str(d) for d in jax.devices()], platform=platform.platform())


def _groups(cfg: ScoreConfig, sel: Selection, augs: dict, budget, by_story: dict[str, Path]) -> list[Group]:
    """Each fit group, with the model that scores its stories (`tuned.assign`), and its results
    folder (keyed by everything that sets its numbers, that model's files included)."""
    out = []
    for g in sel.groups():
        folders = list(dict.fromkeys(by_story[s.name] for s in g.stories))
        if len(folders) > 1:
            raise ValueError(f"stories {g.name} are fitted together (--data.pool-stories) but scored by different "
                             f"models ({', '.join(map(str, folders))}: a cross-fit's folds); fit each story on its "
                             "own (drop --data.pool-stories), or select the stories of one fold")
        g = dataclasses.replace(g, model_folder=folders[0])
        mine = {n: a for n, a in augs.items() if n in {s.name for s in g.stories}}
        key = store.results_key(cfg, g, mine)
        folder = store.results_dir(cfg.cache_dir, key)
        store.write_key(folder, key)  # only when missing or different: a read-only complete cache runs
        out.append(Group(g, folder, key, fitting(cfg, g, budget)))
    return out


def _features(cfg: ScoreConfig, sel: Selection, augs: dict):
    """A function giving, for some fit groups, story name -> word features from each group's
    model (each model loaded once, one at a time, only when called)."""
    def feats_of(groups: list[Group]) -> dict:
        out = {}
        for folder in dict.fromkeys(g.sel.model_folder for g in groups):
            names = {s.name for g in groups if g.sel.model_folder == folder for s in g.sel.stories}
            stories = tuple(s for s in sel.stories if s.name in names)
            part = dataclasses.replace(sel, stories=stories, model_folder=folder)
            model, tok = load_pretrained(folder, dtype=getattr(jnp, cfg.model.dtype))
            feats = word_feats(model, tok, part, cfg.features, feature_cache.CACHE.under(cfg.cache_dir), cfg.progress, augs,
                               cfg.augment.mode)
            out |= {s.name: f for s, f in zip(part.stories, feats)}
            del model
        return out
    return feats_of


@dataclasses.dataclass
class Tables:
    scores: xr.Dataset
    stories: tuple[xr.Dataset, ...]
    summary: dict
    r_LV: np.ndarray
    max_r_V: np.ndarray
    best: xr.Dataset
    ceiling_rows: list = dataclasses.field(default_factory=list)   # ceilings.csv (`pipeline.ceilings`)


def _regions(g: Group, atlas) -> list:
    hemi_V = np.repeat(np.asarray(g.bold.hemis or ("",)), g.bold.hemi_sizes)
    if g.sel.kind == "volume" and atlas is not None:  # a voxel's hemisphere is the atlas's (rois.voxel_hemispheres)
        hemi_V = atlas.hemi_V
    return tables.regions(atlas, hemi_V, g.bold.keep_V)


def _group_scores(cfg: ScoreConfig, g: Group, atlas, several: bool) -> tuple[xr.Dataset, tuple]:
    """(the group's score grid, story = its name; its fold scores for the best layer
    (`best_layer.fold_scores`) with `best_layer.group_units`' listener or None)."""
    regs = _regions(g, atlas)
    subjects = g.sel.subjects if g.fit.per_subject else ()
    ds = tables.group_scores(g.sel.layers, g.results, g.ceiling, g.fit.alphas, subjects, regs,
                             cfg.ceiling.min_ceiling, cfg.report.n_boot, cfg.report.ci, cfg.seed, story=g.name)
    units, alone = best_layer.group_units(g.sel.subjects, g.fit.per_subject, several)
    return ds, (best_layer.fold_scores(g.results, g.sel.layers, units, regs, g.bold.n_rows), alone)


def _tables(cfg: ScoreConfig, sel: Selection, groups: list[Group], atlases) -> Tables:
    """Every group's score grid, the grid the summary reads (combined over groups when several),
    its best-layer grid (`best_layer`: the layer chosen on other outer folds), the summary and the maps."""
    parts = [_group_scores(cfg, g, atlases[g.name], len(groups) > 1) for g in groups]
    weights = [g.bold.n_rows for g in groups]
    story_G = [g.sel.story_name for g in groups]   # a story's listener-condition groups are one story (`conditions`)
    stories = tuple(story_level.with_story_info(ds, w, g.sel.subjects, s)
                    for (ds, _), w, g, s in zip(parts, weights, groups, story_G))
    if len(groups) == 1:
        scores = stories[0]
    else:
        scores = aggregate.combine([(ds, w, g.sel.subjects) for (ds, _), w, g in zip(parts, weights, groups)],
                                   cfg.report.n_boot, cfg.report.ci, cfg.seed, cfg.ceiling.min_ceiling, story_G)
    best = best_layer.best_layers(scores, [f for _, f in parts], cfg.report.n_boot, cfg.report.ci, cfg.seed, story_G)
    summary = tables.summary(scores, best, cfg.ceiling.min_ceiling)
    r_GLV = [report.full(np.stack([tables.fold_mean(g.results[l]["r_folds"])[-1] for l in sel.layers]), g.bold.keep_V)
             for g in groups]
    max_GV = [report.full(g.ceiling["max_r"], g.bold.keep_V) for g in groups]
    ceiling_rows = [r for g in groups for r in ceilings.region_rows(g.name, _regions(g, atlases[g.name]), g.ceiling)]
    summary["ceilings"] = ceilings.whole(ceiling_rows)   # both methods, whole brain, per story: run.json
    w_maps = conditions.story_weights(weights, story_G)
    return Tables(scores, stories, summary, aggregate.weighted_maps(r_GLV, w_maps).astype(np.float32),
                  aggregate.weighted_maps(max_GV, w_maps).astype(np.float32), best, ceiling_rows)


def _write(out: Path, cfg: ScoreConfig, sel: Selection, bold: Bold, t: Tables, label: str):
    """Tables, maps and figures into `out` (the output's staging folder) -> (paths written, notes)."""
    grids = t.stories if len(t.stories) == 1 else t.stories + (t.scores,)
    files = report.write_tables(out, grids, t.summary, t.best) + [write_csv(out / "ceilings.csv", t.ceiling_rows)]
    if cfg.report.maps:
        norm = np.asarray(normalized_score(jnp.asarray(t.r_LV), jnp.asarray(t.max_r_V), cfg.ceiling.min_ceiling))
        for i, layer in enumerate(sel.layers):
            files += report.write_maps(out, bold, layer, np.stack([t.r_LV[i], t.max_r_V, norm[i]]))
    notes = []
    if cfg.report.figures:
        best = sel.layers.index(t.summary["cv_best_layer"])
        figs, note = report.write_figures(out, t.scores, t.summary, t.r_LV[best], bold, label)
        files, notes = files + figs, [note] if note else []
    return files, notes


def _run_notes(cfg: ScoreConfig, sel: Selection, groups: list[Group]) -> list[str]:
    notes = []
    acausal = [d for d in cfg.features.delays or () if d <= 0]
    if acausal:
        notes.append(f"delays {acausal} <= 0 (--features.allow-acausal): the design holds responses to words not "
                     "yet heard")
    plain = [st.name for st in sel.stories if st.text_source != "transcript.txt"]
    if plain:
        notes.append(f"no transcript.txt beside the alignment of {', '.join(plain)}: the model read the aligned words "
                     "without punctuation or case (features are not comparable with punctuated readings)")
    for g in groups:
        notes += g.bold.notes
    return notes


def _record(cfg, sel, groups, t: Tables, root, manifest, augs, notes, stages, t0, tuning) -> dict:
    """run.json: what was run on what, and what it cost."""
    return dict(
        config=dataclasses.asdict(cfg), command=sys.argv, versions=_versions(),
        seeds=dict(ceiling_splits=cfg.seed, ceiling_null=cfg.seed, bootstrap=cfg.seed, synthetic=cfg.synthetic.seed if manifest else None),
        data_root=root, model=sel.model_folder, models=tuning, selection=describe(sel),
        augmentation=dict(mode=cfg.augment.mode, files=[str(f) for f in cfg.augment.files],
                          ids={n: a.id for n, a in augs.items()},
                          lookahead=lookahead_record(augs, sel.stories)) if augs else None,
        stories={g.name: dict(subjects=list(g.sel.subjects), story=g.sel.story_name, condition=g.sel.condition,
                              n_trs=g.bold.n_rows, weight=g.bold.n_rows,
                              cv=g.fit.info | dict(solver=str(g.results[sel.layers[0]]["solver"])),
                              results_dir=g.folder, computed_layers=list(g.computed),
                              vertices=dict(space_total=int(g.bold.keep_V.size), kept=g.bold.n_vertices,
                                            missing_per_subject=g.bold.dropped()),
                              ridge_chunk_vertices={int(l): int(g.results[l]["chunk_vertices"]) for l in sel.layers
                                                    if "chunk_vertices" in g.results[l]})
                 for g in groups},
        text={st.name: st.text_source for st in sel.stories},
        memory=groups[0].fit.budget.describe(), devices=[str(d) for d in jax.devices()],
        computed_layers=sorted({l for g in groups for l in g.computed}),
        reused_layers=[l for l in sel.layers if not any(l in g.computed for g in groups)],
        summary=report.clean_nans(t.summary), notes=notes, seconds=time.perf_counter() - t0, stages=stages.record,
        builtin=dict(planted=planting(cfg.synthetic), manifest=root / "manifest.json") if manifest else None)


def _summary(summary: dict, info: dict, part_rows, cfg: ScoreConfig, band_rows=None) -> str:
    text = report.summary_text(summary, info)
    if "nuisance" in summary:
        text += "\n" + nuisance.summary_line(summary["nuisance"])
    if band_rows is not None:
        text += "\n" + nuisance.band_summary_line(band_rows, cfg.report.ci)
    return text if part_rows is None else text + "\n" + partition.summary_line(part_rows, cfg.report.ci)


def check_models(cfg: ScoreConfig, paths) -> None:
    """Before a comparison scores anything: --model.path and every model of `paths` resolve, and
    each may score the selected stories (`tuned.assign`: none tuned on a story it would score)."""
    root, model_path, space, _ = _sources(cfg)
    models = [tuned.resolve(str(p), cfg.model.hub) for p in (model_path, *paths)]
    stories = tuned.scored_stories(select(cfg, root, str(models[0].reference), space))
    for m in models:
        tuned.assign(m, stories, cfg.compare.allow_overlap)


def score(cfg: ScoreConfig) -> ScoreResult:
    """Run the pipeline (module docstring); returns the numbers and writes cfg.output.
    With cfg.aggregate the tables come from the results cache only; a missing (story, layer) is
    an error naming it (the last step of a sweep whose jobs filled the cache)."""
    t0 = time.perf_counter()
    check_options(cfg)
    if cfg.distributed:
        jax.distributed.initialize(cfg.coordinator, cfg.num_processes, cfg.process_id)
    # process 0 writes the reports: it alone locks --output, for the whole run (outputs.OutputFolder)
    with OutputFolder(cfg.output) if jax.process_index() == 0 else contextlib.nullcontext() as out:
        return _score(cfg, out, t0)


def _score(cfg: ScoreConfig, out: OutputFolder | None, t0: float) -> ScoreResult:
    """`score` with --output locked (`out`; None in the processes that write no reports)."""
    root, model_path, space, manifest = _sources(cfg)
    models = tuned.resolve(model_path, cfg.model.hub)
    sel = select(cfg, root, str(models.reference), space)
    by_story, tuning = tuned.assign(models, tuned.scored_stories(sel), cfg.compare.allow_overlap)
    _print_notes(sel.notes)
    print(f"devices: {', '.join(str(d) for d in jax.devices())}", file=sys.stderr)
    augs = resolve_augmentations(cfg.augment.files, sel.stories, cfg.augment.forbid_lookahead)
    budget = budget_mod.memory_budget(cfg.memory_gb)
    groups = _groups(cfg, sel, augs, budget, by_story)
    stages = budget_mod.Stages()
    with stages("bold"):
        for g in groups:
            g.bold = bold_mod.prepare(g.sel, cfg.cache_dir, cfg.data.trim_start, cfg.progress)
    atlases = {g.name: _atlas(g.sel, g.bold) for g in groups}
    with stages("ceiling"):
        for g in groups:
            c = cfg.ceiling
            width = budget_mod.ceiling_vertices(budget, len(g.bold.subjects), g.bold.n_rows, c.vertex_chunk, c.n_null)
            g.ceiling = ceilings.masked(store.ceiling(g.bold, g.fit.runs, g.folder, c.n_splits, cfg.seed, width,
                                                      c.n_null, c.null_buffer), c.alpha, c.method)
    feats_of = _features(cfg, sel, augs)
    with stages("layers"):
        fit_layers(cfg, sel, groups, feats_of, cfg.aggregate, nuisance.missing_designs(cfg))
    with stages("nuisance"):  # solved in the layers' pass unless every layer was cached
        baselines = nuisance.fit_baselines(cfg, groups)
    band_rows = None
    if cfg.features.nuisance_band and baselines:
        with stages("nuisance band"):
            bands = nuisance.fit_bands(cfg, groups, feats_of)
        band_rows = nuisance.band_rows(cfg, groups, bands, lambda g: _regions(g, atlases[g.name]))
    part_rows = None
    if cfg.augment.partition and augs:  # (a comparison's plain run has no associations to partition)
        with stages("partition"):
            parts = partition.fit_partitions(cfg, groups, feats_of)
        part_rows = partition.partition_rows(groups, parts, lambda g: _regions(g, atlases[g.name]), cfg.report.n_boot,
                                             cfg.report.ci, cfg.seed)
    t = _tables(cfg, sel, groups, atlases)
    base = baselines and nuisance.baseline(cfg, groups, baselines, lambda g: _regions(g, atlases[g.name]), t.best,
                                           t.summary)
    if base:
        t.summary["nuisance"] = base.summary
    edges = grid_edges.run_edges({g.name: g.results for g in groups}, sel.layers, groups[0].fit.alphas)
    t.summary["alpha_grid_edges"] = edges  # in run.json, scores.json and summary.txt with the rest
    label = "the built-in random GPT-2" if manifest and cfg.model.path is None else sel.model_folder.name
    if models.cross_fit:
        label = f"{models.path.name} (cross-fitted: {len(models.folders)} models)"
    info = dict(n_layers=len(sel.layers), model=label, n_subjects=len(sel.subjects), n_stories=len(sel.stories),
                n_trs=sum({g.sel.story_name: g.bold.n_rows for g in groups}.values()), n_targets=max(g.bold.n_vertices for g in groups),
                targets="voxels" if sel.kind == "volume" else "vertices",
                pooled=sel.pooled or len({g.sel.story_name for g in groups}) == 1,
                incomplete=sorted({s for g in groups for s, n in g.bold.dropped().items() if n}))
    files, notes = [], list(sel.notes) + _run_notes(cfg, sel, groups) + grid_edges.edge_notes(edges)
    if tuning["overlap"]:
        notes.append("--compare.allow-overlap: scored on stories its tuning saw: " + "; ".join(
            f"{s} (tuned on {', '.join(ts)})" for s, ts in tuning["overlap"].items()))
    if tuning["unlisted"]:
        notes.append(f"--compare.allow-overlap: {', '.join(tuning['unlisted'])} list no training stories; the model(s) "
                     "may have been tuned on the scored stories")
    if out is not None:
        with out.staging() as stage:  # every file of the run appears together, or none
            files, more = _write(stage, cfg, sel, groups[0].bold, t, label)
            notes += more
            files.append(write_json(stage / "run.json", _record(cfg, sel, groups, t, root, manifest, augs, notes,
                                                                 stages, t0, tuning)))
            if part_rows is not None:
                files.append(write_csv(stage / "partition.csv", part_rows))
            if base:
                files.append(write_csv(stage / "nuisance.csv", base.rows))
            if band_rows is not None:
                files.append(write_csv(stage / "nuisance_partition.csv", band_rows))
            text = _summary(t.summary, info, part_rows, cfg, band_rows)
            files.append(atomic_write_text(stage / "summary.txt", text + "\n"))
            files = [out.final(p) for p in files]
    _print_notes(notes[len(sel.notes):])
    print(_summary(t.summary, info, part_rows, cfg, band_rows))
    print(f"wrote {cfg.output} ({len(files)} files) in {time.perf_counter() - t0:.1f} s")
    return ScoreResult(output=Path(cfg.output), summary=t.summary, scores=t.scores, stories=t.stories,
                       layers=sel.layers, r_LV=t.r_LV, max_r_V=t.max_r_V, computed={g.name: g.computed for g in groups},
                       results_dirs={g.name: g.folder for g in groups}, data_root=root, model_path=sel.model_folder,
                       manifest=manifest, files=files, notes=tuple(notes), best=t.best,
                       nuisance=base.scores if base else None)
