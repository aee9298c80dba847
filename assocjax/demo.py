"""End-to-end demo on generated data: word features -> TRs -> FIR -> nested ridge -> ceiling.

Stories are random word streams (Poisson onsets) whose words carry fixed random
embeddings; a planted linear map of the delayed TR features plus subject noise makes the
BOLD. The demo recovers the planted signal and reads it against the split-half ceiling.
Replaced by the synthetic Narratives pipeline once that exists; kept as the smallest
complete example of the library's functional core.
"""
from __future__ import annotations

import dataclasses
import math
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from . import alignment, ceiling
from .io import write_csv, write_json
from .outputs import OutputFolder, check_folder
from .options import at_least, between, fits_memory
from .ridge import brain_score


@dataclasses.dataclass
class DemoConfig:
    """Generated-data brain-score demo."""

    n_stories: int = 6
    trs_per_story: int = 160
    tr: float = 1.5
    words_per_second: float = 2.5
    vocab_size: int = 400
    embed_dim: int = 24
    n_subjects: int = 8
    n_voxels: int = 400
    delays: tuple[int, ...] = (1, 2, 3, 4)
    noise: float = 2.0
    """subject noise SD relative to the planted signal's SD (varied x0.5..x2 over voxels)"""
    seed: int = 0
    output: Path = Path("outputs/demo")


# nested CV holds out one story and chooses alpha on at least 2 others
MIN_STORIES = 3


def check_config(cfg: DemoConfig) -> None:
    """Every option in range, each error naming it (scripts/demo.py --help)."""
    at_least({"--n-stories": cfg.n_stories}, MIN_STORIES)
    at_least({"--n-subjects": cfg.n_subjects}, 2)  # the split-half ceiling
    at_least({"--trs-per-story": cfg.trs_per_story, "--vocab-size": cfg.vocab_size, "--embed-dim": cfg.embed_dim,
              "--n-voxels": cfg.n_voxels}, 1)
    at_least({"--seed": cfg.seed}, 0)
    # signal (unit SD) + noise in float32: past ~1/eps (8e6) the signal is lost in rounding (and at 1e19 the
    # squares overflow), so a larger SD measures nothing
    between("--noise", cfg.noise, 0, MAX_NOISE, why="SD relative to the planted signal's; float32 BOLD rounds a signal this much smaller away")
    for name, value in (("--tr", cfg.tr), ("--words-per-second", cfg.words_per_second)):
        between(name, value, 0, math.inf, lo_open=True, hi_open=True)
    if not cfg.delays or len(set(cfg.delays)) != len(cfg.delays):
        raise ValueError(f"--delays {list(cfg.delays)}: give distinct FIR delays in TRs (e.g. 1 2 3 4)")
    for d in cfg.delays:  # causal, and shorter than a story (a longer one leaves an empty design column)
        between("--delays", d, 1, cfg.trs_per_story - 1, why=f"causal, and shorter than --trs-per-story {cfg.trs_per_story}")
    fits_memory(memory_estimate(cfg))


MAX_NOISE = 1e6


def memory_estimate(cfg: DemoConfig) -> dict[str, float]:
    """Bytes of the demo's largest arrays (`fits_memory`), keyed by the options that size them."""
    n_trs = cfg.n_stories * cfg.trs_per_story
    n_words = cfg.words_per_second * cfg.trs_per_story * cfg.tr  # per story
    trs = f"--n-stories {cfg.n_stories} x --trs-per-story {cfg.trs_per_story}"
    return {
        # BOLD (S, T, V): float64 draws, their float32 copy, the sum (and the ceiling's copy on device)
        f"--n-subjects {cfg.n_subjects} x {trs} x --n-voxels {cfg.n_voxels}": 20.0 * cfg.n_subjects * n_trs * cfg.n_voxels,
        # the vocabulary's float64 draws and float32 copy
        f"--vocab-size {cfg.vocab_size} x --embed-dim {cfg.embed_dim}": 12.0 * cfg.vocab_size * cfg.embed_dim,
        # one story's words: onsets, ids and embeddings
        f"--words-per-second {cfg.words_per_second} x --trs-per-story {cfg.trs_per_story} x --tr {cfg.tr} "
        f"({n_words:.3g} words a story) x --embed-dim {cfg.embed_dim}": n_words * (20.0 + 4 * cfg.embed_dim),
        # delayed features (T, D x delays) and the planted map (D x delays, V), float32, a few copies
        f"--embed-dim {cfg.embed_dim} x --delays ({len(cfg.delays)}) x ({trs} + --n-voxels {cfg.n_voxels})":
            16.0 * cfg.embed_dim * len(cfg.delays) * (n_trs + cfg.n_voxels),
    }


def make_stimulus(cfg: DemoConfig, rng: np.random.Generator):
    """TR features (T, D) and run ids for all stories, via Lanczos and per-run z-scoring."""
    vocab = rng.standard_normal((cfg.vocab_size, cfg.embed_dim)).astype(np.float32)
    blocks = []
    for _ in range(cfg.n_stories):
        duration = cfg.trs_per_story * cfg.tr
        n_words = rng.poisson(cfg.words_per_second * duration)
        onsets = np.sort(rng.uniform(0, duration, n_words)).astype(np.float32)
        words = rng.integers(0, cfg.vocab_size, n_words)
        x, _ = alignment.downsample(vocab[words], onsets, cfg.trs_per_story, cfg.tr, method="lanczos")
        blocks.append(np.asarray(x))
    run_ids = alignment.run_ids_from_lengths([cfg.trs_per_story] * cfg.n_stories)
    x_ND = alignment.zscore_per_run(jnp.concatenate(blocks), run_ids, cfg.n_stories)
    return x_ND, run_ids


def make_bold(cfg: DemoConfig, x_ND, run_ids, rng: np.random.Generator):
    """(S, T, V) BOLD: one shared planted response + independent noise per subject."""
    delayed = alignment.fir_delays(x_ND, cfg.delays, run_ids)
    w = rng.standard_normal((delayed.shape[1], cfg.n_voxels)).astype(np.float32)
    response = delayed @ w
    signal = np.asarray(alignment.zscore_apply(response, *alignment.zscore_fit(response)))
    noise_sd = cfg.noise * np.logspace(np.log10(0.5), np.log10(2.0), cfg.n_voxels, dtype=np.float32)
    noise = rng.standard_normal((cfg.n_subjects,) + signal.shape).astype(np.float32) * noise_sd
    return signal[None] + noise, noise_sd


def run_demo(cfg: DemoConfig) -> dict:
    check_config(cfg)
    t0 = time.perf_counter()
    check_folder(cfg.output, "--output")
    rng = np.random.default_rng(cfg.seed)
    x_ND, run_ids = make_stimulus(cfg, rng)
    bold_SNV, noise_sd = make_bold(cfg, x_ND, run_ids, rng)
    features = np.asarray(alignment.fir_delays(x_ND, cfg.delays, run_ids))
    groups = np.asarray(run_ids)
    mean_NV = bold_SNV.mean(0)
    score = brain_score(features, mean_NV, groups)
    ceil = ceiling.noise_ceiling(jnp.asarray(bold_SNV), n_splits=50, seed=cfg.seed)
    normalized = np.asarray(ceil.normalize(jnp.asarray(score.r)))
    expected_r = 1 / np.sqrt(1 + noise_sd**2 / cfg.n_subjects)  # planted signal has unit variance
    rows = [dict(voxel=v, r=float(score.r[v]), ceiling_reliability=float(ceil.split_half[v]), max_r=float(ceil.max_r[v]),
                 normalized=float(normalized[v]), expected_max_r=float(expected_r[v]), noise_sd=float(noise_sd[v]))
            for v in range(cfg.n_voxels)]
    summary = dict(
        median_r=float(np.nanmedian(score.r)), median_max_r=float(np.nanmedian(ceil.max_r)),
        median_expected_max_r=float(np.median(expected_r)), median_normalized=float(np.nanmedian(normalized)),
        solver=score.solver, n_stories=cfg.n_stories, n_trs=int(features.shape[0]), n_features=int(features.shape[1]),
        seconds=time.perf_counter() - t0,
    )
    with OutputFolder(cfg.output) as out, out.staging() as stage:  # both files appear together
        write_csv(stage / "voxel_scores.csv", rows)
        write_json(stage / "run.json", dict(config=dataclasses.asdict(cfg), summary=summary, seed=cfg.seed,
                                            versions=dict(jax=jax.__version__, numpy=np.__version__, python=platform.python_version())))
    return summary


def print_summary(summary: dict, output: Path) -> None:
    print(f"{summary['n_stories']} stories, {summary['n_trs']} TRs, {summary['n_features']} delayed features, solver {summary['solver']}")
    print(f"median brain score r          {summary['median_r']:.3f}")
    print(f"median ceiling (max r)        {summary['median_max_r']:.3f}  (analytic {summary['median_expected_max_r']:.3f})")
    print(f"median normalized score       {summary['median_normalized']:.3f}")
    print(f"wrote {output}/voxel_scores.csv and run.json in {summary['seconds']:.1f} s")
