"""Calibration of F and M: the rate of "significant gains" on worlds without the effect, and the
power on worlds with it (issue 23). `python benchmarks/calibration/run.py --help`.

Each world is the built-in synthetic world (`SyntheticOptions`) at a small size, seeded by its
index: its own random model, stories, subjects and noise. Null worlds have no associative
signal (`assoc_share` 0: MTL hears the plain story only, the oracle reading plants nothing);
planted worlds have the built-in effect (`assoc_share` 0.8). On each, one `compare` run
(score.py --augment.compare) with the oracle, K other-story draws and an "exchangeable"
association (one more draw of the same control under another name), plus a weight-perturbed
model for M, and a second `compare` with the roles of the two models swapped.

What counts (MTL = the regions named mtl*, the headline unit, any hemisphere row):
    F oracle vs plain       a significant gain (q < fdr, change > 0) in an MTL row. On a null
                            world reading the associates costs every parcel (extra words, as any
                            insertion does): a real negative change, never counted as a positive.
    F oracle vs draws       the draws comparison's combined test (`pipeline.draws`) significant
                            in an MTL row (it is one-sided: a gain over the draws).
    F exchangeable vs draws the same for the extra draw: an exact null on every world (it is
                            exchangeable with the draws), so its draws p must be uniform; its
                            subject-level p alone is shown too (one fixed draw against the draws'
                            mean: a real difference of two texts that the subjects confirm).
    M perturbed vs true     a significant gain in any region row, tuned = the world's model with
                            seeded Gaussian noise on every weight (`--perturb` x each tensor's sd),
                            base = the world's model, from whose hidden state the brain was
                            planted: the tuning carries nothing the brain responds to (a false
                            positive is a claimed gain; the truth can only be lost).
    M true vs perturbed     power: base = the perturbed model, "tuned" = the planting model, which
                            carries the brain's signal (a real gain in every planted region).
Rates with their 95 % Clopper-Pearson interval over worlds.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # this checkout's library

import tyro  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

from assocjax import augment, results  # noqa: E402
from assocjax.augment.oracle import synthetic_oracle, write_oracle  # noqa: E402
from assocjax.augment.random_control import control_draws, random_match  # noqa: E402
from assocjax.pipeline import (AugmentOptions, CeilingOptions, CompareOptions, DataOptions, FeatureOptions,  # noqa: E402
                               ModelOptions, ReportOptions, ScoreConfig, SyntheticOptions, compare)
from assocjax.pipeline.assets import ensure_builtin  # noqa: E402

PLANTED_SHARE = 0.8   # the built-in world's share (SyntheticOptions.assoc_share)


@dataclasses.dataclass
class Args:
    out: Path = Path("calibration-out")
    """work folder (worlds, augmentations, runs) and results.json"""
    worlds: int = 20
    """null worlds, and as many planted worlds"""
    draws: int = 19
    """draws of the other-story control per world (K; the smallest draws p is 1 / (K + 1))"""
    n_subjects: int = 12
    story_trs: int = 120
    pool_stories: bool = True
    """fit the two stories together (--data.pool-stories), so that F and M carry the subject-level statistics
    this benchmark calibrates; fitted one by one, two stories give the two-level statistics t on 1 degree
    of freedom (calibrated in tests/test_story_level.py), which nothing planted here can pass"""
    n_vertices: int = 300
    """vertices per hemisphere (space tinysphere)"""
    perturb: float = 0.5
    """sd of the M null's weight noise, relative to each weight tensor's sd"""
    n_boot: int = 200
    """bootstrap draws of the CIs (not used by any rate)"""
    fdr: float = 0.05
    first_seed: int = 0


def world_options(a: Args, seed: int, share: float) -> SyntheticOptions:
    return SyntheticOptions(n_stories=2, n_subjects=a.n_subjects, story_trs=a.story_trs, space="tinysphere",
                            n_vertices=a.n_vertices, seed=seed, assoc_share=share)


def perturbed_model(src: Path, dst: Path, scale: float, seed: int) -> Path:
    """A copy of the model folder `src` with N(0, (scale sd(w))^2) noise on each weight tensor w."""
    if not dst.is_dir():
        shutil.copytree(src, dst)
        rng = np.random.default_rng([seed, 2023])
        weights = load_file(str(src / "model.safetensors"))
        save_file({k: (v + scale * v.std() * rng.standard_normal(v.shape)).astype(v.dtype) for k, v in weights.items()},
                  str(dst / "model.safetensors"))
    return dst


def write_augmentations(root: Path, out: Path, k: int) -> tuple[Path, ...]:
    """The oracle, K other-story draws (seeds 0..K-1) and the exchangeable association: draw K of
    the same control (seed K) as a condition of its own."""
    written = write_oracle(root, out, seed=0, draws=k)
    files = [f for fs in written.values() for f in fs]
    stories = synthetic_oracle(root)
    for story, (words, aug) in stories.items():
        pool = [w for other, (ws, _) in stories.items() if other != story for w in ws]
        extra = control_draws(lambda s: random_match(aug, words, pool, s, "matched", pool_name="other stories"),
                              0, k + 1)[k]
        provenance = {key: v for key, v in extra.provenance.items() if key not in ("control", "draw", "draws")}
        extra = dataclasses.replace(extra, provenance=provenance | {"condition": "exchangeable"})
        files.append(augment.save(extra, out / f"{story}_exchangeable.json", words))
    return tuple(files)


def mtl_rows(gains, comparison: str, regions=None) -> dict:
    """The headline's rows of one comparison over the MTL regions (or `regions`), every hemisphere present."""
    g = gains.sel(comparison=comparison, unit=results.ALL)
    names = [r for r in g["region"].values.tolist() if (r.startswith("mtl") if regions is None else r in regions)]
    g = g.sel(region=names)
    keys = np.asarray(g["present"].values)
    return {k: g[k].values[:, keys] for k in ("change", "q", "significant", "p", "draws_p", "subject_p")}


def gain(rows: dict, fdr: float) -> bool:
    return bool(np.any((rows["q"] < fdr) & (rows["change"] > 0)))


def one_world(a: Args, seed: int, planted: bool) -> dict:
    share = PLANTED_SHARE if planted else 0.0
    opts = world_options(a, seed, share)
    cache = a.out / "cache"
    world = ensure_builtin(opts, cache, progress=False)
    work = a.out / f"{'planted' if planted else 'null'}-{seed:03d}"
    aug = work / "aug"
    files = tuple(sorted(aug.glob("*.json"))) if aug.is_dir() else write_augmentations(world.root, aug, a.draws)
    pert = perturbed_model(world.model, work / "perturbed", a.perturb, seed)
    base = dict(cache_dir=cache, synthetic=opts, progress=False, data=DataOptions(pool_stories=a.pool_stories),
                features=FeatureOptions(layers=(opts.planted_layer,)),
                ceiling=CeilingOptions(n_splits=10), report=ReportOptions(maps=False, figures=False, n_boot=a.n_boot))
    comp = CompareOptions(fdr=a.fdr)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        f = compare(ScoreConfig(output=work / "f", augment=AugmentOptions(files=files, compare=True),
                                compare=dataclasses.replace(comp, models=(str(pert),), names=("perturbed",)), **base))
        m = compare(ScoreConfig(output=work / "m", model=ModelOptions(path=str(pert)),
                                compare=dataclasses.replace(comp, models=(str(world.model),), names=("true",)), **base))
    regions = f.gains["region"].values.tolist()
    exch = mtl_rows(f.gains, "exchangeable vs random-word draws")
    both = f.gains.sel(comparison="exchangeable vs random-word draws", unit=results.ALL, hemi="both",
                       layer=opts.planted_layer)
    mtl = [r for r in regions if r.startswith("mtl")]
    return {
        "seed": seed, "planted": planted,
        "F oracle vs plain": gain(mtl_rows(f.gains, "oracle vs plain"), a.fdr),
        "F oracle vs draws": gain(mtl_rows(f.gains, "oracle vs random-word draws"), a.fdr),
        "F exchangeable vs draws": gain(exch, a.fdr),
        "F exchangeable vs draws, subjects' p alone": bool(np.any(exch["subject_p"] < a.fdr)),
        "M perturbed vs true": gain(mtl_rows(f.gains, "perturbed vs plain", regions), a.fdr),
        "M true vs perturbed": gain(mtl_rows(m.gains, "true vs plain", regions), a.fdr),
        # one pre-chosen row (MTL, both hemispheres) at p <= fdr: the draws test without BH over the keys
        "F oracle vs draws, MTL row alone": _one_row(f.gains, "oracle vs random-word draws", mtl, opts, a.fdr),
        "F exchangeable vs draws, MTL row alone": _one_row(f.gains, "exchangeable vs random-word draws", mtl, opts,
                                                           a.fdr),
        "exchangeable draws p (MTL, both)": [float(both["draws_p"].sel(region=r)) for r in mtl],
        "oracle F (MTL, both)": [float(f.gains["change"].sel(comparison="oracle vs plain", unit=results.ALL,
                                                              hemi="both", layer=opts.planted_layer, region=r))
                                 for r in mtl],
    }


def _one_row(gains, comparison: str, mtl, opts, fdr: float) -> bool:
    g = gains.sel(comparison=comparison, unit=results.ALL, hemi="both", layer=opts.planted_layer, region=mtl)
    return bool(np.any((g["p"].values <= fdr) & (g["change"].values > 0)))


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    from scipy.stats import beta

    lo = 0.0 if k == 0 else float(beta.ppf((1 - level) / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf((1 + level) / 2, k + 1, n - k))
    return lo, hi


TESTS = ("F oracle vs plain", "F oracle vs draws", "F oracle vs draws, MTL row alone", "F exchangeable vs draws",
         "F exchangeable vs draws, MTL row alone", "F exchangeable vs draws, subjects' p alone", "M perturbed vs true",
         "M true vs perturbed")


def summarize(worlds: list[dict], fdr: float) -> str:
    lines = [f"{'test':<44} {'null worlds: rate [95% CI]':>34} {'planted worlds: rate [95% CI]':>34}"]
    for t in TESTS:
        cells = []
        for planted in (False, True):
            hits = [w[t] for w in worlds if w["planted"] == planted]
            if not hits:
                cells.append("")
                continue
            lo, hi = clopper_pearson(sum(hits), len(hits))
            cells.append(f"{sum(hits)}/{len(hits)} = {sum(hits) / len(hits):.2f} [{lo:.2f}, {hi:.2f}]")
        lines.append(f"{t:<44} {cells[0]:>34} {cells[1]:>34}")
    p = np.array([x for w in worlds for x in w["exchangeable draws p (MTL, both)"]])
    if p.size:
        lines.append(f"exchangeable draws p over {p.size} (world, MTL region) rows: P(p <= 0.05) = {np.mean(p <= 0.05):.3f}, "
                     f"P(p <= 0.5) = {np.mean(p <= 0.5):.3f}, mean {p.mean():.3f} (uniform on 1..K+1 / (K+1): "
                     f"0.05, ~0.5, ~0.5)")
    lines.append(f"(a hit: q < {fdr} with a positive change in an MTL row; M: in any region row)")
    return "\n".join(lines)


def main(a: Args) -> list[dict]:
    a.out.mkdir(parents=True, exist_ok=True)
    worlds, t0 = [], time.perf_counter()
    for planted in (False, True):
        for seed in range(a.first_seed, a.first_seed + a.worlds):
            worlds.append(one_world(a, seed, planted))
            print(f"{'planted' if planted else 'null'} world {seed}: "
                  + ", ".join(f"{t}={int(worlds[-1][t])}" for t in TESTS)
                  + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    text = summarize(worlds, a.fdr)
    (a.out / "results.json").write_text(json.dumps(dict(args=json.loads(json.dumps(dataclasses.asdict(a), default=str)),
                                                        worlds=worlds), indent=1))
    print(text)
    return worlds


if __name__ == "__main__":
    main(tyro.cli(Args))
