"""What the low-level band costs (`--features.nuisance-band`): one layer's plain nested ridge
against the banded partition of [layer, nuisance] (the joint banded model on the simplex grid of
`pipeline.partition.GAMMA_STEPS`, and each band alone), same folds, alphas and targets.

    python benchmarks/banded/nuisance_cost.py                       # the default run's size
    python benchmarks/banded/nuisance_cost.py --n-samples 2226 --layer-columns 3072 --n-targets 2048

The default run's size: one story of 200 TRs fitted alone (4 contiguous chunks, buffer 12 =
max delay 4 + 8), a hidden state of 32 dims x 4 delays (128 columns), the nuisance word_rate +
onsets x 4 delays (8 columns), the pipeline's alphas, CPU tiles of 1024 targets. Times are
medians of `repeats` after a compile: the plan (decompositions, once per layer) and the solve
per target (it scales with the targets: fits x vertices).
"""
from __future__ import annotations

import dataclasses
import math
import time

import jax
import numpy as np
import tyro

from assocjax.pipeline.design import cv_groups
from assocjax.pipeline.partition import gammas
from assocjax.ridge import DEFAULT_ALPHAS, banded, chunks, nested_folds, prepare_nested, solve_nested


@dataclasses.dataclass
class Config:
    n_samples: int = 200
    layer_columns: int = 128
    nuisance_columns: int = 8
    n_targets: int = 4096
    buffer: int = 12
    repeats: int = 3
    seed: int = 0


def _median_s(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(cfg: Config) -> None:
    rng = np.random.default_rng(cfg.seed)
    n, p, q = cfg.n_samples, cfg.layer_columns, cfg.nuisance_columns
    x = rng.standard_normal((n, p + q)).astype(np.float32)
    y = (x[:, :4] @ rng.standard_normal((4, cfg.n_targets)) + 3 * rng.standard_normal((n, cfg.n_targets))).astype(np.float32)
    groups, _ = cv_groups([n], None)
    folds = nested_folds(groups, None, 3, runs_N=np.zeros(n, np.int32), buffer=cfg.buffer)
    runs = np.zeros(n, np.int32)
    tile = chunks.cpu_tile()
    band = banded.band_columns([p, q])

    plain_plan = lambda: prepare_nested(x[:, :p], folds, DEFAULT_ALPHAS, target_runs_N=runs)[0]  # noqa: E731
    part_plan = lambda: banded.prepare_partition(x, band, folds, DEFAULT_ALPHAS, gammas(), target_runs_N=runs)  # noqa: E731
    t_plain_plan, t_part_plan = _median_s(plain_plan, cfg.repeats), _median_s(part_plan, cfg.repeats)
    pp, bp = plain_plan(), part_plan()
    t_plain = _median_s(lambda: solve_nested(pp, y, tile=tile), cfg.repeats)
    t_part = _median_s(lambda: banded.solve_partition(bp, y, tile=tile), cfg.repeats)
    per = lambda s: 1e6 * s / cfg.n_targets  # noqa: E731
    print(f"N {n}, layer {p} + nuisance {q} columns, {len(folds.outer)} outer folds, {len(gammas())} gammas, "
          f"{len(DEFAULT_ALPHAS)} alphas, {cfg.n_targets} targets, tile {tile}")
    print(f"plan: plain {t_plain_plan:.3f} s, banded partition {t_part_plan:.3f} s ({t_part_plan / t_plain_plan:.1f}x)")
    print(f"solve: plain {per(t_plain):.1f} us/target, banded partition {per(t_part):.1f} us/target "
          f"({t_part / t_plain:.1f}x)")
    if math.isfinite(t_part):
        print(f"added per layer and 1e6 targets: {(per(t_part) - per(t_plain)):.0f} s")


if __name__ == "__main__":
    main(tyro.cli(Config))
