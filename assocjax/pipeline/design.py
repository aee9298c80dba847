"""The regression's design: CV groups over the rows, and each layer's X (the BOLD is in `bold`).

Stories are concatenated in the selection's order. A story's design is built over its
reference scan's TRs and then cut to the story (minus the onset trim), exactly as its BOLD
is, so words just before the story still reach it through the FIR delays.
"""
from __future__ import annotations

import math

import numpy as np

from .. import fingerprint
from ..augment import augmented_reading
from ..features import WordColumns, tr_features, word_features
from .delays import story_delays
from .inputs import Selection


def story_rows(sel: Selection, trim_start: int) -> list[int]:
    """Rows each story contributes after the onset trim."""
    return [s.n_trs - trim_start for s in sel.stories]


def run_ids(lengths: list[int]) -> np.ndarray:
    """(N,) story index of every row of the concatenated stories."""
    return np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)


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
    indexing a layer reads that layer only. weights_id: `fingerprint.weights_id(model)`,
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
    """`story_features` of every selected story (augs: story name -> Augmentation), each
    checked to be finite at the scored layers (`check_finite`). The weights are fingerprinted
    once here for all stories' cache keys."""
    stories = sel.stories
    if progress:
        from tqdm.auto import tqdm
        stories = tqdm(stories, desc="word features", unit="story")
    augs = augs or {}
    weights_id = fingerprint.weights_id(model) if cache_dir is not None else None
    out = []
    for s in stories:
        out.append(story_features(model, tok, s, sel, opts, cache_dir, augs.get(s.name), mode, weights_id))
        check_finite(out[-1], s.name, sel)
    return out


# a feature above this makes the ridge's X'X overflow float32 (its square is near float32's 3.4e38)
HUGE_FEATURE = 1e18


def check_finite(feats, story: str, sel: Selection) -> None:
    """Refuse word features holding NaN or Inf, only zeros, or values above HUGE_FEATURE at a
    scored hidden state, before any ridge: every score of that layer would be NaN (or the
    layer's design all zero). Finite weights can still give them (an activation overflowing
    the compute dtype, e.g. bfloat16 or float16; a final norm of overflowing values gives
    zeros), and so can a cache made by a damaged model. Reads only the scored layers, as
    `layer_design` does."""
    heard, extra = feats
    blocks = [heard] + ([extra[0]] if extra is not None else [])
    kinds: dict[str, list[int]] = {}
    for layer in sel.layers:
        values = [b[layer] for b in blocks]
        if not all(np.isfinite(v).all() for v in values):
            kinds.setdefault("NaN or Inf", []).append(layer)
        elif not any(v.any() for v in values):
            kinds.setdefault("only zeros", []).append(layer)
        elif max(float(np.abs(v).max(initial=0)) for v in values) > HUGE_FEATURE:
            kinds.setdefault(f"values above {HUGE_FEATURE:g}", []).append(layer)
    if kinds:
        what = "; ".join(f"{kind} at hidden state(s) {', '.join(map(str, layers))}" for kind, layers in kinds.items())
        raise ValueError(f"model {sel.model_folder}: its word features of story {story!r} hold {what} (an activation "
                         "overflowing the compute dtype (--model.dtype), or damaged weights); every score of those "
                         "layers would be NaN")


def layer_design(feats, sel: Selection, layer: int, opts, trim_start: int = 0) -> np.ndarray:
    """(N, D * n_delays [* 2 with an inserted block]) design of one hidden state over all stories,
    each cut to its story minus the first `trim_start` TRs, exactly as the BOLD is."""
    parts = []
    for (heard, extra), s in zip(feats, sel.stories):
        blocks = [(heard, s.word_times)] + ([extra] if extra is not None else [])
        x = np.concatenate([tr_features(f, t, s.scan_trs, s.tr, layers=[layer], method=opts.downsample,
                                        delays=story_delays(opts, s.tr))[0] for f, t in blocks], axis=-1)
        part = x[s.onset_tr + trim_start:]
        zero = np.flatnonzero(~np.any(part != 0, axis=0))
        if zero.size and not opts.allow_zero_columns:
            raise ValueError(f"story {s.name!r}, hidden state {layer}: {zero.size} of the design's {part.shape[1]} "
                             f"columns are zero at every TR (first: {zero[:5].tolist()}); no word's features reach them. "
                             "Check the word times against the scan, or pass --features.allow-zero-columns")
        parts.append(part)
    widths = {p.shape[1] for p in parts}
    if len(widths) > 1:  # timed mode needs every story augmented (inputs.resolve_augmentations checks)
        raise ValueError(f"stories give designs of different widths {sorted(widths)}")
    return np.concatenate(parts, 0).astype(np.float32)
