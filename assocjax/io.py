"""Files the package writes: atomic writes (a temporary file in the target folder, then a
rename, so a crash or Ctrl-C never leaves a half-written file) and the tidy CSV/JSON
outputs a user loads with pandas, written through them."""
from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Mapping


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """A temporary path beside `path` for a writer that needs a file name (e.g. a memory-mapped
    array); renamed onto `path` when the block ends without error, removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are meant to be shared
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike):
    """A temporary folder beside `path` to fill; when the block ends without error it replaces
    `path` (a folder already there, damaged or made by a concurrent run, is removed first: the
    finished one wins), removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700; outputs are meant to be shared
        yield tmp
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class WriteRefusedError(OSError):
    """A write the file system refused (disk full, quota, read-only, no permission), as one
    line naming the folder, the reason and what to do (`refused_writes`)."""


# errno -> what the user can do about it; any other OSError is not the environment's refusal.
# EFBIG: the file system's or the process's file-size limit (ulimit -f), a full disk by another name
_REMEDY = {errno.ENOSPC: "free space", errno.EDQUOT: "free space", errno.EFBIG: "free space or raise the file-size limit",
           errno.EROFS: "make it writable", errno.EACCES: "make it writable", errno.EPERM: "make it writable"}
# numpy (ndarray.tofile, np.save) reports a write the disk cut short without an errno
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")


def is_short_write(e: OSError) -> bool:
    """numpy's errno-less OSError for a write that stopped short (a full disk or a file-size limit)."""
    return e.errno is None and bool(_SHORT_WRITE.fullmatch(str(e)))


@contextlib.contextmanager
def refused_writes(folder: str | os.PathLike, option: str):
    """Turn a refused write inside the block into `WriteRefusedError`, e.g. "no space left on
    device: .assocjax_cache/bold; free space or point --cache-dir elsewhere" (`option`: the
    command-line option that chooses `folder`'s place)."""
    try:
        yield
    except WriteRefusedError:
        raise
    except OSError as e:
        if is_short_write(e):
            reason, remedy, code = f"a write stopped short ({e}: a full disk or a file-size limit)", "free space", \
                errno.ENOSPC
        elif e.errno in _REMEDY:
            reason, remedy, code = os.strerror(e.errno).lower(), _REMEDY[e.errno], e.errno
        else:
            raise
        err = WriteRefusedError(f"{reason}: {folder}; {remedy} or point {option} elsewhere")
        err.errno = code
        raise err from e


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_text(obj) -> str:
    """What `write_json` writes (numpy values as numbers, paths as str)."""
    return json.dumps(obj, indent=2, default=_jsonable) + "\n"


def write_json(path, obj) -> Path:
    return atomic_write_text(path, json_text(obj))


def write_csv(path, rows: Iterable[Mapping]) -> Path:
    rows = list(rows)
    if not rows:
        raise ValueError(f"no rows to write to {path}")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0].keys()))
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def _jsonable(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
