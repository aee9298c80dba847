"""Strictly causal per-layer word features from a language model, their TR designs, and
an on-disk cache (see `extract` and `cache`)."""
from __future__ import annotations

from pathlib import Path

from . import cache
from .extract import POOLINGS, check_tokenizer, pool_words, token_features, tr_features, windows, word_token_index
from .extract import word_features as _word_features


def word_features(model, tokenizer, words, context: int = 1024, stride: int = 512, pooling: str = "last",
                  batch_size: int = 8, progress: bool = False, cache_dir: str | Path | None = None,
                  augmentation_id: str = "none"):
    """(n_layers + 1, n_words, hidden) strictly causal word features (see `extract`).

    With cache_dir, results are stored and reused under a key of the model's weights,
    the tokenizer, the exact words, context, stride, pooling and augmentation_id.
    """
    if cache_dir is None:
        return _word_features(model, tokenizer, words, context, stride, pooling, batch_size, progress)
    key = cache.feature_key(model, tokenizer, words, context, stride, pooling, augmentation_id)
    feats = cache.load(Path(cache_dir), key)
    if feats is None:
        feats = _word_features(model, tokenizer, words, context, stride, pooling, batch_size, progress)
        cache.save(Path(cache_dir), key, feats)
    return feats


__all__ = ["POOLINGS", "check_tokenizer", "pool_words", "token_features", "tr_features", "windows",
           "word_token_index", "word_features", "cache"]
