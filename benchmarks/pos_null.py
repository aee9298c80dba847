"""Part-of-speech subsets on null worlds (issue 23, "which content carries F"): how often is a
class's association-vs-random contrast significant when nothing associative is planted?

Each world is the built-in one at a small size (12 subjects, 3 stories of 100 TRs, 200 vertices
per hemisphere, layer 2) with `assoc_share = 0` (MTL hears the plain story) and its own seed;
its oracle is tagged with the synthetic rule (`augment.py tag --tagger synthetic`) and compared
with `--augment.by-pos --augment.pos-classes NOUN`, so "oracle:NOUN vs random-word:NOUN" (the
random control cut to the nouns' lengths) and, for reference, "oracle vs random-word" are
counted: significant (q < 0.05) in MTL, and over all 6 regions (hemi "both").

    python benchmarks/pos_null.py                     # 20 worlds, seeds 1..20 (~15 s each on 2 cores)
    python benchmarks/pos_null.py --worlds 5 --work /tmp/pos-null

Run on 2 CPU cores (docs/experiments.md quotes it), 20 worlds, two-level statistics (3 stories):
    oracle:NOUN vs random-word:NOUN  MTL 1/20 (95 % CI 0.1-25 %), region rows 14/120 = 11.7 % (6.5-19 %)
    oracle vs random-word            MTL 3/20 (3-38 %),          region rows 18/120 = 15.0 % (9-23 %)
"""
from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
from pathlib import Path

from scipy.stats import beta

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from scripts_loader import write_tagged_oracle  # noqa: E402

from assocjax.pipeline import (AugmentOptions, CeilingOptions, FeatureOptions, ReportOptions, ScoreConfig,  # noqa: E402
                               SyntheticOptions, compare)
from assocjax.pipeline.assets import ensure_builtin  # noqa: E402

COMPARISONS = ("oracle:NOUN vs random-word:NOUN", "oracle vs random-word")


def one_world(seed: int, work: Path) -> dict[str, dict[str, tuple[float, bool]]]:
    """comparison -> region -> (change, significant) of one null world."""
    opts = SyntheticOptions(story_trs=100, space="tinysphere", n_vertices=200, assoc_share=0.0, seed=seed)
    built = ensure_builtin(opts, work / "cache", progress=False)
    files = write_tagged_oracle(built, work / "aug", work / "tagged", seed)
    cfg = ScoreConfig(output=work / "out", cache_dir=work / "cache", synthetic=opts, progress=False,
                      features=FeatureOptions(layers=(opts.planted_layer,)), ceiling=CeilingOptions(n_splits=10),
                      report=ReportOptions(maps=False, figures=False),
                      augment=AugmentOptions(files=tuple(files), compare=True, by_pos=True, pos_classes=("NOUN",)))
    compare(cfg)
    out: dict = {c: {} for c in COMPARISONS}
    with open(work / "out" / "gains.csv") as f:
        for r in csv.DictReader(f):
            if r["fit"] == "subjects" and r["hemi"] == "both" and r["comparison"] in out:
                out[r["comparison"]][r["region"]] = (float(r["change"]), r["significant"] == "True")
    return out


def clopper_pearson(k: int, n: int) -> tuple[float, float]:
    return (beta.ppf(0.025, k, n - k + 1) if k else 0.0), (beta.ppf(0.975, k + 1, n - k) if k < n else 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worlds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one, removed)")
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="pos-null-"))
    worlds = []
    for seed in range(a.first_seed, a.first_seed + a.worlds):
        worlds.append(one_world(seed, work / f"seed{seed}"))
        shutil.rmtree(work / f"seed{seed}")
    for comp in COMPARISONS:
        mtl = sum(w[comp]["mtl"][1] for w in worlds)
        rows = [v[1] for w in worlds for v in w[comp].values()]
        lo, hi = clopper_pearson(mtl, len(worlds))
        rlo, rhi = clopper_pearson(sum(rows), len(rows))
        print(f"{comp:34s} MTL {mtl}/{len(worlds)} ({lo:.1%}-{hi:.1%}), region rows {sum(rows)}/{len(rows)} = "
              f"{sum(rows) / len(rows):.1%} ({rlo:.1%}-{rhi:.1%})")
    if a.work is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
