"""Cross-fitted tuning (no overlap between tuning text and scored stories): story folds are
seeded partitions that keep retellings together; fold k's model trains on the other folds'
records only; a killed cross-fit resumes, keeping finished fold models; score.py refuses a
tuned model whose run.json lists a scored story (override recorded in run.json) and scores a
cross-fit folder story by story with the model that held the story out, and its M equals the
per-fold runs combined by hand."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from assocjax.augment.oracle import write_oracle
from assocjax.cli import run_cli
from assocjax.data import Story
from assocjax.data.synthetic import SyntheticConfig, make_synthetic, pseudo_words
from assocjax.features import word_features
from assocjax.models import load_pretrained
from assocjax.pipeline import (DataOptions, FeatureOptions, ModelOptions, ReportOptions, ScoreConfig, SyntheticOptions,
                               compare, main as score_main, score, tuned)
from assocjax.pipeline.assets import save_random_gpt2, save_tokenizer
from assocjax.pipeline.config import CeilingOptions, CompareOptions, RidgeOptions
from assocjax.tune import crossfit, dataset
from assocjax.tune.checkpoint import data_hash
from assocjax.tune.crossfit import split_fold, story_folds
from assocjax.tune.lora import LoraConfig
from assocjax.tune.train import TrainConfig
from test_tune_train import _script, configure

SPACE, VOCAB = "tiny", 60
# LoRA on GPT-2's fused qkv, 3 steps, a checkpoint every step (the kill test resumes from step 1).
TUNE = configure(TrainConfig(), method="lora", lora=LoraConfig(rank=4, alpha=8.0, targets=("qkv",)), lr=2e-2,
                 warmup_steps=0, total_steps=3, batch_size=2, max_len=48, padding="max_len", eval_every=0, save_every=1,
                 progress=False)


# -- folds and the overlap rule (no files) ----------------------------------------------------
def test_story_folds_are_seeded_partitions_keeping_retellings_together():
    names = ["pieman", "piemanpni", "tunnel", "lucy", "milkywayoriginal", "milkywayvodka", "milkywaysynonyms", "bronx",
             "black"]
    folds = story_folds(names, 3, seed=0)
    assert sorted(s for f in folds for s in f) == sorted(names)
    for group in ({"pieman", "piemanpni"}, {"milkywayoriginal", "milkywayvodka", "milkywaysynonyms"}):
        assert sum(group <= set(f) for f in folds) == 1, folds  # a retelling never scores its own story
    assert story_folds(reversed(names), 3, seed=0) == folds  # a function of the set of stories and the seed
    assert any(story_folds(names, 3, seed=s) != folds for s in range(1, 6))
    assert sorted(len(f) for f in story_folds([f"s{i}" for i in range(7)], 3, seed=0)) == [2, 2, 3]
    with pytest.raises(ValueError, match="at least 2 folds"):
        story_folds(names, 1)
    with pytest.raises(ValueError, match=r"9 stories \(6 once stories telling the same story are joined.*at most 6"):
        story_folds(names, 7)
    train, val = split_fold([dict(story=s, id=s) for s in names], folds[0])
    assert {r["story"] for r in val} == set(folds[0]) and not {r["story"] for r in train} & set(folds[0])


def _story(name, alignment=None):
    return Story(name, 0.0, 60.0, 0, 40, alignment or name, 0.0, alignment or name, "events")


STORIES = {s.name: s for s in (_story("slumlord", "slumlordreach"), _story("reach", "slumlordreach"), _story("pieman"),
                               _story("tunnel"))}


def test_overlap_rule_names_model_run_json_and_stories():
    a, run = Path("runs/a/model"), Path("runs/a/run.json")
    one = tuned.Tuned(a, (a,), None, {a: (run, dict(train_stories=["slumlordreach", "piemanpni"]))})
    by_story, record = tuned.assign(one, {"tunnel": STORIES["tunnel"]})
    assert by_story == {"tunnel": a} and record["overlap"] == {}
    with pytest.raises(ValueError) as err:  # an alignment of two stories, and a retelling, both count
        tuned.assign(one, STORIES)
    msg = str(err.value)
    assert msg.startswith(f"{a} was tuned on stories it would be scored on: pieman, reach, slumlord ({run} lists")
    assert "--compare.allow-overlap" in msg and "\n" not in msg
    _, record = tuned.assign(one, STORIES, allow_overlap=True)
    assert record["overlap"] == {"slumlord": ["slumlordreach"], "reach": ["slumlordreach"], "pieman": ["piemanpni"]}
    assert record["allow_overlap"] and record["train_stories"] == {str(a): ["slumlordreach", "piemanpni"]}
    legacy = tuned.Tuned(a, (a,), None, {a: (run, dict(steps=3))})  # a run.json from before stories were recorded
    with pytest.raises(ValueError, match=f"{run} does not list the stories {a} was tuned on"):
        tuned.assign(legacy, {"tunnel": STORIES["tunnel"]})
    assert tuned.assign(legacy, {"tunnel": STORIES["tunnel"]}, allow_overlap=True)[1]["unlisted"] == [str(run)]
    untuned = tuned.Tuned(a, (a,), None, {})  # no finetune run.json: nothing to check
    assert tuned.assign(untuned, STORIES)[1]["overlap"] == {}
    f0, f1 = Path("cf/fold-0/model"), Path("cf/fold-1/model")
    runs = {f0: (f0.parent / "run.json", dict(train_stories=["pieman", "tunnel"])),
            f1: (f1.parent / "run.json", dict(train_stories=["slumlordreach"]))}
    cf = tuned.Tuned(Path("cf"), (f0, f1), None, runs, (("slumlordreach",), ("pieman", "tunnel")))
    assert tuned.assign(cf, STORIES)[0] == {"slumlord": f0, "reach": f0, "pieman": f1, "tunnel": f1}
    with pytest.raises(ValueError, match="story 'lucy' is in none of its folds"):
        tuned.assign(cf, {"lucy": _story("lucy")})
    runs[f0] = (runs[f0][0], dict(train_stories=["pieman", "slumlordreach"]))  # a fold model that saw its own fold
    with pytest.raises(ValueError, match=f"{f0} was tuned on stories it would be scored on: reach, slumlord"):
        tuned.assign(cf, STORIES)


# -- a synthetic world, its Association dataset and a cross-fit of two folds ---------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny random GPT-2 reading a synthetic dataset planted from its hidden state 1 (four
    stories, every one heard by several subjects), the oracle Association dataset of those
    stories (make_association.py) and finetune.py --cross-fit 2 on it."""
    tmp = tmp_path_factory.mktemp("crossfit")
    vocab = pseudo_words(VOCAB, np.random.default_rng([0, 0]))  # the generator's vocabulary stream
    base = tmp / "model"
    save_tokenizer(vocab, base)
    save_random_gpt2(SyntheticOptions(n_layers=1, hidden=8, n_heads=2, positions=128), VOCAB + 2, base)
    model, tok = load_pretrained(base)
    root = tmp / "ds"
    make_synthetic(SyntheticConfig(out=root, n_stories=4, n_subjects=4, story_trs=100, vocab_size=VOCAB, space=SPACE,
                                   n_vertices=30, seed=0),
                   features=lambda words: word_features(model, tok, list(words), 128, 64)[1])
    write_oracle(root, tmp / "aug", controls=False)
    make = _script("make_association")
    make_args = make.Args(stories=(root,), augmentations=(tmp / "aug",), out=tmp / "assoc", n=24, val_fraction=0.2,
                          passage_words=(4, 8))
    make.main(make_args)
    records = dataset.read_jsonl(tmp / "assoc" / "train.jsonl") + dataset.read_jsonl(tmp / "assoc" / "val.jsonl")
    tune = _script("finetune")
    args = tune.Args(model=base, train=tmp / "assoc" / "train.jsonl", val=tmp / "assoc" / "val.jsonl",
                     out=tmp / "cf", tune=TUNE, cross_fit=2)
    tune.main(args)
    return dict(tmp=tmp, base=base, root=root, records=records, cf=tmp / "cf", args=args, make_args=make_args)


def _plan(world):
    return json.loads((world["cf"] / "cross_fit.json").read_text())


def _run(folder):
    return json.loads((folder / "run.json").read_text())


@pytest.mark.slow
def test_fold_models_train_only_on_the_other_folds(world):
    records, plan = world["records"], _plan(world)
    stories = sorted({r["story"] for r in records})
    assert len(stories) == 4 and plan["k"] == 2 and plan["seed"] == 0
    held = [f["held_out"] for f in plan["folds"]]
    assert held == story_folds(stories, 2, 0) and sorted(s for h in held for s in h) == stories
    for fold in plan["folds"]:
        run = _run(world["cf"] / fold["folder"])
        mine = set(fold["held_out"])
        assert not set(run["train_stories"]) & mine and set(run["train_stories"]) | mine == set(stories)
        assert run["val_stories"] == fold["held_out"]  # validated on the stories it never trains on
        expected = [r for r in records if r["story"] not in mine]
        assert run["n_train"] == len(expected) and run["train_data_hash"] == data_hash(expected)
        assert run["steps"] == TUNE.schedule.total_steps and run["cross_fit"]["held_out_stories"] == fold["held_out"]
    # The continue control, built the same way: the same folds, and per fold the same training passages.
    make = _script("make_association")
    make.main(dataclasses.replace(world["make_args"], task="continue", out=world["tmp"] / "ctrl"))
    control = dataset.read_jsonl(world["tmp"] / "ctrl" / "train.jsonl") + \
        dataset.read_jsonl(world["tmp"] / "ctrl" / "val.jsonl")
    assert story_folds({r["story"] for r in control}, 2, 0) == held
    for h in held:
        ours, theirs = split_fold(records, h)[0], split_fold(control, h)[0]
        assert sorted(r["input"] for r in ours) == sorted(r["input"] for r in theirs)
        assert {r["task"] for r in theirs} == {"continue"}


def _weights(folder):
    return load_file(str(folder / "model" / "model.safetensors"))


@pytest.mark.slow
def test_killed_cross_fit_resumes_keeping_finished_folds(world, tmp_path, monkeypatch):
    """Killed in fold 1 after its first step: the rerun keeps fold 0's model as it is, resumes
    fold 1 from its checkpoint, and ends with the models of the uninterrupted run."""
    real, calls = crossfit.train, []

    def killed(cfg, folder, train_records, val_records):
        calls.append(sorted({r["story"] for r in val_records}))
        if len(calls) == 2:
            real(cfg, folder, train_records, val_records, stop_after=1)
            raise KeyboardInterrupt  # the kill
        return real(cfg, folder, train_records, val_records)

    monkeypatch.setattr(crossfit, "train", killed)
    tune = _script("finetune")
    args = dataclasses.replace(world["args"], out=tmp_path / "cf")
    with pytest.raises(KeyboardInterrupt):
        tune.main(args)
    held = [f["held_out"] for f in _plan(world)["folds"]]
    assert calls == held and not (tmp_path / "cf" / "fold-1" / "run.json").exists()
    first = (tmp_path / "cf" / "fold-0" / "model" / "model.safetensors").stat().st_mtime_ns
    calls.clear()
    tune.main(args)
    assert calls == [held[1]]  # fold 0 was not trained again
    assert (tmp_path / "cf" / "fold-0" / "model" / "model.safetensors").stat().st_mtime_ns == first
    assert _run(tmp_path / "cf" / "fold-1")["resumed_from"] == 1
    for fold in ("fold-0", "fold-1"):
        got, want = _weights(tmp_path / "cf" / fold), _weights(world["cf"] / fold)
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-7, err_msg=f"{fold} {k}")
    calls.clear()
    tune.main(args)  # all finished: nothing trained
    assert calls == []


@pytest.mark.slow
def test_a_cross_fit_folder_of_another_run_is_refused(world):
    tune = _script("finetune")
    with pytest.raises(ValueError, match=r"cross_fit.json holds another cross-fit \(seed: 0 vs now 3"):
        tune.main(dataclasses.replace(world["args"], fold_seed=3))
    with pytest.raises(ValueError, match=r"fold-0/run.json: a finished fold model of another run"):
        tune.main(dataclasses.replace(world["args"], tune=configure(TUNE, lr=1e-3)))


def test_a_fold_finished_with_the_flat_options_is_refused_naming_the_folder(tmp_path):
    """run.json of a fold finished before the options were grouped: its identity cannot be
    compared with this run's, so the fold is neither kept nor silently retrained."""
    folder = tmp_path / "fold-0"
    folder.mkdir()
    flat = dict(config=dict(method="lora", lr=2e-4), cross_fit=dict(identity="x"))  # as main's finetune.py wrote
    (folder / "run.json").write_text(json.dumps(flat))
    with pytest.raises(ValueError, match=rf"^{folder / 'run.json'}: a fold model finished by an older assocjax \(flat "
                                         rf"training options.*delete {folder} to train it again"):
        crossfit.finished(folder, "x")


# -- scoring ------------------------------------------------------------------------------------
def _config(world, out: Path, cache: Path | None = None, **compare) -> ScoreConfig:
    return ScoreConfig(output=out, cache_dir=cache or world["tmp"] / "cache", progress=False,
                       model=ModelOptions(path=str(world["base"])), data=DataOptions(root=world["root"], space=SPACE),
                       features=FeatureOptions(layers=(1,), context=128), ceiling=CeilingOptions(n_splits=5),
                       report=ReportOptions(maps=False, figures=False, n_boot=50),
                       ridge=RidgeOptions(alphas=(1.0, 100.0, 1e4), inner_folds=2, buffer_trs=4),
                       compare=CompareOptions(**compare))


@pytest.mark.slow
def test_scoring_a_model_on_its_training_stories_is_refused_in_one_line(world, tmp_path, capsys):
    fold0 = world["cf"] / "fold-0" / "model"
    trained = _run(fold0.parent)["train_stories"]
    argv = ["--output", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--model.path",
            str(world["base"]), "--data.root", str(world["root"]), "--data.space", SPACE,
            "--compare.models", str(fold0)]
    assert run_cli(lambda cfg: score_main(cfg) and None, ScoreConfig, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {fold0} was tuned on stories it would be scored on: {', '.join(trained)} "
                          f"({fold0.parent / 'run.json'} lists train_stories") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()  # refused before the baseline was scored
    pooled = dataclasses.replace(_config(world, tmp_path / "pooled"), model=ModelOptions(path=str(world["cf"])),
                                 data=DataOptions(root=world["root"], space=SPACE, pool_stories=True))
    with pytest.raises(ValueError, match=r"are fitted together \(--data.pool-stories\) but scored by different models"):
        score(pooled)


@pytest.fixture(scope="module")
def scored(world):
    """score.py --compare.models CF: the baseline and the cross-fitted condition."""
    return compare(_config(world, world["tmp"] / "m", models=(str(world["cf"]),)))


@pytest.fixture(scope="module")
def per_fold(world, scored):
    """Each fold model scoring only its held-out stories, in runs of their own (own cache)."""
    return {tuple(f["held_out"]): score(dataclasses.replace(
        _config(world, world["tmp"] / f"alone-{f['folder']}", world["tmp"] / "cache-alone"),
        model=ModelOptions(path=str(world["cf"] / f["folder"] / "model")),
        data=DataOptions(root=world["root"], space=SPACE, stories=tuple(f["held_out"]))))
        for f in _plan(world)["folds"]}


def _story_table(rows):
    return {(r["story"], r["layer"], r["fit"], r["subject"], r["region"], r["hemi"]): r["score"] for r in rows}


@pytest.mark.slow
def test_every_story_is_scored_by_the_model_that_held_it_out(world, scored, per_fold):
    run = scored.runs["cf"]
    record = json.loads((run.output / "run.json").read_text())["models"]
    assert record["cross_fit"] and record["overlap"] == {} and not record["allow_overlap"]
    assert sorted(record["models"]) == sorted({r["story"] for r in world["records"]})
    for story, model in record["models"].items():
        run_json = _run(Path(model).parent)
        assert story in run_json["cross_fit"]["held_out_stories"] and story not in run_json["train_stories"]
    together = _story_table(run.story_rows)
    for held, alone in per_fold.items():  # the rows are those of the fold model, not of another model
        assert {Path(m).parent.name for s, m in record["models"].items() if s in held} == \
            {Path(alone.model_path).parent.name}
        mine = _story_table(alone.story_rows)
        assert mine and {k[0] for k in mine} == set(held)
        for k, v in mine.items():
            np.testing.assert_allclose(together[k], v, rtol=1e-6, atol=1e-7, err_msg=str(k))
    base = _story_table(scored.runs["plain"].story_rows)
    assert any(abs(together[k] - base[k]) > 1e-4 for k in base)  # the tuned models changed the scores


def _subject_means(runs) -> dict:
    """(subject, layer, region, hemi) -> the subject's TR-weighted mean over its stories, from
    per-story subject rows of several runs (a direct computation, without pipeline.aggregate)."""
    acc = {}
    for res in runs:
        weights = {s: v["weight"] for s, v in json.loads((res.output / "run.json").read_text())["stories"].items()}
        for r in res.story_rows:
            if r["fit"] == "subject":
                acc.setdefault((r["subject"], r["layer"], r["region"], r["hemi"]), []).append(
                    (r["score"], weights[r["story"]]))
    return {k: sum(s * w for s, w in v) / sum(w for _, w in v) for k, v in acc.items()}


@pytest.mark.slow
def test_m_over_folds_equals_the_per_fold_runs_combined(scored, per_fold):
    base = _subject_means([scored.runs["plain"]])
    new = _subject_means(per_fold.values())
    assert base.keys() == new.keys() and len({k[0] for k in base}) >= 3
    rows = [r for r in scored.rows if r["comparison"] == "cf vs plain" and r["story"] == "all"]  # the combined rows
    assert {r["kind"] for r in rows} == {"M"}
    checked = 0
    for r in rows:
        key = (r["layer"], r["region"], r["hemi"])
        subjects = sorted(s for s, *k in base if tuple(k) == key)
        if r["fit"] == "subject":
            np.testing.assert_allclose(r["change"], new[(r["subject"],) + key] - base[(r["subject"],) + key],
                                       rtol=1e-9, atol=1e-12)
        elif r["fit"] == "subjects":
            b = np.array([base[(s,) + key] for s in subjects])
            n = np.array([new[(s,) + key] for s in subjects])
            np.testing.assert_allclose([r["base"], r["new"], r["change"]], [b.mean(), n.mean(), (n - b).mean()],
                                       rtol=1e-9, atol=1e-12)
            if b.mean() >= 0.05:
                np.testing.assert_allclose(r["relative"], (n.mean() - b.mean()) / b.mean(), rtol=1e-9)
                checked += 1
    assert checked >= 1  # M itself, not only the change, was compared somewhere


@pytest.mark.slow
def test_allow_overlap_scores_and_records_it(world, scored, tmp_path):
    fold0 = world["cf"] / "fold-0" / "model"
    trained = _run(fold0.parent)["train_stories"]
    res = compare(_config(world, tmp_path / "m", models=(str(fold0),), names=("seen",), allow_overlap=True))
    assert res.runs["plain"].computed_layers == ()  # the baseline of `scored`, from the cache
    run = json.loads((res.runs["seen"].output / "run.json").read_text())
    assert run["config"]["compare"]["allow_overlap"] and run["models"]["allow_overlap"]
    assert sorted(run["models"]["overlap"]) == trained
    assert any(n.startswith("--compare.allow-overlap: scored on stories its tuning saw") for n in run["notes"])
