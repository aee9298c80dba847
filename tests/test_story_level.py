"""Stories as a level: the two-level bootstrap (stories, then subjects) against a brute-force
NumPy reference, its reduction to the subject bootstrap with one story, its false-positive rate
on seeded null worlds with story effects (against the subject-only sign-flip test's), and the
per-story / leave-one-story-out rows of the gains table."""
import dataclasses

import numpy as np
import pytest
import xarray as xr

from assocjax import results
from assocjax.pipeline import aggregate, story_level
from assocjax.stats import (bootstrap_means, sign_flip_pvalues, two_level_ci_p, two_level_draws,
                            two_level_means)


def _design(rng, n_subjects, n_stories, most=3):
    """(S, G) who heard what: each subject 1..most stories, each story >= 2 listeners (crossed, unbalanced)."""
    while True:
        heard = np.zeros((n_subjects, n_stories), bool)
        for s in range(n_subjects):
            heard[s, rng.choice(n_stories, rng.integers(1, most + 1), replace=False)] = True
        if (heard.sum(0) >= 2).all():
            return heard


def _reference(values_SXG, w_G, stories_IG, subjects_IS):
    """The resampled data sets built explicitly: every drawn subject copy's TR-weighted mean over
    the drawn story copies it heard, then the mean over the copies that heard one."""
    S, X, G = values_SXG.shape
    out = np.full((len(stories_IG), X), np.nan)
    for i in range(len(stories_IG)):
        story_copies = np.repeat(np.arange(G), stories_IG[i].astype(int))
        subject_copies = np.repeat(np.arange(S), subjects_IS[i].astype(int))
        for x in range(X):
            per_subject = []
            for s in subject_copies:
                v = values_SXG[s, x, story_copies]
                ok = np.isfinite(v)
                if ok.any():
                    per_subject.append(np.sum(v[ok] * w_G[story_copies][ok]) / np.sum(w_G[story_copies][ok]))
            if per_subject:
                out[i, x] = np.mean(per_subject)
    return out


def test_two_level_means_match_the_explicit_resampled_data_sets():
    rng = np.random.default_rng(0)
    heard = _design(rng, 9, 4)
    v = np.where(heard[:, None, :], rng.normal(size=(9, 3, 4)), np.nan)
    v[2, 1, :] = np.nan                       # a subject with no finite score in one column
    w = rng.integers(100, 300, 4).astype(float)
    stories_IG, subjects_IS = two_level_draws(9, 4, 40, seed=3)
    np.testing.assert_allclose(two_level_means(v, w, stories_IG, subjects_IS),
                               _reference(v, w, stories_IG, subjects_IS), rtol=1e-12, atol=1e-15)
    # all-ones draws give the estimate: the mean over subjects of their TR-weighted means (aggregate's)
    est = two_level_means(v, w, np.ones((1, 4)), np.ones((1, 9)))[0]
    np.testing.assert_allclose(est, np.nanmean(aggregate.weighted_mean(v, w), 0), rtol=1e-12)
    np.testing.assert_array_equal(two_level_draws(9, 4, 40, seed=3)[1], subjects_IS)   # seeded


def test_one_story_is_the_subject_bootstrap():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(11, 5, 1))
    v[3, 2, 0] = np.nan
    stories_IG, subjects_IS = two_level_draws(11, 1, 200, seed=0)
    assert (stories_IG == 1).all()
    idx_IS = np.stack([np.repeat(np.arange(11), c.astype(int)) for c in subjects_IS])   # the same cohorts as indices
    np.testing.assert_allclose(two_level_means(v, [120.0], stories_IG, subjects_IS), bootstrap_means(v[..., 0], idx_IS),
                               rtol=1e-12)


def _null_rates(n_stories, n_subjects, story_sd, subject_sd=1.0, noise_sd=1.0, mean=0.0, designs=10, per=100, seed=0):
    """(two-level rate, subject-only rate) of p < 0.05 over designs x per simulated data sets of paired
    changes d_sg = mean + story effect + subject effect + noise (each design's data sets are its columns)."""
    rng = np.random.default_rng(seed)
    hits_two = hits_sub = 0
    for d in range(designs):
        heard = _design(rng, n_subjects, n_stories)
        w = rng.integers(100, 300, n_stories).astype(float)
        x = (mean + rng.normal(0, story_sd, (1, per, n_stories)) + rng.normal(0, subject_sd, (n_subjects, per, 1))
             + rng.normal(0, noise_sd, (n_subjects, per, n_stories)))
        x = np.where(heard[:, None, :], x, np.nan)
        est = two_level_means(x, w, np.ones((1, n_stories)), np.ones((1, n_subjects)))[0]
        boot = two_level_means(x, w, *two_level_draws(n_subjects, n_stories, 1000, seed=d))
        _, _, p = two_level_ci_p(est, boot, np.full(per, n_stories))
        hits_two += int((p < 0.05).sum())
        hits_sub += int((sign_flip_pvalues(aggregate.weighted_mean(x, w), 2000, d) < 0.05).sum())
    return hits_two / (designs * per), hits_sub / (designs * per)


def test_two_level_test_keeps_its_false_positive_rate_where_stories_carry_variance():
    # 1000 null data sets (8 stories, 30 subjects hearing 1-3 each): story effects, no mean change
    two, sub = _null_rates(8, 30, story_sd=0.5)
    assert two <= 0.05      # measured 0.010
    assert sub > 0.08       # the subject-only test calls the stories' own effects real: measured 0.109


def test_two_level_rates_with_more_or_no_story_variance_and_its_power():
    two, sub = _null_rates(8, 30, story_sd=1.0, seed=1)
    assert two <= 0.05 and sub > 0.15   # measured 0.034 and 0.252
    # without story variance both hold their level (the two-level test conservatively)
    two, sub = _null_rates(8, 30, story_sd=0.0, seed=2)
    assert two <= 0.05 and sub <= 0.07  # measured 0.005 and 0.046
    # with 3 stories (the built-in world's) df = 2: valid, and conservative
    two, sub = _null_rates(3, 12, story_sd=0.5, seed=4)
    assert two <= 0.05 and sub > 0.08   # measured 0.002 and 0.112
    # and it still finds a mean change of 0.6 (story sd 0.5, subject and noise sd 1) in a good share
    assert _null_rates(8, 30, story_sd=0.5, mean=0.6, seed=3)[0] > 0.2   # measured 0.281 (subject-only: 0.652)


def test_two_level_ci_p_is_a_t_interval_on_the_bootstrap_spread():
    from scipy import stats

    boot = np.random.default_rng(2).normal(0.0, 0.1, (500, 2))
    lo, hi, p = two_level_ci_p(np.array([0.3, 0.0]), boot, np.array([4, 1]))
    sd = boot[:, 0].std(ddof=1)
    half = stats.t.ppf(0.975, 3) * sd
    assert lo[0] == pytest.approx(0.3 - half) and hi[0] == pytest.approx(0.3 + half)
    assert p[0] == pytest.approx(2 * stats.t.sf(0.3 / sd, 3))
    assert np.isnan([lo[1], hi[1], p[1]]).all()   # one story: nothing generalises to stories


# --- the gains table: two-level headline, per-story rows, leave-one-story-out ---

@dataclasses.dataclass
class Run:   # the fields of `ScoreResult` that the comparison reads
    scores: xr.Dataset
    stories: tuple


LISTENERS = {"sa": ("s1", "s2", "s3", "s4"), "sb": ("s3", "s4", "s5", "s6"), "sc": ("s1", "s5", "s6", "s2")}
TRS = {"sa": 100.0, "sb": 150.0, "sc": 120.0}


def _run(score_of):
    """A run over the three stories: score_of(story, subject) -> (all, mtl) scores of that subject's own fit."""
    grids = []
    for name, subs in LISTENERS.items():
        s = np.array([score_of(name, sub) for sub in subs])
        s = np.vstack([s.mean(0), s, s.mean(0)])
        nan = np.full_like(s, np.nan)
        ds = results.scores(2, subs, [("all", "both"), ("mtl", "both")], story=name, score=s, ci_low=nan, ci_high=nan,
                            ceiling=nan, normalized=nan, alpha=nan, n_vertices=np.ones(s.shape, int))
        grids.append(story_level.with_story_info(ds, TRS[name], subs))
    combined = aggregate.combine([(ds, TRS[n], LISTENERS[n]) for ds, n in zip(grids, LISTENERS)], 200, 0.95, 0, 0.0)
    return Run(combined, tuple(grids))


def _changes(base, new):
    from assocjax.pipeline.compare import changes
    from assocjax.pipeline.config import CompareOptions

    opts = CompareOptions(n_perm=1000, min_base=0.05)
    pair = lambda b, n, comp, kind: changes(b, n, comp, kind, opts, 200, 0.95, 0)  # noqa: E731
    return pair(base, new, "x vs plain", "F"), story_level.story_gains(pair, base, new, "x vs plain", "F")


def test_one_story_carrying_the_change_fails_the_leave_one_out_check():
    rng = np.random.default_rng(5)
    base_scores = {(st, s): rng.uniform(0.1, 0.2, 2) for st, subs in LISTENERS.items() for s in subs}
    base = _run(lambda st, s: base_scores[st, s])
    # mtl gains +0.1 in story sa only, loses 0.01 in the others; "all" gains 0.02 everywhere
    new = _run(lambda st, s: base_scores[st, s] + np.array([0.02, 0.1 if st == "sa" else -0.01]))
    g, per_story = _changes(base, new)
    head = g.sel(comparison="x vs plain", unit="all", layer=2, hemi="both")
    assert g["story"].item() == "all"
    mtl, whole = head.sel(region="mtl"), head.sel(region="all")
    assert mtl["change"] > 0 and not mtl["loso_sign_holds"]
    assert mtl["loso_min_change"] == pytest.approx(-0.01) and mtl["loso_max_change"] > mtl["change"]
    assert whole["loso_sign_holds"] and whole["loso_min_change"] == pytest.approx(0.02)
    # the leave-one-story-out columns exist only on the headline rows
    assert np.isnan(g.sel(unit=["s1", "mean"])["loso_min_change"]).all()
    # per-story rows: each story's listeners, subject-level statistics within it
    assert [d["story"].item() for d in per_story] == ["sa", "sb", "sc"]
    sa = per_story[0].sel(comparison="x vs plain", layer=2, hemi="both", region="mtl")
    assert sa["unit"].values.tolist() == ["all", *LISTENERS["sa"], "mean"]
    assert sa.sel(unit="all")["change"] == pytest.approx(0.1) and sa.sel(unit="all")["n_subjects"] == 4
    assert np.isnan(sa["loso_min_change"]).all()
    text = story_level.loso_text(base, new, g, "x vs plain")
    assert "1 of 2 region x layer rows change sign without some story" in text[0]
    assert "mtl" in text[1] and "without sa -0.0100" in text[1]
    rows = results.to_rows(g) + [r for d in per_story for r in results.to_rows(d)]
    assert {r["story"] for r in rows} == {"all", "sa", "sb", "sc"}
    assert list(rows[0])[-4:] == ["story", *results.STORY_GAIN_VARS]


def test_two_level_headline_keeps_the_estimates_and_widens_the_interval():
    rng = np.random.default_rng(6)
    base_scores = {(st, s): rng.uniform(0.1, 0.2, 2) for st, subs in LISTENERS.items() for s in subs}
    effect = {"sa": 0.05, "sb": -0.01, "sc": 0.02}   # stories differ: subject-only intervals are too narrow
    base = _run(lambda st, s: base_scores[st, s])
    new = _run(lambda st, s: base_scores[st, s] + effect[st] + rng.normal(0, 0.002, 2))
    g, _ = _changes(base, new)
    from assocjax.gains import paired_change

    subjects = results.fit_units(base.scores, results.SUBJECT)["unit"].values.tolist()
    b = base.scores["score"].sel(unit=subjects, layer=2, hemi="both").values
    n = new.scores["score"].sel(unit=subjects, layer=2, hemi="both").values
    one = paired_change(b, n, 200, 0.95, 0, 1000, 0.05)
    head = g.sel(comparison="x vs plain", unit="all", layer=2, hemi="both")
    np.testing.assert_array_equal(head["change"].values, one["change"])          # the same estimate
    np.testing.assert_array_equal(head["relative"].values, one["relative"])
    width = (head["change_ci_high"] - head["change_ci_low"]).values
    assert (width > 2 * (one["change_ci_high"] - one["change_ci_low"])).all()
    assert (head["p"].values > one["p"]).all()
