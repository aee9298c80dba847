"""Strictly causal per-layer word features from a language model, their TR designs, and
an on-disk cache (see `extract` and `cache`)."""
from __future__ import annotations

from pathlib import Path

from .. import fingerprint
from . import cache
from .extract import (POOLINGS, Tokens, WordColumns, as_reading, check_tokenizer, pool_words, token_features,
                      tr_features, windows, word_token_index)
from .extract import word_features as _word_features


def word_features(model, tokenizer, words, context: int = 1024, stride: int = 512, pooling: str = "last",
                  batch_size: int = 8, progress: bool = False, cache_dir: str | Path | None = None,
                  augmentation_id: str = "none", weights_id: str | None = None):
    """(n_layers + 1, n_words, hidden) float32 strictly causal word features (see `extract`).

    words: a `stimuli.Reading` (e.g. `transcript.reading()`: the punctuated transcript when
    there is one) or words to join by spaces. With cache_dir, results are stored and reused
    under a key of the weights, the tokenizer, the reading, context, stride, pooling and
    augmentation_id, and returned as a read-only memory map (one layer is read at a time).
    weights_id: `fingerprint.weights_id(model)`; pass it when extracting several stories, so
    the weights are hashed once rather than per call.
    """
    reading = as_reading(words)
    kw = dict(context=context, stride=stride, pooling=pooling, batch_size=batch_size, progress=progress)
    if cache_dir is None:
        return _word_features(model, tokenizer, reading, **kw)
    weights_id = weights_id or fingerprint.weights_id(model)
    key = cache.feature_key(weights_id, tokenizer, reading, context, stride, pooling, augmentation_id)
    feats = cache.load(Path(cache_dir), key)
    if feats is None:
        shape = (model.cfg.n_layers + 1, len(reading), model.cfg.hidden)
        with cache.writing(Path(cache_dir), key, shape) as out:
            _word_features(model, tokenizer, reading, out=out, **kw)
        feats = cache.load(Path(cache_dir), key)
    return feats


__all__ = ["POOLINGS", "Tokens", "WordColumns", "as_reading", "check_tokenizer", "pool_words", "token_features",
           "tr_features", "windows", "word_token_index", "word_features", "cache"]
