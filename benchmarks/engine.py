"""The nested ridge engine at the shape of one real story's pipeline layer (issue 26): pieman's
281 TRs in 4 contiguous chunks (leave-one-chunk-out outer folds, 3 inner folds, buffer 14 TRs),
768 features x 5 FIR delays (3-9 s at TR 1.5 s) = 3840 columns, the pipeline's 9 alphas,
per-run z-scoring of the targets inside every fold: what `pipeline.fitting.solve_layers` runs.

    python benchmarks/engine.py                         # 65536 targets, chunks of 8192, this code's workers
    python benchmarks/engine.py --workers 1             # one chunk at a time
    PYTHONPATH=<other checkout> python benchmarks/engine.py --workers 1   # the same problem on other code

Targets are streamed through `ridge.chunks.stream` in chunks (1024-target tiles on a CPU), as the
pipeline does. Prints one JSON line: seconds (median of --repeats after a compile), us per
target, MFLOP per target (every product at its padded shape; the per-call maps counted apart),
GFLOP/s and its share of a float32 XLA matmul (6000x1536 @ 1536x8192, all cores) timed in
the same run, the process CPU seconds and the load average.
"""
from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time

import jax
import numpy as np
import tyro

from assocjax.ridge import chunks, nested_folds, prepare_nested, solve_nested, solvers
from common import matmul_gflops


@dataclasses.dataclass
class Config:
    n_targets: int = 65536
    chunk: int = 8192
    workers: int | None = None
    """chunks in flight (None: `chunks.cpu_workers()` where this code has it, else 1)"""
    repeats: int = 3
    n_trs: int = 281
    n_chunks: int = 4
    buffer: int = 14
    n_features: int = 3840
    seed: int = 0


def flops(plan, n_targets: int) -> dict:
    """Per-target FLOPs of `solve_nested` from the plan's padded shapes: the inner folds through
    per-alpha maps (A E R) where this code has them, else the projection on the basis (k R) and
    the alpha products (A E k); the outer refit (R k + E k)."""
    k_outer, n_inner, r_in, k_in = plan.inner.spec.basis_Rk.shape
    e_in = plan.inner.test_proj_Ek.shape[-2]
    r_out, k_out = plan.outer.spec.basis_Rk.shape[-2:]
    e_out = plan.outer.test_proj_Ek.shape[-2]
    a = plan.alphas_A.shape[-1]
    maps = hasattr(solvers, "maps_pay") and solvers.maps_pay(r_in, k_in, e_in, a)
    inner = 2 * a * e_in * r_in if maps else 2 * r_in * k_in + 2 * a * e_in * k_in
    per_target = k_outer * (n_inner * inner + 2 * r_out * k_out + 2 * e_out * k_out)
    per_call = k_outer * n_inner * 2 * a * e_in * k_in * r_in if maps else 0
    return dict(per_target=per_target, per_call=per_call, inner_per_target=k_outer * n_inner * inner,
                outer_per_target=k_outer * (2 * r_out * k_out + 2 * e_out * k_out), maps=bool(maps),
                shapes=dict(inner_R=r_in, inner_k=k_in, inner_E=e_in, outer_R=r_out, outer_k=k_out, outer_E=e_out,
                            alphas=a, outer_folds=k_outer, inner_folds=n_inner), n_targets=n_targets)


def main(cfg: Config) -> None:
    from assocjax.pipeline.config import DEFAULT_ALPHAS
    from assocjax.pipeline.design import cv_groups

    groups, _ = cv_groups([cfg.n_trs], cfg.n_chunks)
    runs = np.zeros(cfg.n_trs, int)
    folds = nested_folds(groups, None, 5, runs_N=runs, buffer=cfg.buffer)
    rng = np.random.default_rng(cfg.seed)
    x = rng.standard_normal((cfg.n_trs, cfg.n_features)).astype(np.float32)
    w = rng.standard_normal((50, cfg.n_targets)).astype(np.float32)
    y = (x[:, :50] @ w * 0.05 + rng.standard_normal((cfg.n_trs, cfg.n_targets))).astype(np.float32)
    plan, solver = prepare_nested(x, folds, np.asarray(DEFAULT_ALPHAS), target_runs_N=runs)
    has_workers = hasattr(chunks, "cpu_workers")
    workers = cfg.workers if cfg.workers is not None else (chunks.cpu_workers() if has_workers else 1)
    tile = chunks.cpu_tile()
    layout = chunks.chunk_layout(cfg.n_targets, cfg.chunk, tile=tile)
    solve = lambda block: solve_nested(plan, block, tile=layout.tile)  # noqa: E731
    kw = dict(workers=workers) if has_workers else {}

    def run():
        r = np.empty(cfg.n_targets, np.float32)
        for (a, b, used), out in chunks.stream(solve, lambda a, b: y[:, a:b], layout, **kw):
            r[a:b] = out.r_T[:used]
        return r

    with jax.default_matmul_precision("highest"):  # full float32, as the engine (TF32 elsewhere on GPUs)
        mm = matmul_gflops(6000, 1536, 8192, repeats=3)
    load = os.getloadavg()
    r = run()  # compiles
    walls, cpus = [], []
    for _ in range(cfg.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        run()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    f = flops(plan, cfg.n_targets)
    total = f["per_target"] * cfg.n_targets + f["per_call"] * len(layout.chunks())
    print(json.dumps(dict(benchmark="engine", solver=solver, workers=workers, chunk=layout.columns, tile=layout.tile,
                          seconds=round(wall, 3), cpu_seconds=round(cpu, 3), cores_used=round(cpu / wall, 2),
                          us_per_target=round(wall / cfg.n_targets * 1e6, 2),
                          mflop_per_target=round(f["per_target"] / 1e6, 4), gflops=round(total / wall / 1e9, 1),
                          matmul_gflops=round(mm, 1), share_of_matmul=round(total / wall / 1e9 / mm, 3),
                          flops=f, r_mean=float(np.nanmean(r)), load_avg_before=[round(v, 2) for v in load],
                          load_avg_after=[round(v, 2) for v in os.getloadavg()], jax=jax.__version__)))


if __name__ == "__main__":
    main(tyro.cli(Config))
