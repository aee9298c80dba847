"""Per-layer word features with strictly causal context, and their TR designs.

The model reads a story's `stimuli.Reading` (the transcript's punctuated text, or the words
joined by spaces). Its tokens are cut into windows of `context` positions every `stride`
tokens. Window 0 gives its tokens [0, width); window k > 0 gives only its last `stride`
tokens, so every token is read with at least (width - stride) tokens of left context, or
with its whole prefix near the story start. width = context minus the special tokens the
tokenizer puts before a text (LLaMA's <s>): every window starts with them, as the model
was trained (the first position acts as an attention sink), and positions count from the
window start. When the story fits in one window the features equal a full-prefix forward
pass per word; otherwise a token sees the start of its window, not the whole story.
Attention is causal, so no word ever sees a later word.

A token belongs to the word whose character span holds its last character (leading spaces
belong to the token that follows them; punctuation between words belongs to no word, but
is read). Pooling: "last" (the word's last token, default) or "mean".

Memory: hidden states leave the device one layer of one batch of windows at a time and
are pooled straight into the (L + 1, W, D) output (an array, or the feature cache's
memory-mapped file), so no (L + 1, n_tokens, D) copy is ever held.
"""
from __future__ import annotations

import mmap
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..alignment import downsample, fir_delays
from ..models.modeling import forward_hidden_top
from ..stimuli import Reading

POOLINGS = ("last", "mean")


class Tokens(NamedTuple):
    ids: np.ndarray       # (N,) int32 token ids of the text (no special tokens)
    word_of: np.ndarray   # (N,) int32 word of each token, -1 for tokens of no word
    prefix: tuple[int, ...]  # special tokens the tokenizer puts before a text (LLaMA: (<s>,))


def as_reading(words: Sequence[str] | Reading) -> Reading:
    if isinstance(words, Reading):
        return words
    words = [str(w) for w in words]
    if not words:
        raise ValueError("no words to tokenize")
    return Reading.from_words(words)


def word_token_index(tokenizer, words: Sequence[str] | Reading) -> Tokens:
    """Token ids of the reading (words: a Reading, or words to join by spaces), the word of
    every token, and the tokenizer's leading special tokens (module docstring).

    Special tokens the tokenizer adds around the text are not part of `ids`: the leading
    ones become `prefix` (added to every window), trailing ones (an end-of-text token) are
    dropped, since no word's features could depend on them.
    """
    reading = as_reading(words)
    if not len(reading):
        raise ValueError("no words to tokenize")
    enc = tokenizer(reading.text, return_offsets_mapping=True, return_special_tokens_mask=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int32)
    special = np.asarray(enc["special_tokens_mask"], bool)
    n_lead = int(np.argmin(special)) if not special.all() else len(ids)
    n_trail = int(np.argmin(special[::-1])) if not special.all() else 0
    keep = slice(n_lead, len(ids) - n_trail)
    offsets = enc["offset_mapping"][keep]
    last_char = np.asarray([e - 1 for _, e in offsets], np.int64)
    spans = reading.spans_W2
    word = np.searchsorted(spans[:, 1], last_char, side="right")  # first span ending after the char
    inside = (word < len(spans)) & (spans[np.minimum(word, len(spans) - 1), 0] <= last_char)
    empty = np.asarray([s == e for s, e in offsets], bool)  # special tokens inside the text
    word_of = np.where(inside & ~empty, word, -1).astype(np.int32)
    missing = np.setdiff1d(np.arange(len(reading)), word_of)
    if missing.size:
        raise ValueError(f"words {missing[:5].tolist()} got no tokens from the tokenizer")
    return Tokens(ids[keep], word_of, tuple(int(i) for i in ids[:n_lead]))


def windows(n_tokens: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """[(start, first token this window provides, end)] covering all tokens once."""
    if not 0 < stride <= context:
        raise ValueError(f"need 0 < stride <= context; got context={context}, stride={stride}")
    out = [(0, 0, min(context, n_tokens))]
    start = stride
    while out[-1][2] < n_tokens:
        out.append((start, start + context - stride, min(start + context, n_tokens)))
        start += stride
    return out


def window_width(cfg, context: int, stride: int, n_prefix: int) -> int:
    """Text tokens per window: `context` positions minus the special prefix (module docstring)."""
    if context > cfg.max_positions:
        raise ValueError(f"context={context} exceeds the model's {cfg.max_positions} positions")
    width = context - n_prefix
    if not 0 < stride <= width:
        raise ValueError(f"need 0 < stride <= context - {n_prefix} (the special tokens every window starts with); "
                         f"got context={context}, stride={stride}")
    return width


def _window_batches(model, ids, context: int, stride: int, batch_size: int, prefix: tuple[int, ...],
                    progress: bool):
    """Yield (hidden states (L + 1, B, S, D) on the device, the batch's windows). B is
    min(batch_size, windows left): a last, smaller batch is run at its own size rather than
    padded with empty windows (one more compiled shape instead of wasted forwards)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    p = len(prefix)
    width = window_width(model.cfg, context, stride, p)
    wins = windows(len(ids), width, stride)
    seq = p + min(width, len(ids))
    params = model.param_tree()
    steps = range(0, len(wins), batch_size)
    if progress:
        from tqdm.auto import tqdm
        steps = tqdm(steps, desc="feature windows", unit="batch")
    for b0 in steps:
        chunk = wins[b0:b0 + batch_size]
        batch = np.zeros((len(chunk), seq), np.int32)  # right padding: causal attention never reads it
        batch[:, :p] = prefix
        for j, (s, _, e) in enumerate(chunk):
            batch[j, p:p + e - s] = ids[s:e]
        yield forward_hidden_top(model.cfg, params, jnp.asarray(batch)), chunk


def token_features(model, ids: np.ndarray, context: int, stride: int, batch_size: int = 8,
                   progress: bool = False, prefix: tuple[int, ...] = ()) -> np.ndarray:
    """(L + 1, N, D) float32 features of every token from its providing window (module
    docstring). Holds every token's states: for word features use `word_features`."""
    cfg = model.cfg
    out = np.zeros((cfg.n_layers + 1, len(ids), cfg.hidden), np.float32)
    p = len(prefix)
    for hs, chunk in _window_batches(model, ids, context, stride, batch_size, tuple(prefix), progress):
        for layer in range(cfg.n_layers + 1):
            h = np.asarray(hs[layer])
            for j, (s, first, e) in enumerate(chunk):
                out[layer, first:e] = h[j, p + first - s:p + e - s]
    return out


def pool_words(token_feats_LND: np.ndarray, word_of_N: np.ndarray, n_words: int, pooling: str = "last") -> np.ndarray:
    """(L + 1, W, D) word features from token features."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    keep = word_of_N >= 0
    feats, word_of = jnp.asarray(token_feats_LND[:, keep]), jnp.asarray(word_of_N[keep])
    if pooling == "last":
        last = jax.ops.segment_max(jnp.arange(word_of.shape[0]), word_of, num_segments=n_words)
        return np.asarray(feats[:, last])
    sums = jax.vmap(lambda f: jax.ops.segment_sum(f, word_of, num_segments=n_words))(feats)
    counts = jax.ops.segment_sum(jnp.ones_like(word_of, jnp.float32), word_of, num_segments=n_words)
    return np.asarray(sums / counts[None, :, None])


def _release(out_LWD) -> None:
    """Unmap the written pages of a memory-mapped output from this process: the file's page
    cache keeps them, but they stop counting as this process's resident memory, so a long
    story's (L + 1, W, D) features never sit in RAM beside the model."""
    mapping = getattr(out_LWD, "_mmap", None)  # np.memmap's mapping (None for plain arrays)
    if isinstance(mapping, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)  # shared file mapping: contents are kept, pages refault


def pool_into(out_LWD, model, tokens: Tokens, context: int, stride: int, pooling: str = "last",
              batch_size: int = 8, progress: bool = False):
    """Fill out_LWD (zeros, (L + 1, W, D) float32: an array or a writable memory map) with
    the words' pooled features, one layer of one batch of windows at a time."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    ids, word_of, prefix = tokens
    n_layers, n_words = out_LWD.shape[0], out_LWD.shape[1]
    p = len(prefix)
    tok = np.flatnonzero(word_of >= 0)  # word_of is nondecreasing over these (spans are ordered)
    wtok = word_of[tok]
    last = tok[np.r_[wtok[1:] != wtok[:-1], True]]  # (W,) each word's last token
    for hs, chunk in _window_batches(model, ids, context, stride, batch_size, tuple(prefix), progress):
        if pooling == "last":
            rows, cols, words = [], [], []
            for j, (s, first, e) in enumerate(chunk):
                w = np.flatnonzero((last >= first) & (last < e))
                rows.append(np.full(w.size, j))
                cols.append(p + last[w] - s)
                words.append(w)
            rows, cols, words = map(np.concatenate, (rows, cols, words))
            for layer in range(n_layers):
                out_LWD[layer, words] = np.asarray(hs[layer])[rows, cols]
            _release(out_LWD)
            continue
        for layer in range(n_layers):
            h = np.asarray(hs[layer])
            for j, (s, first, e) in enumerate(chunk):
                mine = (tok >= first) & (tok < e)
                if not mine.any():
                    continue
                t, w = tok[mine], wtok[mine]
                starts = np.r_[0, np.flatnonzero(w[1:] != w[:-1]) + 1]  # runs of one word
                out_LWD[layer, w[starts]] += np.add.reduceat(h[j, p + t - s].astype(np.float32), starts, axis=0)
        _release(out_LWD)
    if pooling == "mean":
        counts = np.bincount(wtok, minlength=n_words).astype(np.float32)
        for layer in range(n_layers):
            out_LWD[layer] /= counts[:, None]
            _release(out_LWD)
    return out_LWD


def check_tokenizer(model, tokenizer) -> None:
    if len(tokenizer) > model.cfg.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the model's embedding has "
                         f"{model.cfg.vocab_size} rows: they do not belong together")


def word_features(model, tokenizer, words, context: int = 1024, stride: int = 512, pooling: str = "last",
                  batch_size: int = 8, progress: bool = False, out=None) -> np.ndarray:
    """(n_layers + 1, n_words, hidden) float32 strictly causal features of every word.

    words: a `stimuli.Reading`, or words to join by spaces. out: a zero-filled array of
    that shape to write into (the feature cache passes its memory-mapped file)."""
    check_tokenizer(model, tokenizer)
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    reading = as_reading(words)
    tokens = word_token_index(tokenizer, reading)
    shape = (model.cfg.n_layers + 1, len(reading), model.cfg.hidden)
    if out is None:
        out = np.zeros(shape, np.float32)
    elif tuple(out.shape) != shape:
        raise ValueError(f"output array of shape {tuple(out.shape)}; these features need {shape}")
    return pool_into(out, model, tokens, context, stride, pooling, batch_size, progress)


class WordColumns:
    """Words `cols` (an index or boolean mask over W) of (L + 1, W, D) features, read one
    layer at a time: `x[layer]` reads only that layer (of a memory-mapped cache file), so
    picking the heard words out of an augmented reading does not load every layer."""

    def __init__(self, feats_LWD, cols):
        self.feats = feats_LWD
        self.cols = np.flatnonzero(cols) if np.asarray(cols).dtype == bool else np.asarray(cols)
        self.shape = (feats_LWD.shape[0], len(self.cols), feats_LWD.shape[2])
        self.ndim = 3
        self.dtype = feats_LWD.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, layer: int) -> np.ndarray:
        return np.asarray(self.feats[layer])[self.cols]

    def __array__(self, dtype=None, copy=None):
        return np.stack([self[layer] for layer in range(self.shape[0])]).astype(dtype or self.dtype, copy=False)


def tr_features(word_feats_LWD, word_times_W, n_trs: int, tr: float, layers=None, method: str = "lanczos",
                delays: tuple[int, ...] = (1, 2, 3, 4)) -> np.ndarray:
    """(n_selected_layers, n_trs, hidden * len(delays)) TR designs of one scan.

    Word times are seconds from the scan start (`Transcript.times(audio_onset)`: word
    midpoints); words outside the scan are dropped by the downsampler. One scan is one run,
    so FIR delays are zero-padded at its edges. word_feats_LWD may be a memory map or
    `WordColumns`: only the selected layers are read.
    """
    feats = word_feats_LWD if isinstance(word_feats_LWD, (np.ndarray, WordColumns)) else np.asarray(word_feats_LWD)
    if len(feats.shape) != 3 or feats.shape[1] != len(word_times_W):
        raise ValueError(f"word features {tuple(feats.shape)} must be (layers, words={len(word_times_W)}, dims)")
    layers = range(feats.shape[0]) if layers is None else layers
    bad = [l for l in layers if not -feats.shape[0] <= l < feats.shape[0]]
    if bad:
        raise ValueError(f"layers {bad} out of range for {feats.shape[0]} hidden states")
    times = np.asarray(word_times_W, np.float32)
    designs = []
    for layer in layers:
        x, _ = downsample(np.asarray(feats[layer % feats.shape[0]]), times, n_trs, tr, method=method)
        designs.append(np.asarray(fir_delays(x, tuple(delays))))
    return np.stack(designs)
