"""Banded ridge (two bands, one scaling per band on the simplex x alphas, nested CV): assocjax
vs himalaya, same process, same float32 data, same buffered folds and candidate gammas.

    python benchmarks/banded/run.py                       # ours vs himalaya numpy (and torch)
    python benchmarks/banded/run.py --partition           # also the variance partition (3 models)

ours: `ridge.banded.prepare_banded` + `solve_banded` (every outer fold, gamma, inner fold and
alpha in one compiled call per chunk of targets, in 1024-target tiles on a CPU as the pipeline
solves). Peer: what a researcher writes with himalaya
for the same nested procedure: for each outer fold, z-score with the outer-training rows, fit
`MultipleKernelRidgeCV(kernels="precomputed", solver="random_search",
solver_params=dict(n_iter=<the same gammas>, alphas, score_func=r2_score), cv=<the same inner
folds>, fit_intercept=True)` on the two linear kernels and predict the held-out rows (the
prediction's r2 is compared). Times are medians of `repeats` (ours after a compile; the
peers' single fits when repeats is 1), wall and process CPU; the ratio is peer / ours. FLOPs:
every product of our solve counted at its padded shape (decompositions by their lower
bound), against a float32 matmul measured in the same run.
"""
from __future__ import annotations

import dataclasses
import os
import resource
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/common.py
from common import matmul_gflops  # noqa: E402

from assocjax.ridge import banded, chunks, nested_folds  # noqa: E402


@dataclasses.dataclass
class Config:
    n_samples: int = 281
    """TRs of one story, cut into n_chunks contiguous chunks (the CV groups)"""
    n_chunks: int = 4
    band_widths: tuple[int, ...] = (768, 768)
    """columns of each band (e.g. the plain story's and the associations' features x delays)"""
    n_targets: int = 5120
    """(a multiple of the CPU tile of 1024 targets)"""
    n_alphas: int = 9
    gamma_steps: int = 5
    """candidate gammas: the simplex grid of 1/gamma_steps (6 for two bands)"""
    inner_folds: int = 3
    buffer: int = 8
    repeats: int = 3
    peers: tuple[str, ...] = ("himalaya-numpy", "himalaya-torch")
    partition: bool = False
    """also time the variance partition (the joint model and each band alone)"""
    seed: int = 0


def make_problem(cfg: Config):
    rng = np.random.default_rng(cfg.seed)
    x = rng.standard_normal((cfg.n_samples, sum(cfg.band_widths))).astype(np.float32)
    w = rng.standard_normal((x.shape[1], cfg.n_targets)).astype(np.float32) / np.sqrt(x.shape[1])
    w[cfg.band_widths[0]:] *= rng.uniform(0, 1, cfg.n_targets).astype(np.float32)  # graded band-2 share
    y = x @ w + rng.standard_normal((cfg.n_samples, cfg.n_targets)).astype(np.float32) * 2
    groups = np.repeat(np.arange(cfg.n_chunks), -(-cfg.n_samples // cfg.n_chunks))[:cfg.n_samples]
    folds = nested_folds(groups, inner_folds=cfg.inner_folds, runs_N=np.zeros(cfg.n_samples), buffer=cfg.buffer)
    return x, y.astype(np.float32), folds


def solve_flops(plan: banded.BandedPlan, t: int) -> float:
    """FLOPs of solve_banded on t targets (products at their padded shapes, per target)."""
    k_outer, g, j, r_in, k_in = plan.inner.spec.basis_Rk.shape
    e_in = plan.inner.test_proj_Ek.shape[-2]
    r_out, k_out = plan.outer.spec.basis_Rk.shape[-2:]
    b, e_out = plan.split_KGBEk.shape[-3:-1]
    a = plan.alphas_A.shape[0]
    alpha_eval = 2 * a * e_in * k_in if e_in <= k_in else 2 * k_in * e_in + 2 * a * k_in * (k_in + 2)
    inner = 2 * r_in * k_in + alpha_eval
    outer = 2 * r_out * k_out + 2 * b * e_out * k_out
    return float(k_outer * g * (j * inner + outer) * t)


def prepare_flops(plan: banded.BandedPlan, n: int, p: int) -> float:
    """The plan's FLOPs: dual (kernel route): each band's N x N kernel once per outer fold, then
    per gamma and fold an eigh (lower bound 4R^3/3) and the test projections; primal: per gamma
    and fold a thin SVD (lower bound 4RP^2 + 8P^3/3) and the projections."""
    k_outer, g, j, r_in, k_in = plan.inner.spec.basis_Rk.shape
    r_out, k_out = plan.outer.spec.basis_Rk.shape[-2:]
    b, e_out = plan.split_KGBEk.shape[-3:-1]
    e_in = plan.inner.test_proj_Ek.shape[-2]
    if k_in == r_in:  # dual
        fold = lambda r, e: 4 * r ** 3 / 3 + 2 * b * e * r * r  # noqa: E731
        return float(k_outer * (b * 2 * n * n * p + g * (j * fold(r_in, e_in) + fold(r_out, e_out))))
    fold = lambda r, e: 4 * r * p * p + 8 * p ** 3 / 3 + 2 * e * p * p  # noqa: E731
    return float(k_outer * g * (j * fold(r_in, e_in) + fold(r_out, e_out) + 2 * b * e_out * p * k_out))


def ours(cfg: Config, x, y, folds, alphas, gammas):
    band = banded.band_columns(cfg.band_widths)
    t0 = time.perf_counter()
    plan, solver = banded.prepare_banded(x, band, folds, alphas, gammas)
    jax.block_until_ready(plan)
    first_prepare = time.perf_counter() - t0
    y_dev = jnp.asarray(y)
    tile = chunks.cpu_tile() if y.shape[1] % (chunks.cpu_tile() or 1) == 0 else None  # as the pipeline solves
    out = banded.solve_banded(plan, y_dev, return_predictions=True, tile=tile)
    jax.block_until_ready(out)  # compile
    walls, cpus, solves = [], [], []
    for _ in range(cfg.repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        plan, _ = banded.prepare_banded(x, band, folds, alphas, gammas)
        jax.block_until_ready(plan)
        t1 = time.perf_counter()
        out = banded.solve_banded(plan, y_dev, return_predictions=True, tile=tile)
        jax.block_until_ready(out)
        walls.append(time.perf_counter() - t0)
        solves.append(time.perf_counter() - t1)
        cpus.append(time.process_time() - c0)
    pred = np.asarray(out.predictions_NBT).sum(1) + np.asarray(out.intercept_NT)
    flops = dict(solve=solve_flops(plan, y.shape[1]), prepare=prepare_flops(plan, *x.shape))
    return dict(wall=float(np.median(walls)), cpu=float(np.median(cpus)), solve=float(np.median(solves)), pred=pred,
                solver=solver,
                first_prepare=first_prepare, gamma=np.asarray(out.gamma_idx_KT), flops=flops)


def himalaya(backend: str, cfg: Config, x, y, folds, alphas, gammas):
    from himalaya.backend import set_backend
    from himalaya.kernel_ridge import MultipleKernelRidgeCV
    from himalaya.scoring import r2_score

    bk = set_backend(backend.split("-")[1], on_error="raise")
    band = banded.band_columns(cfg.band_widths)
    c0, t0 = time.process_time(), time.perf_counter()
    pred = np.full(y.shape, np.nan, np.float32)
    chosen = []
    for (tr, te), inner in zip(folds.outer, folds.inner):
        m, s = x[tr].mean(0), x[tr].std(0)
        z = (x - m) / s
        ks = np.stack([z[:, band == b] @ z[tr][:, band == b].T for b in range(len(cfg.band_widths))])
        cv = [(np.searchsorted(tr, a), np.searchsorted(tr, b)) for a, b in inner]
        model = MultipleKernelRidgeCV(kernels="precomputed", solver="random_search", fit_intercept=True, cv=cv,
                                      solver_params=dict(n_iter=gammas, alphas=alphas, score_func=r2_score,
                                                         progress_bar=False))
        with warnings.catch_warnings():  # log(0) of a gamma with a zero weight: a band left out, as asked
            warnings.simplefilter("ignore", RuntimeWarning)
            model.fit(ks[:, tr], y[tr])
        pred[te] = np.asarray(bk.to_numpy(model.predict(ks[:, te])))
        g = np.asarray(bk.to_numpy(bk.exp(model.deltas_) * model.best_alphas_)).T
        chosen.append(np.argmin(np.abs(g[:, None, :] - gammas[None]).sum(-1), axis=1))
    set_backend("numpy")
    return dict(wall=time.perf_counter() - t0, cpu=time.process_time() - c0, pred=pred, gamma=np.stack(chosen))


def r2(y, pred):
    ok = np.isfinite(pred[:, 0])
    y, pred = y[ok], pred[ok]
    return 1 - ((y - pred) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)


def main(cfg: Config) -> None:
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, load {os.getloadavg()[0]:.1f}")
    x, y, folds = make_problem(cfg)
    alphas = np.logspace(-1, 7, cfg.n_alphas)
    gammas = banded.simplex_grid(len(cfg.band_widths), cfg.gamma_steps)
    mm = matmul_gflops(4096, 1536, 4096, repeats=5)
    mine = ours(cfg, x, y, folds, alphas, gammas)
    total = mine["flops"]["solve"] + mine["flops"]["prepare"]
    print(f"problem: {cfg.n_samples} TRs in {cfg.n_chunks} chunks (buffer {cfg.buffer}), bands {cfg.band_widths}, "
          f"{cfg.n_targets} targets, {len(alphas)} alphas x {len(gammas)} gammas, {len(folds.outer)} outer x "
          f"{cfg.inner_folds} inner folds, solver {mine['solver']}")
    print("| solver | wall s | x slower | cpu s | x slower (cpu) | same gamma | max |dr2| |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| assocjax prepare_banded + solve_banded | {mine['wall']:.2f} | 1 | {mine['cpu']:.2f} | 1 | 1 | 0 |")
    base_r2 = r2(y, mine["pred"])
    for peer in cfg.peers:
        got = himalaya(peer, cfg, x, y, folds, alphas, gammas)
        same = float(np.mean(got["gamma"] == mine["gamma"]))
        dr2 = float(np.nanmax(np.abs(r2(y, got["pred"]) - base_r2)))
        print(f"| himalaya MultipleKernelRidgeCV per fold, {peer.split('-')[1]} | {got['wall']:.2f} | "
              f"**{got['wall'] / mine['wall']:.2f}** | {got['cpu']:.2f} | {got['cpu'] / mine['cpu']:.2f} | {same:.4f} | "
              f"{dr2:.1e} |")
    print(f"float32 matmul measured in this run: {mm:.0f} GFLOP/s")
    print(f"assocjax: {total / 1e9:.1f} GFLOP ({mine['flops']['solve'] / 1e9:.1f} solve + "
          f"{mine['flops']['prepare'] / 1e9:.1f} decompositions) in {mine['wall']:.2f} s = "
          f"{total / 1e9 / mine['wall']:.0f} GFLOP/s, {100 * total / 1e9 / mine['wall'] / mm:.0f} % of the matmul; "
          f"solve alone {mine['solve']:.2f} s = {mine['flops']['solve'] / 1e9 / mine['solve']:.0f} GFLOP/s "
          f"({100 * mine['flops']['solve'] / 1e9 / mine['solve'] / mm:.0f} %)")
    if cfg.partition:
        band = banded.band_columns(cfg.band_widths)
        plan = banded.prepare_partition(x, band, folds, alphas, gammas)
        y_dev = jnp.asarray(y)
        tile = chunks.cpu_tile() if y.shape[1] % (chunks.cpu_tile() or 1) == 0 else None
        jax.block_until_ready(banded.solve_partition(plan, y_dev, tile=tile))
        t0 = time.perf_counter()
        plan = banded.prepare_partition(x, band, folds, alphas, gammas)
        jax.block_until_ready(banded.solve_partition(plan, y_dev, tile=tile))
        per, fixed = banded.partition_target_bytes(plan, tile)
        print(f"partition (joint + each band alone): {time.perf_counter() - t0:.2f} s; memory estimate "
              f"{per} B/target + {fixed / 2**20:.0f} MiB")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main(tyro.cli(Config))
