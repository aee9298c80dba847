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

from ..augment import augmented_reading
from ..data import read_surface, read_volume, trim_to_story
from ..features import WordColumns, cache, tr_features, word_features
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


def story_features(model, tok, story, sel: Selection, opts, cache_dir, aug=None, mode: str = "context",
                   weights_id: str | None = None):
    """(heard (L + 1, W, D), inserted block or None) of one story, through the feature cache.

    The model reads the story's `Transcript.reading()` (its transcript.txt when there is
    one, else the alignment words). With an augmentation it reads that text with the
    inserted words, and the heard words' features are taken from that reading (at their
    real times). mode "timed" also returns the inserted words' features with their times
    (their anchor word's time), which `layer_design` adds as a second block: the inserted
    content gets its own ridge weights instead of being summed into the heard words'
    dimensions. Features are memory maps of the cache (or `WordColumns` views of one):
    indexing a layer reads that layer only. weights_id: `cache.weights_hash(model)`,
    computed once per run by `word_feats`.
    """
    reading = story.transcript.reading()
    kw = dict(batch_size=opts.batch_size, cache_dir=cache_dir, weights_id=weights_id)
    if aug is None:
        return word_features(model, tok, reading, sel.context, sel.stride, opts.pooling, **kw), None
    read, heard, anchor = augmented_reading(reading, aug)
    feats = word_features(model, tok, read, sel.context, sel.stride, opts.pooling, augmentation_id=aug.id, **kw)
    if mode == "context":
        return WordColumns(feats, heard >= 0), None
    inserted = heard < 0
    return WordColumns(feats, heard >= 0), (WordColumns(feats, inserted), story.word_times[anchor[inserted]])


def word_feats(model, tok, sel: Selection, opts, cache_dir, progress: bool = False, augs=None, mode="context"):
    """`story_features` of every selected story (augs: story name -> Augmentation). The
    weights are fingerprinted once here for all stories' cache keys."""
    stories = sel.stories
    if progress:
        from tqdm.auto import tqdm
        stories = tqdm(stories, desc="word features", unit="story")
    augs = augs or {}
    weights_id = cache.weights_hash(model) if cache_dir is not None else None
    return [story_features(model, tok, s, sel, opts, cache_dir, augs.get(s.name), mode, weights_id) for s in stories]


def layer_design(feats, sel: Selection, layer: int, opts) -> np.ndarray:
    """(N, D * n_delays [* 2 with an inserted block]) design of one hidden state over all stories."""
    parts = []
    for (heard, extra), s in zip(feats, sel.stories):
        blocks = [(heard, s.word_times)] + ([extra] if extra is not None else [])
        x = np.concatenate([tr_features(f, t, s.scan_trs, s.tr, layers=[layer], method=opts.downsample,
                                        delays=tuple(opts.delays))[0] for f, t in blocks], axis=-1)
        parts.append(x[s.onset_tr:])
    widths = {p.shape[1] for p in parts}
    if len(widths) > 1:  # timed mode needs every story augmented (inputs.resolve_augmentations checks)
        raise ValueError(f"stories give designs of different widths {sorted(widths)}")
    return np.concatenate(parts, 0).astype(np.float32)
