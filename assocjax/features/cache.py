"""On-disk cache of word features, keyed by everything that determines them.

Key: the weights' fingerprint, the tokenizer's hash, what the model reads (the reading's
text and word spans), context, stride, pooling, augmentation id and the feature-code
version. The weights' fingerprint is a sha256 over the config and every parameter's
bytes (`assocjax.fingerprint.weights_id`): sound for any model, including one changed in
memory after loading; it reads all weights once, so callers compute it once per model and
pass it as `weights_id` to every story's lookup (`pipeline.design.word_feats` does).

One entry = `<h>.npy` (float32 (L + 1, W, D), read back as a read-only memory map, so a
design that needs one layer reads one layer) + `<h>.json` (the key, shape and a sha256 of
every layer). The .npy is written in place through a memory map under a temporary name and
renamed when complete, then the .json is written atomically; so an entry without its .json
is unfinished and simply recomputed. On load the .json's key, the .npy header's shape and
dtype and the file's exact size are checked (cheap; a truncated or foreign file is
recomputed with a warning); the per-layer checksums, taken from the file as read back
right after writing, are checked by `verify` on demand, not on every load, which would
read gigabytes per story.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np

from ..fingerprint import digest
from ..io import atomic_path, atomic_write_text

FEATURES_VERSION = 2  # bump when features or word times change (2: BOS in every window, transcript readings, midpoints)


def tokenizer_hash(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode()).hexdigest()


def feature_key(weights_id: str, tokenizer, reading, context, stride, pooling, augmentation_id="none") -> dict:
    """The cache key; weights_id: `fingerprint.weights_id(model)`, computed once per model."""
    return dict(
        weights=str(weights_id), tokenizer=tokenizer_hash(tokenizer), reading=reading.id, n_words=len(reading),
        text_source=reading.source, context=int(context), stride=int(stride), pooling=pooling,
        augmentation=str(augmentation_id), version=FEATURES_VERSION,
    )


def _paths(cache_dir: Path, key: dict) -> tuple[Path, Path]:
    stem = digest(key, 32)
    return cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json"


def _layer_checksums(feats) -> list[str]:
    return [hashlib.sha256(np.ascontiguousarray(feats[i]).view(np.uint8).data).hexdigest()
            for i in range(feats.shape[0])]


def load(cache_dir: Path, key: dict):
    """The cached (L + 1, W, D) features as a read-only memory map, or None (module docstring)."""
    npy, meta = _paths(Path(cache_dir), key)
    if not meta.exists():
        return None
    try:
        stored = json.loads(meta.read_text())
        if stored.get("key") != key:
            raise ValueError("the stored key does not match")
        feats = np.load(npy, mmap_mode="r", allow_pickle=False)
        shape = tuple(stored["shape"])
        if feats.shape != shape or feats.dtype != np.float32:
            raise ValueError(f"array {feats.shape} {feats.dtype}, expected {shape} float32")
        if npy.stat().st_size != feats.offset + feats.nbytes:
            raise ValueError(f"{npy.stat().st_size} bytes, expected {feats.offset + feats.nbytes}")
        return feats
    except Exception as e:  # any unreadable entry is treated the same way: recompute it
        warnings.warn(f"feature cache file {npy} is corrupt ({e}); recomputing", stacklevel=3)
        return None


@contextlib.contextmanager
def writing(cache_dir: Path, key: dict, shape: tuple[int, int, int]):
    """Yield a zero-filled writable float32 memory map of `shape` for the features of `key`;
    when the block ends without error it becomes the cache entry (module docstring)."""
    npy, meta = _paths(Path(cache_dir), key)
    meta.unlink(missing_ok=True)  # a stale .json must never describe the new .npy
    with atomic_path(npy) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=tuple(shape))
        yield out
        out.flush()
        del out
        written = np.load(tmp, mmap_mode="r")
        checksums = _layer_checksums(written)  # of the bytes as read back from the file
        del written
    atomic_write_text(meta, json.dumps(dict(key=key, shape=list(shape), layer_sha256=checksums), sort_keys=True))


def verify(cache_dir: Path, key: dict) -> bool:
    """Full check of an entry: every layer's bytes against the checksums recorded when it was
    written (reads the whole file; `load` checks only the key, header and size)."""
    feats = load(cache_dir, key)
    if feats is None:
        return False
    stored = json.loads(_paths(Path(cache_dir), key)[1].read_text())
    return _layer_checksums(feats) == stored["layer_sha256"]
