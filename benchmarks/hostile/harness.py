"""Running one case and classifying its outcome.

A script runs in the calling process (`run_script`: `runpy` with the script's own
`__main__` block, stdout/stderr captured), so JAX is imported once per worker, not per case;
cases that need a process of their own (concurrent runs, a kill) start one themselves.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import runpy
import shutil
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"

# outcome classes, in the order the totals are printed (README.md says what each means)
CLASSES = ("clear error", "handled well", "unclear error", "traceback", "silent wrong", "data loss", "hang")
GOOD = ("clear error", "handled well")


def run_script(name: str, argv: list[str], cwd: Path) -> dict:
    """Run scripts/<name> with `argv` in folder `cwd`, in this process, as `python scripts/<name>`
    would: {exit, stdout, stderr, seconds}. An exception escaping the script is printed as a
    traceback on the captured stderr and exits 1, as Python itself does."""
    out, err = io.StringIO(), io.StringIO()
    old_argv, old_cwd = sys.argv, os.getcwd()
    t0 = time.perf_counter()
    try:
        os.chdir(cwd)
        sys.argv = [str(SCRIPTS / name), *argv]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("always")  # every case sees its warnings, not only the first one in this worker
            try:
                runpy.run_path(str(SCRIPTS / name), run_name="__main__")
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:  # noqa: BLE001 - the case records it
                traceback.print_exc(file=err)
                code = 1
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
    return dict(exit=code, stdout=out.getvalue(), stderr=err.getvalue(), seconds=time.perf_counter() - t0)


def first_line(text: str, prefix: str) -> str | None:
    return next((line.strip() for line in text.splitlines() if line.strip().lower().startswith(prefix)), None)


def names(what: str, text: str) -> bool:
    """Whether `text` names `what`, ignoring case and "_" vs "-" (an option's field name
    batch_size names --data.batch-size)."""
    def norm(t):
        return t.lower().replace("_", "-")

    return norm(what) in norm(text)


def classify(case, res: dict, check_failure: str | None, folder: Path | None = None) -> tuple[str, str]:
    """(outcome class, detail) of a finished case (a hang never gets here). The case's folder is
    named after the case, so its path in a message would "name" the option: it is cut out first."""
    err, code = res["stderr"], res["exit"]
    if folder is not None:
        err = err.replace(str(folder), "CASE")
        res = res | dict(stderr=err, stdout=res.get("stdout", "").replace(str(folder), "CASE"))
    expect = case.expects
    if check_failure is not None and case.loss:
        return "data loss", check_failure
    if "Traceback (most recent call last)" in err or code not in (0, 2, *case.exits):
        return "traceback", f"exit {code}"
    if code != 0:  # a refusal: does its line name the bad thing?
        said = err + (res["stdout"] if code in case.exits else "")
        line = first_line(said, "error:") or first_line(said, "error") or ""
        where = line or said  # tyro's usage errors are a box, not an "error:" line
        if "error" not in expect:
            return "unclear error", f"refused a valid input (expected {'/'.join(expect)})"
        if names(case.match, where):
            return "clear error", ""
        return "unclear error", f"message lacks {case.match!r}"
    if check_failure is not None:
        return "silent wrong", check_failure
    if "note" in expect:
        said = [line for line in (res["stderr"] + res["stdout"]).splitlines()
                if line.strip().lower().startswith(("note:", "warning:", "userwarning")) or "Warning:" in line]
        if any(names(case.match, line) for line in said):
            return "handled well", ""
        if "ok" not in expect:
            return "silent wrong", f"exit 0 without a note naming {case.match!r}"
    if "ok" in expect or "note" in expect:
        return "handled well", ""
    return "silent wrong", f"exit 0, expected an error naming {case.match!r}"


@dataclasses.dataclass
class Case:
    """One hostile input and what correct code does with it.

    expects: the acceptable outcomes, any of "error" (exit 2, the `error:` line names `match`),
    "ok" (exit 0) and "note" (exit 0 with a note/warning line naming `match`).
    argv: the script's arguments, or a function of the case's Ctx returning them.
    setup: prepares the case folder (e.g. damages a copy of a fixture) before the run.
    check: (ctx, result) -> None when the outputs are right, else why not; run after any exit.
    loss: a failing check means something that existed before was destroyed (data loss).
    exits: further exit codes that mean a refusal (augment.py validate: 1).
    action: (ctx) -> result, replacing the in-process run (cases that need processes of their own).
    """

    name: str
    script: str
    argv: list[str] | Callable[["Ctx"], list[str]] = dataclasses.field(default_factory=list)
    expects: tuple[str, ...] = ("error",)
    match: str = ""
    setup: Callable[["Ctx"], None] | None = None
    check: Callable[["Ctx", dict], str | None] | None = None
    loss: bool = False
    exits: tuple[int, ...] = ()
    action: Callable[["Ctx"], dict] | None = None
    timeout: float = 180.0


@dataclasses.dataclass
class Ctx:
    """Where a case runs: `work` holds the shared fixtures (fixtures.py), `dir` is the case's own
    empty folder and its working directory."""

    work: Path
    dir: Path

    def copy(self, name: str, as_name: str | None = None) -> Path:
        """A private copy of fixture `name` in the case folder (to damage), named `as_name`."""
        dst = self.dir / (as_name or name)
        (shutil.copytree if (self.work / name).is_dir() else shutil.copy)(self.work / name, dst)
        return dst


def run_case(case: Case, work: Path, scratch: Path) -> dict:
    """Set up, run and classify one case in this process: a row of the report (no hang here:
    the worker's parent measures time)."""
    folder = scratch / "".join(c if c.isalnum() or c in "-_." else "_" for c in case.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ctx = Ctx(work, folder)
    argv: list[str] = []
    try:
        if case.setup is not None:
            case.setup(ctx)
        argv = case.argv(ctx) if callable(case.argv) else list(case.argv)
        res = case.action(ctx) if case.action is not None else run_script(case.script, argv, folder)
        failure = case.check(ctx, res) if case.check is not None else None
    except Exception:  # noqa: BLE001 - a broken case is reported, never hidden
        return dict(outcome="probe error", detail=traceback.format_exc(limit=3)[-300:], exit="", argv=argv,
                    stderr="", seconds=0.0)
    outcome, detail = classify(case, res, failure, folder)
    lines = [s for s in res["stderr"].splitlines() if s.strip()]
    # the error line; of a traceback its last line (the exception); else the first thing said
    said = first_line(res["stderr"], "error:") or (lines[-1] if outcome == "traceback" and lines else
                                                    next(iter(lines), ""))
    if not said and case.exits and res["exit"] in case.exits:
        said = first_line(res["stdout"], "error") or ""
    return dict(outcome=outcome, detail=detail, exit=res["exit"], argv=argv, stderr=said.strip()[:300],
                seconds=round(res["seconds"], 2))
