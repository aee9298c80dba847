"""Low-level regressors of a story (`--features.nuisance`): word rate, word onsets, phoneme rate.

Language-model features correlate with how many words (and sounds) a TR holds; a brain score is
read against what such counts alone predict. Per scan TR k (seconds [k tr, (k + 1) tr) of the
scan), with a word's onset its Gentle start (not the midpoint the features use; untimed words'
onsets interpolated by word index, as `Transcript.times` does for the midpoints) plus the story's
audio onset:

    word_rate     the number of words whose onset falls in TR k (`alignment.downsample` "sum"
                  of ones);
    onsets        an impulse (1) at every word onset, resampled like the features
                  (`--features.downsample`: with the default "lanczos" the impulses filtered
                  with the features' Lanczos kernel; with "sum" it equals word_rate);
    phoneme_rate  the number of phones whose onset falls in TR k (a phone's onset: its word's
                  start plus the durations of the phones before it; Gentle's align.json only).

Each regressor then goes through the features' FIR delays (`alignment.fir_delays`): its columns
are one block per delay, like a hidden state's. Scaling is the ridge's, as for the features:
every column z-scored inside each outer fold with that fold's training rows only.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..alignment import downsample, fir_delays, interpolate_missing_times
from ..stimuli import Transcript

NAMES = ("word_rate", "onsets", "phoneme_rate")


def check_names(names: Sequence[str], option: str = "--features.nuisance") -> tuple[str, ...]:
    """The regressors asked for, in the order asked; a ValueError naming an unknown or repeated one."""
    names = tuple(names)
    bad = [n for n in names if n not in NAMES]
    if bad or len(set(names)) != len(names):
        what = f"unknown {bad}" if bad else f"repeated names in {list(names)}"
        raise ValueError(f"{option}: {what}; choose from {', '.join(NAMES)}")
    return names


def word_onsets(transcript: Transcript, audio_onset: float = 0.0) -> np.ndarray:
    """(W,) word onsets in scan seconds (untimed words interpolated by word index)."""
    t, _ = interpolate_missing_times(transcript.onsets)
    return t + audio_onset


def _count(times, n_trs: int, tr: float, method: str = "sum") -> np.ndarray:
    """(n_trs,) the events at `times` on the TR grid (`alignment.downsample` of ones)."""
    times = np.asarray(times, np.float32)
    x, _ = downsample(np.ones((times.size, 1), np.float32), times, n_trs, tr, method=method)
    return np.asarray(x)[:, 0]


def regressors(transcript: Transcript, audio_onset: float, n_trs: int, tr: float, names: Sequence[str],
               method: str = "lanczos", story: str = "") -> np.ndarray:
    """(n_trs, len(names)) the regressors `names` on the scan's TRs (module docstring), before delays.
    phoneme_rate of an alignment without phones (align.csv) is a ValueError naming the story."""
    onsets = word_onsets(transcript, audio_onset)
    cols = []
    for name in check_names(names):
        if name == "word_rate":
            cols.append(_count(onsets, n_trs, tr))
        elif name == "onsets":
            cols.append(_count(onsets, n_trs, tr, method))
        else:
            if transcript.phone_onsets is None:
                raise ValueError(f"--features.nuisance phoneme_rate: story {story!r}'s alignment {transcript.source} "
                                 "carries no phones (only Gentle's align.json has them); drop phoneme_rate")
            cols.append(_count(np.asarray(transcript.phone_onsets) + audio_onset, n_trs, tr))
    return np.stack(cols, axis=1).astype(np.float32)


def nuisance_design(transcript: Transcript, audio_onset: float, n_trs: int, tr: float, names: Sequence[str],
                    method: str = "lanczos", delays: tuple[int, ...] = (1, 2, 3, 4), story: str = "") -> np.ndarray:
    """(n_trs, len(names) * len(delays)) the regressors through the FIR delays (one block per delay,
    as `features.tr_features` lays a hidden state out)."""
    x = regressors(transcript, audio_onset, n_trs, tr, names, method, story)
    return np.asarray(fir_delays(x, tuple(delays)), np.float32)
