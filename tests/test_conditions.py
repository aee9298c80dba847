"""Listener conditions as fit groups (`pipeline.conditions`), on a synthetic dataset made from the
real Narratives metadata of prettymouth (its listeners told the affair or the paranoia back-story):
each condition is a fit group with exactly its listeners in participants.tsv, --data.pool-conditions
gives one group, a condition's rows equal a run of that condition's listeners alone, and the
statistics over stories take a story's conditions as one story."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from assocjax.data.synthetic import SyntheticConfig, make_synthetic
from assocjax.pipeline import DataOptions, FeatureOptions, ModelOptions, ReportOptions, ScoreConfig, score
from assocjax.pipeline import aggregate, conditions, story_level
from assocjax.pipeline.inputs import select
from conftest import SHARED
from test_stories import gpt2_with_real_tokenizer

NARRATIVES = SHARED / "narratives"
needs_shared = pytest.mark.skipif(not NARRATIVES.is_dir(), reason="shared Narratives metadata not available")


def _listed(task: str) -> dict[str, set[str]]:
    """condition -> the subjects participants.tsv lists for `task` in it, less the scans code/scan_exclude.json
    excludes (counted here from the files, not through the library)."""
    exclude = json.loads((NARRATIVES / "code" / "scan_exclude.json").read_text()).get(task, {})
    out: dict[str, set[str]] = {}
    with (NARRATIVES / "participants.tsv").open(newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            tasks, conds = row["task"].split(","), row["condition"].split(",")
            if task in tasks and not exclude.get(row["participant_id"]):
                out.setdefault(conds[tasks.index(task)], set()).add(row["participant_id"])
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("conditions")
    make_synthetic(SyntheticConfig(out=tmp / "ds", from_metadata=NARRATIVES, stories=("prettymouth",), n_subjects=40,
                                   space="tinysphere", n_vertices=24, feature_dim=4))
    return tmp, gpt2_with_real_tokenizer(tmp / "model")


def config(tmp: Path, model: Path, name: str, **data) -> ScoreConfig:
    return ScoreConfig(output=tmp / name, cache_dir=tmp / "cache", progress=False,
                       data=DataOptions(root=tmp / "ds", space="tinysphere", **data), model=ModelOptions(path=str(model)),
                       features=FeatureOptions(context=256, layers=(1,)), report=ReportOptions(figures=False, n_boot=200))


@needs_shared
def test_prettymouth_conditions_are_fit_groups(world):
    tmp, model = world
    listed = _listed("prettymouth")
    assert {c: len(s) for c, s in listed.items()} == {"affair": 19, "paranoia": 19}
    sel = select(config(tmp, model, "x"), tmp / "ds", str(model), "tinysphere")
    groups = sel.groups()
    assert [g.name for g in groups] == ["prettymouth.affair", "prettymouth.paranoia"]
    assert [g.story_name for g in groups] == ["prettymouth"] * 2
    for g in groups:
        assert set(g.subjects) == listed[g.condition]
        assert set(g.listeners["prettymouth"]) == listed[g.condition]
        assert {sub for sub, _ in g.scans} == listed[g.condition]
        assert g.groups() == [g]   # a condition's group is one fit group (bold.prepare relies on it)
    pooled = select(config(tmp, model, "x", pool_conditions=True), tmp / "ds", str(model), "tinysphere").groups()
    assert [(g.name, set(g.subjects)) for g in pooled] == [("prettymouth", listed["affair"] | listed["paranoia"])]


@needs_shared
@pytest.mark.slow
def test_a_condition_scores_as_its_listeners_alone(world):
    """A condition's group is fitted and ceilinged on its listeners only: its rows equal those of a
    run of them alone; the combined headline of the one story keeps the subject-level CI."""
    tmp, model = world
    listed = _listed("prettymouth")
    few = {c: sorted(s)[:3] for c, s in listed.items()}
    both = score(config(tmp, model, "both", subjects=few["affair"] + few["paranoia"]))
    names = {str(ds["story"].item()) for ds in both.stories}
    assert names == {"prettymouth.affair", "prettymouth.paranoia"} and str(both.scores["story"].item()) == "all"
    assert not story_level.several(both)
    run = json.loads((both.output / "run.json").read_text())
    assert {n: (s["story"], s["condition"], set(s["subjects"])) for n, s in run["stories"].items()} == {
        f"prettymouth.{c}": ("prettymouth", c, set(subs)) for c, subs in few.items()}
    alone = score(config(tmp, model, "affair", subjects=few["affair"]))
    key = lambda r: (r["layer"], r["fit"], r["subject"], r["region"], r["hemi"])  # noqa: E731
    got = {key(r): r for r in both.story_rows if r["story"] == "prettymouth.affair"}
    want = {key(r): r for r in alone.rows}
    assert got.keys() == want.keys()
    for k in want:
        for col in ("score", "ceiling", "ci_low", "ci_high"):
            np.testing.assert_array_equal(got[k][col], want[k][col], err_msg=f"{k} {col}")
    head = both.scores.sel(unit="all", layer=1, region="all", hemi="both")
    assert np.isfinite(float(head["ci_low"])) and np.isfinite(float(head["ci_high"]))   # one story: subject CI
    pooled = score(config(tmp, model, "pooled", subjects=few["affair"] + few["paranoia"], pool_conditions=True))
    assert [str(ds["story"].item()) for ds in pooled.stories] == ["prettymouth"]


def test_a_storys_conditions_merge_into_one_column():
    """by_story: each subject's value from the one condition group of the story it is in; other
    stories untouched; a subject in two conditions of a story is an error."""
    nan = np.nan
    v = np.array([[[1.0, nan, 5.0]], [[nan, 2.0, nan]], [[3.0, nan, 6.0]]])     # (S=3, X=1, G=3)
    got, w, names = conditions.by_story(v, [10.0, 10.0, 7.0], ["pm", "pm", "other"])
    np.testing.assert_array_equal(got, [[[1.0, 5.0]], [[2.0, nan]], [[3.0, 6.0]]])
    assert list(w) == [10.0, 7.0] and names == ["pm", "other"]
    same, _, _ = conditions.by_story(v, [1.0, 2.0, 3.0], ["a", "b", "c"])
    assert same is v or np.array_equal(same, v, equal_nan=True)
    assert conditions.several_stories(v[..., :2], [1.0, 1.0], ["pm", "pm"]) is None
    with pytest.raises(ValueError, match="story 'pm': a subject has scores in several of its condition groups"):
        conditions.by_story(np.ones((2, 1, 2)), [1.0, 1.0], ["pm", "pm"])


def test_two_condition_groups_of_one_story_combine_with_the_subject_bootstrap():
    """Combined over two conditions of one story, the headline's CI is the subject bootstrap of the
    listeners' scores (as one group's), not a two-level CI over 2 'stories' (t with 1 df)."""
    from assocjax import results
    from assocjax.stats import bootstrap_indices, bootstrap_mean_ci

    rng = np.random.default_rng(0)
    grids, subs = [], [("a1", "a2", "a3", "a4"), ("p1", "p2", "p3")]
    for name, s in zip(("pm.affair", "pm.paranoia"), subs):
        own = rng.normal(0.1, 0.05, (len(s), 1))
        score_ = np.concatenate([own.mean(0, keepdims=True), own, own.mean(0, keepdims=True)])
        grid = dict(score=score_, ci_low=np.full_like(score_, np.nan), ci_high=np.full_like(score_, np.nan),
                    ceiling=np.full_like(score_, 0.5), alpha=np.ones_like(score_), n_vertices=np.ones_like(score_, int))
        grid["normalized"] = score_ / 0.5
        grids.append(results.scores(1, list(s), [("all", "both")], name, **grid))
    parts = [(ds, 100.0, s) for ds, s in zip(grids, subs)]
    got = aggregate.combine(parts, 500, 0.95, 0, 0.0, ["pm", "pm"]).sel(unit="all", layer=1, region="all", hemi="both")
    every = np.concatenate([g.sel(unit=list(s))["score"].values.reshape(-1) for g, s in zip(grids, subs)])
    order = sorted(subs[0] + subs[1])
    scores_SX = np.array([every[list(subs[0] + subs[1]).index(u)] for u in order])[:, None]
    mean, lo, hi, _ = bootstrap_mean_ci(scores_SX, bootstrap_indices(len(order), 500, 0), 0.95)
    np.testing.assert_allclose([float(got["score"]), float(got["ci_low"]), float(got["ci_high"])],
                               [mean[0], lo[0], hi[0]], rtol=1e-12)
    unmerged = aggregate.combine(parts, 500, 0.95, 0, 0.0).sel(unit="all", layer=1, region="all", hemi="both")
    assert float(unmerged["ci_high"]) - float(unmerged["ci_low"]) > 3 * (hi[0] - lo[0])   # t(1 df) over 2 "stories"


def test_null_false_positives_with_a_storys_conditions_merged():
    """Null data (true mean 0; story effects sd 0.1, subject 0.05, noise 0.05; 24 subjects each hearing
    one condition of a split story "a" and one of 3 others): the two-level test of the headline at
    alpha 0.05 rejects 4.5 % of 400 data sets with the conditions merged into their story (`by_story`),
    10.0 % with each condition counted as a story of its own (they share the story's effect)."""
    from assocjax.stats import two_level_mean_ci

    rng = np.random.default_rng(0)
    story_G, n_sets, n_sub = ["a", "a", "b", "c", "d"], 400, 24
    rejected = {"merged": 0, "as stories": 0}
    for k in range(n_sets):
        mu_G = rng.normal(0, 0.1, 4)[[0, 0, 1, 2, 3]]
        u_S = rng.normal(0, 0.05, n_sub)
        v = np.full((n_sub, 1, 5), np.nan)
        for i in range(n_sub):
            for g in (i % 2, rng.choice([2, 3, 4])):
                v[i, 0, g] = mu_G[g] + u_S[i] + rng.normal(0, 0.05)
        est = np.array([np.nanmean(np.nanmean(v[:, 0], axis=1))])
        merged, w, _ = conditions.by_story(v, np.ones(5), story_G)
        rejected["merged"] += two_level_mean_ci(merged, w, est, 200, 0.95, k)[2][0] < 0.05
        rejected["as stories"] += two_level_mean_ci(v, np.ones(5), est, 200, 0.95, k)[2][0] < 0.05
    assert rejected == {"merged": 18, "as stories": 40}



@needs_shared
def test_counterbalanced_task_orders_are_one_group(world, tmp_path):
    """shapessocial's listeners came in six task orders (participants.tsv `condition`): counterbalancing,
    not a manipulation of the story, so they stay one fit group (conditions.COUNTERBALANCED)."""
    assert len(_listed("shapessocial")) == 6
    make_synthetic(SyntheticConfig(out=tmp_path / "ds", from_metadata=NARRATIVES, stories=("shapessocial",),
                                   n_subjects=20, space="tinysphere", n_vertices=8, feature_dim=4))
    model = world[1]
    cfg = ScoreConfig(output=tmp_path / "x", cache_dir=tmp_path / "cache", progress=False,
                      data=DataOptions(root=tmp_path / "ds", space="tinysphere"), model=ModelOptions(path=str(model)))
    sel = select(cfg, tmp_path / "ds", str(model), "tinysphere")
    assert len({sel.scans[k][0].condition for k in sel.scans}) > 1   # several orders among the chosen listeners
    assert [g.name for g in sel.groups()] == ["shapessocial"]


def test_story_weights_count_a_split_story_once():
    """The subject-mean fit and the maps weigh a story split into two conditions as one story."""
    w = conditions.story_weights([300, 300, 200], ["prettymouth", "prettymouth", "pieman"])
    np.testing.assert_array_equal(w, [150, 150, 200])
    np.testing.assert_array_equal(conditions.story_weights([3, 5], ["a", "b"]), [3, 5])
