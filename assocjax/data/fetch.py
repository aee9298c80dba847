"""Download a dataset's files by relative path: resumable, atomic, checked against the listing.

A `Source` is where the files are: a base URL under which each file lives at `<base>/<path>`.
- http(s): an S3 bucket in path style, `https://s3.amazonaws.com/openneuro.org/ds002345`
  (`DEFAULT_BASE_URL`, OpenNeuro's public bucket): sizes and checksums come from the bucket's
  ListObjectsV2 listing (`<bucket>?list-type=2&prefix=<dataset>/<prefix>`: Key, Size, ETag;
  one request lists a whole folder, where a HEAD per file would cost one request each). An ETag
  of 32 hex digits is the object's MD5 (a single-part upload); one with "-N" (multipart) is no
  checksum, and only the size is checked.
- file://: a local copy or a lab mirror on a shared disk (sizes from the files; no checksum);
  `annex=True` reads a DataLad clone, whose images not yet got are symlinks into the annex
  (their size is in the annex key).

`download` writes `<name>.part` beside the final name, resumes it with an HTTP Range request,
checks its size (and MD5 where the listing gives one) and only then renames it (atomic on one
file system): the final name never holds a partial or wrong file. `fetch_all` runs downloads
in threads with one progress bar (bytes, files) and reports each failure by path.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import http.client
import os
import re
import shutil
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Iterable

from ..fingerprint import file_checksum

DEFAULT_BASE_URL = "https://s3.amazonaws.com/openneuro.org/ds002345"
DATALAD_URL = "https://github.com/OpenNeuroDatasets/ds002345.git"
_S3 = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_MD5 = re.compile(r"^[0-9a-f]{32}$")
_ANNEX_SIZE = re.compile(r"-s(\d+)--")
CHUNK = 1 << 20


class _Stopped(BaseException):
    """Raised in a download thread when the run is interrupted (not an error of that file)."""


class FetchError(Exception):
    """A source that cannot be reached or read, or a download that cannot start (disk space)."""


@dataclasses.dataclass(frozen=True)
class Remote:
    """One file of the source: its path relative to the dataset root, bytes, MD5 (None: unknown)."""

    path: str
    size: int
    md5: str | None = None


class Source:
    """The files under a base URL (module docstring); `list` caches each prefix's listing."""

    def __init__(self, base_url: str = DEFAULT_BASE_URL, timeout: float = 60.0, annex: bool = False):
        self.base_url = base_url.rstrip("/")
        self.timeout, self.annex = timeout, annex
        self._listed: dict[str, dict[str, Remote]] = {}
        self._lock = threading.Lock()
        parts = urllib.parse.urlsplit(self.base_url)
        self.scheme = parts.scheme
        if self.scheme == "file":
            self.folder = Path(urllib.request.url2pathname(parts.path))
        elif self.scheme in ("http", "https"):
            bucket, _, self.key_prefix = parts.path.strip("/").partition("/")
            if not bucket:
                raise ValueError(f"--base-url {base_url}: no bucket in the path (expected https://HOST/BUCKET[/PREFIX])")
            self.bucket_url = f"{parts.scheme}://{parts.netloc}/{bucket}"
        else:
            raise ValueError(f"--base-url {base_url}: expected http://, https:// or file://")

    @classmethod
    def local(cls, folder: Path, annex: bool = False) -> "Source":
        return cls(Path(folder).resolve().as_uri(), annex=annex)

    def url(self, path: str) -> str:
        return f"{self.base_url}/{urllib.parse.quote(path)}"

    def list(self, prefix: str) -> dict[str, Remote]:
        """path -> Remote for every file whose path starts with `prefix` (cached)."""
        with self._lock:
            if prefix in self._listed:
                return self._listed[prefix]
        found = self._list_folder(prefix) if self.scheme == "file" else self._list_s3(prefix)
        with self._lock:
            self._listed[prefix] = found
        return found

    def prefetch(self, prefixes: Iterable[str], jobs: int) -> None:
        """List many prefixes at once (`jobs` threads); later `list` calls hit the cache."""
        with concurrent.futures.ThreadPoolExecutor(max(jobs, 1)) as pool:
            list(pool.map(self.list, dict.fromkeys(prefixes)))

    def stat(self, path: str) -> Remote | None:
        """The file at `path`, or None; from a listing already made of a prefix of it when there is one."""
        with self._lock:
            listed = next((found for prefix, found in self._listed.items() if path.startswith(prefix)), None)
        return (listed if listed is not None else self.list(path)).get(path)

    def _list_s3(self, prefix: str) -> dict[str, Remote]:
        key_prefix = f"{self.key_prefix}/" if self.key_prefix else ""
        found, token = {}, None
        while True:
            query = {"list-type": "2", "prefix": key_prefix + prefix} | ({"continuation-token": token} if token else {})
            url = f"{self.bucket_url}?{urllib.parse.urlencode(query)}"
            tree = ET.fromstring(self._get(url))
            for item in tree.iter(f"{_S3}Contents"):
                key = item.findtext(f"{_S3}Key", "")
                etag = item.findtext(f"{_S3}ETag", "").strip('"').lower()
                path = key[len(key_prefix):]
                found[path] = Remote(path, int(item.findtext(f"{_S3}Size", "0")), etag if _MD5.match(etag) else None)
            token = tree.findtext(f"{_S3}NextContinuationToken")
            if tree.findtext(f"{_S3}IsTruncated", "false") != "true" or not token:
                return found

    def _get(self, url: str) -> bytes:
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            raise FetchError(f"{url}: HTTP {e.code} {e.reason} (is --base-url an S3 bucket that allows listing? "
                             "a plain HTTP mirror: use a file:// copy or --metadata)") from None
        except (urllib.error.URLError, OSError) as e:
            raise FetchError(f"cannot reach {self.bucket_url}: {getattr(e, 'reason', e)} (network, proxy or "
                             "--base-url)") from None

    def _list_folder(self, prefix: str) -> dict[str, Remote]:
        if not self.folder.is_dir():
            raise FetchError(f"--base-url {self.base_url}: folder {self.folder} not found")
        start = self.folder / prefix if prefix.endswith("/") or not prefix else (self.folder / prefix).parent
        found = {}
        if start.is_dir():
            for p in start.rglob("*"):
                rel = p.relative_to(self.folder).as_posix()
                if rel.startswith(prefix) and ".git" not in p.parts and (p.is_file() or self.annex and p.is_symlink()):
                    found[rel] = Remote(rel, _local_size(p))
        return found

    def open(self, path: str, start: int):
        """(a stream of the file from byte `start`, or from 0 where the server ignores Range; where
        it starts; the file's whole size as the server states it, None when it does not)."""
        if self.scheme == "file":
            f = open(self.folder / path, "rb")
            f.seek(start)
            return f, start, os.fstat(f.fileno()).st_size
        req = urllib.request.Request(self.url(path), headers={"Range": f"bytes={start}-"} if start else {})
        r = urllib.request.urlopen(req, timeout=self.timeout)
        if r.status == 206:
            total = (r.headers.get("Content-Range") or "").rpartition("/")[2]
            return r, start, int(total) if total.isdigit() else None
        length = r.headers.get("Content-Length")
        return r, 0, int(length) if length and length.isdigit() else None


def _local_size(p: Path) -> int:
    """A file's size; a DataLad file not yet got (a dangling annex symlink): the size in its key."""
    if p.exists():
        return p.stat().st_size
    m = _ANNEX_SIZE.search(os.readlink(p))
    return int(m.group(1)) if m else 0


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def is_complete(dest: Path, remote: Remote) -> bool:
    """The final file is there with the listed size (its MD5 was checked when it was written)."""
    return dest.is_file() and dest.stat().st_size == remote.size


def remaining(dest: Path, remote: Remote) -> int:
    """Bytes still to download (a .part no longer than the file counts as done so far)."""
    if is_complete(dest, remote):
        return 0
    part = part_path(dest)
    have = part.stat().st_size if part.is_file() else 0
    return remote.size - (have if have <= remote.size else 0)


def download(source: Source, remote: Remote, dest: Path, progress: Callable[[int], None] = lambda n: None) -> None:
    """Fetch `remote` into `dest` through `dest`.part (module docstring). Raises FetchError when
    the server's size or the MD5 disagrees with the listing (the .part is removed: it is not
    that file), OSError/HTTPError when the transfer fails (the .part is kept for a rerun)."""
    part = part_path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    if have > remote.size:
        part.unlink()
        have = 0
    if have < remote.size or not part.is_file():  # (an empty file still gets its .part)
        stream, start, total = source.open(remote.path, have)
        with stream:
            if total is not None and total != remote.size:
                part.unlink(missing_ok=True)
                raise FetchError(f"{remote.path}: the server sends {total} bytes, the listing says {remote.size}: "
                                 "refused (a changed file or a wrong mirror)")
            with open(part, "r+b" if start and part.exists() else "wb") as out:
                out.seek(start)
                out.truncate()
                progress(start - have)  # a server that ignores Range starts again from 0
                read = getattr(stream, "read1", stream.read)  # what has arrived: a kill loses at most a chunk
                while chunk := read(CHUNK):
                    out.write(chunk)
                    progress(len(chunk))
    got = part.stat().st_size if part.is_file() else 0
    if got > remote.size:
        part.unlink()
        raise FetchError(f"{remote.path}: {got} bytes arrived, the listing says {remote.size}: refused")
    if got < remote.size:
        raise OSError(f"{remote.path}: connection ended after {got} of {remote.size} bytes "
                      f"(kept in {part.name}; rerun to resume)")
    if remote.md5 is not None and (md5 := file_checksum(part, "md5")) != remote.md5:
        part.unlink()
        raise FetchError(f"{remote.path}: MD5 {md5} differs from the listing's {remote.md5}: refused")
    os.replace(part, dest)


@dataclasses.dataclass
class FetchResult:
    fetched: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)   # complete already
    failed: dict[str, str] = dataclasses.field(default_factory=dict)  # path -> why


def check_disk(root: Path, need: int) -> None:
    """FetchError when the disk holding `root` has less free space than `need` bytes."""
    where = next(p for p in (root, *root.parents) if p.exists())
    free = shutil.disk_usage(where).free
    if need > free:
        raise FetchError(f"{human(need)} ({need} bytes) still to download into {root}, but its disk has only "
                         f"{human(free)} ({free} bytes) free: free space or choose another --data.root")


def fetch_all(source: Source, files: Iterable[Remote], root: Path, jobs: int = 4, retries: int = 2,
              progress: bool = True) -> FetchResult:
    """Download every file not complete under `root` (in `jobs` threads, each retried `retries`
    times on a dropped connection, resuming its .part); a failure is recorded, the rest go on."""
    files = list(files)
    result = FetchResult(skipped=[f.path for f in files if is_complete(root / f.path, f)])
    todo = [f for f in files if not is_complete(root / f.path, f)]
    need = sum(remaining(root / f.path, f) for f in todo)
    check_disk(root, need)
    from tqdm.auto import tqdm

    bar = tqdm(total=need, unit="B", unit_scale=True, unit_divisor=1024, desc="fetch", disable=not progress)
    lock, stop = threading.Lock(), threading.Event()

    def advance(n: int) -> None:
        if stop.is_set():
            raise _Stopped
        with lock:
            bar.update(n)

    def one(remote: Remote) -> None:
        for attempt in range(retries + 1):
            try:
                download(source, remote, root / remote.path, advance)
                with lock:
                    result.fetched.append(remote.path)
                    bar.set_postfix_str(f"{len(result.fetched)}/{len(todo)} files")
                return
            except FetchError as e:
                why = str(e)
                break
            except urllib.error.HTTPError as e:
                why = f"{remote.path}: HTTP {e.code} {e.reason} at {source.url(remote.path)}"
                break
            except (OSError, ValueError, http.client.HTTPException) as e:  # dropped connection, timeout: resume
                why = f"{remote.path}: {getattr(e, 'reason', e)} (after {attempt + 1} attempt(s); rerun to resume)"
        with lock:
            result.failed[remote.path] = why

    pool = concurrent.futures.ThreadPoolExecutor(max(jobs, 1))
    try:
        for done in concurrent.futures.as_completed([pool.submit(one, f) for f in todo]):
            done.result()
    except BaseException:  # Ctrl-C: stop every transfer at its next chunk (the .part files stay), start no more
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        bar.close()
    pool.shutdown()
    return result


def datalad_get(root: Path, paths: Iterable[str], jobs: int = 4, run=subprocess.run, batch: int = 500) -> int:
    """`datalad get` of exactly `paths` in the DataLad dataset installed at `root` (batches of
    `batch` paths, so that no command line grows too long); the worst exit code."""
    if shutil.which("datalad") is None:
        raise FetchError("--via datalad: the datalad command is not on PATH (pip install datalad; it needs "
                         "git-annex), or use the default --via https")
    if not (root / ".datalad").is_dir():
        raise FetchError(f"--via datalad: {root} is not an installed DataLad dataset; install it first with "
                         f"`datalad clone {DATALAD_URL} {root}` (metadata only, a few MB), then rerun")
    paths, code = list(paths), 0
    for i in range(0, len(paths), batch):
        done = run(["datalad", "get", "-d", str(root), "-J", str(jobs), "--", *paths[i:i + batch]], cwd=root)
        code = max(code, done.returncode)
    return code


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
