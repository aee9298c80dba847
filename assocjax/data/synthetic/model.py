"""The generative model of the synthetic data: pure NumPy functions, no files.

BOLD of every scan, per vertex v in parcel p:
    y = signal_task(v) + noise_sd(p) * e                 (e independent per scan and vertex)
    e: unit-variance noise, white, or AR(1) with noise_ar1 = rho > 0 (stationary start):
    e_0 = z_0, e_t = rho e_(t-1) + sqrt(1 - rho^2) z_t, z standard normal; the z are the
    draws white noise uses, so rho = 0 writes the very bytes it always did.
    signal = z( X_heard W_heard[v] )                                    outside MTL
    signal = z( sqrt(1 - a) z(X_heard W_heard[v]) + sqrt(a) z(X_assoc W_assoc[v]) )   in MTL
X_heard: features of the heard words; X_assoc (`assoc_mode`): "mean", the mean features of
each word's associates, or "context", the features of each heard word when the story is read
with every word followed by its associates (the oracle augmentation read in context: with a
language model this is associative memory as score.py --augment.mode context measures it);
both Lanczos-resampled to TRs, feature-wise z-scored and convolved with the SPM HRF (or
FIR-delayed) (`stimulus_design`); W: fixed random maps per vertex, shared by all tasks and
subjects (`vertex_maps`); z(): zero mean, unit variance over the story window
(event_meta.json), so for S subjects the group mean has reliability S*snr / (1 + S*snr)
with snr = 1 / noise_sd**2 (`expected_reliability`). AR(1) noise keeps every marginal
variance, so this holds for any rho; what rho changes is sampling: a window of T TRs holds
only about T (1 - rho) / (1 + rho) independent noise values, so estimated correlations
scatter more (two independent AR(1) series: SD ~ sqrt((1 + rho^2) / ((1 - rho^2) T))
instead of 1/sqrt(T)) and neighbouring TRs - hence contiguous CV chunks - share noise.

Every random quantity has its own NumPy stream `default_rng([seed, stream, ...])`, so e.g.
adding a subject changes no other noise. z() is `alignment.zscore_fit/apply` on NumPy
float64 arrays (host path: exactly NumPy's mean/std arithmetic).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import numpy as np

from ...alignment import downsample, fir_delays, zscore_apply, zscore_fit
from ...fingerprint import text_seed
from ...stimuli import Transcript

MEDIAL_WALL = "medial_wall"
MTL_PREFIX = "mtl_"
DEFAULT_SNR = {"language_stg": 0.4, "frontal_ifg": 0.2, "parietal_angular": 0.2,
               "mtl_hippocampus": 0.15, "mtl_parahippocampal": 0.1, "visual_control": 0.0}
# `SyntheticConfig.ho_atlas`: the Harvard-Oxford structure each parcel stands for in the volume's
# Harvard-Oxford-style atlas (names as FSL's cortical / subcortical atlases spell them; the
# subcortical ones lateralised "Left ..." / "Right ..." by the voxel's side, as FSL's are).
# mtl_amygdala is no default parcel: list it in snr to have one.
HO_STANDINS = {"language_stg": "Superior Temporal Gyrus, posterior division",
               "frontal_ifg": "Inferior Frontal Gyrus, pars triangularis", "parietal_angular": "Angular Gyrus",
               "mtl_hippocampus": "Hippocampus", "mtl_parahippocampal": "Parahippocampal Gyrus, anterior division",
               "mtl_amygdala": "Amygdala", "visual_control": "Intracalcarine Cortex"}
HO_LATERAL = ("Hippocampus", "Amygdala")
# The random streams (manifest "seed_streams"); the numbers are part of every dataset's bytes.
VOCAB_STREAM, ASSOC_STREAM, STORY_STREAM, PEOPLE_STREAM, MAP_STREAM, NOISE_STREAM, EMBED_STREAM, ATLAS_STREAM = range(8)
TARGETS = ("L", "R", "vol")  # left, right hemisphere, in-brain voxels: index in the map/noise/atlas streams

FeatureFn = Callable[[Sequence[str]], np.ndarray]
ASSOC_MODES = ("mean", "context")


def normalize_word(word: str) -> str:
    return word.lower()


def random_embedding(dim: int, seed: int = 0) -> FeatureFn:
    """words -> (n_words, dim): a fixed standard-normal vector per (lower-cased) word.

    Each vector is seeded by the word itself, so it does not depend on which stories or
    vocabulary a dataset has.
    """
    cache: dict[str, np.ndarray] = {}

    def features(words: Sequence[str]) -> np.ndarray:
        out = np.empty((len(words), dim), np.float32)
        for i, word in enumerate(words):
            key = normalize_word(word)
            if key not in cache:
                rng = np.random.default_rng([seed, EMBED_STREAM, text_seed(key)])
                cache[key] = rng.standard_normal(dim).astype(np.float32)
            out[i] = cache[key]
        return out

    features.__name__ = f"random_embedding(dim={dim}, seed={seed})"
    return features


def spm_hrf(tr: float, length: float = 32.0) -> np.ndarray:
    """SPM canonical HRF (gamma(6) - gamma(16)/6) sampled every TR from 0 to length s, sum 1."""
    t = np.arange(0.0, length + 1e-9, tr)

    def gamma_pdf(x, a):
        return np.where(x > 0, np.exp((a - 1) * np.log(np.maximum(x, 1e-12)) - x - math.lgamma(a)), 0.0)

    h = gamma_pdf(t, 6.0) - gamma_pdf(t, 16.0) / 6.0
    return h / h.sum()


def zscore_window(x_ND: np.ndarray, window: tuple[int, int]) -> np.ndarray:
    """z(): every column to zero mean and unit variance over rows window[0]:window[1]
    (a constant column is only centred), applied to all rows."""
    mask_N = np.zeros(x_ND.shape[0], bool)
    mask_N[window[0]:window[1]] = True
    return zscore_apply(x_ND, *zscore_fit(x_ND, mask_N, constant="one"))


def read_with_associates(words: Sequence[str], associations: dict[str, list[str]]) -> tuple[list[str], np.ndarray]:
    """(the words with each one's associates inserted after it, index of each heard word in that
    list): the story as read with its oracle augmentation (`assocjax.augment.oracle`)."""
    read, heard = [], np.empty(len(words), np.int64)
    for i, w in enumerate(words):
        heard[i] = len(read)
        read.append(w)
        read.extend(associations[normalize_word(w)])
    return read, heard


def stimulus_design(transcript: Transcript, onset_s: float, n_trs: int, tr: float, features: FeatureFn,
                    associations: dict[str, list[str]], window: tuple[int, int], response: str = "hrf",
                    delays: Sequence[int] = (1, 2, 3, 4), assoc_mode: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """(heard_NP, assoc_NP): the heard words' features and the associative regressors (module
    docstring, `assoc_mode`) as TR regressors.

    Word times are the transcript's with gaps interpolated, shifted by the audio onset.
    "mean": associate features of a word = mean of `features` over its associates, from one
    call on all words' associate lists concatenated; "context": `features` of the story read
    with its associates (`read_with_associates`), taken at the heard words. Both are
    Lanczos-resampled, z-scored per feature over `window` (TRs) and then HRF-convolved or
    FIR-delayed.
    """
    words = list(transcript.words)
    times, _ = transcript.times(onset_s)
    heard = np.asarray(features(words), np.float32)
    lists = [associations[normalize_word(w)] for w in words]
    k = len(lists[0])
    if any(len(a) != k for a in lists):
        raise ValueError("every word needs the same number of associates")
    if assoc_mode == "mean":
        assoc = np.asarray(features([a for lst in lists for a in lst]), np.float32)
        assoc = assoc.reshape(len(words), k, -1).mean(1)
    elif assoc_mode == "context":
        read, at = read_with_associates(words, associations)
        assoc = np.asarray(features(read), np.float32)[at]
    else:
        raise ValueError(f"assoc_mode must be one of {ASSOC_MODES}, got {assoc_mode!r}")
    out = []
    for x_WD in (heard, assoc):
        x_ND, _ = downsample(x_WD, times.astype(np.float32), n_trs, tr, method="lanczos")
        x_ND = zscore_window(np.asarray(x_ND, np.float64), window)
        if response == "hrf":
            h = spm_hrf(tr)
            x_ND = np.stack([np.convolve(col, h)[:n_trs] for col in x_ND.T], 1)
        elif response == "fir":
            x_ND = np.asarray(fir_delays(x_ND, tuple(delays)), np.float64)
        else:
            raise ValueError(f"response must be 'hrf' or 'fir', got {response!r}")
        out.append(x_ND)
    return out[0], out[1]


def ar1_noise(z_NV: np.ndarray, rho: float) -> np.ndarray:
    """Stationary unit-variance AR(1) series along axis 0 from standard-normal draws z_NV:
    e_0 = z_0, e_t = rho e_(t-1) + sqrt(1 - rho^2) z_t. Overwrites and returns z_NV
    (float64: the recursion must not round); rho = 0 returns it untouched."""
    if not 0.0 <= rho < 1.0:
        raise ValueError(f"AR(1) rho must be in [0, 1), got {rho}")
    if rho == 0.0:
        return z_NV
    z_NV[1:] *= math.sqrt(1.0 - rho * rho)
    for t in range(1, z_NV.shape[0]):  # sequential in t, vectorised over vertices
        z_NV[t] += rho * z_NV[t - 1]
    return z_NV


def expected_reliability(snr: float, n_subjects: int) -> float:
    """Reliability of the mean of n_subjects scans with unit signal and noise variance 1/snr."""
    return n_subjects * snr / (1.0 + n_subjects * snr)


def pseudo_words(n: int, rng: np.random.Generator) -> list[str]:
    """n distinct pronounceable lower-case words of 2-3 consonant-vowel syllables."""
    onsets, vowels = list("bdfgklmnprstvz"), list("aeiou")
    words: dict[str, None] = {}
    while len(words) < n:
        syl = rng.integers(2, 4)
        words["".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(syl))] = None
    return list(words)


def association_graph(vocab: Sequence[str], k: int, rng: np.random.Generator) -> dict[str, list[str]]:
    """word -> k distinct other vocabulary words (its "associates")."""
    if len(vocab) <= k:
        raise ValueError(f"need more than {k} words for {k} associates each; got {len(vocab)}")
    out = {}
    for i, w in enumerate(vocab):
        picks = rng.choice(len(vocab) - 1, size=k, replace=False)
        out[w] = [vocab[j + (j >= i)] for j in picks]  # skip the word itself
    return out


def parcel_labels(n: int, n_parcels: int, medial_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """(n,) parcel index per vertex: 0 (medial wall) for ~medial_fraction of them, the rest
    split evenly among 1..n_parcels-1, scattered so nothing can rely on vertex order."""
    n_medial = max(1, round(n * medial_fraction)) if medial_fraction > 0 else 0
    if n - n_medial < n_parcels - 1:
        raise ValueError(f"{n} vertices are too few for {n_parcels - 1} parcels and a medial wall")
    blocks = np.array_split(np.arange(n - n_medial), n_parcels - 1)
    labels = np.concatenate([np.zeros(n_medial, np.int32)] + [np.full(b.size, i + 1, np.int32) for i, b in enumerate(blocks)])
    return labels[rng.permutation(n)]


@dataclasses.dataclass(frozen=True)
class Parcels:
    """Parcel 0 is the medial wall (no data); the others come from the snr table in order.

    snr_R: NaN for the medial wall; noise_sd_R = 1 / sqrt(snr) where snr > 0, else 1;
    mtl_R: parcels whose signal also carries the associates' features.
    """

    names: tuple[str, ...]
    snr_R: np.ndarray
    noise_sd_R: np.ndarray
    mtl_R: np.ndarray

    @classmethod
    def from_snr(cls, snr: dict[str, float]) -> "Parcels":
        names = (MEDIAL_WALL,) + tuple(snr)
        snr_R = np.array([np.nan] + list(snr.values()))
        noise_sd_R = np.where(snr_R > 0, 1.0 / np.sqrt(np.where(snr_R > 0, snr_R, 1.0)), 1.0)
        return cls(names, snr_R, noise_sd_R, np.array([n.startswith(MTL_PREFIX) for n in names]))


def vertex_maps(seed: int, target: str, n_heard: int, n_assoc: int, n_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """(W_heard (F, V), W_assoc (F_assoc, V)): the fixed random maps of one target (L, R, vol)."""
    rng = np.random.default_rng([seed, MAP_STREAM, TARGETS.index(target)])
    return rng.standard_normal((n_heard, n_vertices)), rng.standard_normal((n_assoc, n_vertices))


def planted_signal(heard_NP: np.ndarray, assoc_NP: np.ndarray, maps: tuple[np.ndarray, np.ndarray],
                   labels_V: np.ndarray, parcels: Parcels, assoc_share: float, window: tuple[int, int]) -> np.ndarray:
    """(T, V) float64 signal of one story at one target (module docstring); 0 in parcels
    without signal (snr 0, medial wall)."""
    w_heard, w_assoc = maps
    mtl_V = parcels.mtl_R[labels_V]
    s = zscore_window(heard_NP @ w_heard, window)
    s[:, mtl_V] = zscore_window(np.sqrt(1 - assoc_share) * s[:, mtl_V]
                                + np.sqrt(assoc_share) * zscore_window(assoc_NP @ w_assoc[:, mtl_V], window), window)
    s[:, ~(parcels.snr_R[labels_V] > 0)] = 0.0
    return s


def scan_bold(seed: int, stem: str, target: str, labels_V: np.ndarray, parcels: Parcels, rho: float, n_trs: int,
              signal_NV: np.ndarray | None = None) -> np.ndarray:
    """(T, V) float32 BOLD of one scan at one target: its own noise stream (seeded by the scan
    stem) scaled per parcel, plus the planted signal (None: an excluded scan, noise only);
    NaN on the medial wall."""
    rng = np.random.default_rng([seed, NOISE_STREAM, text_seed(stem), TARGETS.index(target)])
    y = ar1_noise(rng.standard_normal((n_trs, labels_V.size)), rho)
    y *= parcels.noise_sd_R[labels_V]  # in place: the same products as y * noise_sd, one (T, V) float64 less
    if signal_NV is not None:
        y += signal_NV
    y[:, labels_V == 0] = np.nan
    return y.astype(np.float32)
