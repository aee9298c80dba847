"""The regression's inputs: BOLD Y (TRs, subjects, vertices), CV groups, and each layer's X.

Stories are concatenated in the selection's order. Each subject's BOLD is z-scored per
vertex within each story (the usual per-run treatment), so story-level offsets cannot
masquerade as signal. A story's design is built over its reference scan's TRs and then cut
to the story, exactly as its BOLD is, so words just before the story still reach it
through the FIR delays.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..data import read_surface, read_volume, trim_to_story
from ..features import tr_features, word_features
from .inputs import Selection


@dataclasses.dataclass(frozen=True)
class Bold:
    y_NSV: np.ndarray          # float32, finite vertices only (see `keep_V`)
    keep_V: np.ndarray         # bool over all vertices of the space (L then R for surfaces)
    hemi_sizes: tuple[int, ...]
    hemis: tuple[str, ...]
    brain_mask: np.ndarray | None = None  # volumes: the voxels (C order) the columns are
    affine: np.ndarray | None = None


def _zscore(y_TV: np.ndarray) -> np.ndarray:
    sd = y_TV.std(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (y_TV - y_TV.mean(0)) / np.where(sd > 0, sd, np.nan)  # constant vertices -> NaN -> left out


def load_bold(sel: Selection, progress: bool = False) -> Bold:
    """Every subject's story blocks, z-scored; vertices not finite for all subjects are dropped."""
    blocks: list[list[np.ndarray]] = []
    first = None
    subjects = sel.subjects
    if progress:
        from tqdm.auto import tqdm
        subjects = tqdm(subjects, desc="reading BOLD", unit="subject")
    for sub in subjects:
        cache, row = {}, []
        for story in sel.stories:
            scan, st = sel.scans[(sub, story.name)]
            if scan.stem not in cache:
                if sel.kind == "surface":
                    cache[scan.stem] = read_surface(scan, sel.hemi, sel.derivative, sel.space)
                else:  # one voxel set for everyone: the first scan's brain mask
                    mask = None if first is None else first.brain_mask
                    cache[scan.stem] = read_volume(scan, sel.derivative, sel.space, mask=mask)
                first = first or cache[scan.stem]
            row.append(_zscore(trim_to_story(cache[scan.stem], story=st).data))
        blocks.append(row)
    y = np.stack([np.concatenate(row, 0) for row in blocks], 1).astype(np.float32)  # (N, S, V)
    keep = np.isfinite(y).all((0, 1))
    if not keep.any():
        raise ValueError("no vertex has finite, non-constant data in every selected scan")
    return Bold(np.ascontiguousarray(y[:, :, keep]), keep, first.hemi_sizes or (keep.size,), first.hemis,
                first.brain_mask, first.affine)


def story_lengths(sel: Selection) -> list[int]:
    return [s.n_trs for s in sel.stories]


def cv_groups(lengths: list[int], chunks: int | None) -> tuple[np.ndarray, int]:
    """(group id per TR, chunks per story). Each story is one group; with fewer than 3
    stories (or `chunks` given) each story is cut into contiguous chunks, one group each,
    because nested CV needs at least 2 training groups inside every outer fold."""
    if chunks is None:
        chunks = 1 if len(lengths) >= 3 else math.ceil(4 / len(lengths))
    if chunks < 1 or chunks > min(lengths):
        raise ValueError(f"--ridge.story-chunks {chunks} must be in 1..{min(lengths)} (the shortest story's TRs)")
    if len(lengths) * chunks < 3:
        raise ValueError(f"{len(lengths)} story/stories x {chunks} chunk(s) give fewer than 3 CV groups; "
                         "raise --ridge.story-chunks")
    ids = [np.concatenate([np.full(len(part), i * chunks + j) for j, part in enumerate(np.array_split(np.arange(n), chunks))])
           for i, n in enumerate(lengths)]
    return np.concatenate(ids).astype(np.int32), chunks


def word_feats(model, tok, sel: Selection, opts, cache_dir, progress: bool = False) -> list[np.ndarray]:
    """(L + 1, W, D) word features per story, through the feature cache."""
    stories = sel.stories
    if progress:
        from tqdm.auto import tqdm
        stories = tqdm(stories, desc="word features", unit="story")
    return [word_features(model, tok, list(s.transcript.words), sel.context, sel.stride, opts.pooling,
                          batch_size=opts.batch_size, cache_dir=cache_dir) for s in stories]


def layer_design(feats: list[np.ndarray], sel: Selection, layer: int, opts) -> np.ndarray:
    """(N, D * n_delays) design of one hidden state over all stories."""
    parts = []
    for f, s in zip(feats, sel.stories):
        x = tr_features(f, s.word_times, s.scan_trs, s.tr, layers=[layer], method=opts.downsample,
                        delays=tuple(opts.delays))[0]
        parts.append(x[s.onset_tr:])
    return np.concatenate(parts, 0).astype(np.float32)
