"""Ridge with per-target alphas and story-grouped CV: assocjax vs himalaya vs scikit-learn.

Same process, same float32 data, same grouped folds for every peer that accepts folds.
Prints wall and process-CPU time (medians over repeats) and the ratio to assocjax, the
fraction of best alphas identical to ours, max |delta r|, and the GFLOP/s of our solve
against a float32 matmul measured in this run (the ceiling). Three problems:

    python benchmarks/ridge.py                           # primal: many TRs, 10 stories (RidgeCV)
    python benchmarks/ridge.py --problem dual            # 225 TRs of one story in chunks (RidgeCV)
    python benchmarks/ridge.py --problem nested          # brain_score vs per-fold himalaya KernelRidgeCV
    python benchmarks/ridge.py --n-targets 200000 --peers  # memory check, ours only
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Literal

import jax
import numpy as np
import tyro

from assocjax.ridge import RidgeCV, buffered, choose_solver, grouped_kfold, solvers
from common import matmul_gflops

PROBLEMS = {  # problem -> defaults that differ from the primal problem
    "primal": {},
    "dual": dict(n_samples=225, n_stories=5, n_features=3072, n_targets=50000, n_alphas=9, n_folds=5, buffer=8,
                 peers=("himalaya-numpy", "himalaya-torch")),
    "nested": dict(n_samples=281, n_stories=4, n_features=3072, n_targets=30000, n_alphas=9, buffer=8,
                   peers=("himalaya-numpy",)),
}


@dataclasses.dataclass
class Config:
    problem: Literal["primal", "dual", "nested"] = "primal"
    """primal: RidgeCV, many TRs in stories; dual: RidgeCV on one story cut into contiguous
    chunks (n_stories = chunks); nested: brain_score vs the per-outer-fold himalaya procedure"""
    n_samples: int | None = None
    n_stories: int | None = None
    n_features: int | None = None
    n_targets: int | None = None
    n_alphas: int | None = None
    n_folds: int | None = None
    buffer: int | None = None
    """rows dropped from training around each test chunk (dual and nested problems)"""
    engine_chunks: tuple[int, ...] = (16384, 65536)
    """nested: also time solve_nested alone on chunks of these many targets (GFLOP/s)"""
    peers: tuple[str, ...] | None = None
    repeats: int = 3
    peer_repeats: int = 1
    himalaya_chunk: int | None = 8192
    """targets per himalaya batch (8192 measured faster here than its default, None = all at once)"""
    target_chunk: int = 8192
    seed: int = 0
    json_out: Path | None = None

    def __post_init__(self):
        base = dict(n_samples=3000, n_stories=10, n_features=1536, n_targets=20000, n_alphas=10, n_folds=5, buffer=0,
                    peers=("himalaya-numpy", "himalaya-torch", "sklearn"))
        for name, value in {**base, **PROBLEMS[self.problem]}.items():
            if getattr(self, name) is None:
                setattr(self, name, value)


def make_problem(cfg: Config):
    """Correlated features (as LLM activations are) and targets of varied SNR."""
    rng = np.random.default_rng(cfg.seed)
    n, p, t = cfg.n_samples, cfg.n_features, cfg.n_targets
    mix = rng.standard_normal((64, p)).astype(np.float32)
    x = rng.standard_normal((n, 64), dtype=np.float32) @ mix + rng.standard_normal((n, p), dtype=np.float32)
    y = np.empty((n, t), dtype=np.float32)
    for s in range(0, t, 10000):  # blockwise to keep the generator's peak memory small
        e = min(t, s + 10000)
        w = rng.standard_normal((p, e - s), dtype=np.float32) * (np.logspace(-3, -1, e - s, dtype=np.float32) / np.sqrt(p))
        y[:, s:e] = x @ w + rng.standard_normal((n, e - s), dtype=np.float32)
    groups = np.repeat(np.arange(cfg.n_stories), int(np.ceil(n / cfg.n_stories)))[:n]
    alphas = np.logspace(0, 5, cfg.n_alphas) if cfg.problem == "primal" else np.logspace(-1, 7, cfg.n_alphas)
    return x, y, groups, alphas


def solve_flops(n, p, t, a, folds, solver):
    """FLOPs of our exact solve: every product counted exactly, decompositions by the
    lower bound of their reduction step (bidiagonalisation 4mn^2 - 4n^3/3 for the SVD,
    tridiagonalisation 4n^3/3 for eigh), so the GFLOP/s we report is not inflated."""
    def decomp(rows):
        if solver == "primal":
            m, k = max(rows, p), min(rows, p)
            return 4 * m * k * k - 4 * k**3 / 3
        return 2 * rows * rows * p + 4 * rows**3 / 3 + 2 * rows * rows * p  # gram, eigh, X.T Q

    total = 0.0
    for tr, te in folds:
        r, e = len(tr), len(te)
        k = min(r, p)
        total += decomp(r) + 2 * e * p * k  # test projection
        total += 2 * r * k * t  # B.T Y_train
        # every alpha's test predictions (their sums give both r terms), or with more test rows
        # than components P.T Y_test and the (k, k) Gram products
        total += 2 * a * e * k * t if e <= k else 2 * e * k * t + 2 * a * k * k * t
    k = min(n, p)
    total += decomp(n) + 2 * n * k * t + 2 * (p if solver == "primal" else n) * k * t  # refit
    return total


def timed(fn, repeats):
    """(median wall s, median process-CPU s, last output). On a shared machine the CPU time
    (all threads of this process) is the steadier measure; both are reported."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), out


def run_ours(cfg, x, y, groups, alphas, folds):
    est = RidgeCV(alphas=alphas, cv=folds, target_chunk=cfg.target_chunk)
    est.fit(x, y[:, : min(cfg.target_chunk, y.shape[1])], groups)  # compile outside the timing
    wall, cpu, est = timed(lambda: est.fit(x, y, groups), cfg.repeats)
    best_r = np.take_along_axis(est.cv_scores_, np.searchsorted(est.alphas_, est.best_alphas_)[None], 0)[0]
    top2 = np.sort(est.cv_scores_, axis=0)[-2:]
    decided = top2[1] - top2[0] > 1e-4  # targets whose best alpha beats the runner-up by more than float32 noise
    return wall, cpu, est.best_alphas_, best_r, est.solver_, decided


def run_himalaya(backend, x, y, alphas, folds, repeats, chunk, kernel: bool):
    """himalaya RidgeCV (primal) or KernelRidgeCV (dual: what a user picks for n_samples << n_features)."""
    from himalaya.backend import set_backend
    from himalaya.kernel_ridge import KernelRidgeCV
    from himalaya.ridge import RidgeCV as HRidgeCV
    from himalaya.scoring import correlation_score

    module = set_backend(backend, on_error="raise")
    params = dict(score_func=correlation_score, n_targets_batch=chunk, n_targets_batch_refit=chunk)
    model = (KernelRidgeCV(alphas=alphas, kernel="linear", cv=folds, fit_intercept=True, solver_params=params) if kernel
             else HRidgeCV(alphas=alphas, cv=folds, fit_intercept=True, solver_params=params))
    wall, cpu, model = timed(lambda: model.fit(x, y), repeats)
    out = np.asarray(module.to_numpy(model.best_alphas_)), np.asarray(module.to_numpy(model.cv_scores_)).ravel()
    set_backend("numpy")
    return wall, cpu, *out


def run_sklearn(x, y, alphas, repeats):
    """scikit-learn allows alpha_per_target only with its leave-one-out (GCV) mode: it
    cannot take grouped folds, so its alphas answer a different (leaky) question."""
    from sklearn.linear_model import RidgeCV as SKRidgeCV

    model = SKRidgeCV(alphas=alphas, alpha_per_target=True)
    wall, cpu, model = timed(lambda: model.fit(x, y), repeats)
    return wall, cpu, np.asarray(model.alpha_)


def row(name, wall, cpu, ours, same_alpha=float("nan"), max_dr=float("nan"), max_dr_same=float("nan")):
    """max_dr: largest |r difference| over all targets; max_dr_same: over the targets whose
    chosen alpha is the same (the rest differ where a near-tie fell the other way)."""
    return dict(name=name, seconds=wall, cpu_seconds=cpu, ratio=wall / ours[0], cpu_ratio=cpu / ours[1],
                same_alpha=same_alpha, max_dr=max_dr, max_dr_same=max_dr_same)


def compare(alpha, ours_alpha, r, ours_r):
    same = np.isclose(alpha, ours_alpha)
    dr = np.abs(r - ours_r)
    return dict(same_alpha=float(np.mean(same)), max_dr=float(np.nanmax(dr)),
                max_dr_same=float(np.nanmax(np.where(same, dr, np.nan))) if same.any() else float("nan"))


def ridge_cv_problem(cfg, x, y, groups, alphas):
    """RidgeCV (primal or dual) against himalaya's RidgeCV/KernelRidgeCV and scikit-learn."""
    folds = buffered(grouped_kfold(groups, cfg.n_folds), None, cfg.buffer)  # one story: every distance counts
    n_train = max(len(tr) for tr, _ in folds)
    solver = choose_solver(n_train, cfg.n_features)
    flops = solve_flops(cfg.n_samples, cfg.n_features, cfg.n_targets, len(alphas), folds, solver)
    wall, cpu, ours_alpha, ours_r, solver, decided = run_ours(cfg, x, y, groups, alphas, folds)
    rows = [row(f"assocjax RidgeCV ({solver})", wall, cpu, (wall, cpu), 1.0, 0.0, 0.0)]
    for peer in cfg.peers:
        if peer.startswith("himalaya"):
            backend = {"himalaya-numpy": "numpy", "himalaya-torch": "torch", "himalaya-torch-cuda": "torch_cuda"}[peer]
            kernel = solver == "dual"
            w, c, alpha, r = run_himalaya(backend, x, y, alphas, folds, cfg.peer_repeats, cfg.himalaya_chunk, kernel)
            rows.append(row(f"{peer} {'KernelRidgeCV' if kernel else 'RidgeCV'}", w, c, (wall, cpu),
                            **compare(alpha, ours_alpha, r, ours_r)))
            same = np.isclose(alpha, ours_alpha)
            print(f"{peer}: same alpha on {same[decided].mean():.4f} of the {decided.mean():.1%} targets whose top two "
                  f"alphas differ by > 1e-4 in our CV r (elsewhere the r-vs-alpha curve is flat: large alphas only scale "
                  f"the predictions, which r ignores)")
        elif peer == "sklearn":
            w, c, alpha = run_sklearn(x, y, alphas, cfg.peer_repeats)
            rows.append(row("sklearn RidgeCV (GCV/LOO, not grouped)", w, c, (wall, cpu),
                            float(np.mean(np.isclose(alpha, ours_alpha)))))
        else:
            raise ValueError(f"unknown peer {peer!r}")
    return rows, dict(solve=flops), (wall, cpu)


def nested_flops(plan, n_features: int, n_targets: int) -> dict:
    """FLOPs of prepare_nested (decompositions, counted by the lower bound of their reduction
    step) and of solve_nested per target, from the plan's padded shapes (what runs)."""
    k_outer, n_inner, r_in, k_in = plan.inner.spec.basis_Rk.shape
    e_in = plan.inner.test_proj_Ek.shape[-2]
    r_out, k_out = plan.outer.spec.basis_Rk.shape[-2:]
    e_out = plan.outer.test_proj_Ek.shape[-2]
    a, p = plan.alphas_A.shape[-1], n_features
    maps = solvers.maps_pay(r_in, k_in, e_in, a)  # inner folds through per-alpha maps of the training rows (issue 26)
    if maps:
        inner = 2 * a * e_in * r_in
    else:  # projection on the basis, then the cheaper alpha route
        inner = 2 * r_in * k_in + (2 * a * e_in * k_in if e_in <= k_in else 2 * e_in * k_in + 2 * a * k_in * k_in)
    per_target = k_outer * (n_inner * inner + 2 * r_out * k_out + 2 * e_out * k_out)

    def decomp(r, e, k):  # dual: Gram, eigh, X.T Q, test projection; primal: SVD, test projection
        if k == r and r < p:
            return 2 * r * r * p + 4 * r**3 / 3 + 2 * r * p * k + 2 * e * p * k
        m, kk = max(r, p), min(r, p)
        return 4 * m * kk * kk - 4 * kk**3 / 3 + 2 * e * p * k

    prepare = k_outer * (n_inner * decomp(r_in, e_in, k_in) + decomp(r_out, e_out, k_out))
    # the maps are made once per solve call (per chunk of targets), counted here with the plan
    per_call = k_outer * n_inner * 2 * a * e_in * k_in * r_in if maps else 0
    return dict(solve=per_target * n_targets, prepare=prepare + per_call, per_target=per_target, per_call=per_call)


def nested_problem(cfg, x, y, groups, alphas):
    """brain_score (one call: all outer folds, buffered) against the per-outer-fold himalaya
    KernelRidgeCV procedure on the same folds; then solve_nested alone at chunk sizes."""
    from assocjax.ridge import brain_score, nested_folds, prepare_nested, solve_nested
    from assocjax.ridge.chunks import CPU_TILE
    from himalaya_nested import himalaya_brain_score

    folds = nested_folds(groups, runs_N=None, buffer=cfg.buffer)
    plan, solver = prepare_nested(x, folds, alphas)
    flops = nested_flops(plan, cfg.n_features, cfg.n_targets)
    score = lambda: brain_score(x, y, groups, alphas=alphas, buffer=cfg.buffer)  # noqa: E731
    score()  # compile outside the timing (the chunk width depends on the number of targets)
    wall, cpu, ours = timed(score, cfg.repeats)
    rows = [row(f"assocjax brain_score ({solver})", wall, cpu, (wall, cpu), 1.0, 0.0, 0.0)]
    for peer in cfg.peers:
        backend = {"himalaya-numpy": "numpy", "himalaya-torch": "torch", "himalaya-torch-cuda": "torch_cuda"}[peer]
        w, c, h = timed(lambda: himalaya_brain_score(x, y, folds, alphas, backend, cfg.himalaya_chunk), cfg.peer_repeats)
        rows.append(row(f"{peer} KernelRidgeCV per outer fold", w, c, (wall, cpu),
                        **compare(h["best_alphas"], ours.best_alphas, h["r_folds"], ours.r_folds)))
    tile = CPU_TILE if jax.devices()[0].platform == "cpu" else None
    engine = {}
    for chunk in cfg.engine_chunks:
        y_dev = jax.device_put(np.resize(y, (y.shape[0], chunk)))
        jax.block_until_ready(solve_nested(plan, y_dev, tile=tile))
        w, c, _ = timed(lambda: jax.block_until_ready(solve_nested(plan, y_dev, tile=tile)), cfg.repeats)
        engine[chunk] = (w, c, flops["per_target"] * chunk)
    return rows, flops, (wall, cpu), engine


def main(cfg: Config):
    x, y, groups, alphas = make_problem(cfg)
    mm = matmul_gflops(6000, 1536, 8192, repeats=5)
    engine = {}
    if cfg.problem == "nested":
        rows, flops, ours, engine = nested_problem(cfg, x, y, groups, alphas)
    else:
        rows, flops, ours = ridge_cv_problem(cfg, x, y, groups, alphas)
    mm_after = matmul_gflops(6000, 1536, 8192, repeats=5)
    total = flops["solve"] + flops.get("prepare", 0.0)
    achieved = total / ours[0] / 1e9
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    load = os.getloadavg()
    print(f"\nproblem {cfg.problem}: {cfg.n_samples} TRs in {cfg.n_stories} groups, {cfg.n_features} features, "
          f"{cfg.n_targets} targets, {len(alphas)} alphas, buffer {cfg.buffer}; device {jax.devices()[0].device_kind}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {load[0]:.1f}/{load[1]:.1f}")
    print(f"{'solver':<52}{'wall s':>8}{'x slower':>9}{'cpu s':>8}{'x cpu':>7}{'same alpha':>12}{'max |dr|':>11}"
          f"{'same-alpha max |dr|':>21}")
    for r in rows:
        print(f"{r['name']:<52}{r['seconds']:>8.2f}{r['ratio']:>9.2f}{r['cpu_seconds']:>8.2f}{r['cpu_ratio']:>7.2f}"
              f"{r['same_alpha']:>12.4f}{r['max_dr']:>11.2e}{r['max_dr_same']:>21.2e}")
    print(f"float32 matmul measured in this run: {mm:.0f} GFLOP/s before, {mm_after:.0f} after")
    print(f"assocjax end to end: {total / 1e9:.0f} GFLOP in {ours[0]:.2f} s = {achieved:.0f} GFLOP/s "
          f"({achieved / max(mm, mm_after):.0%} of the better matmul); peak RSS {peak_gib:.2f} GiB")
    for chunk, (w, c, fl) in engine.items():
        print(f"solve_nested alone, chunk {chunk}: {w:.3f} s wall ({fl / w / 1e9:.0f} GFLOP/s, {fl / w / 1e9 / max(mm, mm_after):.0%} "
              f"of matmul), {c:.3f} s cpu; {flops['per_target'] / 1e6:.2f} MFLOP/target -> {w / chunk * 1e6:.1f} us/target")
    if cfg.json_out:
        cfg.json_out.write_text(json.dumps(dict(
            config={k: str(v) for k, v in dataclasses.asdict(cfg).items()}, rows=rows, gflop=total / 1e9, gflops=achieved,
            matmul_gflops=[mm, mm_after], peak_rss_gib=peak_gib, load=load,
            engine={str(k): dict(wall=v[0], cpu=v[1], gflop=v[2] / 1e9) for k, v in engine.items()}), indent=1))


if __name__ == "__main__":
    main(tyro.cli(Config))
