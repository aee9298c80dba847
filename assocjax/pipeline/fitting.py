"""One fit group's nested ridge, all its layers in one pass over vertex chunks (see `run`).

A fit group is a story with its listeners (or, pooled, several stories with the subjects who
heard them all). Per layer there is one decomposition per outer fold, shared by every
subject, the subject mean and every vertex chunk; each chunk of BOLD is read and z-scored
once and solved for every missing layer (reading it once per layer cost about as much as
the ridge: measured, issue 26); per vertex only the fold scores and the chosen alphas are
kept. The layers of a pass are saved when it ends, so a killed run resumes from them.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import jax
import numpy as np

from .. import cachefile, ridge
from ..options import between
from ..ridge import chunks
from . import budget as budget_mod
from . import delays
from . import store
from .bold import Bold
from .config import ScoreConfig
from .design import cv_groups, layer_design, run_ids, story_rows
from .inputs import Selection


@dataclasses.dataclass(frozen=True)
class Fitting:
    """What every layer's nested ridge of one group shares: the rows' CV groups and stories,
    the folds, the alphas, the fits (subjects then mean, or the mean only) and the budget."""

    groups: np.ndarray
    runs: np.ndarray
    folds: ridge.NestedFolds
    alphas: np.ndarray
    per_subject: bool
    budget: budget_mod.Budget
    target_chunk: int | None
    info: dict

    def fits(self, bold: Bold) -> int:
        return len(bold.subjects) + 1 if self.per_subject else 1


def fitting(cfg: ScoreConfig, sel: Selection, budget: budget_mod.Budget) -> Fitting:
    """CV groups (stories, or contiguous chunks of them), buffered nested folds and alphas."""
    rows = story_rows(sel, cfg.data.trim_start)
    groups, chunks = cv_groups(rows, cfg.ridge.story_chunks)
    between("--ridge.outer-folds", cfg.ridge.outer_folds, 2, len(np.unique(groups)),
            why=f"folds of whole CV groups: {len(rows)} story(ies) in {chunks} chunk(s) each (--ridge.story-chunks)")
    runs = run_ids(rows)
    buffer = cfg.ridge.buffer_trs
    buffer = buffer if buffer is not None else delays.default_buffer(sel.stories, cfg.features)
    buffer = buffer if chunks > 1 else 0  # held-out whole stories need none
    folds = _nested_folds(cfg, sel, rows, chunks, buffer)
    info = dict(groups=int(len(np.unique(groups))), chunks_per_story=chunks, buffer_trs=buffer,
                bold_zscore=("each subject per story (to average subjects); inside every outer fold each target again "
                             "per story with that fold's training rows only"),
                per_subject=cfg.ridge.per_subject and len(sel.subjects) > 1,
                test_groups=[list(t) for t in folds.test_groups], trim_start=cfg.data.trim_start,
                rows_per_story=dict(zip([s.name for s in sel.stories], rows)),
                **delays.record(sel.stories, cfg.features))
    return Fitting(groups, runs, folds, np.sort(np.asarray(cfg.ridge.alphas, np.float64)), info["per_subject"], budget,
                   cfg.ridge.target_chunk, info)


def _nested_folds(cfg: ScoreConfig, sel: Selection, rows: list[int], chunks: int, buffer: int) -> ridge.NestedFolds:
    """The buffered nested folds; when the buffer leaves a fold no training rows, a ValueError
    naming the options, the shortest story and the largest chunk count and buffer that fit."""
    r = cfg.ridge

    def folds(n_chunks: int, n_buffer: int) -> ridge.NestedFolds:
        groups, _ = cv_groups(rows, n_chunks)
        return ridge.nested_folds(groups, r.outer_folds, r.inner_folds, runs_N=run_ids(rows), buffer=n_buffer)

    def fits(n_chunks: int, n_buffer: int) -> bool:
        try:
            folds(n_chunks, n_buffer)
            return True
        except ValueError:
            return False

    try:
        return folds(chunks, buffer)
    except ValueError as e:
        if "leaves no training rows" not in str(e):
            raise
    # The largest buffer (at these chunks) that fits: a smaller buffer only adds training rows, so a
    # bisection finds it. The largest chunk count (at this buffer): not monotone (a chunk count may
    # fit where one fewer does not), so counted down; a failing count fails at its first folds.
    most_buffer = _largest(lambda b: fits(chunks, b), 0, buffer - 1)
    fewest = 1 if len(rows) >= 3 else math.ceil(3 / len(rows))  # cv_groups needs 3 CV groups
    most_chunks = next((c for c in range(chunks - 1, fewest - 1, -1) if fits(c, buffer)), None)
    short = min(range(len(rows)), key=rows.__getitem__)
    unset = "" if r.buffer_trs is not None else "; unset: max(--features.delays) + 8"
    fixes = [f"--ridge.buffer-trs {most_buffer}" if most_buffer is not None else None,
             f"--ridge.story-chunks {most_chunks}" if most_chunks is not None else None]
    fixes = [f for f in fixes if f] or [f"shorter delays ({delays.source(cfg.features)}) and a smaller "
                                        "--ridge.buffer-trs, or longer stories"]
    raise ValueError(f"a buffer of {buffer} TRs (--ridge.buffer-trs{unset}) around each held-out chunk "
                     f"(--ridge.story-chunks {chunks}) leaves some fold no training rows of story "
                     f"{sel.stories[short].name!r} ({rows[short]} TRs after --data.trim-start {cfg.data.trim_start}); "
                     f"what fits: {' or '.join(fixes)}")


def _largest(ok, lo: int, hi: int) -> int | None:
    """The largest n in lo..hi with ok(n), for ok true up to some n and false above; None if none."""
    if hi < lo or not ok(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
    return lo


def solve_layer(x_NP: np.ndarray, bold: Bold, fit: Fitting, progress: bool = False, desc: str = "",
                vertices: tuple[int, int] | None = None) -> dict:
    """One design's nested ridge over every fit and kept vertex (`solve_layers` of one design)."""
    return solve_layers([x_NP], bold, fit, progress, desc, vertices)[0]


def solve_layers(xs: list[np.ndarray], bold: Bold, fit: Fitting, progress: bool = False, desc: str = "",
                 vertices: tuple[int, int] | None = None) -> list[dict]:
    """Several designs' (layers') nested ridge over every fit and kept vertex, in one pass over
    the BOLD (module docstring): each vertex chunk is read from the cache and z-scored once and
    solved for every design, so reading costs once per story, not once per layer. With
    `vertices` = (lo, hi) only that range of kept vertices (one process's share of a
    multi-process run), the arrays then cover that range only. Vertex chunks of F targets
    each (the fits, fit-major) go through `ridge.chunks.stream`, several local devices each
    taking a share of a chunk's targets, and on a CPU two chunks at once (`chunks.cpu_workers`)."""
    prepared = [ridge.prepare_nested(x, fit.folds, fit.alphas, target_runs_N=fit.runs) for x in xs]
    tile = chunks.cpu_tile()
    mesh = chunks.target_mesh()
    n_dev = mesh.size if mesh is not None else 1
    workers = chunks.cpu_workers() if n_dev == 1 else 1
    lo, hi = vertices or (0, bold.n_vertices)
    n, f, v = bold.n_rows, fit.fits(bold), hi - lo
    # Every plan stays on the device; the designs of a chunk are solved one after another, so the
    # chunk costs the largest per-target bytes of one solve, and `workers` chunks are in flight,
    # each with one solve's fixed part (its tile's intermediates, maps) beside the plans.
    sizes = [ridge.target_bytes(plan, tile=tile) for plan, _ in prepared]
    per = max(s[0] for s in sizes)
    fixed = sum(s[1] for s in sizes) + (workers - 1) * max(s[1] for s in sizes)
    # tests/test_memory.py's 1 GiB run: 1.105 GiB of growth when the fixed part was counted once, 0.975-0.979 now
    width = budget_mod.chunk_targets(fit.budget, per * workers, fixed, n * workers, fit.target_chunk, tile, n_dev)
    layout = chunks.chunk_layout(v, width, per_item=f, n_devices=n_dev, tile=tile)
    plans = [chunks.replicate(plan, mesh) for plan, _ in prepared]

    def solve(block):
        return tuple(ridge.solve_nested(plan, block, tile=layout.tile) for plan in plans)

    read = lambda a, b: bold.chunk(lo + a, lo + b, fit.runs, fit.per_subject).reshape(n, -1)  # noqa: E731  (N, F * Vc)
    k = len(fit.folds.outer)
    outs = [dict(r_folds=np.full((k, f, v), np.nan, np.float32), alpha_idx=np.zeros((k, f, v), np.uint16),
                 test_groups=np.asarray(json.dumps(fit.folds.test_groups)), solver=np.asarray(solver),
                 chunk_vertices=np.asarray(layout.items)) for _, solver in prepared]
    for (a, b, used), got in chunks.stream(solve, read, layout, mesh, progress=progress, desc=desc, leave=False,
                                          workers=workers):
        for out, res in zip(outs, got):
            out["r_folds"][:, :, a:b] = res.r_folds_KT[:, :used].reshape(k, f, b - a)
            out["alpha_idx"][:, :, a:b] = res.alpha_idx_KT[:, :used].reshape(k, f, b - a)
    return outs


@dataclasses.dataclass
class Group:
    """A fit group on its way through the run: its selection, results folder and fitting,
    then its BOLD store, ceiling and per-layer results."""

    sel: Selection
    folder: Path
    key: dict
    fit: Fitting
    bold: Bold | None = None
    ceiling: dict | None = None
    results: dict = dataclasses.field(default_factory=dict)
    computed: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        return self.sel.name

    def cached(self, layer: int) -> dict | None:
        got = store.load_layer(self.folder, layer)
        shape = (len(self.fit.folds.outer), self.fit.fits(self.bold), self.bold.n_vertices)
        return got if got is not None and got["r_folds"].shape == shape else None


def fit_layers(cfg: ScoreConfig, sel: Selection, groups: list[Group], feats_of, aggregate_only: bool = False,
               riders=None) -> None:
    """Every group's missing layers: word features are made once for the groups with a missing
    (group, layer) (`feats_of(groups)` -> story name -> features), only when there is one.
    riders(group) -> {path: design} of other designs to solve in the same pass over the BOLD
    and save at path (the low-level baseline: `nuisance.missing_designs`)."""
    todo = {}
    for g in groups:
        for layer in sel.layers:
            got = g.cached(layer)
            if got is None:
                todo.setdefault(g.name, []).append(layer)
            else:
                g.results[layer] = got
    if not todo:
        return
    if aggregate_only:
        missing = ", ".join(f"{name}: layers {layers}" for name, layers in todo.items())
        raise FileNotFoundError(f"--aggregate: results missing from {cfg.cache_dir / 'scores'} for {missing}; run "
                                "their jobs first (the same options), or drop --aggregate to compute them here")
    feats = feats_of([g for g in groups if g.name in todo])
    steps = [g for g in groups if g.name in todo]
    if cfg.progress:
        from tqdm.auto import tqdm
        steps = tqdm(steps, desc="scoring (fit group: all its layers in one pass)", unit="group")
    for g in steps:
        layers = todo[g.name]
        xs = [layer_design([feats[s.name] for s in g.sel.stories], g.sel, layer, cfg.features, cfg.data.trim_start)
              for layer in layers]
        if jax.process_count() == 1:
            extra = riders(g) if riders is not None else {}
            desc = f"{g.name} layers {', '.join(map(str, layers))}{' + baseline' if extra else ''}: vertex chunks"
            outs = solve_layers(xs + list(extra.values()), g.bold, g.fit, cfg.progress, desc)
            for path, out in zip(extra, outs[len(xs):]):
                store.save(path, **out)
            outs = outs[:len(xs)]
            for layer, out in zip(layers, outs):  # saved when the pass ends: a killed run redoes that pass
                store.save(store.layer_path(g.folder, layer), **out)
        else:
            outs = [_solve_in_parts(x, g, layer, cfg.progress, f"{g.name} layer {layer}: vertex chunks")
                    for layer, x in zip(layers, xs)]
        for layer, out in zip(layers, outs):
            g.results[layer] = out
        g.computed += tuple(layers)


def _solve_in_parts(x_NP, g: Group, layer: int, progress: bool, desc: str, poll_s: float = 1.0) -> dict:
    """Multi-process runs (jax.distributed): process p of P solves the p-th range of the kept
    vertices with its own devices and saves it beside the layer file (a shared --cache-dir);
    process 0 joins the parts into the layer file, which every process then reads."""
    import time

    p, n_proc = jax.process_index(), jax.process_count()
    edges = np.linspace(0, g.bold.n_vertices, n_proc + 1).astype(int)
    final = store.layer_path(g.folder, layer)
    part = final.with_name(f"{final.stem}.part-{p}-of-{n_proc}.npz")
    if store.load(part, store.LAYER_FIELDS) is None:
        store.save(part, **solve_layer(x_NP, g.bold, g.fit, progress, desc, vertices=(edges[p], edges[p + 1])))
    if p == 0:
        paths = [final.with_name(f"{final.stem}.part-{i}-of-{n_proc}.npz") for i in range(n_proc)]
        while not all(q.is_file() for q in paths):
            time.sleep(poll_s)
        parts = [store.load(q, store.LAYER_FIELDS) for q in paths]
        out = dict(parts[0], r_folds=np.concatenate([q["r_folds"] for q in parts], axis=2),
                   alpha_idx=np.concatenate([q["alpha_idx"] for q in parts], axis=2))
        store.save(final, **out)
        for q in paths:
            cachefile.remove(q)  # the part and its stamp
        return out
    while not final.is_file():
        time.sleep(poll_s)
    return store.load_layer(g.folder, layer)
