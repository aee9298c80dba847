"""Synthetic Narratives: the real BIDS layout with generated images and a known ground truth.

`make_synthetic(cfg)` writes a folder a Narratives loader reads exactly like the real
dataset (participants.tsv, code/scan_exclude.json, code/event_meta.json, sidecars,
events.tsv, stimuli/gentle/<task>/align.csv, afni-nosmooth GIfTI per hemisphere,
FreeSurfer annot atlas, optionally MNI NIfTI with an fMRIPrep-style brain mask), plus
`manifest.json` with the truth and `associations.json` (word -> its associates).

BOLD of every scan, per vertex v in parcel p:
    y = signal_task(v) + noise_sd(p) * e                 (e independent per scan and vertex)
    e: unit-variance noise, white, or AR(1) with noise_ar1 = rho > 0 (stationary start):
    e_0 = z_0, e_t = rho e_(t-1) + sqrt(1 - rho^2) z_t, z standard normal; the z are the
    draws white noise uses, so rho = 0 writes the very bytes it always did.
    signal = z( X_heard W_heard[v] )                                    outside MTL
    signal = z( sqrt(1 - a) z(X_heard W_heard[v]) + sqrt(a) z(X_assoc W_assoc[v]) )   in MTL
X_heard: features of the heard words, X_assoc: mean features of each word's associates,
both Lanczos-resampled to TRs, feature-wise z-scored and convolved with the SPM HRF (or
FIR-delayed); W: fixed random maps per vertex, shared by all tasks and subjects; z():
zero mean, unit variance over the story window (event_meta.json), so for S subjects the
group mean has reliability S*snr / (1 + S*snr) with snr = 1 / noise_sd**2. AR(1) noise
keeps every marginal variance, so this holds for any rho; what rho changes is sampling: a
window of T TRs holds only about T (1 - rho) / (1 + rho) independent noise values, so
estimated correlations scatter more (two independent AR(1) series: SD ~ sqrt((1 + rho^2) /
((1 - rho^2) T)) instead of 1/sqrt(T)) and neighbouring TRs - hence contiguous CV chunks -
share noise.
Stories are read back from the align.csv written, the way a loader reads them (untimed
words interpolated, times shifted by the audio onset), so the truth is reproducible from
the files and `stimulus_design`. The excluded scan carries no stimulus signal, so a loader
that forgets the exclusion measures a visibly lower ceiling.
"""
from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import gzip
import hashlib
import io
import itertools
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Literal, Sequence

import nibabel as nib
import numpy as np

from ..alignment import downsample, fir_delays, zscore_apply, zscore_fit
from ..atomic import atomic_write_bytes
from ..reports import write_json
from ..stimuli import Transcript, audio_onset, read_gentle_csv, read_tr
from .layout import split_commas

MEDIAL_WALL = "medial_wall"
MTL_PREFIX = "mtl_"
DEFAULT_SNR = {"language_stg": 0.4, "frontal_ifg": 0.2, "parietal_angular": 0.2,
               "mtl_hippocampus": 0.15, "mtl_parahippocampal": 0.1, "visual_control": 0.0}
SPACE_VERTICES = {"fsaverage5": 10242, "fsaverage6": 40962, "fsaverage": 163842}
VOLUME_SPACE = "MNI152NLin2009cAsym"
PARTICIPANT_COLUMNS = ("participant_id", "age", "sex", "task", "condition", "comprehension")
# Each random quantity has its own stream, so e.g. adding a subject changes no other noise.
_VOCAB, _ASSOC, _STORY, _PEOPLE, _MAP, _NOISE, _EMBED, _ATLAS = range(8)

FeatureFn = Callable[[Sequence[str]], np.ndarray]


@dataclasses.dataclass
class SyntheticConfig:
    """A synthetic Narratives dataset (see module docstring)."""

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
    seed: int = 0
    overwrite: bool = False


@dataclasses.dataclass
class _Scan:
    subject: str
    task: str
    stem: str
    tr: float
    audio_onset: float
    n_trs: int
    window: tuple[int, int]
    excluded: bool


@dataclasses.dataclass
class _Plan:
    files: dict[str, bytes]
    scans: list[_Scan]
    tasks: list[str]
    vocabulary: list[str]


# ---------------------------------------------------------------- features and response

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
                h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
                cache[key] = np.random.default_rng([seed, _EMBED, h]).standard_normal(dim).astype(np.float32)
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


def _zscore(x_TD, window):
    """z(): zero mean, unit variance per column over the rows of `window` (a constant column
    is only centred), applied to all rows; `alignment.zscore_fit` on the NumPy float64 array."""
    mask_T = np.zeros(x_TD.shape[0], bool)
    mask_T[window[0]:window[1]] = True
    return zscore_apply(x_TD, *zscore_fit(x_TD, mask_T, constant="one"))


def stimulus_design(transcript: Transcript, onset_s: float, n_trs: int, tr: float, features: FeatureFn,
                    associations: dict[str, list[str]], window: tuple[int, int], response: str = "hrf",
                    delays: Sequence[int] = (1, 2, 3, 4)) -> tuple[np.ndarray, np.ndarray]:
    """(heard_TF, assoc_TF): the heard words' and their associates' features as TR regressors.

    Word times are the transcript's with gaps interpolated, shifted by the audio onset.
    Associate features of a word = mean of `features` over its associates, from one call
    on all words' associate lists concatenated. Both are Lanczos-resampled, z-scored per
    feature over `window` (TRs) and then HRF-convolved or FIR-delayed.
    """
    words = list(transcript.words)
    times, _ = transcript.times(onset_s)
    heard = np.asarray(features(words), np.float32)
    lists = [associations[normalize_word(w)] for w in words]
    k = len(lists[0])
    if any(len(a) != k for a in lists):
        raise ValueError("every word needs the same number of associates")
    assoc = np.asarray(features([a for lst in lists for a in lst]), np.float32)
    assoc = assoc.reshape(len(words), k, -1).mean(1)
    out = []
    for x_WD in (heard, assoc):
        x_TD, _ = downsample(x_WD, times.astype(np.float32), n_trs, tr, method="lanczos")
        x_TD = _zscore(np.asarray(x_TD, np.float64), window)
        if response == "hrf":
            h = spm_hrf(tr)
            x_TD = np.stack([np.convolve(col, h)[:n_trs] for col in x_TD.T], 1)
        elif response == "fir":
            x_TD = np.asarray(fir_delays(x_TD, tuple(delays)), np.float64)
        else:
            raise ValueError(f"response must be 'hrf' or 'fir', got {response!r}")
        out.append(x_TD)
    return out[0], out[1]


def ar1_noise(z_TV: np.ndarray, rho: float) -> np.ndarray:
    """Stationary unit-variance AR(1) series along axis 0 from standard-normal draws z_TV:
    e_0 = z_0, e_t = rho e_(t-1) + sqrt(1 - rho^2) z_t. Overwrites and returns z_TV
    (float64: the recursion must not round); rho = 0 returns it untouched."""
    if not 0.0 <= rho < 1.0:
        raise ValueError(f"AR(1) rho must be in [0, 1), got {rho}")
    if rho == 0.0:
        return z_TV
    z_TV[1:] *= math.sqrt(1.0 - rho * rho)
    for t in range(1, z_TV.shape[0]):  # sequential in t, vectorised over vertices
        z_TV[t] += rho * z_TV[t - 1]
    return z_TV


def expected_reliability(snr: float, n_subjects: int) -> float:
    """Reliability of the mean of n_subjects scans with unit signal and noise variance 1/snr."""
    return n_subjects * snr / (1.0 + n_subjects * snr)


# ---------------------------------------------------------------- generated stories and people

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


def _story_csv(vocab, cfg: SyntheticConfig, rng, start_s: float, end_s: float) -> str:
    """Gentle align.csv text: Zipf-ish words, Poisson onsets, sentence capitals, a few untimed words."""
    p = 1.0 / np.arange(1, len(vocab) + 1) ** 0.8
    gaps = rng.exponential(1.0 / cfg.words_per_second, int(cfg.words_per_second * (end_s - start_s) * 2) + 20) + 0.05
    onsets = start_s + np.cumsum(gaps)
    onsets, gaps = onsets[onsets < end_s], gaps[1:][: (onsets < end_s).sum()]
    words = [vocab[i] for i in rng.choice(len(vocab), size=onsets.size, p=p / p.sum())]
    inner = np.arange(1, max(onsets.size - 1, 1))  # first and last words keep their times
    untimed = set(rng.choice(inner, min(inner.size, int(cfg.untimed_fraction * onsets.size)), replace=False).tolist())
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    left = 0
    for i, (w, t) in enumerate(zip(words, onsets)):
        if left == 0:
            w, left = w.capitalize(), int(rng.geometric(1 / 10))
        left -= 1
        dur = min(0.9 * gaps[i], rng.uniform(0.15, 0.5))
        writer.writerow([w, "", "", ""] if i in untimed else [w, w.lower(), f"{t:.2f}", f"{t + dur:.2f}"])
    return buf.getvalue()


def _events_tsv(rows) -> bytes:
    lines = ["onset\tduration\ttrial_type\tstim_file"] + ["\t".join(map(str, r)) for r in rows]
    return ("\n".join(lines) + "\n").encode()


def _participants_tsv(rows: list[dict]) -> bytes:
    lines = ["\t".join(PARTICIPANT_COLUMNS)] + ["\t".join(r[c] for c in PARTICIPANT_COLUMNS) for r in rows]
    return ("\n".join(lines) + "\n").encode()


def _json_bytes(obj, indent=2) -> bytes:
    return (json.dumps(obj, indent=indent, sort_keys=True) + "\n").encode()


def _plan_synthetic(cfg: SyntheticConfig) -> _Plan:
    seed, tr = cfg.seed, cfg.tr
    tasks = list(cfg.stories) or [f"story{chr(ord('a') + i)}" for i in range(cfg.n_stories)]
    story_onset = cfg.lead_trs * tr
    if cfg.audio_onset + cfg.music_seconds > story_onset:
        raise ValueError(f"the music event ({cfg.audio_onset} s + {cfg.music_seconds} s) must end before "
                         f"the story starts ({cfg.lead_trs} TRs = {story_onset} s)")
    vocab = pseudo_words(cfg.vocab_size, np.random.default_rng([seed, _VOCAB]))
    n_trs = cfg.lead_trs + cfg.story_trs + cfg.tail_trs
    window = (cfg.lead_trs, cfg.lead_trs + cfg.story_trs)
    files: dict[str, bytes] = {}
    for i, task in enumerate(tasks):
        rng = np.random.default_rng([seed, _STORY, i])
        audio_start = story_onset - cfg.audio_onset  # story start on the audio's clock
        files[f"stimuli/gentle/{task}/align.csv"] = _story_csv(
            vocab, cfg, rng, audio_start + 0.3, audio_start + cfg.story_trs * tr - 0.5).encode()
    # Every third subject hears a single story; the others hear them all (comma-joined rows).
    heard = {j: [tasks[(j // 3) % len(tasks)]] if j % 3 == 2 else list(tasks) for j in range(cfg.n_subjects)}
    first_of_last = next(j for j in range(cfg.n_subjects) if tasks[-1] in heard[j])
    rng = np.random.default_rng([seed, _PEOPLE])
    rows, scans, exclude = [], [], {t: {} for t in tasks}
    for j in range(cfg.n_subjects + 1):
        sid = f"sub-{j + 1:03d}"
        mine = heard.get(j, tasks[:1])  # the extra last subject is listed but has no scans
        age, sex = str(rng.integers(18, 40)), str(rng.choice(["F", "M"]))
        rows.append(dict(participant_id=sid, age=",".join([age] * len(mine)), sex=",".join([sex] * len(mine)),
                         task=",".join(mine), condition=",".join(["n/a"] * len(mine)),
                         comprehension=",".join(["n/a"] * len(mine))))
        if j == cfg.n_subjects:
            continue
        for task in mine:
            stem = f"{sid}_task-{task}"
            excluded = j == first_of_last and task == tasks[-1]
            if excluded:
                exclude[task][sid] = [stem]
            files[f"{sid}/func/{stem}_bold.json"] = _json_bytes(dict(
                RepetitionTime=tr, TaskName=task, TaskDescription=f"Passively listened to audio story '{task}'",
                Manufacturer="assocjax synthetic"))
            files[f"{sid}/func/{stem}_events.tsv"] = _events_tsv([
                (cfg.audio_onset, cfg.music_seconds, "music", f"{task}_audio.wav"),
                (story_onset, cfg.story_trs * tr, "story", f"{task}_audio.wav")])
            scans.append(_Scan(sid, task, stem, tr, cfg.audio_onset, n_trs, window, excluded))
    files["participants.tsv"] = _participants_tsv(rows)
    files["code/scan_exclude.json"] = _json_bytes(exclude)
    files["code/event_meta.json"] = _json_bytes(
        {t: {t: dict(onset=cfg.lead_trs, duration=cfg.story_trs)} for t in tasks})
    files["dataset_description.json"] = _json_bytes(dict(
        Name="Narratives (synthetic)", BIDSVersion="1.2.1", License="CC0",
        GeneratedBy=[dict(Name="assocjax.data.synthetic", Description="generated stories, subjects and images")]))
    return _Plan(files, scans, tasks, vocab)


# ---------------------------------------------------------------- copying the real metadata

def _read_participants(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _only_tasks(row: dict, keep: list[str]) -> dict:
    """A participants row cut down to the given tasks (per-task columns are comma-joined)."""
    tasks = row["task"].split(",")
    idx = [i for i, t in enumerate(tasks) if t in keep]
    out = dict(row)
    for col in PARTICIPANT_COLUMNS[1:]:
        vals = row[col].split(",")
        if len(vals) == len(tasks):
            out[col] = ",".join(vals[i] for i in idx)
    return out


def _plan_from_metadata(cfg: SyntheticConfig) -> _Plan:
    src = Path(cfg.from_metadata)
    meta = json.loads((src / "code/event_meta.json").read_text())
    excl = json.loads((src / "code/scan_exclude.json").read_text())
    people = _read_participants(src / "participants.tsv")
    tasks = list(cfg.stories)
    if not tasks:
        raise ValueError("from_metadata needs stories=[...] (task names such as pieman, tunnel)")
    known = sorted(t for t in meta if (src / "stimuli/gentle" / t / "align.csv").is_file())
    files: dict[str, bytes] = {}
    scans, chosen_tasks, exclude = [], {}, {}
    for task in tasks:
        if task not in known:
            raise ValueError(f"story {task!r} has no event_meta entry or align.csv in {src}; known: {', '.join(known)}")
        files[f"stimuli/gentle/{task}/align.csv"] = (src / "stimuli/gentle" / task / "align.csv").read_bytes()
        bad = excl.get(task, {})
        exclude[task] = {}
        meta_on = min(s["onset"] for s in meta[task].values())
        meta_end = max(s["onset"] + s["duration"] for s in meta[task].values())
        n_chosen = 0
        for row in people:
            sid = row["participant_id"]
            if task not in row["task"].split(","):
                continue
            sidecars = sorted((src / sid / "func").glob(f"{sid}_task-{task}_*bold.json"))
            stems = [p.name[: -len("_bold.json")] for p in sidecars]
            # A subject whose scans are all excluded gives a loader nothing: take the next one.
            if not stems or all(s in bad.get(sid, []) for s in stems):
                continue
            n_chosen += 1
            chosen_tasks.setdefault(sid, []).append(task)
            if sid in bad:
                exclude[task][sid] = [s for s in bad[sid] if s in stems]
            for stem in stems:
                for suffix in ("_bold.json", "_events.tsv"):
                    files[f"{sid}/func/{stem}{suffix}"] = (src / sid / "func" / f"{stem}{suffix}").read_bytes()
                tr = read_tr(src / sid / "func" / f"{stem}_bold.json")
                onset = audio_onset(src / sid / "func" / f"{stem}_events.tsv")
                with open(src / sid / "func" / f"{stem}_events.tsv", newline="") as f:
                    ev_end = max(float(r["onset"]) + float(r["duration"]) for r in csv.DictReader(f, delimiter="\t"))
                n_trs = max(meta_end, math.ceil(ev_end / tr - 1e-6)) + cfg.tail_trs
                scans.append(_Scan(sid, task, stem, tr, onset, n_trs, (meta_on, meta_end), stem in bad.get(sid, [])))
            if n_chosen == cfg.n_subjects:
                break
        if n_chosen == 0:
            raise ValueError(f"story {task!r}: no subject with a usable (not excluded) scan in {src}")
    rows = [_only_tasks(r, chosen_tasks[r["participant_id"]]) for r in people if r["participant_id"] in chosen_tasks]
    files["participants.tsv"] = _participants_tsv(rows)
    files["code/event_meta.json"] = _json_bytes({t: meta[t] for t in tasks})
    files["code/scan_exclude.json"] = _json_bytes(exclude)
    if (src / "participants.json").is_file():
        files["participants.json"] = (src / "participants.json").read_bytes()
    desc = json.loads((src / "dataset_description.json").read_text())
    desc["Name"] = f"{desc.get('Name', 'Narratives')} (synthetic images)"
    desc["GeneratedBy"] = [dict(Name="assocjax.data.synthetic",
                                Description="real metadata and alignments; generated images")]
    files["dataset_description.json"] = _json_bytes(desc, indent=4)
    vocab = sorted({normalize_word(w) for t in tasks
                    for w in read_gentle_csv(src / "stimuli/gentle" / t / "align.csv", on_unsorted="sort").words})
    return _Plan(files, scans, tasks, vocab)


# ---------------------------------------------------------------- atlas and images

def parcel_labels(n: int, n_parcels: int, medial_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """(n,) parcel index per vertex: 0 (medial wall) for ~medial_fraction of them, the rest
    split evenly among 1..n_parcels-1, scattered so nothing can rely on vertex order."""
    n_medial = max(1, round(n * medial_fraction)) if medial_fraction > 0 else 0
    if n - n_medial < n_parcels - 1:
        raise ValueError(f"{n} vertices are too few for {n_parcels - 1} parcels and a medial wall")
    blocks = np.array_split(np.arange(n - n_medial), n_parcels - 1)
    labels = np.concatenate([np.zeros(n_medial, np.int32)] + [np.full(b.size, i + 1, np.int32) for i, b in enumerate(blocks)])
    return labels[rng.permutation(n)]


def _annot_bytes(labels: np.ndarray, names: list[str]) -> bytes:
    # FreeSurfer identifies a label by its packed colour, so colours must be distinct.
    i = np.arange(len(names))
    rgb = np.stack([(53 * i + 40) % 256, (97 * i + 80) % 256, (151 * i + 160) % 256], 1)
    if len(np.unique(rgb, axis=0)) != len(names):
        raise ValueError(f"{len(names)} parcels are too many for the colour table")
    ctab = np.concatenate([rgb, np.zeros((len(names), 2), int)], 1).astype(np.int32)
    # write_annot only takes a path: write it aside, then place the bytes atomically.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.annot"
        nib.freesurfer.write_annot(str(path), labels, ctab, names)
        return path.read_bytes()


def _gifti_bytes(y_TV: np.ndarray, hemi: str) -> bytes:
    meta = nib.gifti.GiftiMetaData({"AnatomicalStructurePrimary": "CortexLeft" if hemi == "L" else "CortexRight"})
    arrays = [nib.gifti.GiftiDataArray(row, intent="NIFTI_INTENT_TIME_SERIES", datatype="NIFTI_TYPE_FLOAT32")
              for row in y_TV.astype(np.float32, copy=False)]
    return nib.gifti.GiftiImage(meta=meta, darrays=arrays).to_bytes()


def _volume_geometry(shape):
    """(in-brain mask, affine): an ellipsoid filling the grid, 4 mm voxels centred on 0."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"), -1)
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = -2.0 * (np.asarray(shape) - 1)
    return (grid ** 2).sum(-1) <= 0.9, affine


def _nifti_bytes(data: np.ndarray, affine: np.ndarray, tr: float | None = None) -> bytes:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    if tr is not None:
        img.header["pixdim"][4] = tr
    return gzip.compress(img.to_bytes(), mtime=0)  # mtime=0: same seed, same bytes


def _write_atlas(w: "_Writer", cfg: SyntheticConfig, names: list[str], n_vertices: int):
    """Parcel labels per target ("L", "R", and "vol" for in-brain voxels) and the annot paths."""
    labels = {h: parcel_labels(n_vertices, len(names), cfg.medial_wall_fraction,
                               np.random.default_rng([cfg.seed, _ATLAS, i])) for i, h in enumerate("LR")}
    annots = {h: f"derivatives/freesurfer/{cfg.space}/label/{h.lower()}h.{cfg.atlas}.annot" for h in "LR"}
    for h in "LR":
        w.put(annots[h], _annot_bytes(labels[h], names))
    if cfg.volume_shape:
        mask, affine = _volume_geometry(cfg.volume_shape)
        labels["vol"] = parcel_labels(int(mask.sum()), len(names), 0.0, np.random.default_rng([cfg.seed, _ATLAS, 2]))
        dseg = np.zeros(cfg.volume_shape, np.int16)
        dseg[mask] = labels["vol"]
        base = f"derivatives/{cfg.atlas}/space-{VOLUME_SPACE}_res-native_desc-{cfg.atlas}"
        w.put(f"{base}_dseg.nii.gz", _nifti_bytes(dseg, affine))
        w.put(f"{base}_dseg.tsv", ("index\tname\n" + "".join(f"{i}\t{n}\n" for i, n in enumerate(names) if i)).encode())
    return labels, annots


# ---------------------------------------------------------------- the generator

class _Writer:
    """Atomic writes under one root, remembering every file for the manifest."""

    def __init__(self, root: Path):
        self.root, self.files = root, []

    def put(self, rel: str, data: bytes) -> Path:
        self.files.append(rel)
        return atomic_write_bytes(self.root / rel, data)


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(f"{out} is not empty; pass overwrite=True (--overwrite) to write over it")
    # Remove only what an earlier run wrote (its manifest lists it), so that no stale
    # subject from a bigger earlier config survives; nothing else in the folder is touched.
    old = out / "manifest.json"
    if old.is_file():
        root = out.resolve()
        for rel in json.loads(old.read_text()).get("files", []):
            path = (out / rel).resolve()
            if root in path.parents:
                path.unlink(missing_ok=True)
                # An emptied sub-XXX/ folder would still look like a subject to a loader.
                for parent in path.parents:
                    if parent == root or not parent.is_dir() or any(parent.iterdir()):
                        break
                    parent.rmdir()
        old.unlink()


def make_synthetic(cfg: SyntheticConfig, features: FeatureFn | None = None, progress: bool = False,
                   workers: int | None = None) -> dict:
    """Write the dataset described by cfg into cfg.out and return its manifest.

    features: words -> (n_words, dim) array (e.g. a language-model layer; set
    cfg.planted_layer to record which); default `random_embedding(cfg.feature_dim, cfg.seed)`.
    workers: threads writing images (default: min(8, CPUs)); each holds one hemisphere's scan
    as float64, float32 and encoded text at once (fsaverage6: ~0.3 GB at 300 TRs, ~2 GB at
    2248). The files do not depend on it.
    """
    cfg = dataclasses.replace(cfg, out=Path(cfg.out), stories=split_commas(cfg.stories))
    bad = [t for t in cfg.stories if not re.fullmatch(r"[A-Za-z0-9]+", t)]
    if bad:
        raise ValueError(f"story names are BIDS task labels (letters and digits only): {bad}")
    if not 0.0 <= cfg.assoc_share <= 1.0:
        raise ValueError(f"assoc_share must be in [0, 1], got {cfg.assoc_share}")
    if not 0.0 <= cfg.noise_ar1 < 1.0:  # also catches NaN
        raise ValueError(f"noise_ar1 (--noise-ar1) is the AR(1) rho of the noise and must be in [0, 1), "
                         f"got {cfg.noise_ar1}")
    if MEDIAL_WALL in cfg.snr or any(v < 0 for v in cfg.snr.values()):
        raise ValueError(f"snr: non-negative values for parcels other than {MEDIAL_WALL!r}, got {cfg.snr}")
    n_vertices = cfg.n_vertices or SPACE_VERTICES.get(cfg.space)
    if n_vertices is None:
        raise ValueError(f"unknown space {cfg.space!r}: give n_vertices (known: {SPACE_VERTICES})")
    _prepare_out(cfg.out, cfg.overwrite)
    plan = _plan_from_metadata(cfg) if cfg.from_metadata else _plan_synthetic(cfg)
    w = _Writer(cfg.out)
    for rel, data in sorted(plan.files.items()):
        w.put(rel, data)

    names = [MEDIAL_WALL] + list(cfg.snr)
    snr = np.array([np.nan] + list(cfg.snr.values()))
    noise_sd = np.where(snr > 0, 1.0 / np.sqrt(np.where(snr > 0, snr, 1.0)), 1.0)
    is_mtl = np.array([n.startswith(MTL_PREFIX) for n in names])
    labels, annots = _write_atlas(w, cfg, names, n_vertices)
    if cfg.volume_shape:
        mask, affine = _volume_geometry(cfg.volume_shape)
        mask_bytes = _nifti_bytes(mask.astype(np.uint8), affine)

    assoc = association_graph(plan.vocabulary, cfg.n_associates, np.random.default_rng([cfg.seed, _ASSOC]))
    w.put("associations.json", _json_bytes(assoc))
    feats = features or random_embedding(cfg.feature_dim, cfg.seed)
    maps, designs, signals, dims = {}, {}, {}, {}

    def signal(scan: _Scan, target: str) -> np.ndarray:
        design_key = (scan.task, scan.audio_onset, scan.n_trs, scan.tr)
        key = design_key + (target,)
        if key not in signals:
            if design_key not in designs:
                t = read_gentle_csv(cfg.out / f"stimuli/gentle/{scan.task}/align.csv", on_unsorted="sort")
                designs[design_key] = stimulus_design(t, scan.audio_onset, scan.n_trs, scan.tr, feats, assoc,
                                                      scan.window, cfg.response, cfg.fir_delays)
            xh, xa = designs[design_key]
            dims["features"] = xh.shape[1]
            if target not in maps:
                rng = np.random.default_rng([cfg.seed, _MAP, ["L", "R", "vol"].index(target)])
                v = labels[target].size
                maps[target] = (rng.standard_normal((xh.shape[1], v)), rng.standard_normal((xa.shape[1], v)))
            wh, wa = maps[target]
            mtl = is_mtl[labels[target]]
            s = _zscore(xh @ wh, scan.window)
            s[:, mtl] = _zscore(np.sqrt(1 - cfg.assoc_share) * s[:, mtl]
                                + np.sqrt(cfg.assoc_share) * _zscore(xa @ wa[:, mtl], scan.window), scan.window)
            s[:, ~(snr[labels[target]] > 0)] = 0.0
            signals[key] = s
        return signals[key]

    def bold(scan: _Scan, target: str, index: int) -> np.ndarray:
        lab = labels[target]
        h = int.from_bytes(hashlib.blake2b(scan.stem.encode(), digest_size=8).digest(), "little")
        rng = np.random.default_rng([cfg.seed, _NOISE, h, index])
        y = ar1_noise(rng.standard_normal((scan.n_trs, lab.size)), cfg.noise_ar1)
        y *= noise_sd[lab]  # in place: the same products as y * noise_sd, one (T, V) float64 less
        if not scan.excluded:
            y += signal(scan, target)
        y[:, lab == 0] = np.nan
        return y.astype(np.float32)

    def write_image(scan: _Scan, target: str, index: int) -> None:
        func = f"derivatives/afni-nosmooth/{scan.subject}/func/{scan.stem}"
        if target != "vol":
            w.put(f"{func}_space-{cfg.space}_hemi-{target}_desc-clean.func.gii",
                  _gifti_bytes(bold(scan, target, index), target))
            return
        vol = np.zeros(cfg.volume_shape + (scan.n_trs,), np.float32)
        vol[mask] = np.nan_to_num(bold(scan, "vol", index)).T
        w.put(f"{func}_space-{VOLUME_SPACE}_res-native_desc-clean_bold.nii.gz", _nifti_bytes(vol, affine, scan.tr))
        # Real afni volumes have no mask of their own; readers take fMRIPrep's.
        w.put(f"derivatives/fmriprep/{scan.subject}/func/{scan.stem}_space-{VOLUME_SPACE}_desc-brain_mask.nii.gz",
              mask_bytes)

    # Images are independent (own noise stream, own file), and most of their time is zlib
    # inside nibabel's GIfTI encoder, which releases the GIL: threads write them in parallel.
    # A task's signals are made first, in this thread, and dropped after its last image.
    targets = ["L", "R"] + (["vol"] if cfg.volume_shape else [])
    scans = sorted(plan.scans, key=lambda s: s.task)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(scans) * len(targets), desc="synthetic images", unit="image")
    n_workers = max(1, workers or min(8, os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(n_workers) as pool:
        for _, group in itertools.groupby(scans, key=lambda s: s.task):
            group = list(group)
            for scan in group:
                for target in targets:
                    signal(scan, target)
            jobs = [pool.submit(write_image, scan, t, i) for scan in group for i, t in enumerate(targets)]
            try:
                for job in concurrent.futures.as_completed(jobs):
                    job.result()
                    if bar is not None:
                        bar.update()
            except BaseException:
                for job in jobs:
                    job.cancel()
                raise
            designs.clear()
            signals.clear()
    if bar is not None:
        bar.close()

    manifest = _manifest(cfg, plan, names, snr, noise_sd, is_mtl, labels, annots, feats, features is None,
                         dims["features"], w.files)
    write_json(cfg.out / "manifest.json", manifest)
    return manifest


def _manifest(cfg, plan, names, snr, noise_sd, is_mtl, labels, annots, feats, default_features, n_regressors,
              files) -> dict:
    # noise_ar1 = 0 (white noise) is left out, so default datasets keep the bytes they had
    # before the option existed: a manifest without it means white noise.
    config = {k: v for k, v in dataclasses.asdict(cfg).items()
              if k not in ("out", "overwrite") and not (k == "noise_ar1" and v == 0.0)}
    ar1 = {} if cfg.noise_ar1 == 0.0 else dict(noise=dict(
        model="AR(1) per vertex, stationary start, unit variance, times noise_sd", rho=cfg.noise_ar1,
        note="marginal variances are those of white noise, so expected_ceiling holds; a window of T TRs has "
             "about T (1 - rho) / (1 + rho) independent noise values, so estimated r scatter more (null r "
             "between two such series: SD ~ sqrt((1 + rho^2) / ((1 - rho^2) T))) and neighbouring TRs, hence "
             "contiguous CV chunks, share noise"))
    tasks = {}
    for task in plan.tasks:
        mine = [s for s in plan.scans if s.task == task]
        included = sorted({s.subject for s in mine if not s.excluded})
        n = len(included)
        tasks[task] = dict(
            subjects=sorted({s.subject for s in mine}), included_subjects=included,
            excluded_scans=[s.stem for s in mine if s.excluded], story_window_trs=list(mine[0].window),
            expected_ceiling={p: dict(reliability=expected_reliability(float(snr[i]), n),
                                      max_r=math.sqrt(expected_reliability(float(snr[i]), n)))
                              for i, p in enumerate(names) if i})
    return dict(
        generator="assocjax.data.synthetic", format_version=1, config=config, seed=cfg.seed,
        seed_streams="numpy default_rng([seed, stream, ...]) with streams vocab=0, associations=1, story=2 "
                     "(+ story index), participants=3, vertex maps=4 (+ L/R/vol), noise=5 (+ hash of the "
                     "scan stem, L/R/vol), word embedding=6 (+ hash of the word), atlas=7 (+ L/R/vol)",
        mode="metadata" if cfg.from_metadata else "generated",
        feature_source=getattr(feats, "__name__", repr(feats)),
        feature_seed=cfg.seed if default_features else None,
        feature_dim=int(n_regressors // (len(cfg.fir_delays) if cfg.response == "fir" else 1)),
        planted_layer=cfg.planted_layer, response=cfg.response, assoc_share=cfg.assoc_share,
        associations="associations.json", space=cfg.space,
        atlas=dict(name=cfg.atlas, annot=annots, medial_wall=MEDIAL_WALL),
        parcels={p: dict(index=i, mtl=bool(is_mtl[i]), snr=None if i == 0 else float(snr[i]),
                         noise_sd=None if i == 0 else float(noise_sd[i]),
                         n_vertices={h: int((labels[h] == i).sum()) for h in "LR"})
                 for i, p in enumerate(names)},
        ceiling_note="reliability of the mean of the included subjects' scans (one per subject) over "
                     "story_window_trs: S*snr / (1 + S*snr); max_r = sqrt(reliability)",
        **ar1, tasks=tasks,
        scans=[dict(subject=s.subject, task=s.task, stem=s.stem, tr=s.tr, n_trs=s.n_trs, audio_onset=s.audio_onset,
                    excluded=s.excluded, has_signal=not s.excluded) for s in plan.scans],
        versions=dict(numpy=np.__version__, nibabel=nib.__version__),
        files=sorted(files),
    )


def summary_line(manifest: dict, out: Path) -> str:
    scans = manifest["scans"]
    ceil = [c["max_r"] for t in manifest["tasks"].values() for p, c in t["expected_ceiling"].items()
            if manifest["parcels"][p]["snr"]]
    nv = manifest["parcels"]
    n_vert = sum(p["n_vertices"]["L"] for p in nv.values())
    truth = f"expected max r {min(ceil):.2f}-{max(ceil):.2f} in signal parcels" if ceil else "no signal (every SNR 0)"
    noise = f"; AR(1) noise, rho {manifest['noise']['rho']}" if "noise" in manifest else ""
    return (f"wrote {len(scans)} scans ({len({s['subject'] for s in scans})} subjects, {len(manifest['tasks'])} "
            f"stories, 2x{n_vert} vertices in {manifest['space']}) to {out}; {truth}{noise}")


__all__ = ["SyntheticConfig", "make_synthetic", "stimulus_design", "random_embedding", "spm_hrf", "ar1_noise",
           "expected_reliability", "association_graph", "pseudo_words", "parcel_labels", "normalize_word",
           "summary_line", "DEFAULT_SNR", "MEDIAL_WALL", "MTL_PREFIX", "SPACE_VERTICES", "FeatureFn"]
