"""The one cache helper: how every cached artefact is keyed, named, versioned, written, checked
when loaded, and recomputed when it is not what was written for its key.

Each cache declares one `Kind` as its module's `CACHE` constant, and keeps only what is its
own: what goes into its key and how its payload is (de)serialised.

    cache                     Kind                        an entry (under --cache-dir)
    features/cache.py         features, "feature cache file"   features/<name>.npy
    pipeline/bold.py          bold, "BOLD cache file"          bold/<name>.npy + <name>.meta.npz
    pipeline/store.py         scores, "cached result"          scores/<name>/layer-NNN.npz, ceiling.npz
    pipeline/assets.py        builtin, "built-in world"        builtin/<name>/ (a folder)

- Key: `Kind.key(**fields)`, a dict of everything that sets the entry's numbers, plus the
  kind's `version`. Bump the version when what is computed for the same fields changes: the
  name changes with it, so an old entry is never read (it stays on disk until removed).
- Name: `Kind.entry(folder, key)`, the first `NAME_DIGITS` hex digits of the key's
  `fingerprint.digest` (sha256 of its sorted JSON).
- Stamp: every cached file `f` gets `f.stamp.json` beside it: the key it was computed for, its
  size and the sha256 of its bytes (`fingerprint.file_checksum`). That catches content edited
  in place (same size), a file copied over another (its stamp names another key, or its bytes
  are not the stamped ones) and truncation. A folder (the built-in world) has one stamp
  inside it, `FOLDER_STAMP`, listing every file's size and checksum.
- One policy (`Kind.load`, `Kind.folder_usable`): an entry whose file or stamp does not exist
  is a plain miss (unfinished, or never made); any other mismatch, and any problem the kind's
  own check finds in what was read (a missing field, a wrong shape), is recomputed with a
  warning naming the file and why: "BOLD cache file <path>: <why>; recomputing". An entry
  that does not match is never used.
- Writes go through `io.atomic_path` / `io.atomic_folder` (no half-written file or folder is
  ever left) and the stamp is written before the file is renamed into place, so a file that
  exists always has its stamp (a run polling for another's file never reads it unstamped). A
  write the file system refuses becomes one line naming the folder (`io.refused_writes`).

Cost: the whole file is hashed at every load, and each cache loads a file once per run (the
BOLD store once per (subject, story) in `prepare`, before the fits read chunks of it). sha256
hashes 1.9 GB per CPU second (a 1 GiB file in the page cache; blake2b 1.4), so the largest
cache, 75 listeners x 81,924 vertices x 281 TRs of BOLD (6.9 GB), costs about 3.6 s a run, on
top of reading the files, which the fits do anyway.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import warnings
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from .fingerprint import digest, file_checksum
from .io import atomic_folder, atomic_path, json_text, refused_writes, write_json

STAMP_SUFFIX = ".stamp.json"
FOLDER_STAMP = "stamp.json"  # a cached folder's stamp, inside it: written last, checked at every use
NAME_DIGITS = 24  # hex digits of the key's digest in an entry's name (96 bits)
CACHE_OPTION = "--cache-dir"  # where a user moves a cache that cannot be written
MISSING = "missing"  # `problem` of an entry that was never (completely) written

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind of cached artefact (module docstring).

    folder: its folder under the cache root (`--cache-dir`); version: bumped when what is
    computed for the same key fields changes; what: how a warning names one of its entries.
    """

    folder: str
    version: int
    what: str

    def key(self, **fields) -> dict:
        """The entry's key: `fields` (everything that sets its numbers) and the kind's version."""
        if "version" in fields:
            raise ValueError(f"{self.folder} cache key: 'version' is the kind's own field ({self.version})")
        return fields | dict(version=self.version)

    def under(self, cache_root: str | os.PathLike) -> Path:
        """This kind's folder in a cache root (`--cache-dir`)."""
        return Path(cache_root) / self.folder

    @staticmethod
    def entry(folder: str | os.PathLike, key: dict, suffix: str = "") -> Path:
        """Where the entry for `key` lives in `folder`: its name is the key's digest."""
        return Path(folder) / f"{digest(key, NAME_DIGITS)}{suffix}"

    def load(self, path: str | os.PathLike, key, read: Callable[[Path], T],
             check: Callable[[T], str | None] | None = None) -> T | None:
        """`read(path)` when `path` is the stamped entry for `key` and `check` (what the kind
        requires of a payload; None or why not) accepts it; else None: recompute it (the one
        policy, module docstring)."""
        path = Path(path)
        why = problem(path, key)
        if why is None:
            value = read(path)
            why = check(value) if check is not None else None
            if why is None:
                return value
        self._recomputing(path, why)
        return None

    def folder_usable(self, folder: str | os.PathLike, key) -> bool:
        """Whether `folder` is the one `building` stamped for `key`, every file as written
        (otherwise rebuild it: the one policy, module docstring)."""
        why = folder_problem(folder, key)
        self._recomputing(folder, why)
        return why is None

    @contextlib.contextmanager
    def building(self, folder: str | os.PathLike, key):
        """Yield a temporary folder to build the entry for `key` in; when the block ends without
        error it is stamped and renamed onto `folder` (a damaged copy there is replaced)."""
        folder = Path(folder)
        with refused_writes(folder.parent, CACHE_OPTION), atomic_folder(folder) as tmp:
            yield tmp
            _stamp_folder(tmp, key)

    def _recomputing(self, path, why: str | None) -> None:
        if why not in (None, MISSING):
            warnings.warn(f"{self.what} {path}: {why}; recomputing", stacklevel=3)


def stamp_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + STAMP_SUFFIX)


@contextlib.contextmanager
def writing(path: str | os.PathLike, key):
    """Yield a temporary path to write the entry for `key` to; when the block ends without
    error the stamp is written and the file renamed onto `path` (module docstring)."""
    path = Path(path)
    with refused_writes(path.parent, CACHE_OPTION), atomic_path(path) as tmp:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # on disk before its stamp vouches for it
        finally:
            os.close(fd)
        write_json(stamp_path(path), dict(key=_plain(key), bytes=tmp.stat().st_size, sha256=file_checksum(tmp)))


def write_bytes(path: str | os.PathLike, data: bytes, key) -> Path:
    with writing(path, key) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_npy(path: str | os.PathLike, a: np.ndarray, key) -> Path:
    """One array as a `.npy` entry (read it back with `np.load(path, mmap_mode="r")`)."""
    with writing(path, key) as tmp, open(tmp, "wb") as f:
        np.save(f, a)  # to the open file: given a path, np.save would append ".npy" to the temporary name
    return Path(path)


def write_npz(path: str | os.PathLike, key, **arrays) -> Path:
    """Named arrays as one `.npz` entry (`read_npz` reads it back)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return write_bytes(path, buf.getvalue(), key)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def remove(path: str | os.PathLike) -> None:
    """Delete a cached file and its stamp (a consumed intermediate)."""
    Path(path).unlink(missing_ok=True)
    stamp_path(path).unlink(missing_ok=True)


def problem(path: str | os.PathLike, key) -> str | None:
    """Why the stamped file at `path` is not the entry for `key` (`MISSING` when it or its stamp
    does not exist), or None when it is."""
    path = Path(path)
    stamp = stamp_path(path)
    if not path.is_file() or not stamp.is_file():
        return MISSING
    try:
        stored = json.loads(stamp.read_text())
        want, size, sha = stored["key"], int(stored["bytes"]), str(stored["sha256"])
    except (ValueError, KeyError, TypeError, OSError) as e:
        return f"its stamp {stamp.name} is unreadable ({e})"
    if want != _plain(key):
        return f"its stamp is for another key ({_differences(want, _plain(key))})"
    got = path.stat().st_size
    if got != size:
        return f"{got} bytes, {size} when written (truncated or replaced)"
    if file_checksum(path) != sha:
        return "its bytes differ from the checksum taken when it was written (changed since)"
    return None


def _stamp_folder(folder: Path, key) -> Path:
    """Write the folder's stamp: the key and every file's size and checksum."""
    files = {str(p.relative_to(folder)): [p.stat().st_size, file_checksum(p)] for p in _files(folder)}
    return write_json(folder / FOLDER_STAMP, dict(key=_plain(key), files=files))


def folder_problem(folder: str | os.PathLike, key) -> str | None:
    """Why `folder` is not the one stamped for `key` (`MISSING` without a stamp), or None when
    every file is as written."""
    folder = Path(folder)
    try:
        stored = json.loads((folder / FOLDER_STAMP).read_text())
    except FileNotFoundError:
        return MISSING
    except (ValueError, OSError) as e:
        return f"its stamp {FOLDER_STAMP} is unreadable ({e})"
    if not isinstance(stored, dict) or "files" not in stored or "key" not in stored:
        return f"its stamp {FOLDER_STAMP} is unreadable (no key or files)"
    if stored["key"] != _plain(key):
        return f"its stamp is for another key ({_differences(stored['key'], _plain(key))})"
    have = {str(p.relative_to(folder)): p for p in _files(folder)}
    extra = sorted(set(have) - set(stored["files"]))
    if extra:
        return f"files added since it was written: {', '.join(extra[:3])}"
    for rel, (size, sha) in stored["files"].items():
        p = have.get(rel)
        if p is None:
            return f"{rel} is missing"
        if p.stat().st_size != size:
            return f"{rel}: {p.stat().st_size} bytes, {size} when written (truncated or replaced)"
        if file_checksum(p) != sha:
            return f"{rel}: its bytes differ from the checksum taken when it was written (changed since)"
    return None


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p != folder / FOLDER_STAMP)


def _plain(key):
    """The key as it reads back from its stamp (tuples as lists, numpy values as numbers), for comparison."""
    return json.loads(json_text(key))


def _differences(stored, wanted, most: int = 3) -> str:
    """The fields in which two keys differ, with the stored and wanted values (shortened)."""
    if not (isinstance(stored, dict) and isinstance(wanted, dict)):
        return f"{_short(stored)} != {_short(wanted)}"
    fields = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    return "; ".join(f"{k}: {_short(stored.get(k))}, wanted {_short(wanted.get(k))}" for k in fields[:most])


def _short(value, width: int = 60) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[:width - 3] + "..."
