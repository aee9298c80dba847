"""The built-in world has associative memory in the sense the paper tests: its MTL parcels were
planted from the model's features of each story read with its oracle augmentation (score.py's
default context mode), every other parcel from the plain story. docs/experiments.md's experiment 1
(`augment.py oracle`, then `score.py --augment.files ... --augment.compare`) must then show the
paper's effect against that ground truth: F > 0 in MTL (q < 0.05), <= ~0 elsewhere, no gain
from the length-matched random control, oracle - random > 0 in MTL."""
import json
import shutil

import numpy as np
import pytest

from scripts_loader import script

from assocjax import augment, results
from assocjax.augment.oracle import write_oracle
from assocjax.data.synthetic.model import read_with_associates
from assocjax.features import word_features
from assocjax.models import load_pretrained
from assocjax.pipeline import (AugmentOptions, CeilingOptions, FeatureOptions, ReportOptions,
                               ScoreConfig, SyntheticOptions, compare)
from assocjax.pipeline.assets import ensure_builtin, planting
from assocjax.pipeline.design import story_features
from assocjax.pipeline.inputs import select
from assocjax.stimuli import read_gentle_csv

pytestmark = pytest.mark.slow  # module fixtures run whole pipelines (docs/testing.md)

# The default's stories and subjects (12: an exact sign-flip p can reach 2 / 2^12), fewer TRs
# and vertices; only the planted layer is scored.
SMALL = SyntheticOptions(story_trs=120, space="tinysphere", n_vertices=300)
OTHERS = ("language", "frontal_gyrus", "parietal", "visual_control")


@pytest.fixture(scope="module")
def world(tmp_path_factory, small_builtin):
    tmp = tmp_path_factory.mktemp("world")
    assert small_builtin[0] == SMALL
    b = ensure_builtin(SMALL, small_builtin[1](tmp / "cache"), progress=False)  # the session's copy
    with script("augment") as cli:
        assert cli.main(["oracle", "--out-dir", str(tmp / "aug"), "--data-root", str(b.root)]) == 0
    files = sorted((tmp / "aug").glob("*.json"))
    cfg = ScoreConfig(output=tmp / "out", cache_dir=tmp / "cache", synthetic=SMALL, progress=False,
                      features=FeatureOptions(layers=(SMALL.planted_layer,)), ceiling=CeilingOptions(n_splits=10),
                      report=ReportOptions(maps=False, figures=False),
                      augment=AugmentOptions(files=tuple(files), compare=True))
    return b, files, cfg, compare(cfg)


def _rows(res, comparison):
    """region -> the subject-level statistics (the headline unit) of one comparison at its one layer."""
    g = results.present_regions(res.gains.sel(comparison=comparison, unit=results.ALL), "both").isel(layer=0)
    return {region: {k: g[k].values[i].item() for k in results.GAIN_VARS} | dict(layer=g["layer"].item())
            for i, region in enumerate(g["region"].values.tolist())}


def test_manifest_records_the_planted_oracle(world):
    b, files, *_ = world
    rec = b.manifest["oracle"]
    mtl = [p for p, v in b.manifest["parcels"].items() if v["mtl"]]
    assert rec["parcels"] == mtl == ["mtl_hippocampus", "mtl_parahippocampal"]
    assert rec["layer"] == SMALL.planted_layer and rec["augment_mode"] == "context"
    assert rec["share"] == b.manifest["assoc_share"] == SMALL.assoc_share
    assert b.manifest["assoc_mode"]["mode"] == "context"
    stories = sorted(b.manifest["tasks"])
    assert sorted(rec["ids"]) == sorted(rec["files"]) == stories
    for story in stories:  # written at build time, and augment.py oracle gives the very same files
        built = augment.load(b.oracle.parent / rec["files"][story])
        assert built.id == rec["ids"][story] == augment.load(files[0].parent / f"{story}_oracle.json").id
    assert {augment.load(f).provenance.get("condition", "random") for f in files} == {"oracle", "random"}


def test_planted_features_are_score_py_oracle_features(world):
    """What the generator read for the MTL parcels is what score.py's oracle condition computes."""
    b, _, cfg, _ = world
    model, tok = load_pretrained(b.model)
    plant = planting(SMALL)
    assoc = json.loads((b.root / "associations.json").read_text())
    sel = select(cfg, b.root, str(b.model), b.space)
    story = sel.stories[0]
    aug = augment.load(b.oracle.parent / b.manifest["oracle"]["files"][story.name])
    piped, _ = story_features(model, tok, story, sel, cfg.features, None, aug)
    read, at = read_with_associates(list(story.transcript.words), assoc)
    planted = word_features(model, tok, read, plant["context"], plant["stride"], plant["pooling"])[plant["layer"]][at]
    np.testing.assert_array_equal(piped[plant["layer"]], planted)
    plain = word_features(model, tok, list(story.transcript.words), plant["context"], plant["stride"])[plant["layer"]]
    assert not np.allclose(plain, planted)  # the associations change what the model hears


def test_experiment_1_recovers_the_planted_effect(world):
    *_, res = world
    oracle, rand, contrast = (_rows(res, c) for c in ("oracle vs plain", "random-word vs plain",
                                                      "oracle vs random-word"))
    mtl = oracle["mtl"]
    assert mtl["n_subjects"] == SMALL.n_subjects and mtl["layer"] == SMALL.planted_layer
    assert mtl["change"] > 0.01 and mtl["change_ci_low"] > 0 and mtl["q"] < 0.05, mtl
    for region in OTHERS:  # the plain story is the truth there: reading associations cannot help
        assert oracle[region]["change"] < 0.2 * mtl["change"], (region, oracle[region])
    # The random control reads neither the associations nor the plain story alone: a loss in MTL, and
    # without each story too; its two-level CI over 3 stories (t on 2 df) reaches +0.013, below the oracle's gain
    assert rand["mtl"]["change"] < 0 and rand["mtl"]["change_ci_high"] < mtl["change"], rand["mtl"]
    at = dict(comparison="random-word vs plain", unit=results.ALL, region="mtl", hemi="both")
    assert float(res.gains["loso_max_change"].sel(at).item()) < 0
    for region, r in rand.items():
        assert not (r["significant"] and r["change"] > 0), (region, r)
    c = contrast["mtl"]
    # two-level statistics over its 3 stories (t with 2 df): the contrast's own p < 0.05 (0.015) and
    # its sign holds without each story, in each story's own rows too; BH over the comparison's 18
    # rows lifts its q to 0.12 (docs/experiments.md: stories as a level)
    assert c["change"] > 0.01 and c["change_ci_low"] > 0 and c["p"] < 0.05, c
    assert c["change"] > max(contrast[r]["change"] for r in OTHERS)
    at = dict(comparison="oracle vs random-word", unit=results.ALL, region="mtl", hemi="both")
    assert bool(res.gains["loso_sign_holds"].sel(at).item()) and res.gains["loso_min_change"].sel(at).item() > 0
    per_story = [g for g in res.story_gains if "oracle vs random-word" in g["comparison"].values]
    assert [g["story"].item() for g in per_story] == ["storya", "storyb", "storyc"]
    assert all(float(g["change"].sel(at).item()) > 0.01 for g in per_story)



def test_the_printed_summary_leads_with_the_mtl_gain(world):
    """gains.txt lists significant gains before the (larger) losses elsewhere."""
    _, _, cfg, _ = world
    lines = (cfg.output / "gains.txt").read_text().splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("oracle vs plain [F]"))
    assert lines[head + 1].split()[:3] == ["mtl", "layer", f"{SMALL.planted_layer}:"], lines[head:head + 3]
    assert lines[head + 1].split()[3].startswith("+")


def test_a_changed_dataset_no_longer_gives_the_recorded_oracle(world, tmp_path):
    b, *_ = world
    copy = tmp_path / "copy"
    shutil.copytree(b.root / "stimuli", copy / "stimuli")
    shutil.copy(b.root / "manifest.json", copy / "manifest.json")
    assoc = json.loads((b.root / "associations.json").read_text())
    word = read_gentle_csv(copy / "stimuli/gentle/storya/align.csv").words[0].lower()
    assoc[word] = assoc[word][::-1]
    (copy / "associations.json").write_text(json.dumps(assoc))
    with pytest.raises(ValueError, match="records oracle augmentations"):
        write_oracle(copy, tmp_path / "aug")
    assert not (tmp_path / "aug").exists()
