"""F score ground truth: on a synthetic dataset whose MTL parcels carry the associates' features,
the true augmentation gives F > 0 there and ~0 elsewhere; a length-matched random control
gives no gain anywhere. Also the comparison outputs and the augmentation inputs' errors."""
import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from safetensors.numpy import load_file, save_file

from assocjax import augment, results
from assocjax.augment.oracle import synthetic_oracle, write_oracle
from assocjax.features import word_features
from assocjax.pipeline import (AugmentOptions, DataOptions, FeatureOptions, ModelOptions, ReportOptions, ScoreConfig,
                               compare, score)
from assocjax.pipeline.config import CeilingOptions
from conftest import GT_SPACE as SPACE, context_free_world

pytestmark = pytest.mark.slow  # module fixtures run whole pipelines (docs/testing.md)

N_VERT = 500


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A GPT-2 whose hidden state 0 is context-free (no position embedding), and a synthetic
    dataset planted from that hidden state: heard words everywhere, associates in MTL."""
    tmp = tmp_path_factory.mktemp("gt")
    model_dir, model, tok, root = context_free_world(tmp, n_stories=4, n_subjects=10, story_trs=250,
                                                     n_vertices=N_VERT)
    oracle = synthetic_oracle(root)
    written = write_oracle(root, tmp / "aug", seed=1, tokenizer=tok)   # story -> [oracle file, its random control]
    files = {"oracle": [w[0] for w in written.values()], "random": [w[1] for w in written.values()]}
    cfg = ScoreConfig(output=tmp / "out", cache_dir=tmp / "cache", progress=False,
                      model=ModelOptions(path=str(model_dir)), data=DataOptions(root=root, space=SPACE, pool_stories=True),
                      features=FeatureOptions(layers=(0,)), ceiling=CeilingOptions(n_splits=10),
                      report=ReportOptions(maps=False, figures=True),
                      augment=AugmentOptions(files=tuple(files["oracle"] + files["random"]), mode="timed", compare=True))
    return cfg, compare(cfg), files, (model, tok), oracle


def _rows(res, comparison, hemi="both"):
    """region -> the subject-level statistics (the headline unit) of one comparison at its one layer."""
    g = results.present_regions(res.gains.sel(comparison=comparison, unit=results.ALL), hemi).isel(layer=0)
    return {region: {k: g[k].values[i].item() for k in results.GAIN_VARS} | dict(kind=g["kind"].item())
            for i, region in enumerate(g["region"].values.tolist())}


def test_true_augmentation_gains_in_mtl_only(world):
    _, res, *_ = world
    rows = _rows(res, "oracle vs plain")
    mtl = rows["mtl"]
    assert mtl["kind"] == "F" and mtl["n_subjects"] == 6  # pooled stories: the subjects who heard all four
    assert mtl["change"] > 0.05 and mtl["change_ci_low"] > 0 and mtl["q"] < 0.05, mtl
    for region in ("language", "parietal", "frontal_gyrus", "visual_control"):
        r = rows[region]
        assert abs(r["change"]) < 0.2 * mtl["change"], (region, r["change"], mtl["change"])
        assert not (r["change_ci_low"] > 0 and r["significant"]), (region, r)


def test_random_control_gains_nowhere(world):
    _, res, *_ = world
    for hemi in ("both", "L", "R"):
        for region, r in _rows(res, "random-word vs plain", hemi=hemi).items():
            assert not (r["change_ci_low"] > 0 and r["significant"]), (region, hemi, r)
    # R(oracle) - R(random): the control absorbs the generic cost of a second feature block, so
    # what is left is the associative signal, in MTL only.
    contrast = _rows(res, "oracle vs random-word")
    assert contrast["mtl"]["kind"] == "contrast" and contrast["mtl"]["change_ci_low"] > 0.1
    for region in ("language", "parietal", "frontal_gyrus", "visual_control"):
        assert abs(contrast[region]["change"]) < 0.02 * contrast["mtl"]["change"], (region, contrast[region])


def test_outputs_and_reused_baseline(world):
    cfg, res, *_ = world
    out = cfg.output
    for name in ("gains.csv", "gains.json", "gains.png", "gains.txt", "compare.json"):
        assert (out / name).is_file(), name
    table = list(csv.DictReader(open(out / "gains.csv")))
    assert len(table) == len(res.rows)
    kinds = json.loads((out / "gains.json").read_text())["conditions"]
    assert kinds == {"oracle": "F", "random-word": "F"}
    subj = results.fit_units(res.gains.sel(comparison="oracle vs plain", region="mtl", hemi="both", layer=0),
                             results.SUBJECT)["change"]
    group = _rows(res, "oracle vs plain")["mtl"]
    assert subj.size == 6 and float(subj.mean()) == pytest.approx(group["change"])
    # A second comparison reuses every finished fit (the baseline included) from the cache.
    again = compare(dataclasses.replace(cfg, output=out.parent / "again"))
    for name, run in again.runs.items():
        assert run.computed_layers == () and run.reused_layers == (0,), name
    xr.testing.assert_identical(again.gains, res.gains)


def test_context_mode_at_a_context_free_layer_changes_nothing(world):
    cfg, _, files, (model, tok), oracle = world
    words, aug = oracle["storya"]
    plain = word_features(model, tok, words, 512, 256)[0]
    read, heard, _ = augment.augmented_words(words, aug)
    np.testing.assert_array_equal(word_features(model, tok, read, 512, 256)[0][heard >= 0], plain)


def test_augmentation_input_errors(world, tmp_path):
    cfg, _, files, _, oracle = world
    one = dataclasses.replace(cfg, output=tmp_path / "o", augment=AugmentOptions(files=tuple(files["oracle"][:1])))
    with pytest.raises(ValueError, match="no augmentation file for selected story"):
        score(one)
    both = dataclasses.replace(cfg, output=tmp_path / "o", augment=AugmentOptions(files=tuple(files["oracle"] + files["random"][:1])))
    with pytest.raises(ValueError, match="both augment story"):
        score(both)
    # made for another story: storya's augmentation relabelled as storyb
    words, aug = oracle["storya"]
    wrong = tmp_path / "wrong.json"
    data = json.loads(Path(files["oracle"][0]).read_text())
    data["story"] = "storyb"
    wrong.write_text(json.dumps(data))
    bad = dataclasses.replace(cfg, output=tmp_path / "o",
                              augment=AugmentOptions(files=(wrong,) + tuple(files["oracle"][1:])))
    with pytest.raises(ValueError, match="different story"):
        score(bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        score(dataclasses.replace(cfg, augment=AugmentOptions(files=(tmp_path / "missing.json",))))
    assert not (tmp_path / "o").exists()


def test_m_score_of_a_changed_model(world, tmp_path):
    cfg, *_ = world
    base_dir = Path(cfg.model.path)
    tuned = tmp_path / "tuned"
    tuned.mkdir()
    for f in base_dir.iterdir():
        (tuned / f.name).write_bytes(f.read_bytes())
    weights = load_file(str(tuned / "model.safetensors"))
    rng = np.random.default_rng(5)  # a "tuned" model: embeddings partly replaced by noise
    save_file({k: (0.6 * v + 0.4 * rng.standard_normal(v.shape).astype(v.dtype) * v.std() if "wte" in k else v)
               for k, v in weights.items()}, str(tuned / "model.safetensors"))
    res = compare(dataclasses.replace(cfg, output=tmp_path / "m", augment=AugmentOptions(),
                                      compare=dataclasses.replace(cfg.compare, models=(str(tuned),), names=("noisy",))))
    assert set(res.runs) == {"plain", "noisy"} and res.runs["plain"].computed_layers == ()  # baseline from the cache
    rows = _rows(res, "noisy vs plain")
    lang = rows["language"]
    assert lang["kind"] == "M" and lang["change"] < 0 and lang["change_ci_high"] < 0
    assert lang["relative"] == pytest.approx(lang["change"] / lang["base"])
    assert lang["relative_ci_low"] <= lang["relative"] <= lang["relative_ci_high"]
    vis = rows["visual_control"]  # no signal there: a ratio over ~0 is flagged, not reported
    assert vis["base_too_small"] and np.isnan(vis["relative"])
    with pytest.raises(ValueError, match="one distinct label"):
        compare(dataclasses.replace(cfg, compare=dataclasses.replace(cfg.compare, models=(str(tuned),), names=("a", "b"))))
