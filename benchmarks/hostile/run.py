"""The hostile-input probe of issue 20: every case of the case tables against the seven scripts,
classified and totalled (README.md beside this file).

    python benchmarks/hostile/run.py                       # all cases, 2 workers
    python benchmarks/hostile/run.py --only cache: --jobs 1
    python benchmarks/hostile/run.py --list

Workers are processes that import the library once and run cases in-process (harness.run_case);
the parent gives each case to a free worker and kills a worker whose case runs past its
timeout (a hang), then starts a fresh one.
"""
from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import resource
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# this checkout's library, not an installed one (pip install -e may point at another worktree):
# here, in the workers, and in the scripts that cases start as processes of their own
sys.path[:0] = [str(REPO), str(HERE)]
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])

from harness import CLASSES, GOOD  # noqa: E402


def all_cases():
    from cases_data import data_cases
    from cases_options import cases as option_cases
    from cases_scripts import script_cases
    from cases_state import state_cases

    cases = [*option_cases(), *data_cases(), *state_cases(), *script_cases()]
    names = [c.name for c in cases]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"case names repeat: {sorted(dup)}")
    return cases


def worker(work: Path, scratch: Path, mem_gb: float) -> None:
    """Read case names on stdin, answer one JSON row per case on stdout."""
    limit = int(mem_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))  # a huge option value fails here, not the machine
    from harness import run_case

    cases = {c.name: c for c in all_cases()}
    answer = os.fdopen(os.dup(1), "w", buffering=1)
    for line in sys.stdin:
        name = line.rstrip("\n")
        answer.write(json.dumps(run_case(cases[name], work, scratch), default=str) + "\n")


class Worker:
    def __init__(self, args):
        cmd = [sys.executable, str(Path(__file__)), "--worker", "--work", str(args.work), "--scratch",
               str(args.out / "cases"), "--mem-gb", str(args.mem_gb)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, bufsize=1, start_new_session=True)
        self.case, self.t0 = None, 0.0

    def give(self, case):
        self.case, self.t0 = case, time.perf_counter()
        self.proc.stdin.write(case.name + "\n")
        self.proc.stdin.flush()

    def kill(self):
        try:
            os.killpg(self.proc.pid, 9)  # its whole group: the case's own subprocesses too
        except ProcessLookupError:
            pass
        self.proc.wait()


FIELDS = ["case", "script", "argv", "expected", "match", "outcome", "detail", "exit", "stderr", "seconds"]


def run_all(cases, args) -> list[dict]:
    """Run every case on args.jobs workers; each row is appended to OUT/hostile.csv as it comes."""
    todo, rows, retried = list(cases), [], set()
    table = open(args.out / "hostile.csv", "w", newline="")
    writer = csv.DictWriter(table, FIELDS, extrasaction="ignore")
    writer.writeheader()
    workers = [Worker(args) for _ in range(min(args.jobs, len(todo)))]
    t_start = time.perf_counter()
    while todo or any(w.case for w in workers):
        for w in workers:
            if w.case is None and todo:
                w.give(todo.pop(0))
        busy = [w for w in workers if w.case is not None]
        ready, _, _ = select.select([w.proc.stdout for w in busy], [], [], 1.0)
        for i, w in enumerate(workers):
            if w.case is None:
                continue
            elapsed = time.perf_counter() - w.t0
            if w.proc.stdout in ready:
                line = w.proc.stdout.readline()
                row = json.loads(line) if line else dict(outcome="traceback", detail="the worker died", exit="",
                                                         argv=[], stderr="", seconds=round(elapsed, 2))
            elif elapsed > w.case.timeout * args.timeout_scale:
                row = dict(outcome="hang", detail=f"killed after {elapsed:.0f} s", exit="", argv=[], stderr="",
                           seconds=round(elapsed, 2))
            else:
                continue
            if out_of_memory(row) and w.case.name not in retried:
                # the worker's address space fills over hundreds of cases (JAX's caches and arenas), so a
                # case's first allocation may fail under --mem-gb for no fault of its own: once more, fresh
                retried.add(w.case.name)
                todo.insert(0, w.case)
                w.kill()
                workers[i] = Worker(args)
                continue
            rows.append(dict(case=w.case.name, script=w.case.script, expected="/".join(w.case.expects),
                             match=w.case.match, **row))
            writer.writerow(rows[-1] | {"argv": " ".join(map(str, row["argv"]))})
            table.flush()
            print(f"[{len(rows)}/{len(cases)} {time.perf_counter() - t_start:6.0f}s] {row['outcome']:13s} "
                  f"{w.case.name}" + (f"  ({row['detail']})" if row.get("detail") else ""), flush=True)
            if needs_new_worker(row):
                w.kill()
                workers[i] = Worker(args)
            else:
                w.case = None
    for w in workers:
        w.proc.stdin.close()
        w.proc.wait()
    table.close()
    return rows


def out_of_memory(row) -> bool:
    return row["outcome"] == "traceback" and any(s in row["stderr"] for s in ("RESOURCE_EXHAUSTED", "MemoryError"))


def needs_new_worker(row) -> bool:
    """A hang or a dead worker, and a traceback too: a crashed case may leave its memory or state
    behind (on main 56dc3c6 five finetune cases in a row failed allocating 78 MB under --mem-gb
    after the first one did: RESOURCE_EXHAUSTED tracebacks that were not theirs)."""
    return row["outcome"] in ("hang", "traceback") or row.get("detail") == "the worker died"


def report(rows, seconds: float, out: Path) -> str:
    by_class = collections.Counter(r["outcome"] for r in rows)
    scripts = sorted({r["script"] for r in rows})
    classes = [c for c in CLASSES] + sorted(set(by_class) - set(CLASSES))
    width = max(len(s) for s in scripts + ["script"])
    lines = [f"{len(rows)} cases in {seconds:.0f} s: " + ", ".join(f"{by_class[c]} {c}" for c in classes),
             f"good (clear error + handled well): {sum(by_class[c] for c in GOOD)} of {len(rows)}", "",
             "script".ljust(width) + " | " + " | ".join(c for c in classes) + " | total"]
    for s in scripts:
        mine = collections.Counter(r["outcome"] for r in rows if r["script"] == s)
        lines.append(s.ljust(width) + " | " + " | ".join(str(mine[c]).rjust(len(c)) for c in classes)
                     + f" | {sum(mine.values())}")
    text = "\n".join(lines)
    (out / "totals.txt").write_text(text + "\n")
    return text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "assocjax-hostile",
                   help="folder for hostile.csv, totals.txt, the fixtures and each case's files")
    p.add_argument("--work", type=Path, default=None, help="fixture folder (default: OUT/fixtures; reused when built)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes")
    p.add_argument("--only", action="append", default=[], help="run the cases whose name contains this (repeatable)")
    p.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every case's timeout (slow machine)")
    p.add_argument("--mem-gb", type=float, default=6.0, help="address-space limit of each worker")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.work, args.scratch, args.mem_gb)
        return 0
    cases = [c for c in all_cases() if not args.only or any(s in c.name for s in args.only)]
    if args.list:
        for c in cases:
            print(f"{c.name}  [{c.script}; expects {'/'.join(c.expects)} {c.match!r}]")
        print(f"{len(cases)} cases")
        return 0
    if args.jobs < 1:
        p.error(f"--jobs {args.jobs} must be >= 1")
    args.out = args.out.resolve()
    args.work = (args.work or args.out / "fixtures").resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"writing to {args.out}", flush=True)
    t0 = time.perf_counter()
    from fixtures import build

    build(args.work)
    print(f"fixtures ready in {time.perf_counter() - t0:.0f} s ({args.work}); {len(cases)} cases, {args.jobs} workers",
          flush=True)
    rows = run_all(cases, args)
    print("\n" + report(rows, time.perf_counter() - t0, args.out))
    print(f"\nper case: {args.out / 'hostile.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
