"""Ridge with per-target alphas and story-grouped CV: assocjax vs himalaya vs scikit-learn.

Same process, same float32 data, same grouped folds for every peer that accepts folds.
Prints wall time (median over repeats) and the ratio to assocjax, the fraction of best
alphas identical to ours, max |delta r| of the best CV score, and the GFLOP/s of our solve
against a float32 matmul measured in this run (the ceiling).

    python benchmarks/ridge.py                           # the default problem
    python benchmarks/ridge.py --n-targets 200000 --peers  # memory check, ours only
"""
from __future__ import annotations

import dataclasses
import json
import platform
import resource
import statistics
import time
from pathlib import Path

import jax
import numpy as np
import tyro

from assocjax.ridge import RidgeCV, choose_solver, grouped_kfold
from common import matmul_gflops


@dataclasses.dataclass
class Config:
    n_samples: int = 3000
    n_stories: int = 10
    n_features: int = 1536
    n_targets: int = 20000
    n_alphas: int = 10
    n_folds: int = 5
    peers: tuple[str, ...] = ("himalaya-numpy", "himalaya-torch", "sklearn")
    repeats: int = 3
    peer_repeats: int = 1
    himalaya_chunk: int | None = 8192
    """targets per himalaya batch (8192 measured faster here than its default, None = all at once)"""
    target_chunk: int = 8192
    seed: int = 0
    json_out: Path | None = None


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
    alphas = np.logspace(0, 5, cfg.n_alphas)
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
        total += 2 * r * k * t + 2 * e * k * t  # B.T Y_train and P.T Y_test
        total += 2 * a * min(e, k) * k * t  # prediction norms for every alpha
    k = min(n, p)
    total += decomp(n) + 2 * n * k * t + 2 * (p if solver == "primal" else n) * k * t  # refit
    return total


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def run_ours(cfg, x, y, groups, alphas, folds):
    est = RidgeCV(alphas=alphas, cv=folds, target_chunk=cfg.target_chunk)
    est.fit(x, y[:, : min(cfg.target_chunk, y.shape[1])], groups)  # compile outside the timing
    secs, est = timed(lambda: est.fit(x, y, groups), cfg.repeats)
    best_r = np.take_along_axis(est.cv_scores_, np.searchsorted(est.alphas_, est.best_alphas_)[None], 0)[0]
    return secs, est.best_alphas_, best_r, est.solver_


def run_himalaya(backend, x, y, alphas, folds, repeats, chunk):
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV as HRidgeCV
    from himalaya.scoring import correlation_score

    set_backend(backend, on_error="raise")
    params = dict(score_func=correlation_score, n_targets_batch=chunk, n_targets_batch_refit=chunk)
    model = HRidgeCV(alphas=alphas, cv=folds, fit_intercept=True, solver_params=params)
    secs, model = timed(lambda: model.fit(x, y), repeats)
    to_np = lambda a: a.cpu().numpy() if hasattr(a, "cpu") else np.asarray(a)  # noqa: E731
    set_backend("numpy")
    return secs, to_np(model.best_alphas_), to_np(model.cv_scores_).ravel()


def run_sklearn(x, y, alphas, repeats):
    """scikit-learn allows alpha_per_target only with its leave-one-out (GCV) mode: it
    cannot take grouped folds, so its alphas answer a different (leaky) question."""
    from sklearn.linear_model import RidgeCV as SKRidgeCV

    model = SKRidgeCV(alphas=alphas, alpha_per_target=True)
    secs, model = timed(lambda: model.fit(x, y), repeats)
    return secs, np.asarray(model.alpha_)


def main(cfg: Config):
    x, y, groups, alphas = make_problem(cfg)
    folds = grouped_kfold(groups, cfg.n_folds)
    n_train = max(len(tr) for tr, _ in folds)
    solver = choose_solver(n_train, cfg.n_features)
    flops = solve_flops(cfg.n_samples, cfg.n_features, cfg.n_targets, len(alphas), folds, solver)
    mm = matmul_gflops(6000, 1536, 8192, repeats=5)
    ours_s, ours_alpha, ours_r, solver = run_ours(cfg, x, y, groups, alphas, folds)
    rows = [dict(name=f"assocjax ({solver})", seconds=ours_s, ratio=1.0, same_alpha=1.0, max_dr=0.0)]
    for peer in cfg.peers:
        if peer.startswith("himalaya"):
            backend = {"himalaya-numpy": "numpy", "himalaya-torch": "torch"}[peer]
            secs, alpha, r = run_himalaya(backend, x, y, alphas, folds, cfg.peer_repeats, cfg.himalaya_chunk)
            rows.append(dict(name=peer, seconds=secs, ratio=secs / ours_s, same_alpha=float(np.mean(np.isclose(alpha, ours_alpha))),
                             max_dr=float(np.nanmax(np.abs(r - ours_r)))))
        elif peer == "sklearn":
            secs, alpha = run_sklearn(x, y, alphas, cfg.peer_repeats)
            rows.append(dict(name="sklearn RidgeCV (GCV/LOO, not grouped)", seconds=secs, ratio=secs / ours_s,
                             same_alpha=float(np.mean(np.isclose(alpha, ours_alpha))), max_dr=float("nan")))
        else:
            raise ValueError(f"unknown peer {peer!r}")
    achieved = flops / ours_s / 1e9
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\nproblem: {cfg.n_samples} TRs in {cfg.n_stories} stories, {cfg.n_features} features, {cfg.n_targets} targets, "
          f"{len(alphas)} alphas, {cfg.n_folds} grouped folds; device {jax.devices()[0].device_kind}; {platform.processor() or platform.machine()}")
    print(f"{'solver':<42}{'median s':>10}{'x slower':>10}{'same alpha':>12}{'max |dr|':>11}")
    for r in rows:
        print(f"{r['name']:<42}{r['seconds']:>10.2f}{r['ratio']:>10.2f}{r['same_alpha']:>12.4f}{r['max_dr']:>11.2e}")
    print(f"assocjax solve: {flops / 1e9:.0f} GFLOP, {achieved:.0f} GFLOP/s = {achieved / mm:.0%} of a {mm:.0f} GFLOP/s "
          f"float32 matmul measured in this run; peak RSS {peak_gib:.2f} GiB")
    if cfg.json_out:
        cfg.json_out.write_text(json.dumps(dict(config={k: str(v) for k, v in dataclasses.asdict(cfg).items()}, rows=rows,
                                                gflop=flops / 1e9, gflops=achieved, matmul_gflops=mm, peak_rss_gib=peak_gib), indent=1))


if __name__ == "__main__":
    main(tyro.cli(Config))
