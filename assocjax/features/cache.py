"""On-disk cache of word features, keyed by everything that determines them.

Key: the weights' fingerprint, the tokenizer's hash, what the model reads (the reading's
text and word spans), context, stride, pooling, augmentation id and the feature-code version
(`CACHE`, a `cachefile.Kind`). The weights' fingerprint is a sha256 over the config and every
parameter's bytes (`assocjax.fingerprint.weights_id`): sound for any model, including one
changed in memory after loading; it reads all weights once, so callers compute it once per
model and pass it as `weights_id` to every story's lookup (`pipeline.design.word_feats` does).

One entry = `<name>.npy` (float32 (L + 1, W, D), read back as a read-only memory map, so a
design that needs one layer reads one layer), written in place through a memory map under a
temporary name, and its `cachefile` stamp (the key, size and sha256). On load the whole file
is checked against the stamp (a file edited in place, copied from another entry or truncated
is recomputed with a warning: `cachefile`'s one policy); a story's features are loaded once
per run, and hashing them (1.9 GB/s) costs far less than the model pass that made them.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np

from .. import cachefile
from ..fingerprint import text_digest

# bump the version when features or word times change (2: BOS in every window, transcript readings, midpoints)
CACHE = cachefile.Kind("features", version=2, what="feature cache file")


def tokenizer_hash(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return text_digest(text)


def feature_key(weights_id: str, tokenizer, reading, context, stride, pooling, augmentation_id="none") -> dict:
    """The cache key; weights_id: `fingerprint.weights_id(model)`, computed once per model."""
    return CACHE.key(
        weights=str(weights_id), tokenizer=tokenizer_hash(tokenizer), reading=reading.id, n_words=len(reading),
        text_source=reading.source, context=int(context), stride=int(stride), pooling=pooling,
        augmentation=str(augmentation_id),
    )


def _path(cache_dir: Path, key: dict) -> Path:
    return CACHE.entry(cache_dir, key, ".npy")


def load(cache_dir: Path, key: dict):
    """The cached (L + 1, W, D) features as a read-only memory map, or None (module docstring)."""
    return CACHE.load(_path(cache_dir, key), key, lambda npy: np.load(npy, mmap_mode="r", allow_pickle=False))


@contextlib.contextmanager
def writing(cache_dir: Path, key: dict, shape: tuple[int, int, int]):
    """Yield a zero-filled writable float32 memory map of `shape` for the features of `key`;
    when the block ends without error it becomes the cache entry (module docstring)."""
    with cachefile.writing(_path(cache_dir, key), key) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=tuple(shape))
        yield out
        out.flush()
        del out
