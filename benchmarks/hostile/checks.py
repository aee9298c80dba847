"""Checks on a case's outputs: each returns None when right, else one line saying what is wrong."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

TOL = 1e-4  # |dr| allowed between two fits of the same targets (float order of other chunkings)


def rows(folder: Path) -> list[dict] | None:
    path = Path(folder) / "scores.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _key(r: dict) -> tuple:
    return r["story"], r["layer"], r["region"], r["hemi"], r["fit"], r["subject"]


def _differs(a: str, b: str) -> bool:
    x, y = float(a), float(b)
    return not (math.isnan(x) and math.isnan(y)) and not abs(x - y) <= TOL


def same_scores(ctx, folder: str | Path = "out", keep=lambda r: True) -> str | None:
    """The rows `keep` selects equal the clean baseline run's (score and vertex count)."""
    got, want = rows(ctx.dir / folder), rows(ctx.work / "baseline")
    if got is None:
        return f"no {folder}/scores.csv"
    got_by = {_key(r): r for r in got}
    for w in filter(keep, want):
        g = got_by.get(_key(w))
        if g is None:
            return f"row {'/'.join(_key(w))} missing"
        if _differs(g["score"], w["score"]) or g["n_vertices"] != w["n_vertices"]:
            return (f"row {'/'.join(_key(w))}: score {float(g['score']):.4f} on {g['n_vertices']} vertices, "
                    f"clean run {float(w['score']):.4f} on {w['n_vertices']}")
    return None


def others_unchanged(victim: str):
    """Another subject's damage leaves every other subject's per-subject rows as in the clean run."""
    def check(ctx, res):
        return same_scores(ctx, keep=lambda r: r["fit"] == "subject" and r["subject"] != victim)
    return check


def unchanged(ctx, res):
    """Every row as in the clean run (a damaged cache must be noticed and recomputed)."""
    return same_scores(ctx)


def files_kept(*names: str, backup: bool = False):
    """Files the user put there before the run still exist with their content (loss checks).
    backup: at a new output's place the user's file may instead be kept as `<name>.orig`
    (`assocjax.outputs.OutputFolder`: replaced with a warning, never lost)."""
    def check(ctx, res):
        for name in names:
            places = [ctx.dir / name] + ([ctx.dir / f"{name}.orig"] if backup else [])
            if not any(p.is_file() and p.read_bytes() == _user_bytes(name) for p in places):
                return f"{name} was deleted or overwritten" + (" (no .orig backup either)" if backup else "")
        return None
    return check


def _user_bytes(name: str) -> bytes:
    return f"user's own file {name}\n".encode()


def put_user_file(ctx, name: str) -> None:
    path = ctx.dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_user_bytes(name))


def consistent_output(folder: str = "out"):
    """scores.csv, run.json, summary.txt and maps/ of `folder` come from one run: the layers agree."""
    def check(ctx, res):
        out = ctx.dir / folder
        got = rows(out)
        if got is None:
            return None  # nothing written: consistent
        layers = sorted({int(r["layer"]) for r in got})
        run = json.loads((out / "run.json").read_text()) if (out / "run.json").is_file() else {}
        ran = sorted({int(x) for s in run.get("stories", {}).values() for x in s.get("computed_layers", [])}
                     | set(run.get("reused_layers", []) or []) | set(run.get("computed_layers", []) or []))
        maps = sorted({int(p.name[6:9]) for p in (out / "maps").glob("layer-*")}) if (out / "maps").is_dir() else []
        summary = (out / "summary.txt").read_text() if (out / "summary.txt").is_file() else ""
        per_layer = summary.split("per layer:")[-1] if "per layer:" in summary else ""
        said = sorted({int(t.split(":")[0]) for t in per_layer.replace(",", " ").split() if t.endswith(":")})
        for name, other in (("run.json", ran), ("maps", maps), ("summary.txt", said)):
            if other and other != layers:
                return f"scores.csv has layers {layers}, {name} {other}: outputs of different runs mixed"
        return None
    return check
