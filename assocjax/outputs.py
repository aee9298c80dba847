"""Where runs leave their results: an output folder written as a whole, one run at a time,
never losing a file the tool did not write; and one policy for a single file the user names.

    with OutputFolder(cfg.output, "--output") as out:   # locked from here to the end of the block
        ...                                             # the long work
        with out.staging() as stage:                    # every file of the run is written under stage
            write_csv(stage / "scores.csv", rows)
        # only now are the files in place, the previous run's replaced together

Lock: an advisory `fcntl.flock` on DIR/.assocjax.lock, which holds the PID; a second run into
the folder fails at once naming the folder and that PID. The kernel drops the lock when its
process dies, so a killed run never blocks the next one.
Staging: DIR/.staging-<pid>, on the output's own filesystem, so putting a file in place is a
rename that needs no space. A failure while writing (a full disk included: one line naming
the folder) removes the staging folder and leaves the previous outputs byte-identical.
Manifest: DIR/.assocjax-outputs (JSON) lists the files the tool wrote there. A file of the
previous run that this run did not write is removed only when the manifest lists it, so a
user's file in the folder (or in its maps/) is never deleted; a folder written before the
manifest existed keeps its files. A file the manifest does not list at the place of a new
output is renamed to `<name>.orig` (`.orig-2`, ... never over an earlier backup), with a
warning naming both, instead of being replaced. Before any rename the manifest lists the old and the new
files, so a crash among the renames leaves nothing unaccounted for.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import warnings
from pathlib import Path

from .io import WriteRefusedError, is_short_write, write_json

LOCK_FILE = ".assocjax.lock"
MANIFEST_FILE = ".assocjax-outputs"  # JSON; no .json suffix, so that a glob of *.json (augmentations) misses it
MANIFEST_FORMAT = "assocjax-outputs"
STAGING_PREFIX = ".staging-"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # EFBIG: a file-size limit refuses the write as a full disk does


def disk_full(e: BaseException) -> bool:
    """A write the disk refused for want of room: a DISK_FULL errno, or numpy's errno-less short write."""
    return isinstance(e, OSError) and (e.errno in DISK_FULL or is_short_write(e))


class OutputError(WriteRefusedError):
    """An output folder in use by another run, or no space left on its disk (cli: one line, as
    every refused write)."""


def check_folder(path, option: str) -> Path:
    """`path` can be (or become) a writable output folder; else the error names `option`, the
    path and the part of it that is in the way. Cheap: call it before any long work."""
    path = Path(path)
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        where = "" if existing == path else f": {existing}"
        raise NotADirectoryError(f"{option} {path}{where} exists and is not a folder")
    if not os.access(existing, os.W_OK):
        raise PermissionError(f"{option} {path}: {existing} is not writable")
    return path


def check_new_file(path, option: str, overwrite: bool) -> Path:
    """The one policy for an output file the user names (an augmentation, ...): an existing
    file is refused, naming it, unless `overwrite`; its folder must be creatable."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{option} {path} is a folder, not a file")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{option} {path} exists: pass --overwrite to replace it, or choose another file")
    check_folder(path.parent, option)
    return path


class OutputFolder:
    """An output folder locked for one run, written through `staging()` (module docstring)."""

    def __init__(self, path, option: str = "--output"):
        self.path, self.option = Path(path), option
        self.written: list[Path] = []  # final paths of the files the last staging() put in place
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> OutputFolder:
        check_folder(self.path, self.option)
        self._created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputError(f"{self.option} {self.path} is in use by another run (process {holder}): wait for it "
                              "to finish, or choose another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        for old in self.path.glob(STAGING_PREFIX + "*"):  # a killed run's; nobody else writes here now
            shutil.rmtree(old, ignore_errors=True)
        return self

    def __exit__(self, kind, exc, tb) -> None:
        try:
            if exc is not None and self._created and [p.name for p in self.path.iterdir()] == [LOCK_FILE]:
                (self.path / LOCK_FILE).unlink()  # a failed first run leaves no folder behind
                self.path.rmdir()
        finally:
            os.close(self._fd)  # releases the lock
            self._fd = None

    def final(self, staged: Path) -> Path:
        """Where a file written under the staging folder lies once put in place."""
        return self.path / Path(staged).relative_to(self._stage())

    def _stage(self) -> Path:
        return self.path / f"{STAGING_PREFIX}{os.getpid()}"

    @contextlib.contextmanager
    def staging(self):
        """A fresh folder to write every file of the run into; when the block ends without error
        they are put in place together and the previous run's files it did not rewrite removed
        (those the manifest lists only). On an error nothing in the folder changes."""
        if self._fd is None:
            raise RuntimeError("OutputFolder.staging() outside its `with` block (the folder is not locked)")
        stage = self._stage()
        shutil.rmtree(stage, ignore_errors=True)
        try:
            try:
                stage.mkdir()
                yield stage
                new = {p.relative_to(stage).as_posix() for p in stage.rglob("*") if not p.is_dir()}
                old = self._recorded()
                self._check_room(new)
                for folder in sorted({(self.path / rel).parent for rel in new}):
                    folder.mkdir(parents=True, exist_ok=True)  # here: a full disk fails before any rename
                self._record(old | new)  # a crash among the renames below leaves every file accounted for
            except OSError as e:
                if disk_full(e):
                    raise OutputError(f"{self.option} {self.path}: no space left on its disk ({e.strerror or e}); "
                                      "nothing of this run was put in place, the previous outputs are unchanged") from e
                raise
            self._keep_foreign(new - old)
            for rel in sorted(new):
                os.replace(stage / rel, self.path / rel)
            for rel in sorted(old - new):
                (self.path / rel).unlink(missing_ok=True)
            try:
                self._record(new)
            except OSError as e:  # the outputs are complete; the manifest lists old names too, all the tool's
                warnings.warn(f"{self.path / MANIFEST_FILE} not updated ({e}): it still lists the previous "
                              "run's files too", stacklevel=3)
            self.written = [self.path / rel for rel in sorted(new)]
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    def _keep_foreign(self, unlisted: set[str]) -> None:
        """A file at a new output's place that the manifest does not list (a user's, or one written
        before manifests existed) is renamed to a free `<name>.orig` (`.orig-2`, ...) beside it with
        a warning naming both: replaced, never lost."""
        for rel in sorted(unlisted):
            target = self.path / rel
            if not (target.is_file() or target.is_symlink()):
                continue
            backup, n = target.with_name(target.name + ".orig"), 2
            while backup.exists() or backup.is_symlink():  # an earlier backup is the user's too: never overwritten
                backup, n = target.with_name(f"{target.name}.orig-{n}"), n + 1
            os.rename(target, backup)
            warnings.warn(f"{target} was not written by this tool (not in {MANIFEST_FILE}): kept as {backup}",
                          stacklevel=2)

    def _check_room(self, new: set[str]) -> None:
        """Every new file's place is free of folders, so no rename fails halfway through."""
        for rel in sorted(new):
            target = self.path / rel
            blocked = next((p for p in (target, *target.parents) if p != self.path and p.exists()
                            and (p.is_dir() if p == target else not p.is_dir())), None)
            if blocked is not None and self.path in blocked.parents:
                raise FileExistsError(f"{self.option} {self.path}: {blocked} is in the way of the output {rel}")

    def _recorded(self) -> set[str]:
        """The files the manifest says this tool wrote here (none without a readable manifest)."""
        path = self.path / MANIFEST_FILE
        if not path.is_file():
            return set()
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
            files = obj["files"] if obj.get("format") == MANIFEST_FORMAT else None
        except (ValueError, KeyError, TypeError, AttributeError):
            files = None
        if not isinstance(files, list):
            warnings.warn(f"{path} is not an {MANIFEST_FORMAT} manifest: no earlier output in {self.path} is "
                          "removed (remove stale ones by hand)", stacklevel=3)
            return set()
        # only plain relative paths inside the folder: a hand-edited manifest cannot reach outside it
        return {f for f in files if isinstance(f, str) and f and not Path(f).is_absolute()
                and ".." not in Path(f).parts and not f.startswith(STAGING_PREFIX)}

    def _record(self, files: set[str]) -> None:
        write_json(self.path / MANIFEST_FILE, dict(format=MANIFEST_FORMAT, version=1, files=sorted(files)))
