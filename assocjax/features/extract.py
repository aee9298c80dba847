"""Per-layer word features with strictly causal context, and their TR designs.

A story's tokens are cut into windows of `context` tokens every `stride` tokens. Window 0
gives tokens [0, context); window k > 0 gives only its last `stride` tokens, so every
token is read with at least (context - stride) tokens of left context, or with its whole
prefix near the story start. When the story fits in one window the features equal a
full-prefix forward pass per word; otherwise a token sees the start of its window, not
the whole story. Attention is causal, so no word ever sees a later word.

A word's tokens are those whose text ends inside the word (leading spaces belong to the
token that follows them). Pooling: "last" (the word's last token, default) or "mean".
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..alignment import downsample, fir_delays
from ..models.modeling import forward_hidden

POOLINGS = ("last", "mean")


def word_token_index(tokenizer, words) -> tuple[np.ndarray, np.ndarray]:
    """(token ids (N,), word index of every token (N,)) for the space-joined words.

    Special tokens the tokenizer adds (e.g. LLaMA's <s>) get word index -1: they are read
    by the model but belong to no word.
    """
    words = [str(w) for w in words]
    if not words:
        raise ValueError("no words to tokenize")
    if any(not w.strip() or w != w.strip() for w in words):
        bad = next(i for i, w in enumerate(words) if not w.strip() or w != w.strip())
        raise ValueError(f"word {bad} ({words[bad]!r}) is empty or has surrounding spaces")
    text = " ".join(words)
    enc = tokenizer(text, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int32)
    ends = np.cumsum([len(w) + 1 for w in words]) - 1  # exclusive end char of each word
    special = np.asarray([s == e for s, e in enc["offset_mapping"]])
    last_char = np.asarray([e - 1 for _, e in enc["offset_mapping"]])
    word_of = np.searchsorted(ends, last_char, side="right")
    word_of = np.where(special, -1, word_of).astype(np.int32)
    missing = np.setdiff1d(np.arange(len(words)), word_of)
    if missing.size:
        raise ValueError(f"words {missing[:5].tolist()} got no tokens from the tokenizer")
    return ids, word_of


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


def token_features(model, ids: np.ndarray, context: int, stride: int, batch_size: int = 8,
                   progress: bool = False) -> np.ndarray:
    """(L + 1, N, D) features of every token from its providing window (module docstring)."""
    cfg = model.cfg
    if context > cfg.max_positions:
        raise ValueError(f"context={context} exceeds the model's {cfg.max_positions} positions")
    wins = windows(len(ids), context, stride)
    width = min(context, len(ids))
    batch = np.zeros((len(wins), width), np.int32)
    for i, (s, _, e) in enumerate(wins):
        batch[i, : e - s] = ids[s:e]  # right padding: causal attention never reads it
    params = model.param_tree()
    out = np.zeros((cfg.n_layers + 1, len(ids), cfg.hidden), np.float32)
    steps = range(0, len(wins), batch_size)
    if progress:
        from tqdm.auto import tqdm
        steps = tqdm(steps, desc="feature windows", unit="batch")
    for b0 in steps:
        chunk = batch[b0:b0 + batch_size]
        if len(chunk) < batch_size:  # one compiled shape for every batch
            chunk = np.concatenate([chunk, np.zeros((batch_size - len(chunk), width), np.int32)])
        hs = np.asarray(forward_hidden(cfg, params, jnp.asarray(chunk)).astype(jnp.float32))
        for j, (s, first, e) in enumerate(wins[b0:b0 + batch_size]):
            out[:, first:e] = hs[:, j, first - s:e - s]
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


def check_tokenizer(model, tokenizer) -> None:
    if len(tokenizer) > model.cfg.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the model's embedding has "
                         f"{model.cfg.vocab_size} rows: they do not belong together")


def word_features(model, tokenizer, words, context: int = 1024, stride: int = 512, pooling: str = "last",
                  batch_size: int = 8, progress: bool = False) -> np.ndarray:
    """(n_layers + 1, n_words, hidden) strictly causal features of every word."""
    check_tokenizer(model, tokenizer)
    ids, word_of = word_token_index(tokenizer, words)
    feats = token_features(model, ids, context, stride, batch_size, progress)
    return pool_words(feats, word_of, len(words), pooling)


def tr_features(word_feats_LWD, word_times_W, n_trs: int, tr: float, layers=None, method: str = "lanczos",
                delays: tuple[int, ...] = (1, 2, 3, 4)) -> np.ndarray:
    """(n_selected_layers, n_trs, hidden * len(delays)) TR designs of one scan.

    Word times are seconds from the scan start (`Transcript.times(audio_onset)`); words
    outside the scan are dropped by the downsampler. One scan is one run, so FIR delays
    are zero-padded at its edges.
    """
    feats = np.asarray(word_feats_LWD)
    if feats.ndim != 3 or feats.shape[1] != len(word_times_W):
        raise ValueError(f"word features {feats.shape} must be (layers, words={len(word_times_W)}, dims)")
    layers = range(feats.shape[0]) if layers is None else layers
    bad = [l for l in layers if not -feats.shape[0] <= l < feats.shape[0]]
    if bad:
        raise ValueError(f"layers {bad} out of range for {feats.shape[0]} hidden states")
    times = np.asarray(word_times_W, np.float32)
    designs = []
    for layer in layers:
        x, _ = downsample(feats[layer], times, n_trs, tr, method=method)
        designs.append(np.asarray(fir_delays(x, tuple(delays))))
    return np.stack(designs)

