"""Cached files checked when loaded: a cache entry is used only if it is exactly what was
written for the key asked for; anything else is recomputed with a warning.

Every cached file `f` gets a stamp beside it, `f.stamp.json`: the key it was computed for
(what sets its numbers), its size and the sha256 of its bytes (`fingerprint.file_checksum`).
`usable(f, key, what)` checks the three against the file, so it catches content edited in
place (same size), a file copied over another (its stamp names another key, or its bytes are
not the stamped ones) and truncation. A missing file or stamp means an unfinished entry (or
one from before stamps) and is recomputed silently, like a cache miss.

Cost: the whole file is hashed at every load, and each cache loads a file once per run (the
BOLD store once per (subject, story) in `prepare`, before the fits read chunks of it). sha256
hashes 1.9 GB per CPU second (a 1 GiB file in the page cache; blake2b 1.4), so the largest
cache, 75 listeners x 81,924 vertices x 281 TRs of BOLD (6.9 GB), costs about 3.6 s a run, on
top of reading the files, which the fits do anyway.

A folder of many files (the built-in world) has one stamp for all of them: `stamp_folder` /
`folder_problem`, the stamp listing every file's size and checksum.

Writes go through `io.atomic_path` (no half-written file is ever left) and the stamp is written
before the file is renamed into place, so a file that exists always has its stamp (a run polling
for another's file never reads it unstamped). A write the file system refuses becomes one line
naming the folder (`io.refused_writes`).
"""
from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path

from .fingerprint import file_checksum
from .io import atomic_path, json_text, refused_writes, write_json

STAMP_SUFFIX = ".stamp.json"
CACHE_OPTION = "--cache-dir"  # where a user moves a cache that cannot be written


def stamp_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + STAMP_SUFFIX)


def _plain(key):
    """The key as it reads back from its stamp (tuples as lists, numpy values as numbers), for comparison."""
    return json.loads(json_text(key))


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


def remove(path: str | os.PathLike) -> None:
    """Delete a cached file and its stamp (a consumed intermediate)."""
    Path(path).unlink(missing_ok=True)
    stamp_path(path).unlink(missing_ok=True)


def problem(path: str | os.PathLike, key) -> str | None:
    """Why the stamped file at `path` is not the entry for `key` ("missing" when it or its stamp
    does not exist), or None when it is."""
    path = Path(path)
    stamp = stamp_path(path)
    if not path.is_file() or not stamp.is_file():
        return "missing"
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


def usable(path: str | os.PathLike, key, what: str) -> bool:
    """True when `path` is the entry for `key`; otherwise False (recompute it), with a warning
    naming the file and what did not match unless the entry simply does not exist."""
    why = problem(path, key)
    if why not in (None, "missing"):
        warnings.warn(f"{what} {path}: {why}; recomputing", stacklevel=3)
    return why is None


def stamp_folder(folder: str | os.PathLike, key, name: str) -> Path:
    """Write `folder/name`: the key and every file's size and checksum (the folder's stamp)."""
    folder = Path(folder)
    files = {str(p.relative_to(folder)): [p.stat().st_size, file_checksum(p)] for p in _files(folder, name)}
    with refused_writes(folder.parent, CACHE_OPTION):
        return write_json(folder / name, dict(key=_plain(key), files=files))


def folder_problem(folder: str | os.PathLike, key, name: str) -> str | None:
    """Why `folder` is not the one stamped for `key` by `stamp_folder` ("missing" without a
    stamp, or with a stamp from before checksums), or None when every file is as written."""
    folder = Path(folder)
    try:
        stored = json.loads((folder / name).read_text())
    except FileNotFoundError:
        return "missing"
    except (ValueError, OSError) as e:
        return f"its stamp {name} is unreadable ({e})"
    if not isinstance(stored, dict) or "files" not in stored or "key" not in stored:
        return "missing"
    if stored["key"] != _plain(key):
        return f"its stamp is for another key ({_differences(stored['key'], _plain(key))})"
    have = {str(p.relative_to(folder)): p for p in _files(folder, name)}
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


def _files(folder: Path, stamp_name: str) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p != folder / stamp_name)


def _differences(stored, wanted, most: int = 3) -> str:
    """The fields in which two keys differ, with the stored and wanted values (shortened)."""
    if not (isinstance(stored, dict) and isinstance(wanted, dict)):
        return f"{_short(stored)} != {_short(wanted)}"
    fields = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    return "; ".join(f"{k}: {_short(stored.get(k))}, wanted {_short(wanted.get(k))}" for k in fields[:most])


def _short(value, width: int = 60) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[:width - 3] + "..."
