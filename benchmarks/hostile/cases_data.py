"""Damaged inputs of score.py: one subject's scans, sidecars, events and the story's alignment in
a copy of the pieman fixture; broken model folders; bad paths.

The victim is sub-002 (the fixture's first listener): correct code refuses naming its file, or
scores the others exactly as in the clean run (checks.others_unchanged).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from checks import others_unchanged
from fixtures import score_argv
from harness import Case

VICTIM = "sub-002"
EITHER = ("error", "ok")


def _gifti(root: Path, hemi: str = "L", sub: str = VICTIM) -> list[Path]:
    return sorted((root / "derivatives" / "afni-nosmooth" / sub / "func").glob(f"*hemi-{hemi}_*.func.gii"))


def _edit_gifti(path: Path, fn) -> None:
    """Apply fn to the (TRs, vertices) data of one GIfTI file, in place."""
    import nibabel as nib

    img = nib.load(path)
    data = np.stack([d.data for d in img.darrays]).astype(np.float32)
    data = fn(data)
    nib.save(nib.gifti.GiftiImage(darrays=[nib.gifti.GiftiDataArray(row.astype(np.float32)) for row in data]), path)


def _func(root: Path, pattern: str, sub: str = VICTIM) -> list[Path]:
    return sorted((root / sub / "func").glob(pattern))


def damaged(damage):
    """setup: copy the pieman fixture to <case>/pieman and damage it with damage(root)."""
    def setup(ctx):
        damage(ctx.copy("pieman"))
    return setup


def on_copy(ctx, *extra) -> list[str]:
    return [*score_argv(ctx.work, root=ctx.dir / "pieman"), *extra]


def bold_case(name, fn, hemi="L", expects=EITHER, match=VICTIM) -> Case:
    def damage(root):
        for path in _gifti(root, hemi):
            _edit_gifti(path, fn)
    return Case(f"data:{name}", "score.py", on_copy, expects, match, setup=damaged(damage),
                check=others_unchanged(VICTIM))


def _nan_tr(d):
    d[40] = np.nan
    return d


def _nan_all(d):
    d[:] = np.nan
    return d


def _spike(d):
    d[40, 7] = 1e30
    return d


def _nan_vertices(d):
    d[:, 3:8] = np.nan
    return d


def _inf_tr(d):
    d[50, :] = np.inf
    return d


def _truncate_trs(d):
    return d[: len(d) // 2]


def sidecar(name, field_value, match="bold.json", expects=("error",), all_runs=True, check=None) -> Case:
    """Damage the victim's bold.json: field_value(dict) edits it in place, or a str replaces the file."""
    def damage(root):
        for path in _func(root, "*_bold.json")[: None if all_runs else 1]:
            if isinstance(field_value, str):
                path.write_text(field_value)
            else:
                meta = json.loads(path.read_text())
                field_value(meta)
                path.write_text(json.dumps(meta))
    return Case(f"data:{name}", "score.py", on_copy, expects, match, setup=damaged(damage), check=check)


def events(name, text_fn, expects, match) -> Case:
    def damage(root):
        for path in _func(root, "*_events.tsv"):
            path.write_text(text_fn(path.read_text())) if text_fn else path.unlink()
    return Case(f"data:{name}", "score.py", on_copy, expects, match, setup=damaged(damage),
                check=others_unchanged(VICTIM) if "note" in expects else None)


def align(name, fn, expects=("error",), match="align.csv", encoding="utf-8") -> Case:
    def damage(root):
        path = root / "stimuli" / "gentle" / "pieman" / "align.csv"
        path.write_bytes(fn(path.read_text()).encode(encoding, errors="replace"))
    return Case(f"data:{name}", "score.py", on_copy, expects, match, setup=damaged(damage))


def _set(key, value):
    def edit(meta):
        meta[key] = value
    return edit


def _drop(key):
    def edit(meta):
        meta.pop(key, None)
    return edit


def _times(scale=1.0, shift=0.0):
    def fn(text):
        out = []
        for line in text.splitlines():
            w = line.split(",")
            if len(w) == 4 and w[2]:
                w[2], w[3] = (str(float(x) * scale + shift) if x else x for x in w[2:])
            out.append(",".join(w))
        return "\n".join(out) + "\n"
    return fn


def _onset(value):
    def fn(text):
        lines = text.splitlines()
        head, rows = lines[0], [line.split("\t") for line in lines[1:]]
        for r in rows:
            if r[2] == "story":
                r[0] = value
        return "\n".join([head, *("\t".join(r) for r in rows)]) + "\n"
    return fn


def _majority_tr_kept(ctx, res):
    run = ctx.dir / "out" / "run.json"
    if not run.is_file():
        return "no run.json"
    subjects = json.loads(run.read_text())["stories"]["pieman"]["subjects"]
    return None if {"sub-003", "sub-004"} <= set(subjects) else f"scored {subjects}: the majority's TR lost"


def data_cases() -> list[Case]:
    return [
        bold_case("nan time point in one subject's hemi-L", _nan_tr),
        bold_case("nan hemisphere in one subject", _nan_all),
        bold_case("1e30 spike in one subject", _spike),
        bold_case("5 nan vertices in one subject", _nan_vertices),
        bold_case("inf time point in one subject's hemi-R", _inf_tr, hemi="R"),
        bold_case("one subject's hemi-L half the TRs", _truncate_trs),
        bold_case("one subject's hemi-L constant", lambda d: d * 0 + 3.0),
        sidecar("minority TR 2.0 in one bold.json", _set("RepetitionTime", 2.0), match=VICTIM, expects=EITHER,
                check=_majority_tr_kept),
        sidecar("RepetitionTime 0", _set("RepetitionTime", 0)),
        sidecar("RepetitionTime -1.5", _set("RepetitionTime", -1.5)),
        sidecar("RepetitionTime as a string", _set("RepetitionTime", "1.5s")),
        sidecar("RepetitionTime missing", _drop("RepetitionTime")),
        sidecar("RepetitionTime in ms (1500)", _set("RepetitionTime", 1500)),
        sidecar("bold.json not JSON", "{RepetitionTime: 1.5"),
        sidecar("bold.json empty", ""),
        events("events.tsv empty", lambda t: "", ("note", "error"), VICTIM),
        events("events.tsv missing", None, ("note", "error"), VICTIM),
        events("events.tsv header only", lambda t: t.splitlines()[0] + "\n", ("note", "error"), VICTIM),
        events("events.tsv negative onset -30", _onset("-30.0"), ("error", "note"), "events.tsv"),
        events("events.tsv onset beyond the scan", _onset("100000.0"), ("error", "note"), "events.tsv"),
        events("events.tsv onset nan", _onset("nan"), ("error", "note"), "events.tsv"),
        events("events.tsv no story row", lambda t: t.replace("\tstory\t", "\tspeech\t"), ("error", "note"),
               "events.tsv"),
        align("align.csv latin-1 with an accent", lambda t: t.replace("began,began", "begán,begán", 1),
              expects=EITHER, encoding="latin-1"),
        align("align.csv empty", lambda t: ""),
        align("align.csv times in ms", _times(scale=1000.0), match="outside"),
        align("align.csv times shifted -1000 s", _times(shift=-1000.0), match="outside"),
        align("align.csv garbage row", lambda t: t + "a,b,c,d,e,f\n"),
        align("align.csv nan times", _times(scale=float("nan")), expects=("error", "note")),
        align("align.csv unsorted rows", lambda t: "\n".join(reversed(t.splitlines())) + "\n", expects=("ok", "note")),
        Case("data:scan_exclude.json not JSON", "score.py", on_copy, ("error",), "scan_exclude.json",
             setup=damaged(lambda root: (root / "code" / "scan_exclude.json").write_text("{oops"))),
        Case("data:participants.tsv missing", "score.py", on_copy, EITHER, "participants.tsv",
             setup=damaged(lambda root: (root / "participants.tsv").unlink())),
        Case("data:one subject's gifti truncated", "score.py", on_copy, ("error", "note"), VICTIM,
             setup=damaged(lambda root: [p.write_bytes(p.read_bytes()[:500]) for p in _gifti(root)])),
        Case("data:one subject's hemi-L gifti missing", "score.py", on_copy, ("ok", "note", "error"), VICTIM,
             setup=damaged(lambda root: [p.unlink() for p in _gifti(root)]), check=others_unchanged(VICTIM)),
        Case("data:one subject's derivatives missing", "score.py", on_copy, ("note", "error"), VICTIM,
             setup=damaged(lambda root: [p.unlink() for h in "LR" for p in _gifti(root, h)]),
             check=others_unchanged(VICTIM)),
        Case("data:--data.subjects sub-999", "score.py", lambda c: [*on_copy(c), "--data.subjects", "sub-999"],
             ("error",), "sub-999", setup=damaged(lambda root: None)),
        Case("data:--data.tasks nosuchtask", "score.py", lambda c: [*score_argv(c.work), "--data.tasks", "nosuchtask"],
             ("error",), "nosuchtask"),
        Case("data:--data.stories nosuchstory", "score.py",
             lambda c: [*score_argv(c.work), "--data.stories", "nosuchstory"], ("error",), "nosuchstory"),
        Case("data:--data.space nosuchspace", "score.py",
             lambda c: [*score_argv(c.work), "--data.space", "nosuchspace"], ("error",), "nosuchspace"),
        Case("data:--data.root missing", "score.py", lambda c: score_argv(c.work, root=c.dir / "nowhere"), ("error",),
             "nowhere"),
        Case("data:--data.root is a file", "score.py", lambda c: score_argv(c.work, root=c.work / "aug.json"),
             ("error",), "aug.json"),
        Case("data:--data.root unicode path", "score.py", lambda c: score_argv(c.work, root=c.dir / "données-ü✓"),
             ("ok",), setup=lambda c: __import__("shutil").copytree(c.work / "pieman", c.dir / "données-ü✓")),
        Case("data:--data.root empty folder", "score.py", lambda c: score_argv(c.work, root=c.dir / "emptyroot"),
             ("error",), "emptyroot", setup=lambda c: (c.dir / "emptyroot").mkdir()),
        Case("data:--data.trim-start 10000", "score.py", lambda c: [*score_argv(c.work), "--data.trim-start", "10000"],
             ("error",), "trim-start"),
        Case("data:--features.delays 270", "score.py", lambda c: [*score_argv(c.work), "--features.delays", "270"],
             ("error",), "delays"),
        Case("data:--ridge.story-chunks 200", "score.py",
             lambda c: [*score_argv(c.work), "--ridge.story-chunks", "200"], ("error",), "story-chunks"),
        Case("data:--features.layers 99", "score.py", lambda c: [*score_argv(c.work), "--features.layers", "99"],
             ("error",), "layers"),
        Case("data:--features.layers -99", "score.py", lambda c: [*score_argv(c.work), "--features.layers", "-99"],
             ("error",), "layers"),
        Case("data:--features.stride > context", "score.py",
             lambda c: [*score_argv(c.work), "--features.stride", "500"], ("error",), "stride"),
        Case("data:--features.context 100000", "score.py",
             lambda c: [*score_argv(c.work), "--features.context", "100000"], ("error", "note"), "context"),
        Case("data:--ridge.buffer-trs 10000", "score.py",
             lambda c: [*score_argv(c.work), "--ridge.buffer-trs", "10000"], ("error",), "buffer-trs"),
        Case("data:--ridge.outer-folds 50", "score.py",
             lambda c: [*score_argv(c.work), "--ridge.outer-folds", "50"], ("error",), "outer-folds"),
        Case("data:--ceiling.n-splits 1", "score.py", lambda c: [*score_argv(c.work), "--ceiling.n-splits", "1"],
             ("ok", "note", "error"), "n-splits"),
        Case("data:--aggregate on an empty cache", "score.py", lambda c: [*score_argv(c.work), "--aggregate"],
             ("error",), "layer"),
        Case("data:--compare.fdr 2", "score.py", lambda c: [*score_argv(c.work), "--compare.fdr", "2"], ("error",),
             "fdr"),
        # issue 20's grid-edge diagnostic: a grid whose smallest (largest) alpha is chosen nearly everywhere
        # 3-alpha grids: with 2 alphas every choice is an edge, which the grid-edge diagnostic does not judge
        Case("data:--ridge.alphas 1e-4 1e-3 1e-2 (low edge everywhere)", "score.py",
             lambda c: [*score_argv(c.work), "--ridge.alphas", "1e-4", "1e-3", "1e-2"], ("note",), "grid"),
        Case("data:--ridge.alphas 1e7 1e8 1e9 (high edge everywhere)", "score.py",
             lambda c: [*score_argv(c.work), "--ridge.alphas", "1e7", "1e8", "1e9"], ("note",), "grid"),
        Case("data:--data.hemi L", "score.py", lambda c: [*score_argv(c.work), "--data.hemi", "L"], ("ok",)),
        Case("data:--data.pool-stories with one story", "score.py",
             lambda c: [*score_argv(c.work), "--data.pool-stories"], ("ok", "note", "error"), "pool"),
    ]
