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
from ..ceiling import normalized_score
from ..io import atomic_write_text, write_json
from ..models import load_pretrained
from .. import ridge
from ..ridge.streaming import CPU_TILE
from . import bold as bold_mod
from . import budget as budget_mod
from . import report, store, tables
from .assets import ensure_builtin, planting
from .bold import Bold, vertex_chunks
from .config import ScoreConfig
from .design import cv_groups, layer_design, run_ids, story_rows, word_feats
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


@dataclasses.dataclass(frozen=True)
class Fitting:
    """What every layer's nested ridge shares: the rows' CV groups and stories, the folds, the
    alphas, the fits (subjects then mean, or the mean only) and the memory budget."""

    groups: np.ndarray
    runs: np.ndarray
    folds: object
    alphas: np.ndarray
    per_subject: bool
    budget: budget_mod.Budget
    target_chunk: int | None

    def fits(self, bold: Bold) -> int:
        return len(bold.subjects) + 1 if self.per_subject else 1


def _solve_layer(x_NP: np.ndarray, bold: Bold, fit: Fitting, progress: bool, desc: str) -> dict:
    """One layer's nested ridge over every fit and kept vertex, streamed in vertex chunks:
    one decomposition per outer fold shared by all chunks; per vertex only the fold scores
    and the chosen alphas are kept."""
    plan, solver = ridge.prepare_nested(x_NP, fit.folds, fit.alphas, target_runs_N=fit.runs)
    tile = CPU_TILE if jax.local_devices()[0].platform == "cpu" else None
    n, f, v = bold.n_rows, fit.fits(bold), bold.n_vertices
    per, fixed = ridge.target_bytes(plan, tile=tile)
    targets = budget_mod.chunk_targets(fit.budget, per, fixed, n, fit.target_chunk)
    width = max(1, min(v, targets // f))
    cols = f * width if tile is None else -(-f * width // tile) * tile   # whole tiles; padding columns are flat
    tile = tile if tile is not None and cols > tile else None
    k = len(fit.folds.outer)
    r_folds = np.full((k, f, v), np.nan, np.float32)
    alpha_idx = np.zeros((k, f, v), np.uint16)
    chunks = list(vertex_chunks(v, width))
    if progress:
        from tqdm.auto import tqdm
        chunks = tqdm(chunks, desc=desc, unit="chunk", leave=False)

    def block(v0, v1):
        y = bold.chunk(v0, v1, fit.runs, fit.per_subject).reshape(n, -1)     # (N, F * Vc), fit-major
        return jnp.pad(y, ((0, 0), (0, cols - y.shape[1])))  # flat padding (NaN results) keeps one compiled shape

    def collect(out, v0, v1):
        got = jax.device_get(out)
        used = f * (v1 - v0)
        r_folds[:, :, v0:v1] = got.r_folds_KT[:, :used].reshape(k, f, v1 - v0)
        alpha_idx[:, :, v0:v1] = got.alpha_idx_KT[:, :used].reshape(k, f, v1 - v0)

    pending = None
    for v0, v1 in chunks:
        out = ridge.solve_nested(plan, block(v0, v1), tile=tile)  # async: the next read overlaps it
        if pending is not None:
            collect(*pending)
        pending = (out, v0, v1)
    collect(*pending)
    return dict(r_folds=r_folds, alpha_idx=alpha_idx, test_groups=np.asarray(json.dumps(fit.folds.test_groups)),
                solver=np.asarray(solver), chunk_vertices=np.asarray(width))


def _layers(cfg: ScoreConfig, sel: Selection, bold: Bold, fit: Fitting, folder: Path, augs):
    results, todo = {}, []
    shape = (len(fit.folds.outer), fit.fits(bold), bold.n_vertices)
    for layer in sel.layers:
        got = store.load_layer(folder, layer)
        if got is not None and got["r_folds"].shape == shape:
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
        x = layer_design(feats, sel, layer, cfg.features, cfg.data.trim_start)
        out = _solve_layer(x, bold, fit, cfg.progress, f"layer {layer}: vertex chunks")
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


def _fitting(cfg: ScoreConfig, sel: Selection, rows: list[int]) -> tuple[Fitting, dict]:
    groups, chunks = cv_groups(rows, cfg.ridge.story_chunks)
    runs = run_ids(rows)
    buffer = cfg.ridge.buffer_trs if cfg.ridge.buffer_trs is not None else max(cfg.features.delays, default=0) + 8
    if buffer < 0:
        raise ValueError(f"--ridge.buffer-trs must be >= 0, got {buffer}")
    folds = ridge.nested_folds(groups, cfg.ridge.outer_folds, cfg.ridge.inner_folds, runs_N=runs,
                                buffer=buffer if chunks > 1 else 0)
    alphas = np.sort(np.asarray(cfg.ridge.alphas, np.float64))
    fit = Fitting(groups, runs, folds, alphas, cfg.ridge.per_subject and len(sel.subjects) > 1,
                  budget_mod.memory_budget(cfg.memory_gb), cfg.ridge.target_chunk)
    info = dict(groups=int(len(np.unique(groups))), chunks_per_story=chunks, buffer_trs=buffer if chunks > 1 else 0,
                bold_zscore=("each subject per story (to average subjects); inside every outer fold each target again per "
                             "story with that fold's training rows only"), per_subject=fit.per_subject,
                test_groups=[list(t) for t in folds.test_groups])
    return fit, info


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

    rows_per_story = story_rows(sel, cfg.data.trim_start)
    fit, cv_info = _fitting(cfg, sel, rows_per_story)
    stages = budget_mod.Stages()
    with stages("bold"):
        bold = bold_mod.prepare(sel, cfg.cache_dir, cfg.data.trim_start, cfg.progress)
    atlas = _atlas(sel, bold)
    width = budget_mod.ceiling_vertices(fit.budget, len(bold.subjects), bold.n_rows, cfg.ceiling.vertex_chunk)
    with stages("ceiling"):
        ceil = store.ceiling(bold, fit.runs, folder, cfg.ceiling.n_splits, cfg.seed, width)
    with stages("layers"):
        results, computed = _layers(cfg, sel, bold, fit, folder, augs)

    hemi_V = np.repeat(np.asarray(bold.hemis or ("",)), bold.hemi_sizes)
    regs = tables.regions(atlas, hemi_V, bold.keep_V)
    subjects = sel.subjects if fit.per_subject else ()
    rows = [row for layer in sel.layers for row in tables.layer_rows(
        layer, results[layer], ceil, fit.alphas, subjects, regs, cfg.ceiling.min_ceiling, cfg.report.n_boot,
        cfg.report.ci, cfg.seed)]
    whole = next(m for name, h, m in regs if name == tables.WHOLE and h in ("both", regs[0][1]))
    folds_LK = np.stack([tables.fold_headline(results[l], whole) for l in sel.layers])
    summary = tables.summary(rows, folds_LK, sel.layers)
    r_LV = report.full(np.stack([tables.fold_mean(results[l]["r_folds"])[-1] for l in sel.layers]), bold.keep_V)
    max_r_V = report.full(ceil["max_r"], bold.keep_V)
    label = "the built-in random GPT-2" if manifest and cfg.model.path is None else sel.model_folder.name
    info = dict(n_layers=len(sel.layers), model=label, n_subjects=len(sel.subjects), n_stories=len(sel.stories),
                n_trs=bold.n_rows, n_targets=bold.n_vertices, targets="voxels" if sel.kind == "volume" else "vertices")
    files, notes = [], list(sel.notes)
    plain = [st.name for st in sel.stories if st.text_source != "transcript.txt"]
    if plain:
        notes.append(f"no transcript.txt beside the alignment of {', '.join(plain)}: the model read the aligned words "
                     "without punctuation or case (features are not comparable with punctuated readings)")
    dropped = {s: n for s, n in bold.dropped().items() if n}
    if dropped:
        notes.append(f"{len(dropped)} subject(s) lack data at some kept {info['targets']} (their scores are NaN "
                     f"there): " + ", ".join(f"{s}: {n}" for s, n in list(dropped.items())[:5]))
    if jax.process_index() == 0:
        files, more = _write(cfg, sel, bold, rows, summary, r_LV, max_r_V, label)
        notes += more
        record = dict(
            config=dataclasses.asdict(cfg), command=sys.argv, versions=_versions(),
            seeds=dict(ceiling_splits=cfg.seed, bootstrap=cfg.seed, synthetic=cfg.synthetic.seed if manifest else None),
            data_root=root, model=sel.model_folder, selection=describe(sel),
            augmentation=dict(mode=cfg.augment.mode, files=[str(f) for f in cfg.augment.files],
                              ids={n: a.id for n, a in augs.items()}) if augs else None,
            cv=cv_info | dict(solver=str(results[sel.layers[0]]["solver"]), trim_start=cfg.data.trim_start,
                              rows_per_story=dict(zip([s.name for s in sel.stories], rows_per_story))),
            text={st.name: st.text_source for st in sel.stories},
            memory=fit.budget.describe() | dict(ceiling_chunk_vertices=width, ridge_chunk_vertices={
                int(l): int(results[l]["chunk_vertices"]) for l in sel.layers if "chunk_vertices" in results[l]}),
            vertices=dict(space_total=int(bold.keep_V.size), kept=bold.n_vertices,
                          dropped_everywhere=int(bold.keep_V.size - bold.n_vertices), missing_per_subject=bold.dropped()),
            results_dir=folder, results_key=key, computed_layers=list(computed),
            reused_layers=[l for l in sel.layers if l not in computed], summary=report.clean_nans(summary),
            notes=notes, seconds=time.perf_counter() - t0, stages=stages.record,
            builtin=dict(planted=planting(cfg.synthetic), manifest=root / "manifest.json") if manifest else None)
        files.append(write_json(cfg.output / "run.json", record))
        files.append(atomic_write_text(cfg.output / "summary.txt", report.summary_text(summary, info) + "\n"))
    _print_notes(notes[len(sel.notes):])
    print(report.summary_text(summary, info))
    print(f"wrote {cfg.output} ({len(files)} files) in {time.perf_counter() - t0:.1f} s")
    return ScoreResult(Path(cfg.output), summary, rows, sel.layers, r_LV, max_r_V, tuple(computed),
                       tuple(l for l in sel.layers if l not in computed), folder, root, sel.model_folder, manifest,
                       files, tuple(notes))
