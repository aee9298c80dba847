"""On-disk cache of word features, keyed by everything that determines them.

Key: model weights hash, tokenizer hash, exact word list, context, stride, pooling,
augmentation id and the feature-code version. Files are written atomically; a file that
cannot be read, or whose stored key or checksum disagrees, is recomputed with a warning.
"""
from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path

import jax
import numpy as np

from ..atomic import atomic_write_bytes

FEATURES_VERSION = 1  # bump when the extraction's numbers change


def weights_hash(model) -> str:
    h = hashlib.sha256(repr(model.cfg).encode())
    leaves = jax.tree_util.tree_flatten_with_path(model.param_tree())[0]
    for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
        a = np.asarray(leaf)
        h.update(f"{jax.tree_util.keystr(path)}{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).view(np.uint8).data)
    return h.hexdigest()


def tokenizer_hash(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode()).hexdigest()


def feature_key(model, tokenizer, words, context, stride, pooling, augmentation_id="none") -> dict:
    return dict(
        weights=weights_hash(model), tokenizer=tokenizer_hash(tokenizer),
        words=hashlib.sha256("\n".join(map(str, words)).encode()).hexdigest(), n_words=len(words),
        context=int(context), stride=int(stride), pooling=pooling, augmentation=str(augmentation_id),
        version=FEATURES_VERSION,
    )


def _file(cache_dir: Path, key: dict) -> Path:
    return cache_dir / (hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32] + ".npz")


def _checksum(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).view(np.uint8).data).hexdigest()


def load(cache_dir: Path, key: dict) -> np.ndarray | None:
    path = _file(cache_dir, key)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            feats, stored, checksum = z["features"], json.loads(str(z["key"])), str(z["checksum"])
        if stored != key or checksum != _checksum(feats):
            raise ValueError("stored key or checksum does not match")
        return feats
    except Exception as e:  # any unreadable file is treated the same way: recompute it
        warnings.warn(f"feature cache file {path} is corrupt ({e}); recomputing", stacklevel=3)
        return None


def save(cache_dir: Path, key: dict, feats: np.ndarray) -> Path:
    path = _file(cache_dir, key)
    buf = io.BytesIO()
    np.savez(buf, features=feats, key=json.dumps(key, sort_keys=True), checksum=_checksum(feats))
    atomic_write_bytes(path, buf.getvalue())
    return path
