"""`--features.nuisance`: the low-level regressors (word rate, onsets, phoneme rate), the baseline
they score alone, and the layer's variance beyond them (`--features.nuisance-band`)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from assocjax import results
from assocjax.features import nuisance as regs
from assocjax.features import tr_features
from assocjax.pipeline import FeatureOptions, ReportOptions, ScoreConfig, nuisance, partition, score
from assocjax.pipeline.config import check_options
from assocjax.pipeline.design import cv_groups
from assocjax.pipeline.inputs import StoryDesign
from assocjax.ridge import DEFAULT_ALPHAS, banded, nested_folds, prepare_nested, solve_nested
from assocjax.stimuli import Transcript, read_gentle_csv, read_gentle_json

TR = 1.5
# word: (start, end, phone durations); None: not aligned (its onset is interpolated by word index)
WORDS = [("once", 0.20, 0.50, (0.1, 0.1, 0.1)), ("upon", 0.60, 1.10, (0.2, 0.1, 0.2)), ("a", None, None, ()),
         ("time", 1.60, 2.00, (0.15, 0.25)), ("there", 3.05, 3.40, (0.1, 0.1, 0.15)), ("lived", 4.50, 4.90, (0.2, 0.2)),
         ("far", 9.40, 9.80, (0.4,))]  # "far" starts past the scan's 6 TRs (9 s) with an audio onset of 0.5 s
AUDIO_ONSET, N_TRS = 0.5, 6


def _json(tmp: Path) -> Path:
    entries = []
    for word, start, end, phones in WORDS:
        if start is None:
            entries.append(dict(word=word, case="not-found-in-audio"))
        else:
            entries.append(dict(word=word, alignedWord=word, case="success", start=start, end=end,
                                phones=[dict(phone=f"p{i}", duration=d) for i, d in enumerate(phones)]))
    path = tmp / "align.json"
    path.write_text(json.dumps(dict(transcript=" ".join(w[0] for w in WORDS), words=entries)))
    return path


def _lanczos(t, window=3):
    """float64 Huth-lab Lanczos kernel (1 at 0, 0 beyond the window)."""
    t = np.asarray(t, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = window * np.sin(np.pi * t) * np.sin(np.pi * t / window) / (np.pi * t) ** 2
    return np.where(t == 0, 1.0, np.where(np.abs(t) > window, 0.0, v))


def test_phone_onsets_from_gentle_json(tmp_path):
    """A phone's onset is its word's start plus the durations of the phones before it; untimed words have none."""
    t = read_gentle_json(_json(tmp_path), transcript=False)
    want = sorted(s + o for _, s, _, ph in WORDS if s is not None for o in np.concatenate([[0], np.cumsum(ph)[:-1]]))
    np.testing.assert_allclose(t.phone_onsets, want, rtol=0, atol=1e-12)


def test_regressors_match_a_numpy_reference(tmp_path):
    """word_rate and phoneme_rate count onsets per TR [k tr, (k + 1) tr) in scan seconds (an
    untimed word at its interpolated onset, words past the scan dropped); onsets are the word
    impulses through the features' Lanczos kernel at the TR midpoints; then the FIR delays."""
    t = read_gentle_json(_json(tmp_path), transcript=False)
    onsets = np.array([s for _, s, _, _ in WORDS], dtype=object)
    onsets[2] = (0.60 + 1.60) / 2  # interpolated by word index between its timed neighbours
    onsets = onsets.astype(np.float64) + AUDIO_ONSET
    phones = np.asarray(t.phone_onsets) + AUDIO_ONSET
    count = lambda times: np.bincount(np.floor(times[times < N_TRS * TR] / TR).astype(int), minlength=N_TRS)  # noqa: E731
    tr_mid = (np.arange(N_TRS) + 0.5) * TR
    inside = onsets < N_TRS * TR
    lanczos = _lanczos((tr_mid[:, None] - onsets[None, inside]) / TR).sum(1)
    want = np.stack([count(onsets), lanczos, count(phones)], 1)
    got = regs.regressors(t, AUDIO_ONSET, N_TRS, TR, ("word_rate", "onsets", "phoneme_rate"), "lanczos")
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    assert got[:, 0].tolist() == [2, 2, 1, 1, 0, 0]   # the hand count: 0.7, 1.1 | 1.6, 2.1 | 3.55 | 5.0
    delayed = regs.nuisance_design(t, AUDIO_ONSET, N_TRS, TR, ("word_rate", "onsets"), "lanczos", (1, 3))
    shift = lambda x, d: np.concatenate([np.zeros((d, x.shape[1])), x[:-d]])  # noqa: E731
    np.testing.assert_allclose(delayed, np.concatenate([shift(want[:, :2], 1), shift(want[:, :2], 3)], 1), atol=2e-6)
    summed = regs.regressors(t, AUDIO_ONSET, N_TRS, TR, ("word_rate", "onsets"), "sum")
    np.testing.assert_array_equal(summed[:, 0], summed[:, 1])   # with "sum" the impulses are the word rate


def test_phoneme_rate_needs_phones_and_names_are_checked(tmp_path):
    path = tmp_path / "align.csv"
    path.write_text("once,once,0.2,0.5\nupon,upon,0.6,1.1\n")
    t = read_gentle_csv(path, transcript=False)
    with pytest.raises(ValueError, match="story 'pieman'.*carries no phones"):
        regs.regressors(t, 0.0, 4, TR, ("word_rate", "phoneme_rate"), story="pieman")
    for bad in (("loudness",), ("onsets", "onsets")):
        with pytest.raises(ValueError, match="--features.nuisance"):
            check_options(ScoreConfig(features=FeatureOptions(nuisance=bad)))
    with pytest.raises(ValueError, match="--features.nuisance-band needs"):
        check_options(ScoreConfig(features=FeatureOptions(nuisance=(), nuisance_band=True)))


def _word_rate_world(n_trs=240, n_targets=48, seed=0):
    """A story whose BOLD follows its word rate only (Poisson words, bursts and pauses), and a
    'layer' whose word features have a common mean (as language-model features have): its
    Lanczos-summed design carries the word rate too."""
    rng = np.random.default_rng(seed)
    rate = np.repeat(rng.choice([0.5, 2.0, 4.0], n_trs // 8), 8)  # words/s, changing every 8 TRs
    onsets = np.sort(np.concatenate([k * TR + rng.uniform(0, TR, rng.poisson(r * TR)) for k, r in enumerate(rate)]))
    t = Transcript(tuple(f"w{i}" for i in range(onsets.size)), onsets, onsets + 0.2)
    story = StoryDesign("wordy", t, onsets + 0.1, 0.0, 0, n_trs, TR)
    sel = type("Sel", (), dict(stories=(story,)))()
    opts = FeatureOptions(nuisance=("word_rate", "onsets"))
    z = nuisance.design(sel, opts)
    wr = regs.regressors(t, 0.0, n_trs, TR, ("word_rate",))[:, 0]
    drive = np.convolve(wr, [0, 0.3, 1.0, 0.6, 0.2])[:n_trs]  # the response to the word rate, 1-4 TRs later
    drive = (drive - drive.mean()) / drive.std()
    y = drive[:, None] * rng.uniform(0.3, 1.0, n_targets) + rng.standard_normal((n_trs, n_targets))
    feats = rng.standard_normal((1, onsets.size, 12)) + 1.0
    x = tr_features(feats, onsets + 0.1, n_trs, TR, layers=[0], delays=(1, 2, 3, 4))[0]
    groups, _ = cv_groups([n_trs], None)
    runs = np.zeros(n_trs, np.int32)
    folds = nested_folds(groups, None, 3, runs_N=runs, buffer=12)
    return x.astype(np.float32), z, y.astype(np.float32), folds, runs


def test_word_rate_world_baseline_scores_and_the_band_soaks_it_up():
    """BOLD driven by word rate only: the baseline (the regressors alone, the pipeline's nested
    ridge) predicts it; the layer alone does too (its features' mean carries the word rate: the
    confound the baseline is for), but beyond the regressors' band it adds ~nothing. Measured
    (means over the targets): baseline r 0.478; R^2 regressors alone 0.279, layer alone 0.259,
    the layer's unique variance -0.003, the regressors' 0.017."""
    x, z, y, folds, runs = _word_rate_world()
    base, _ = prepare_nested(z, folds, DEFAULT_ALPHAS, target_runs_N=runs)
    r_base = np.asarray(solve_nested(base, y).r_folds_KT).mean(0)
    part = banded.partition(np.concatenate([x, z], 1), banded.band_columns([x.shape[1], z.shape[1]]), folds,
                            DEFAULT_ALPHAS, partition.gammas(), y, target_runs_N=runs)
    comps = partition.components(dict(r2_both=np.asarray(part.r2_full_KT)[:, None],
                                      r2_without=np.asarray(part.r2_without_BKT)[:, :, None]), nuisance.BANDS)
    unique_layer, r2_nuis = comps["unique_layer"].mean(), comps["r2_nuisance"].mean()
    print(f"baseline r {r_base.mean():.3f}, R2 nuisance {r2_nuis:.4f}, layer alone "
          f"{comps['r2_layer'].mean():.4f}, unique layer {unique_layer:.4f}, unique nuisance "
          f"{comps['unique_nuisance'].mean():.4f}")
    assert r_base.mean() > 0.3 and (r_base > 0).all()
    assert r2_nuis > 0.15
    assert comps["r2_layer"].mean() > 0.5 * r2_nuis   # the confound: the layer alone scores on word rate
    assert abs(unique_layer) < 0.1 * r2_nuis   # the band soaks it up


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, small_builtin):
    """The default synthetic world, smaller (as tests/pinned_runs.py; built once for the session),
    at layers 0 and the planted one, with the baseline and the band."""
    tmp = tmp_path_factory.mktemp("nuisance")
    small, fill = small_builtin
    cfg = ScoreConfig(output=tmp / "out", cache_dir=fill(tmp / "cache"), synthetic=small, progress=False,
                      report=ReportOptions(maps=False, figures=False),
                      features=FeatureOptions(layers=(0, small.planted_layer), nuisance_band=True))
    res = score(cfg)
    read = lambda name: list(csv.DictReader(open(tmp / "out" / name)))  # noqa: E731
    return small, res, read("nuisance.csv"), read("nuisance_partition.csv"), json.loads((tmp / "out" / "run.json").read_text())


@pytest.mark.slow
def test_default_world_planted_layer_above_the_baseline(small_run):
    """The baseline's own rows (layer "nuisance", scores.csv's columns then the model's CV best
    beside it), in run.json and summary; the planted layer is above it over all vertices and in
    the language region (where it is planted strongest). Beyond the regressors' band (subject-mean
    fit: the per-subject fits' held-out R^2 are all below 0 at 114 TRs a story, the regressors'
    alone too), the planted layer keeps unique variance where it is planted and none where it is
    not, and layer 0 none. Measured (3-9 s delays): CV best 0.076 vs baseline 0.045, above by
    0.031 [0.019, 0.044], p 0.009 (two-level, 3 stories; visual control p 0.53); unique R^2 of
    layer 2 beyond the regressors: all vertices 0.043, language 0.173, visual control -0.026;
    layer 0: all -0.049, language -0.051."""
    small, res, rows, band, record = small_run
    assert list(rows[0]) == list(results.SCORE_COLUMNS) + list(nuisance.COMPARE_COLUMNS)
    assert {r["layer"] for r in rows} == {"nuisance"}
    head = [r for r in rows if r["story"] == "all" and r["subject"] == "all" and r["hemi"] == "both"]
    by_region = {r["region"]: r for r in head}
    for region in ("all", "language"):
        r = by_region[region]
        assert int(r["model_cv_layer"]) == small.planted_layer
        assert float(r["above_baseline"]) > 0, r
        # the margin's test (paired over subjects, two-level over the stories): clearly above the baseline
        assert float(r["above_ci_low"]) > 0 and float(r["above_p"]) < 0.05, r
    for r in head:
        assert float(r["above_ci_low"]) <= float(r["above_baseline"]) <= float(r["above_ci_high"]), r
    # nothing is planted in the visual control parcels: the layer is not above the baseline there
    vis = by_region["visual_control"]
    assert float(vis["above_ci_low"]) < 0 < float(vis["above_ci_high"]) and float(vis["above_p"]) > 0.05, vis
    subject_rows = [r for r in rows if r["subject"] not in ("all", "mean")]
    assert subject_rows and all(r["above_p"] == "" or np.isnan(float(r["above_p"])) for r in subject_rows)
    s = res.summary["nuisance"]
    assert s["regressors"] == ["word_rate", "onsets"] and s["above_baseline"] > 0
    assert s["score"] > 0 and s["ci"][0] > 0   # the synthetic features carry word rate (Lanczos sums): a real baseline
    assert record["summary"]["nuisance"]["above_baseline"] == pytest.approx(s["above_baseline"])
    assert s["above_ci"][0] > 0 and s["above_p"] < 0.05, s
    assert record["config"]["features"]["nuisance"] == ["word_rate", "onsets"]
    assert float(by_region["all"]["score"]) == pytest.approx(s["score"])
    unique = {(int(r["layer"]), r["region"]): float(r["value"]) for r in band
              if r["component"] == "unique_layer" and r["hemi"] == "both" and r["unit"] == "mean"}
    planted = small.planted_layer
    assert unique[planted, "language"] > 0.05 and unique[planted, "all"] > 0, unique
    assert unique[planted, "visual_control"] < 0.01 and unique[0, "language"] < 0.01, unique
