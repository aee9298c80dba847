"""`SyntheticConfig`: every option of the synthetic generator (`scripts/make_synthetic.py`
is `tyro.cli(SyntheticConfig)`, so the field docstrings are its help)."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Literal

import math

from ...options import at_least, between, fits_memory
from ..layout import split_commas
from ..narratives import SPACE_VERTICES
from .model import ASSOC_MODES, DEFAULT_SNR, HO_STANDINS, MEDIAL_WALL


@dataclasses.dataclass
class SyntheticConfig:
    """A synthetic Narratives dataset (see `assocjax.data.synthetic`)."""

    out: Path
    from_metadata: Path | None = None
    """real Narratives metadata folder: copy its stories, subjects, events, sidecars, alignments"""
    stories: tuple[str, ...] = ()
    """tasks to copy (with from_metadata), or names of the generated stories; comma lists allowed"""
    n_stories: int = 2
    n_subjects: int = 7
    """generated subjects with scans (plus one without), or the first N usable listeners per story"""
    tr: float = 1.5
    lead_trs: int = 8
    """generated scans: TRs before the story (silence, then a music event)"""
    story_trs: int = 300
    tail_trs: int = 8
    """TRs after the story end: real scan lengths are not in the metadata"""
    audio_onset: float = 3.0
    music_seconds: float = 6.0
    words_per_second: float = 2.5
    untimed_fraction: float = 0.01
    vocab_size: int = 200
    n_associates: int = 3
    feature_dim: int = 16
    planted_layer: int | None = None
    """recorded only: the language-model layer a caller's feature function uses"""
    response: Literal["hrf", "fir"] = "hrf"
    """SPM double-gamma HRF, or FIR delays (fir_delays)"""
    fir_delays: tuple[int, ...] = (1, 2, 3, 4)
    assoc_share: float = 0.5
    """share of the MTL signal variance carried by the associates' features"""
    assoc_mode: Literal["mean", "context"] = "mean"
    """what the MTL parcels' associative part hears: mean, the mean features of each word's associates;
    context, the features of each heard word with the story read with every word followed by its
    associates (the oracle augmentation in context; a language model's features then change with them)"""
    snr: dict[str, float] = dataclasses.field(default_factory=lambda: dict(DEFAULT_SNR))
    """single-subject signal / noise variance per parcel; parcels starting with mtl_ hear associates"""
    noise_ar1: float = 0.0
    """lag-1 autocorrelation rho of the noise, in [0, 1): per vertex a stationary AR(1) series of unit
    variance (then scaled by the parcel's noise_sd); 0: white noise (real BOLD noise is autocorrelated)"""
    medial_wall_fraction: float = 0.1
    space: str = "fsaverage5"
    n_vertices: int | None = None
    """vertices per hemisphere; default from the space (fsaverage5: 10242)"""
    volume_shape: tuple[int, int, int] | None = None
    """also write MNI NIfTI images on this small grid"""
    atlas: str = "synthetic"
    ho_atlas: bool = False
    """with volume_shape: also write a Harvard-Oxford-style atlas of the volume's parcels, each named for the
    structure it stands for (model.HO_STANDINS; snr may add mtl_amygdala), under derivatives/atlases/
    (score.py --data.atlas takes it; docs/data.md: regions on volumes)"""
    seed: int = 0
    overwrite: bool = False


def check_config(cfg: SyntheticConfig, prefix: str = "--") -> tuple[SyntheticConfig, int]:
    """cfg with its story list split at commas, and the vertices per hemisphere; a ValueError
    naming the option out of range (prefix + the field's flag: `--synthetic.` in score.py)."""
    flag = lambda field: prefix + field.replace("_", "-")  # noqa: E731
    cfg = dataclasses.replace(cfg, out=Path(cfg.out), stories=split_commas(cfg.stories))
    bad = [t for t in cfg.stories if not re.fullmatch(r"[A-Za-z0-9]+", t)]
    if bad:
        raise ValueError(f"{flag('stories')}: story names are BIDS task labels (letters and digits only): {bad}")
    at_least({flag(f): getattr(cfg, f) for f in ("n_stories", "n_subjects", "story_trs", "vocab_size", "feature_dim",
                                                  "n_vertices")}, 1)
    at_least({flag(f): getattr(cfg, f) for f in ("lead_trs", "tail_trs", "audio_onset", "music_seconds", "seed")}, 0)
    # each word's associates are other words of the vocabulary; none leaves the MTL parcels nothing to hear
    between(flag("n_associates"), cfg.n_associates, 1, cfg.vocab_size - 1,
            why=f"other words of the vocabulary ({flag('vocab_size')} {cfg.vocab_size}) per word")
    if not cfg.from_metadata and not cfg.stories:  # generated names: storya .. storyz (BIDS labels are alphanumeric)
        between(flag("n_stories"), cfg.n_stories, 1, N_NAMED, why="generated stories are named storya..storyz; "
                f"name more with {flag('stories')}")
    at_least({f"{flag('volume_shape')} (each side)": side for side in cfg.volume_shape or ()}, 1)
    between(flag("tr"), cfg.tr, 0, float("inf"), lo_open=True, hi_open=True)
    between(flag("words_per_second"), cfg.words_per_second, 0, float("inf"), lo_open=True, hi_open=True)
    between(flag("untimed_fraction"), cfg.untimed_fraction, 0, 1, hi_open=True)
    between(flag("medial_wall_fraction"), cfg.medial_wall_fraction, 0, 1, hi_open=True)
    between(flag("assoc_share"), cfg.assoc_share, 0, 1)
    between(flag("noise_ar1"), cfg.noise_ar1, 0, 1, hi_open=True, why="the AR(1) rho of the noise")
    if cfg.response == "fir":  # a delay < 0 plants a response to words not yet heard
        at_least({flag("fir_delays"): min(cfg.fir_delays, default=None)}, 0)
    if not cfg.from_metadata and cfg.audio_onset + cfg.music_seconds > cfg.lead_trs * cfg.tr:
        raise ValueError(f"{flag('audio_onset')} {cfg.audio_onset} s + {flag('music_seconds')} {cfg.music_seconds} s: "
                         f"the music event must end before the story starts ({flag('lead_trs')} {cfg.lead_trs} TRs = "
                         f"{cfg.lead_trs * cfg.tr} s); what fits: {flag('lead_trs')} "
                         f"{math.ceil((cfg.audio_onset + cfg.music_seconds) / cfg.tr)}, or a shorter music event")
    if cfg.assoc_mode not in ASSOC_MODES:
        raise ValueError(f"{flag('assoc_mode')} {cfg.assoc_mode!r} must be one of {ASSOC_MODES}")
    if MEDIAL_WALL in cfg.snr or not all(v >= 0 for v in cfg.snr.values()):  # `not >=` also catches NaN
        raise ValueError(f"{flag('snr')}: non-negative values for parcels other than {MEDIAL_WALL!r}, got {cfg.snr}")
    if cfg.ho_atlas and not cfg.volume_shape:
        raise ValueError(f"{flag('ho_atlas')} labels the volume: give {flag('volume_shape')} too")
    unknown = sorted(set(cfg.snr) - set(HO_STANDINS)) if cfg.ho_atlas else []
    if unknown:
        raise ValueError(f"{flag('ho_atlas')}: parcels {unknown} of {flag('snr')} stand for no Harvard-Oxford "
                         f"structure; known: {HO_STANDINS}")
    n_vertices = cfg.n_vertices or SPACE_VERTICES.get(cfg.space)
    if n_vertices is None:
        raise ValueError(f"{flag('space')} {cfg.space!r} is not a known space: give {flag('n_vertices')} "
                         f"(known: {SPACE_VERTICES})")
    fits_memory(memory_estimate(cfg, n_vertices, flag))
    return cfg, n_vertices


N_NAMED = 26  # generated story names: storya .. storyz


def memory_estimate(cfg: SyntheticConfig, n_vertices: int, flag) -> dict[str, float]:
    """Bytes of the generator's largest allocations (`fits_memory`), keyed by the options that size them."""
    n_trs = cfg.lead_trs + cfg.story_trs + cfg.tail_trs
    trs = f"{flag('lead_trs')} + {flag('story_trs')} + {flag('tail_trs')} ({n_trs} TRs)"
    n_words = cfg.words_per_second * cfg.story_trs * cfg.tr  # per story
    return {
        # a scan: float64 noise and signal (T, V) and its float32 copy
        f"{flag('n_vertices')} {n_vertices} x {trs}": 20.0 * n_trs * n_vertices,
        # the planted maps (F, V) and the design (T, F) of each feature kind, float64
        f"{flag('feature_dim')} {cfg.feature_dim} x ({flag('n_vertices')} {n_vertices} + {trs})":
            32.0 * cfg.feature_dim * (n_vertices + n_trs),
        # a story's onsets (twice the expected count, float64) and its align.csv text (~40 bytes a word)
        f"{flag('words_per_second')} {cfg.words_per_second} x {flag('story_trs')} {cfg.story_trs} x {flag('tr')} "
        f"{cfg.tr} ({n_words:.3g} words a story)": 56.0 * n_words,
        # pseudo-words (Python strings in a set) and their associates' lists
        f"{flag('vocab_size')} {cfg.vocab_size} x {flag('n_associates')} {cfg.n_associates}":
            cfg.vocab_size * (150.0 + 8 * cfg.n_associates),
        # per scan: events, sidecar and rows of the plan (a few KB of Python objects)
        f"{flag('n_subjects')} {cfg.n_subjects} x {flag('n_stories')} {cfg.n_stories}":
            2048.0 * (cfg.n_subjects + 1) * max(cfg.n_stories, len(cfg.stories)),
    }
