"""Resumable results: per-layer ridge results and the ceiling, one atomic .npz each, in a
folder keyed by everything that determines the numbers.

The key hashes the pipeline version, the options that change results (not the layer list,
output folder, report or progress options, so adding layers reuses finished ones), the
selection, and the size and modification time of every file read (model, alignments,
images). Each file is stamped (`cachefile`) with its own key, the folder's name (the results
key's digest) and its file name, so a file edited in place, truncated, or copied from another
layer or folder is recomputed with a warning, as is one that lacks one of its fields
(`LAYER_FIELDS`, `CEILING_FIELDS`): `cachefile`'s one policy. `key.json` records the key for
people and is written only when missing or different, so a complete cache on a read-only disk
serves a run.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from .. import cachefile
from ..ceiling import loso_isc, max_r_from_reliability, split_half_ceilings, subject_max_r
from ..data import surface_paths, volume_paths
from ..features import cache as feature_cache
from ..fingerprint import file_stats
from ..io import atomic_write_text, json_text, refused_writes
from ..ridge import chunks
from .config import ScoreConfig
from . import bold as bold_store
from .inputs import Selection, describe, model_files

# bump the version when the pipeline computes other numbers from the same key (2: streamed nested ridge, buffered
# chunk folds, per-group BOLD z-scoring)
CACHE = cachefile.Kind("scores", version=2, what="cached result")
# What a layer file must hold to be used (run._solve_layer writes these and chunk_vertices,
# which older files lack), and the ceiling file (half_r, p_null and the null's settings: issue 24's ceiling).
LAYER_FIELDS = ("r_folds", "alpha_idx", "test_groups", "solver")
CEILING_FIELDS = ("split_half", "max_r", "loso", "subject_max_r", "n_subjects", "half_r", "p_null", "null")


def results_key(cfg: ScoreConfig, sel: Selection, augs: dict | None = None) -> dict:
    files = model_files(sel.model_folder) + [Path(s.transcript.source) for s in sel.stories]
    files += [Path(s.transcript.transcript_path) for s in sel.stories if s.transcript.transcript_path]  # what the model reads
    for scan, _ in sel.scans.values():
        if sel.kind == "surface":
            files += surface_paths(scan, sel.hemi, sel.derivative, sel.space)
        else:
            files.append(volume_paths(scan, sel.derivative, sel.space)[0])
    selection = {k: v for k, v in describe(sel).items() if k not in ("layers", "notes", "pooled")}
    extra = dict(augmentation=dict(mode=cfg.augment.mode, ids={n: a.id for n, a in sorted(augs.items())})) if augs else {}
    return CACHE.key(
        **extra, selection=selection, model_dtype=cfg.model.dtype,
        features={k: v for k, v in dataclasses.asdict(cfg.features).items()
                  if k not in ("layers", "batch_size", "allow_acausal", "allow_zero_columns", "nuisance",
                                "nuisance_band")},
        features_version=feature_cache.CACHE.version, bold_version=bold_store.CACHE.version,  # they set the numbers too
        ridge={k: v for k, v in dataclasses.asdict(cfg.ridge).items() if k != "target_chunk"},
        ceiling=dict(n_splits=cfg.ceiling.n_splits), on_unsorted=cfg.data.on_unsorted, trim_start=cfg.data.trim_start,
        seed=cfg.seed,
        files=file_stats(sorted(set(map(str, files)))),
    )


def results_dir(cache_dir: Path, key: dict) -> Path:
    return CACHE.entry(CACHE.under(cache_dir), key)


def write_key(folder: Path, key: dict) -> None:
    """`folder/key.json`, unless it already holds `key` (module docstring)."""
    path, text = Path(folder) / "key.json", json_text(key)
    try:
        if path.read_text() == text:
            return
    except (OSError, UnicodeDecodeError):  # missing or unreadable: write it
        pass
    with refused_writes(path.parent, cachefile.CACHE_OPTION):
        atomic_write_text(path, text)


def _file_key(path: Path) -> dict:
    """What a results file is: its folder (the results key's digest) and its name."""
    return dict(results=path.parent.name, file=path.name)


def save(path: Path, **arrays) -> None:
    cachefile.write_npz(path, _file_key(Path(path)), **arrays)


def load(path: Path, fields=()) -> dict | None:
    """The arrays of a cached .npz, or None (recompute) when it is missing, not the stamped file
    (module docstring), or lacks one of `fields` (written by code that stored fewer)."""
    def lacking(got: dict) -> str | None:
        missing = [f for f in fields if f not in got]
        return f"it lacks field(s) {missing} (has {sorted(got)})" if missing else None

    path = Path(path)
    return CACHE.load(path, _file_key(path), cachefile.read_npz, lacking)


def layer_path(folder: Path, layer: int) -> Path:
    return folder / f"layer-{layer:03d}.npz"


def load_layer(folder: Path, layer: int) -> dict | None:
    """A finished layer's results (`LAYER_FIELDS`), or None to compute it."""
    return load(layer_path(folder, layer), LAYER_FIELDS)


def ceiling(bold, runs_N: np.ndarray, folder: Path, n_splits: int, seed: int, width: int, n_null: int = 100,
            null_buffer: int = 20) -> dict:
    """split_half, max_r (V,) of the subject mean; loso ISC and subject_max_r (S, V); n_subjects
    (V,) the subjects with data at each vertex, the only ones its ceiling counts (a subject's
    bad vertex costs that subject only, as in the subject mean: `ceiling`'s skip_missing); half_r and
    p_null (V,): the half-vs-half ceiling and its circular-shift p (`ceiling.split_half_ceilings`, the
    same splits); null: (n_null, null_buffer) they were computed with (another asks anew); cached.

    Computed on the responses the ridge fits (each subject z-scored per story),
    streamed in balanced vertex chunks of at most `width` from the BOLD cache
    (`ridge.chunks.stream`: the last chunk is padded with constant columns, which come out NaN
    and are dropped; several local devices each take a share of a chunk's vertices): one
    compilation, bounded memory.
    """
    path = folder / "ceiling.npz"
    got = load(path, CEILING_FIELDS)
    v, s = bold.n_vertices, len(bold.subjects)
    null = np.array([n_null, null_buffer])
    if got is not None and got["loso"].shape == (s, v) and np.array_equal(got["null"], null):
        return got
    if s < 2:
        nan = np.full(v, np.nan, np.float32)
        return dict(split_half=nan, max_r=nan, loso=nan[None], subject_max_r=nan[None],
                    n_subjects=bold.has_SV.sum(0), half_r=nan, p_null=nan, null=null)
    mesh = chunks.target_mesh()
    workers = chunks.cpu_workers() if mesh is None else 1  # two chunks in flight on a CPU, each half as wide
    layout = chunks.chunk_layout(v, max(1, width // workers), n_devices=mesh.size if mesh is not None else 1)
    read = lambda v0, v1: jnp.transpose(bold.chunk(v0, v1, runs_N, with_subjects=True)[:, :s], (1, 0, 2))  # noqa: E731
    solve = lambda y_SNV: (*split_half_ceilings(y_SNV, n_splits=n_splits, seed=seed, n_null=n_null,  # noqa: E731
                                                buffer=null_buffer, skip_missing=True),
                           loso_isc(y_SNV, skip_missing=True))
    rel, half, p, loso = [], [], [], []
    for chunk, (rel_V, half_V, p_V, loso_SV) in chunks.stream(solve, read, layout, mesh, workers=workers):
        rel.append(rel_V[:chunk.used])
        half.append(half_V[:chunk.used])
        p.append(p_V[:chunk.used])
        loso.append(loso_SV[:, :chunk.used])
    rel, loso = np.concatenate(rel), np.concatenate(loso, 1)
    count = bold.has_SV.sum(0)
    out = dict(split_half=rel, max_r=np.asarray(max_r_from_reliability(rel)), loso=loso,
               subject_max_r=subject_max_r(rel, loso, count), n_subjects=count, half_r=np.concatenate(half),
               p_null=np.concatenate(p), null=null)
    save(path, **out)
    return out
