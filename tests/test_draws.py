"""Random controls as a distribution (`assocjax.pipeline.draws`): K seeded draws of a control
written by augment.py, grouped by their provenance in --augment.compare, and the association's
F against the draws' F (rank, draws p) combined with the subjects' sign-flip p."""
import csv
import json

import numpy as np
import pytest

from assocjax import augment, results
from assocjax.augment.random_control import control_draws, draw_path
from assocjax.pipeline import (AugmentOptions, CeilingOptions, FeatureOptions, ReportOptions, ScoreConfig,
                               SyntheticOptions, compare)
from assocjax.pipeline.assets import ensure_builtin
from assocjax.pipeline.draws import distribution, draw_groups, wanted_contrast
from assocjax.stats import bh_fdr, sign_flip_pvalues
from scripts_loader import script

TINY = SyntheticOptions(n_stories=2, n_subjects=10, story_trs=60, space="tinysphere", n_vertices=100)
# delays 1-4 TRs: each 60-TR story, fitted alone in 4 chunks, leaves room for a buffer of 12 TRs at most, and
# the default span's 2-6 TRs need 6 + 8 = 14
FEATURES = FeatureOptions(layers=(TINY.planted_layer,), delay_span=(1.5, 6.0))


def _reference(f, d):
    """Float64 loops: rank = 1 + draws at or above F (finite draws only), p = rank / (K + 1)."""
    out = {k: np.full(f.shape, np.nan) for k in ("mean", "sd", "rank", "p")}
    for j in range(f.size):
        ds = [x for x in d[:, j] if np.isfinite(x)]
        if ds:
            out["mean"][j] = sum(ds) / len(ds)
        if len(ds) >= 2:
            out["sd"][j] = np.sqrt(sum((x - out["mean"][j]) ** 2 for x in ds) / (len(ds) - 1))
        if ds and np.isfinite(f[j]):
            out["rank"][j] = 1 + sum(x >= f[j] for x in ds)
            out["p"][j] = out["rank"][j] / (len(ds) + 1)
    return out


def test_distribution_matches_a_loop_reference_with_ties_and_nans():
    rng = np.random.default_rng(0)
    d = np.round(rng.normal(size=(9, 12)), 1)   # rounded: ties between the association and draws
    f = d[0].copy()
    f[:3] = [5.0, -5.0, np.nan]                 # above every draw, below every draw, undefined
    d[:, 4] = np.nan                            # no draws
    d[2:, 5] = np.nan                           # two draws
    d[1:, 6] = np.nan                           # one draw: no sd
    got, want = distribution(f, d), _reference(f, d)
    for k in ("mean", "sd", "rank", "p"):
        np.testing.assert_allclose(got[f"draws_{k}"], want[k], rtol=1e-12, equal_nan=True, err_msg=k)
    assert got["draws_rank"][0] == 1 and got["draws_p"][0] == 1 / 10 and got["draws_rank"][1] == 10
    assert got["draws_n"].tolist()[4:7] == [0, 2, 1]


def test_draw_p_is_uniform_and_the_combined_test_holds_its_level_on_exchangeable_null_data():
    """The association is one more draw (exchangeable): P(draws_p <= 0.05) = 1/20 exactly at K = 19,
    and the combined p = max(sign-flip p, draws p) rejects at most as often."""
    rng = np.random.default_rng(1)
    n_worlds, k, n_sub = 4000, 19, 10
    f_WKS = rng.normal(size=(n_worlds, k + 1, n_sub)) + rng.normal(size=(n_worlds, k + 1, 1))  # a draw's own offset
    f_KW = f_WKS.mean(2).T
    p_draws = distribution(f_KW[0], f_KW[1:])["draws_p"]
    assert set(np.unique(p_draws * (k + 1)).tolist()) <= set(range(1, k + 2))
    rate = float(np.mean(p_draws <= 0.05))
    assert abs(rate - 0.05) < 3 * np.sqrt(0.05 * 0.95 / n_worlds), rate   # measured 0.051 (docs/experiments.md)
    d_SW = (f_WKS[:, 0] - f_WKS[:, 1:].mean(1)).T
    combined = np.maximum(sign_flip_pvalues(d_SW, 1024), p_draws)
    assert np.mean(combined <= 0.05) <= rate   # 0.051; the sign-flip p alone: 0.50 (one fixed draw per world)
    assert np.mean(sign_flip_pvalues(d_SW, 1024) <= 0.05) > 0.3


def test_one_draw_is_the_control_of_before_and_k_draws_are_seeds_seed_to_seed_plus_k(tmp_path):
    words = "the cat sat on the mat and then it slept".split()
    aug = augment.Augmentation("s", augment.story_hash(words), len(words),
                               (augment.Insertion(1, "dog bark", "word", "model"), augment.Insertion(5, "rug", "word", "model")))
    pool = "one two three four five six seven eight nine ten".split()
    make = lambda seed: augment.random_match(aug, words, pool, seed)  # noqa: E731
    assert control_draws(make, 4, 1) == [make(4)]
    assert "draw" not in make(4).provenance
    many = control_draws(make, 4, 3)
    assert [c.insertions for c in many] == [make(s).insertions for s in (4, 5, 6)]
    assert [c.provenance["seed"] for c in many] == [4, 5, 6]
    assert [(c.provenance["control"], c.provenance["draw"], c.provenance["draws"]) for c in many] == \
        [("random-word", d, 3) for d in range(3)]
    assert [c.provenance["condition"] for c in many] == ["random-word-draw00", "random-word-draw01", "random-word-draw02"]
    shuffled = control_draws(lambda seed: augment.shuffled_control(aug, words, seed), 0, 2)
    assert [c.provenance["condition"] for c in shuffled] == ["shuffled-word-draw00", "shuffled-word-draw01"]
    assert draw_path(tmp_path / "a.json", 2, 1) == tmp_path / "a.json"
    assert draw_path(tmp_path / "a.json", 7, 120) == tmp_path / "a-draw007.json"
    with pytest.raises(ValueError, match="number of draws"):
        control_draws(make, 0, 0)

    for d, c in enumerate(many):
        augment.save(c, tmp_path / f"r{d}.json", words)
    augment.save(aug, tmp_path / "assoc.json", words)
    groups = draw_groups([tmp_path / "assoc.json"] + [tmp_path / f"r{d}.json" for d in (2, 0, 1)])
    assert groups == {"random-word": ["random-word-draw00", "random-word-draw01", "random-word-draw02"]}
    assert not wanted_contrast("model-word", "random-word-draw01", groups)
    assert wanted_contrast("model-word", "random-word", groups)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """Experiment 1 on a tiny built-in world with 4 draws of each control."""
    tmp = tmp_path_factory.mktemp("draws")
    world = ensure_builtin(TINY, tmp / "cache", progress=False)
    with script("augment") as cli:
        assert cli.main(["oracle", "--out-dir", str(tmp / "aug"), "--data-root", str(world.root), "--draws", "4",
                         "--kinds", "other-story", "shuffled"]) == 0
    return tmp, world


@pytest.mark.slow  # the module's tiny world and its comparison with 8 draws: about 30 s on 2 cores
def test_augment_cli_writes_seeded_draws_of_both_kinds(experiment, tmp_path):
    tmp, world = experiment
    align = sorted((world.root / "stimuli" / "gentle").glob("*/align.csv"))
    oracle = tmp / "aug" / f"{align[0].parent.name}_oracle.json"
    with script("augment") as cli:
        assert cli.main(["random-match", "--augmentation", str(oracle), "--align", str(align[0]), "--pool-align",
                         str(align[1]), "--seed", "3", "--draws", "3", "--out", str(tmp_path / "r.json")]) == 0
        assert cli.main(["random-match", "--kind", "shuffled", "--augmentation", str(oracle), "--align", str(align[0]),
                         "--draws", "2", "--out", str(tmp_path / "s.json")]) == 0
        assert cli.main(["random-match", "--augmentation", str(oracle), "--align", str(align[0]), "--pool-align",
                         str(align[1]), "--draws", "0", "--out", str(tmp_path / "z.json")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r-draw00.json", "r-draw01.json", "r-draw02.json",
                                                          "s-draw00.json", "s-draw01.json"]
    draws = [json.loads((tmp_path / f"r-draw0{d}.json").read_text())["provenance"] for d in range(3)]
    assert [(p["seed"], p["draw"], p["draws"], p["control"]) for p in draws] == [(3 + d, d, 3, "random-word")
                                                                                    for d in range(3)]
    assert (tmp / "aug" / f"{align[0].parent.name}_shuffled-draw03.json").is_file()


@pytest.mark.slow
def test_compare_reports_the_association_against_the_draws(experiment):
    tmp, _ = experiment
    files = tuple(sorted((tmp / "aug").glob("*.json")))
    cfg = ScoreConfig(output=tmp / "out", cache_dir=tmp / "cache", synthetic=TINY, progress=False,
                      features=FEATURES, ceiling=CeilingOptions(n_splits=10),
                      report=ReportOptions(maps=False, figures=False, n_boot=200),
                      augment=AugmentOptions(files=files, compare=True))
    res = compare(cfg)
    comps = res.gains["comparison"].values.tolist()
    assert "oracle vs random-word draws" in comps and "random-word-draw03 vs plain" in comps
    contrasts = [c for c, k in zip(comps, res.gains["kind"].values) if k == "contrast"]
    assert contrasts == [] and len(comps) == 1 + 8 + 2   # oracle, each draw vs plain; oracle vs each control
    with (tmp / "out" / "gains.csv").open() as f:
        rows = list(csv.DictReader(f))
    cols = tuple(rows[0])   # the draws' columns appended together, after the old ones (the story's after them)
    at = cols.index(results.DRAW_VARS[0])
    assert cols == results.GAIN_COLUMNS and cols[at:at + len(results.DRAW_VARS)] == results.DRAW_VARS
    assert cols.index("base_too_small") < at < cols.index("story")

    g = res.gains.sel(comparison="oracle vs random-word draws", unit=results.ALL, layer=TINY.planted_layer)
    f_oracle = res.gains["change"].sel(comparison="oracle vs plain", unit=results.ALL, layer=TINY.planted_layer)
    f_draws = np.stack([res.gains["change"].sel(comparison=f"random-word-draw0{d} vs plain", unit=results.ALL,
                                                  layer=TINY.planted_layer).values for d in range(4)])
    ok = g["present"].values
    np.testing.assert_array_equal(g["association_change"].values[ok], f_oracle.values[ok])
    np.testing.assert_allclose(g["draws_mean"].values[ok], f_draws.mean(0)[ok], rtol=1e-12)
    np.testing.assert_allclose(g["draws_sd"].values[ok], f_draws.std(0, ddof=1)[ok], rtol=1e-12)
    assert (g["draws_n"].values[ok] == 4).all()
    # the planted world: the oracle above every draw in MTL, a rank p of 1/5
    mtl = g.sel(region="mtl", hemi="both")
    assert mtl["draws_rank"].item() == 1 and mtl["draws_p"].item() == pytest.approx(0.2)
    # the combined p is the larger of the two; q is BH over the keys; the subjects' p is kept
    p, sp, dp = (g[k].values[ok] for k in ("p", "subject_p", "draws_p"))
    np.testing.assert_array_equal(p, np.maximum(sp, dp))
    np.testing.assert_array_equal(g["q"].values[ok], bh_fdr(p))
    # the change is each subject's R(oracle) - the draws' mean R, as compare's paired statistics give it
    subj = res.gains.sel(comparison="oracle vs random-word draws", layer=TINY.planted_layer)
    subj = results.fit_units(subj, results.SUBJECT)
    r = {c: res.runs[c].scores["score"].sel(layer=TINY.planted_layer, unit=subj["unit"].values)
         for c in ["oracle"] + [f"random-word-draw0{d}" for d in range(4)]}
    want = r["oracle"] - sum(r[f"random-word-draw0{d}"] for d in range(4)) / 4
    np.testing.assert_allclose(subj["change"].transpose(*want.dims).values, want.values, rtol=1e-9, atol=1e-12)
    text = (tmp / "out" / "gains.txt").read_text()
    assert "oracle vs random-word draws: the association's F against 4 random draws" in text
    assert "oracle vs shuffled-word draws" in text


@pytest.mark.slow
def test_by_pos_compares_each_class_with_its_own_classs_draws(experiment):
    """--augment.by-pos with draws: each draw of the other-story control is cut to the nouns'
    lengths, the cut draws form the distribution "random-word:NOUN", and "oracle:NOUN" is
    compared with it (and the whole oracle with the whole draws), never across classes."""
    tmp, world = experiment
    tagged = tmp / "tagged"
    with script("augment") as cli:
        for story in sorted(world.manifest["tasks"]):
            assert cli.main(["tag", str(tmp / "aug" / f"{story}_oracle.json"), "--tagger", "synthetic",
                             "--align", str(world.root / "stimuli" / "gentle" / story / "align.csv"),
                             "--out", str(tagged / f"{story}_oracle.json")]) == 0
    files = tuple(sorted(tagged.glob("*.json")) + sorted((tmp / "aug").glob("*_random-draw*.json")))
    cfg = ScoreConfig(output=tmp / "out-pos", cache_dir=tmp / "cache", synthetic=TINY, progress=False,
                      features=FEATURES, ceiling=CeilingOptions(n_splits=10),
                      report=ReportOptions(maps=False, figures=False, n_boot=100),
                      augment=AugmentOptions(files=files, compare=True, by_pos=True, pos_classes=("NOUN",)))
    res = compare(cfg)
    kinds = dict(zip(res.gains["comparison"].values.tolist(), res.gains["kind"].values.tolist()))
    assert sorted(c for c, k in kinds.items() if k == "draws") == ["oracle vs random-word draws",
                                                                   "oracle:NOUN vs random-word:NOUN draws"]
    g = res.gains.sel(comparison="oracle:NOUN vs random-word:NOUN draws", unit=results.ALL, layer=TINY.planted_layer)
    f_noun = res.gains["change"].sel(comparison="oracle:NOUN vs plain", unit=results.ALL, layer=TINY.planted_layer)
    f_draws = np.stack([res.gains["change"].sel(comparison=f"random-word-draw0{d}:NOUN vs plain", unit=results.ALL,
                                                  layer=TINY.planted_layer).values for d in range(4)])
    ok = g["present"].values
    assert (g["draws_n"].values[ok] == 4).all()
    np.testing.assert_array_equal(g["association_change"].values[ok], f_noun.values[ok])
    np.testing.assert_allclose(g["draws_mean"].values[ok], f_draws.mean(0)[ok], rtol=1e-12)
    assert not [c for c, k in kinds.items() if k == "contrast" and "draw" in c]


@pytest.mark.slow
def test_random_match_draws_are_written_all_or_none(experiment, tmp_path, monkeypatch):
    """A failure while writing the third of four draws (e.g. a full disk) leaves none of them."""
    from assocjax.augment import format as fmt

    tmp, world = experiment
    align = sorted((world.root / "stimuli" / "gentle").glob("*/align.csv"))
    oracle = tmp / "aug" / f"{align[0].parent.name}_oracle.json"
    save, calls = fmt.save, []

    def failing_save(aug, path, words=None):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device", str(path))
        return save(aug, path, words)

    monkeypatch.setattr(fmt, "save", failing_save)
    with script("augment") as cli, pytest.raises(OSError, match="No space left"):
        cli.main(["random-match", "--augmentation", str(oracle), "--align", str(align[0]), "--pool-align",
                  str(align[1]), "--draws", "4", "--out", str(tmp_path / "r.json")])
    assert len(calls) == 3 and list(tmp_path.iterdir()) == []
