"""Which FIR delays recover an HRF-shaped response best (issue 24): `python benchmarks/delays/run.py --help`.

Each world is the built-in synthetic world (`SyntheticOptions`: its random GPT-2-style model,
3 stories, 12 subjects, the planted layer's features convolved with the SPM HRF sampled at the
world's TR) at a small size, seeded by its index, at TR 1.5 s and 2 s with the stories equally
long in seconds. Each world is scored at the planted layer with every candidate delay set
(`--features.delays` in TRs, and spans in seconds turned into TRs at the world's TR by the
pipeline's own rule, `pipeline.delays.span_delays`); a delay set met twice in one world is
fitted once. What is compared: per region (hemispheres together) the headline score (per-subject
fits averaged over subjects, stories combined) and the subject-mean fit's score, and their ratio
to the best candidate's in the same world and region. Planted regions: every parcel but
visual_control, which hears nothing (its scores show whether a larger design overfits into a
spurious fit). The chosen default: the span whose ratio, averaged over the planted regions, the
worlds and both TRs, is highest (ties within `tie`: the one with fewer delays at TR 1.5 s).
Every fit is kept in OUT/fits/*.json, so a rerun resumes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # this checkout's library

import tyro  # noqa: E402

from assocjax.pipeline import (CeilingOptions, FeatureOptions, ReportOptions, ScoreConfig,  # noqa: E402
                               SyntheticOptions, score)
from assocjax.pipeline.assets import ensure_builtin  # noqa: E402
from assocjax.pipeline.delays import span_delays  # noqa: E402

NULL_REGION = "visual_control"   # snr 0 in the built-in world: nothing planted there
TR_SETS = ((1, 3), (1, 4), (1, 5), (1, 6), (2, 7), (1, 8))
SPANS = ((1.5, 6.0), (2.0, 8.0), (1.5, 9.0), (3.0, 9.0), (2.0, 10.0), (4.0, 10.0), (1.5, 12.0))


@dataclasses.dataclass
class Args:
    out: Path = Path("delays-out")
    """work folder (worlds, fits) and results.json"""
    trs: tuple[float, ...] = (1.5, 2.0)
    seeds: int = 3
    """worlds per TR (seeds first_seed ..)"""
    first_seed: int = 0
    story_seconds: float = 300.0
    """each story's length; story TRs = this / TR"""
    n_subjects: int = 12
    n_vertices: int = 300
    """vertices per hemisphere (space tinysphere)"""
    tie: float = 0.005
    """ratios closer than this count as a tie (then fewer delays win)"""


def candidates(tr: float) -> dict[str, tuple[int, ...]]:
    """label -> delays in TRs at this TR."""
    out = {f"TRs {a}-{b}": tuple(range(a, b + 1)) for a, b in TR_SETS}
    return out | {span_label(s): span_delays(s, tr) for s in SPANS}


def span_label(span) -> str:
    return f"{span[0]:g}-{span[1]:g} s"


def world(a: Args, tr: float, seed: int) -> SyntheticOptions:
    return SyntheticOptions(n_subjects=a.n_subjects, story_trs=round(a.story_seconds / tr), space="tinysphere",
                            n_vertices=a.n_vertices, seed=seed, tr=tr)


def fit(a: Args, opts: SyntheticOptions, delays: tuple[int, ...]) -> dict:
    """region -> {"headline": score, "mean": subject-mean fit's score} at the planted layer, both hemispheres."""
    path = a.out / "fits" / f"tr{opts.tr:g}-seed{opts.seed}-d{'_'.join(map(str, delays))}.json"
    if path.is_file():
        return json.loads(path.read_text())
    cfg = ScoreConfig(output=a.out / "run", cache_dir=a.out / "cache", synthetic=opts, progress=False,
                      features=FeatureOptions(layers=(opts.planted_layer,), delays=delays),
                      ceiling=CeilingOptions(n_splits=10), report=ReportOptions(maps=False, figures=False, n_boot=100))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        res = score(cfg)
    got: dict = {}
    for row in res.rows:
        if row["story"] == "all" and row["hemi"] == "both" and row["layer"] == opts.planted_layer:
            kind = {"subjects": "headline", "mean": "mean"}.get(row["fit"])
            if kind:
                got.setdefault(row["region"], {})[kind] = float(row["score"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(got))
    return got


def run(a: Args) -> list[dict]:
    """One record per (TR, seed, candidate)."""
    records, t0 = [], time.perf_counter()
    for tr in a.trs:
        for seed in range(a.first_seed, a.first_seed + a.seeds):
            opts = world(a, tr, seed)
            ensure_builtin(opts, a.out / "cache", progress=False)
            for label, delays in candidates(tr).items():
                records.append(dict(tr=tr, seed=seed, candidate=label, delays=list(delays),
                                    scores=fit(a, opts, delays)))
            print(f"TR {tr:g} s, world {seed}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    return records


def with_ratios(records: list[dict]) -> list[dict]:
    """Each record's score / the best candidate's score in the same world, region and fit."""
    for r in records:
        same = [q for q in records if q["tr"] == r["tr"] and q["seed"] == r["seed"]]
        r["ratio"] = {reg: {k: v / max(q["scores"][reg][k] for q in same) for k, v in by.items()}
                      for reg, by in r["scores"].items() if reg != NULL_REGION}
    return records


def planted_regions(records: list[dict]) -> list[str]:
    return [reg for reg in records[0]["scores"] if reg not in (NULL_REGION, "all")]


def criterion(records: list[dict], label: str) -> float:
    """Mean ratio of `label` over the planted regions, worlds and TRs (headline fit)."""
    regs = planted_regions(records)
    return statistics.fmean(r["ratio"][reg]["headline"] for r in records if r["candidate"] == label for reg in regs)


def choose(records: list[dict], tie: float) -> str:
    spans = [span_label(s) for s in SPANS]
    best = max(criterion(records, s) for s in spans)
    tied = [s for s in spans if criterion(records, s) >= best - tie]
    first = {r["candidate"]: r["delays"] for r in records if r["tr"] == records[0]["tr"]}
    return min(tied, key=lambda s: len(first[s]))


def table(records: list[dict], tr: float) -> str:
    """Markdown: per candidate at one TR, mean (min..max over worlds) of the headline score per
    planted region, the mean ratio to the best, and the null region's score."""
    regs = planted_regions(records)
    mine = [r for r in records if r["tr"] == tr]
    head = ("| candidate | delays (TRs) | " + " | ".join(f"{g} r" for g in regs)
            + " | ratio to best (mean, min..max) | subject-mean fit ratio | " + f"{NULL_REGION} r |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for label in dict.fromkeys(r["candidate"] for r in mine):
        rs = [r for r in mine if r["candidate"] == label]
        cell = lambda xs: f"{statistics.fmean(xs):.3f} ({min(xs):.3f}..{max(xs):.3f})"  # noqa: E731
        ratios = [statistics.fmean(r["ratio"][g]["headline"] for g in regs) for r in rs]
        mean_ratios = [statistics.fmean(r["ratio"][g]["mean"] for g in regs) for r in rs]
        lines.append(f"| {label} | {rs[0]['delays'][0]}-{rs[0]['delays'][-1]} | "
                     + " | ".join(cell([r["scores"][g]["headline"] for r in rs]) for g in regs)
                     + f" | {cell(ratios)} | {cell(mean_ratios)} | "
                     + f"{cell([r['scores'][NULL_REGION]['headline'] for r in rs])} |")
    return "\n".join(lines)


def main(a: Args) -> dict:
    a.out.mkdir(parents=True, exist_ok=True)
    records = with_ratios(run(a))
    text = [f"## TR {tr:g} s ({len({r['seed'] for r in records})} worlds, stories of {a.story_seconds:g} s)\n\n"
            + table(records, tr) for tr in a.trs]
    spans = {span_label(s): criterion(records, span_label(s)) for s in SPANS}
    chosen = choose(records, a.tie)
    text.append("span criterion (mean ratio to the best over planted regions, worlds and TRs): "
                + ", ".join(f"{k}: {v:.4f}" for k, v in spans.items()) + f"\nchosen default span: {chosen}")
    out = dict(args=json.loads(json.dumps(dataclasses.asdict(a), default=str)), records=records, criterion=spans,
               chosen=chosen)
    (a.out / "results.json").write_text(json.dumps(out, indent=1))
    print("\n\n".join(text))
    return out


if __name__ == "__main__":
    main(tyro.cli(Args))
