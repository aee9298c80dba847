"""`score(config)`: the whole brain-score run behind `scripts/score.py`.

Order: inputs are checked first (`inputs.select`), then BOLD is read, the ceiling and
each layer's nested ridge are computed or taken from the results cache, and the reports
are written. Every layer is one ridge solve over the subjects and their mean together
(targets = subjects x vertices, plus the mean's vertices), saved as soon as it finishes.
"""
from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .. import rois
from ..atomic import atomic_write_text
from ..ceiling import normalized_score
from ..models import load_pretrained
from ..reports import write_json
from ..ridge import brain_score
from . import report, store, tables
from .assets import ensure_builtin, planting
from .config import ScoreConfig
from .design import Bold, cv_groups, layer_design, load_bold, story_lengths, word_feats
from .inputs import Selection, describe, resolve_augmentations, resolve_model, select


@dataclasses.dataclass
class ScoreResult:
    """What a run produced. r_LV / max_r_V are the subject-mean fit's per-vertex score (fold-mean
    r) of each scored layer and its ceiling, on every vertex of the space (NaN where there is no data)."""

    output: Path
    summary: dict
    rows: list[dict]
    layers: tuple[int, ...]
    r_LV: np.ndarray
    max_r_V: np.ndarray
    computed_layers: tuple[int, ...]
    reused_layers: tuple[int, ...]
    results_dir: Path
    data_root: Path
    model_path: Path
    manifest: dict | None
    files: list[Path]
    notes: tuple[str, ...]


def _sources(cfg: ScoreConfig):
    """(data root, model path, default space, built-in manifest or None)."""
    if cfg.data.root is not None:
        if cfg.model.path is None:
            raise ValueError("--data.root needs --model.path: the built-in model only knows the synthetic vocabulary")
        if not Path(cfg.data.root).is_dir():
            raise FileNotFoundError(f"dataset root not found: {cfg.data.root}")
        return Path(cfg.data.root), cfg.model.path, "fsaverage6", None
    if cfg.model.path is not None:
        resolve_model(cfg.model.path)  # a bad path fails before the built-in data is generated
    b = ensure_builtin(cfg.synthetic, cfg.cache_dir, cfg.progress)
    return b.root, cfg.model.path or str(b.model), b.space, b.manifest


def _atlas(sel: Selection, bold: Bold) -> rois.Atlas | None:
    if sel.atlas is None:
        return None
    atlas = rois.load_annot(*sel.atlas)
    if sel.hemi != "both":
        keep = atlas.hemi_V == sel.hemi
        atlas = rois.Atlas(atlas.labels_V[keep], atlas.names, atlas.hemi_V[keep], atlas.source)
    if atlas.labels_V.size != bold.keep_V.size:
        raise ValueError(f"atlas {sel.atlas[0]} has {atlas.labels_V.size} vertices ({sel.hemi}), the data "
                         f"{bold.keep_V.size}")
    return atlas


def _layers(cfg: ScoreConfig, sel: Selection, y_NFV, groups, folder: Path, alphas, augs):
    results, todo = {}, []
    for layer in sel.layers:
        got = store.load(store.layer_path(folder, layer))
        if got is not None and got["r_folds"].shape[1:] == y_NFV.shape[1:]:
            results[layer] = got
        else:
            todo.append(layer)
    if not todo:
        return results, ()
    model, tok = load_pretrained(sel.model_folder, dtype=getattr(jnp, cfg.model.dtype))
    feats = word_feats(model, tok, sel, cfg.features, cfg.cache_dir / "features", cfg.progress, augs, cfg.augment.mode)
    del model
    steps = todo
    if cfg.progress:
        from tqdm.auto import tqdm
        steps = tqdm(todo, desc="scoring layers", unit="layer")
    for layer in steps:
        x = layer_design(feats, sel, layer, cfg.features)
        res = brain_score(x, y_NFV, groups, alphas=alphas, outer_folds=cfg.ridge.outer_folds,
                          inner_folds=cfg.ridge.inner_folds, target_chunk=cfg.ridge.target_chunk)
        out = dict(r=res.r, r_folds=res.r_folds, alpha_idx=np.searchsorted(alphas, res.best_alphas).astype(np.uint16),
                   test_groups=np.asarray(json.dumps(res.test_groups)), solver=np.asarray(res.solver))
        if jax.process_index() == 0:
            store.save(store.layer_path(folder, layer), **out)
        results[layer] = out
    return results, tuple(todo)


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


def _write(cfg: ScoreConfig, sel: Selection, bold: Bold, rows, summary, r_LV, max_r_V, label):
    """Tables, maps and figures -> (paths written, notes)."""
    out = Path(cfg.output)
    files = report.write_tables(out, rows, summary)
    if cfg.report.maps:
        norm = np.asarray(normalized_score(jnp.asarray(r_LV), jnp.asarray(max_r_V), cfg.ceiling.min_ceiling))
        for i, layer in enumerate(sel.layers):
            files += report.write_maps(out, bold, layer, np.stack([r_LV[i], max_r_V, norm[i]]))
    if not cfg.report.figures:
        return files, []
    best = sel.layers.index(summary["best_layer"])
    figs, note = report.write_figures(out, rows, summary, r_LV[best], bold, label)
    return files + figs, [note] if note else []


def score(cfg: ScoreConfig) -> ScoreResult:
    """Run the pipeline (module docstring); returns the numbers and writes cfg.output."""
    t0 = time.perf_counter()
    if cfg.distributed:
        jax.distributed.initialize()
    root, model_path, space, manifest = _sources(cfg)
    sel = select(cfg, root, model_path, space)
    _print_notes(sel.notes)
    augs = resolve_augmentations(cfg.augment.files, sel.stories)
    key = store.results_key(cfg, sel, augs)
    folder = store.results_dir(cfg.cache_dir, key)
    write_json(folder / "key.json", key)

    bold = load_bold(sel, cfg.progress)
    atlas = _atlas(sel, bold)
    groups, chunks = cv_groups(story_lengths(sel), cfg.ridge.story_chunks)
    ceil = store.ceiling(bold.y_NSV, folder, cfg.ceiling.n_splits, cfg.seed, cfg.ceiling.vertex_chunk)
    per_subject = cfg.ridge.per_subject and len(sel.subjects) > 1
    mean = bold.y_NSV.mean(1, keepdims=True)
    y = np.concatenate([bold.y_NSV, mean], 1) if per_subject else mean
    alphas = np.sort(np.asarray(cfg.ridge.alphas, np.float64))
    results, computed = _layers(cfg, sel, y, groups, folder, alphas, augs)

    hemi_V = np.repeat(np.asarray(bold.hemis or ("",)), bold.hemi_sizes)
    regs = tables.regions(atlas, hemi_V, bold.keep_V)
    subjects = sel.subjects if per_subject else ()
    rows = [row for layer in sel.layers for row in tables.layer_rows(
        layer, results[layer], ceil, alphas, subjects, regs, cfg.ceiling.min_ceiling, cfg.report.n_boot,
        cfg.report.ci, cfg.seed)]
    summary = tables.summary(rows)
    r_LV = report.full(np.stack([tables.fold_mean(results[l]["r_folds"])[-1] for l in sel.layers]), bold.keep_V)
    max_r_V = report.full(ceil["max_r"], bold.keep_V)
    label = "the built-in random GPT-2" if manifest and cfg.model.path is None else sel.model_folder.name
    info = dict(n_layers=len(sel.layers), model=label, n_subjects=len(sel.subjects), n_stories=len(sel.stories),
                n_trs=int(y.shape[0]), n_targets=int(bold.keep_V.sum()),
                targets="voxels" if sel.kind == "volume" else "vertices")
    files, notes = [], list(sel.notes)
    if jax.process_index() == 0:
        files, more = _write(cfg, sel, bold, rows, summary, r_LV, max_r_V, label)
        notes += more
        record = dict(
            config=dataclasses.asdict(cfg), command=sys.argv, versions=_versions(),
            seeds=dict(ceiling_splits=cfg.seed, bootstrap=cfg.seed, synthetic=cfg.synthetic.seed if manifest else None),
            data_root=root, model=sel.model_folder, selection=describe(sel),
            augmentation=dict(mode=cfg.augment.mode, files=[str(f) for f in cfg.augment.files],
                              ids={n: a.id for n, a in augs.items()}) if augs else None, cv=dict(
                groups=int(len(np.unique(groups))), chunks_per_story=chunks, per_subject=per_subject,
                solver=str(results[sel.layers[0]]["solver"]),
                test_groups=json.loads(str(results[sel.layers[0]]["test_groups"]))),
            results_dir=folder, results_key=key, computed_layers=list(computed),
            reused_layers=[l for l in sel.layers if l not in computed], summary=report.clean_nans(summary),
            notes=notes, seconds=time.perf_counter() - t0,
            builtin=dict(planted=planting(cfg.synthetic), manifest=root / "manifest.json") if manifest else None)
        files.append(write_json(cfg.output / "run.json", record))
        files.append(atomic_write_text(cfg.output / "summary.txt", report.summary_text(summary, info) + "\n"))
    _print_notes(notes[len(sel.notes):])
    print(report.summary_text(summary, info))
    print(f"wrote {cfg.output} ({len(files)} files) in {time.perf_counter() - t0:.1f} s")
    return ScoreResult(Path(cfg.output), summary, rows, sel.layers, r_LV, max_r_V, tuple(computed),
                       tuple(l for l in sel.layers if l not in computed), folder, root, sel.model_folder, manifest,
                       files, tuple(notes))
