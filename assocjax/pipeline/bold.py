"""BOLD for the ridge in bounded memory: every (subject, story) is read once, cut to the
story (minus `trim_start` onset TRs) and stored vertex-major as float32 `.npy` under the
cache; the fits then stream vertex chunks from those memory-mapped files, so no stage holds
all subjects x all vertices at once (75 listeners x 81,924 fsaverage6 vertices x 281 TRs is
6.9 GB in float32).

A chunk is (N, F, Vc): N = the selected stories' rows concatenated, F = the subjects then
their mean (or the mean only), Vc vertices. Each subject is z-scored per vertex within each
story, so that the mean weighs subjects alike; the ridge then z-scores every target again
inside each outer fold with that fold's training rows only (`ridge.prepare_nested`'s
target_runs_N), so no statistic of a held-out chunk reaches its model. (Z-scoring each CV
chunk on its own instead would subtract each training chunk's mean, which carries the
neighbouring held-out chunk's autocorrelated noise into the whole training chunk: measured,
a negative bias of -0.003 r on pure AR(1) noise that no buffer removes.)

A subject has no data at a vertex when, in any of its stories, the vertex's time series
(`no_data_reasons`, in this order) holds a non-finite value (one NaN time point costs that
subject the vertex: a hole in a series cannot be fitted), is flat, holds a spike (a value
more than SPIKE_SDS (1000) robust standard deviations, 1.4826 x the median absolute
deviation, from its median: no physiology, a corrupted value; the robust SD is floored at the
flatness threshold, so a series flat but for a few values counts too), or is too large for
float32 statistics (its sum of squared deviations overflows float32, so z-scoring it would
give inf). It is NaN there, which the ridge masks for that subject only; the subject mean
and the ceiling use the subjects that have data at the vertex. Vertices are kept where at
least one subject has data; `Bold.notes` name every subject that lacks data at kept
vertices, with the image file, the count and the reason.
"""
from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .. import cachefile
from ..alignment import zscore_per_run
from ..data import read_surface, read_volume, surface_paths, trim_to_story, volume_paths
from ..fingerprint import file_stats
from .inputs import Selection

# bump the version when what is stored for the same images changes (2: the meta holds why each vertex has no data,
# spikes and float32 overflow are no data)
CACHE = cachefile.Kind("bold", version=2, what="BOLD cache file")
SPIKE_SDS = 1000.0
# Why a subject has no data at a vertex (module docstring): codes stored in the cache's meta.
NO_DATA = {1: "non-finite values", 2: "flat", 3: f"a spike (> {SPIKE_SDS:g} robust SDs from the median)",
           4: "values too large for float32 statistics"}


@dataclasses.dataclass(frozen=True)
class Bold:
    """Where every (subject, story) block lives, and what the space looks like.

    files[(subject, story)]: (V_all, n_rows) float32 .npy, vertex-major, NaN where no data.
    has_SV: (S, V_kept) whether each subject has data at each kept vertex (all stories).
    keep_V: (V_all,) vertices where at least one subject has data.
    """

    files: dict
    subjects: tuple[str, ...]
    stories: tuple[str, ...]
    rows: tuple[int, ...]
    keep_V: np.ndarray
    has_SV: np.ndarray
    hemi_sizes: tuple[int, ...]
    hemis: tuple[str, ...]
    brain_mask: np.ndarray | None = None
    affine: np.ndarray | None = None
    notes: tuple[str, ...] = ()   # one per subject without data at some kept vertices (module docstring)

    @property
    def n_rows(self) -> int:
        return sum(self.rows)

    @property
    def n_vertices(self) -> int:
        return int(self.keep_V.sum())

    def dropped(self) -> dict[str, int]:
        """Kept vertices at which each subject has no data (its scores are NaN there)."""
        return {s: int((~self.has_SV[i]).sum()) for i, s in enumerate(self.subjects)}

    def subjects_block(self, v0: int, v1: int) -> np.ndarray:
        """(N, S, Vc) float32 raw (un-z-scored) rows of kept vertices v0:v1 for every subject."""
        cols = np.flatnonzero(self.keep_V)[v0:v1]
        lo, hi = int(cols[0]), int(cols[-1]) + 1
        out = np.empty((self.n_rows, len(self.subjects), len(cols)), np.float32)
        for i, sub in enumerate(self.subjects):
            start = 0
            for story, n in zip(self.stories, self.rows):
                block = np.load(self.files[(sub, story)], mmap_mode="r")[lo:hi]  # contiguous vertex rows
                out[start:start + n, i] = block[cols - lo].T
                start += n
        return out

    def chunk(self, v0: int, v1: int, runs_N: np.ndarray, with_subjects: bool = True) -> jnp.ndarray:
        """(N, F, Vc) on the device: subjects z-scored per story (`runs_N`), then their mean
        (module docstring). Only the raw block passes through host memory."""
        runs = np.unique(runs_N, return_inverse=True)[1].reshape(-1)
        return fits_from_block(jnp.asarray(self.subjects_block(v0, v1)), jnp.asarray(runs, jnp.int32),
                               n_runs=int(runs.max()) + 1, with_subjects=with_subjects)


@partial(jax.jit, static_argnames=("n_runs", "with_subjects"))
def fits_from_block(raw_NSV, runs_N, n_runs: int, with_subjects: bool = True):
    """(N, F, V): each subject z-scored per run ("nan" policy: flat in a story = no data there),
    a subject without data at a vertex NaN in its whole column, and the mean over the subjects
    that have data (NaN where none has)."""
    n, s, v = raw_NSV.shape
    z = zscore_per_run(raw_NSV.reshape(n, s * v), runs_N, n_runs, constant="nan").reshape(n, s, v)
    has_SV = jnp.all(jnp.isfinite(z), axis=0)
    z = jnp.where(has_SV[None], z, jnp.nan)
    mean = jnp.sum(jnp.where(has_SV[None], z, 0.0), axis=1) / jnp.where(has_SV.any(0), has_SV.sum(0), jnp.nan)
    return jnp.concatenate([z, mean[:, None]], 1) if with_subjects else mean[:, None]


def _key(sel: Selection, scan, story, trim_start: int, mask_from: str | None) -> dict:
    return CACHE.key(files=file_stats(_image_paths(sel, scan)), story=story.name, onset_tr=story.onset_tr,
                     n_trs=story.n_trs, trim_start=trim_start, kind=sel.kind, space=sel.space, hemi=sel.hemi,
                     derivative=sel.derivative, mask_from=mask_from)


def _block_paths(folder: Path, key: dict) -> tuple[Path, Path]:
    """An entry's two files: the (V, n_rows) float32 block and its meta (`_save_block`)."""
    return CACHE.entry(folder, key, ".npy"), CACHE.entry(folder, key, ".meta.npz")


def _save_block(folder: Path, key: dict, y_VN: np.ndarray, **meta) -> None:
    data, meta_path = _block_paths(folder, key)
    cachefile.write_npy(data, y_VN, key | dict(part="data"))
    cachefile.write_npz(meta_path, key | dict(part="meta"), **meta)


def _load_block(folder: Path, key: dict, rows: int) -> dict | None:
    """The block's meta when both files are the stamped entry for `key` (`cachefile`: checked
    byte for byte, once per run as `prepare` opens each block) and the block has the shape the
    meta and the story give, else None (recompute; a damaged file with a warning)."""
    data, meta = _block_paths(folder, key)
    m = CACHE.load(meta, key | dict(part="meta"), cachefile.read_npz)
    if m is None:
        return None

    def shape_problem(a) -> str | None:  # cannot happen for a file written for this key: the shape contract
        want = (m["has"].size, rows)
        if a.dtype != np.float32 or a.shape != want:
            return f"holds {a.dtype} {a.shape}, its meta and story say float32 {want}"
        return None

    a = CACHE.load(data, key | dict(part="data"), lambda p: np.load(p, mmap_mode="r"), shape_problem)
    return None if a is None else m


def prepare(sel: Selection, cache_dir: Path, trim_start: int = 0, progress: bool = False,
            workers: int | None = None) -> Bold:
    """Read every selected (subject, story) once into the vertex-major cache (module docstring);
    reruns reuse complete files keyed by the images' size and mtime, the story and the trim.
    workers: subjects read at once (None: `read_workers()`); the first subject is read alone
    (a volume's later scans are read inside its brain mask)."""
    if len(sel.groups()) != 1:  # a per-story selection is read one fit group at a time
        raise ValueError(f"pipeline.bold.prepare needs one fit group, got stories {[s.name for s in sel.stories]} "
                         "fitted separately: call it on each of sel.groups()")
    folder = CACHE.under(cache_dir)
    rows = tuple(s.n_trs - trim_start for s in sel.stories)
    if min(rows) < 1:
        raise ValueError(f"--data.trim-start {trim_start} leaves no TR of story "
                         f"{sel.stories[rows.index(min(rows))].name!r} ({min(rows) + trim_start} TRs)")
    subjects = list(sel.subjects)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(subjects), desc="reading BOLD", unit="subject")
    scans_read: dict = {}  # the first subject's scans, for its later stories
    first_sub = _subject_blocks(sel, folder, subjects[0], rows, trim_start, None, None, slice(0, 1), scans_read)
    first_scan, _, first = first_sub[0]
    mask_from = first_scan.stem if sel.kind == "volume" else None  # later scans read inside the first's brain mask
    read = partial(_subject_blocks, sel, folder, rows=rows, trim_start=trim_start, mask_from=mask_from,
                   mask=first.get("brain_mask"))
    metas = {subjects[0]: first_sub + read(subjects[0], stories=slice(1, None), read=scans_read)}
    del scans_read
    if bar is not None:
        bar.update()
    with ThreadPoolExecutor(workers or read_workers()) as pool:  # decoding and checks release the GIL
        for sub, got in zip(subjects[1:], pool.map(read, subjects[1:])):
            metas[sub] = got
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    files, has, why = {}, [], {}
    for sub in subjects:
        mine = []
        for story, (scan, path, m) in zip(sel.stories, metas[sub]):
            if m["has"].size != first["has"].size:
                raise ValueError(f"{_files(sel, scan)}: {_sizes(m)}, but {first_scan.stem}: {_sizes(first)}; "
                                 f"all scans of a run must be in one space ({sel.space})")
            if not m["has"].any():
                raise ValueError(f"{_files(sel, scan)}: constant or non-finite at every vertex/voxel during story "
                                 f"{story.name!r} (an empty or broken image); leave {sub} out with --data.subjects, "
                                 "or list the scan in code/scan_exclude.json")
            files[(sub, story.name)] = path
            mine.append(m["has"])
            why[(sub, story.name)] = (scan, m["why"], m["hemi_sizes"])
        has.append(np.logical_and.reduce(mine))
    has_SV = np.stack(has)
    keep = has_SV.any(0)
    if not keep.any():
        raise ValueError("no vertex has finite, non-constant data in any selected scan")
    return Bold(files, sel.subjects, tuple(s.name for s in sel.stories), rows, keep, has_SV[:, keep],
                tuple(int(h) for h in first["hemi_sizes"]), tuple(str(h) for h in first["hemis"]),
                first.get("brain_mask"), first.get("affine"), _loss_notes(sel, why, keep, has_SV))


def read_workers() -> int:
    """Subjects `prepare` reads at once: 2 where there are 2 cores or more (measured on pieman at
    fsaverage6: GIfTI decoding, the no-data checks and the cache's checksums keep a core each)."""
    return min(2, os.cpu_count() or 1)


def _subject_blocks(sel: Selection, folder: Path, sub: str, rows, trim_start: int, mask_from, mask,
                    stories: slice = slice(None), read: dict | None = None) -> list:
    """[(scan, block path, meta)] of one subject's stories (those of `stories`): each from the
    cache, or read from its images (a scan shared by stories once: `read`), checked
    (`no_data_reasons`) and stored."""
    read = {} if read is None else read
    out = []
    for story, n in list(zip(sel.stories, rows))[stories]:
        scan, st = sel.scans[(sub, story.name)]
        key = _key(sel, scan, st, trim_start, mask_from)
        m = _load_block(folder, key, n)
        if m is None:
            if scan.stem not in read:
                read[scan.stem] = _read(sel, scan, mask)
            block = trim_to_story(read[scan.stem], story=st)
            y_VN = np.ascontiguousarray(block.data[trim_start:].T, dtype=np.float32)
            codes = no_data_reasons(y_VN)
            ok = codes == 0
            y_VN[~ok] = np.nan
            m = dict(has=ok, why=codes, hemis=np.asarray(block.hemis, dtype="U1"),
                     hemi_sizes=np.asarray(block.hemi_sizes or (y_VN.shape[0],), np.int64))
            if block.brain_mask is not None:
                m |= dict(brain_mask=block.brain_mask, affine=block.affine)
            _save_block(folder, key, y_VN, **m)
            del y_VN, block
        out.append((scan, _block_paths(folder, key)[0], m))
    return out


def no_data_reasons(y_VN: np.ndarray, block: int = 8192) -> np.ndarray:
    """(V,) uint8: 0 where a vertex's time series (a row of the vertex-major y_VN) is usable,
    else why not (`NO_DATA`; module docstring). Float64 statistics, `block` vertices at a time
    (bounded memory; rows are contiguous, so the medians are fast)."""
    why = np.zeros(y_VN.shape[0], np.uint8)
    for v0 in range(0, y_VN.shape[0], block):
        y = np.asarray(y_VN[v0:v0 + block], np.float32).astype(np.float64)
        finite = np.isfinite(y).all(1)
        y[~finite] = 0.0
        mean = y.mean(1, keepdims=True)
        ss = np.square(y - mean).sum(1)
        floor = 1e-6 * np.maximum(np.abs(mean[:, 0]), 1.0)   # float32 resolution: below it a series is flat
        dev = np.abs(y - np.median(y, 1, keepdims=True))
        robust_sd = np.maximum(1.4826 * np.median(dev, 1), floor)
        rules = [~finite, np.sqrt(ss / y.shape[1]) <= floor, (dev > SPIKE_SDS * robust_sd[:, None]).any(1),
                 ss > np.finfo(np.float32).max]
        part = why[v0:v0 + block]
        for code, hit in zip(NO_DATA, rules):   # the first rule that applies names the reason
            part[(part == 0) & hit] = code
    return why


def _loss_notes(sel: Selection, why: dict, keep_V: np.ndarray, has_SV: np.ndarray) -> tuple[str, ...]:
    """One note per subject without data at some kept vertices: how many, and per image file
    and story how many for which reason (`NO_DATA`)."""
    notes = []
    for i, sub in enumerate(sel.subjects):
        lost = keep_V & ~has_SV[i]
        if not lost.any():
            continue
        parts = []
        for story in sel.stories:
            scan, codes, sizes = why[(sub, story.name)]
            edges = np.cumsum([0, *sizes])
            for path, v0, v1 in zip(_image_paths(sel, scan), edges[:-1], edges[1:]):
                counts = {c: int(np.sum(lost[v0:v1] & (codes[v0:v1] == c))) for c in NO_DATA}
                said = ", ".join(f"{n} ({NO_DATA[c]})" for c, n in counts.items() if n)
                if said:
                    parts.append(f"{path} ({story.name}): {said}")
        notes.append(f"{sel.name}: {sub} has no usable data at {int(lost.sum())} of {int(keep_V.sum())} kept "
                     f"vertices/voxels (left out there for that subject only: its scores, the subject mean and the "
                     f"ceiling use the others): " + "; ".join(parts))
    return tuple(notes)


def _image_paths(sel: Selection, scan) -> tuple:
    """The image file(s) of a scan, in the order of its vertices (L then R; a volume: one)."""
    if sel.kind == "surface":
        return surface_paths(scan, sel.hemi, sel.derivative, sel.space)
    return (volume_paths(scan, sel.derivative, sel.space)[0],)


def _files(sel: Selection, scan) -> str:
    """The image file(s) of a scan, for messages."""
    return " and ".join(str(p) for p in _image_paths(sel, scan))


def _sizes(m: dict) -> str:
    per = ", ".join(f"hemi-{h} {n}" for h, n in zip(m["hemis"], m["hemi_sizes"])) if len(m["hemis"]) > 1 else ""
    return f"{m['has'].size} vertices/voxels" + (f" ({per})" if per else "")


def _read(sel: Selection, scan, mask):
    if sel.kind == "surface":
        return read_surface(scan, sel.hemi, sel.derivative, sel.space)
    return read_volume(scan, sel.derivative, sel.space, mask=mask)
