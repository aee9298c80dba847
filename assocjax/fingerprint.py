"""Fingerprints: short, stable identities of what determines a cached or resumed result.

- `digest(obj, n)`: sha256 of the canonical JSON of `obj` (sorted keys; a value JSON cannot
  write is written as its str). Every cache key and keyed folder name goes through it.
- `weights_id(model)`: sha256 of the config and every parameter's bytes. Exact, so the
  feature cache keys on it; it reads all weights (14 s for a 7B model), so compute it once
  per model and run and pass it on.
- `sampled_weights_id(params)`: 16 hex digits from evenly strided samples of every leaf,
  taken on device. Cheap for 7B models: what a fine-tune checkpoint records of its base, to
  refuse a resume onto other base weights.
- `file_stats(paths)`: [path, size, mtime_ns] per file: inputs keyed without reading them
  (the BOLD cache, the results cache).
- `text_digest(text, n)`: sha256 of a text's UTF-8 bytes (a tokenizer's definition, an
  augmentation's canonical JSON, a story's words).
- `bytes_digest(parts, n)`: sha256 of byte strings fed in order, i.e. of their concatenation
  (a reading's text and word spans, a training set's records).
- `file_checksum(path)`: sha256 of a file's bytes, what `cachefile` stamps every cached file
  with (1.9 GB per CPU second with the CPU's SHA instructions, measured on a 1 GiB file); with
  "md5", what a download is checked against when the server lists an MD5 (`data.fetch`).
- `text_seed(text)`: a 64-bit integer named by a text (blake2b), a random-stream seed of the
  synthetic data.

Every hash in the package is computed here. The digest strings are stored in caches,
checkpoints and augmentation files: changing how one is computed must come with a bump of that
cache's version (`cachefile.Kind`) or file format, so old entries are ignored, not misread.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

import jax
import numpy as np


def digest(obj, n: int | None = None) -> str:
    """sha256 hex of `json.dumps(obj, sort_keys=True)` (non-JSON values as str), first n digits."""
    return text_digest(json.dumps(obj, sort_keys=True, default=str), n)


def text_digest(text: str, n: int | None = None) -> str:
    """sha256 hex of the text's UTF-8 bytes, first n digits."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


def bytes_digest(parts: Iterable[bytes], n: int | None = None) -> str:
    """sha256 hex of the byte strings fed in order (that of their concatenation), first n digits."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()[:n]


def text_seed(text: str) -> int:
    """An unsigned 64-bit integer from blake2b of the text's UTF-8 bytes (little-endian): a seed
    that depends on a name only (a word, a scan), not on what else a dataset holds."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def file_checksum(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """sha256 hex of the file's bytes, read in blocks (memory stays small for any size);
    `algorithm` "md5" only to compare with a server's MD5 (S3's single-part ETag, `data.fetch`)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def weights_id(model) -> str:
    """sha256 of the config and every parameter (name, dtype, shape, bytes), leaf by leaf."""
    h = hashlib.sha256(repr(model.cfg).encode())
    leaves = jax.tree_util.tree_flatten_with_path(model.param_tree())[0]
    for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
        a = np.asarray(leaf)
        h.update(f"{jax.tree_util.keystr(path)}{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).view(np.uint8).data)
    return h.hexdigest()


def sampled_weights_id(params: dict, samples: int = 4096) -> str:
    """A 16-hex fingerprint of a parameter tree: every leaf's path, shape and dtype and
    `samples` evenly strided values (on device; only the samples are copied to the host).
    Any re-initialised or differently tuned base changes it."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        flat = leaf.reshape(-1)
        stride = max(1, flat.shape[0] // samples)
        sample = np.asarray(flat[::stride][:samples], np.float32)
        h.update(f"{jax.tree_util.keystr(path)}|{tuple(leaf.shape)}|{leaf.dtype}|".encode())
        h.update(sample.tobytes())
    return h.hexdigest()[:16]


def file_stats(paths: Iterable[str | os.PathLike]) -> list[list]:
    """[path, size in bytes, mtime in ns] of each file, in the given order."""
    out = []
    for p in paths:
        st = Path(p).stat()
        out.append([str(p), st.st_size, st.st_mtime_ns])
    return out
