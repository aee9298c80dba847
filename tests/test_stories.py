"""Several stories in one run, on a synthetic dataset made from the real Narratives metadata
(three real stories, their first real listeners, a small vertex count): each story fitted with
its own listeners equals its own single-story run; the combined rows are each subject's
TR-weighted mean over its stories, averaged over subjects; a killed run resumes; a sweep of two
models x two stories through submitit's local executor aggregates to the same tables."""
import dataclasses
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from assocjax.data.synthetic import SyntheticConfig, make_synthetic
from assocjax.pipeline import DataOptions, FeatureOptions, ModelOptions, ReportOptions, ScoreConfig, score
from assocjax.pipeline.sweep import SweepConfig, run as run_sweep
from conftest import SHARED, save_tiny

REPO = Path(__file__).resolve().parents[1]
NARRATIVES = SHARED / "narratives"
STORIES = ("piemanpni", "bronx", "shapessocial")  # the first two share listeners, the third has others
pytestmark = [pytest.mark.skipif(not NARRATIVES.is_dir(), reason="shared Narratives metadata not available"),
              pytest.mark.slow]


def gpt2_with_real_tokenizer(folder: Path, seed: int = 0) -> Path:
    """A tiny random GPT-2 that reads real English through the real GPT-2 BPE (../shared)."""
    import torch

    torch.manual_seed(seed)
    save_tiny("gpt2", folder, n_embd=16, n_layer=2, n_head=2, vocab_size=50257, n_positions=512)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(SHARED / "tokenizers" / "gpt2" / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stories")
    make_synthetic(SyntheticConfig(out=tmp / "ds", from_metadata=NARRATIVES, stories=STORIES, n_subjects=3,
                                   space="tinysphere", n_vertices=60, feature_dim=4))
    return tmp, gpt2_with_real_tokenizer(tmp / "model")


def config(tmp: Path, model: Path, name: str, cache: str | None = None, **data) -> ScoreConfig:
    return ScoreConfig(output=tmp / name, cache_dir=tmp / (cache or f"cache-{name}"), progress=False,
                       data=DataOptions(root=tmp / "ds", space="tinysphere", **data), model=ModelOptions(path=str(model)),
                       features=FeatureOptions(context=256), report=ReportOptions(figures=False, n_boot=200))


@pytest.fixture(scope="module")
def together(world):
    tmp, model = world
    return score(config(tmp, model, "all", tasks=("all",)))


def _table(rows, story):
    return {(r["layer"], r["fit"], r["subject"], r["region"], r["hemi"]): r for r in rows if r["story"] == story}


def test_each_story_equals_its_own_run(world, together):
    tmp, model = world
    listeners = json.loads((together.output / "run.json").read_text())["selection"]["listeners"]
    assert set(listeners) == set(STORIES) and set(listeners["piemanpni"]) & set(listeners["bronx"])
    assert not set(listeners["shapessocial"]) & set(listeners["bronx"])
    for story in STORIES:
        alone = score(config(tmp, model, f"alone-{story}", stories=(story,)))   # its own cache: refitted
        assert alone.computed_layers == alone.layers
        got, want = _table(together.story_rows, story), _table(alone.rows, story)
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_allclose(got[k]["score"], want[k]["score"], rtol=1e-6, atol=1e-7, err_msg=str(k))
            np.testing.assert_allclose(got[k]["ceiling"], want[k]["ceiling"], rtol=1e-6, atol=1e-7, equal_nan=True)


def test_combined_rows_are_tr_weighted_subject_means(world, together):
    tmp, _ = world
    run = json.loads((together.output / "run.json").read_text())
    weight = {s: v["weight"] for s, v in run["stories"].items()}
    assert weight["bronx"] > weight["piemanpni"]  # 357 vs 267 TRs, minus the onset trim
    story_rows, rows = together.story_rows, together.rows   # each built anew from the grids
    assert [ds["story"].item() for ds in together.stories] == list(run["stories"])
    per = _table(story_rows, None)
    assert not per  # every story row names its story
    combined = [r for r in rows if r["story"] == "all"]
    assert together.scores["story"].item() == "all" and len(combined) == len(rows)
    assert {r["fit"] for r in combined} == set(together.scores["fit"].values) == {"subjects", "subject", "mean"}
    key = lambda r: (r["layer"], r["region"], r["hemi"])  # noqa: E731
    for row in (r for r in combined if r["fit"] == "subject"):
        mine = [(s["score"], weight[s["story"]]) for s in story_rows
                if s["fit"] == "subject" and s["subject"] == row["subject"] and key(s) == key(row)]
        assert mine, row
        want = sum(s * w for s, w in mine) / sum(w for _, w in mine)
        np.testing.assert_allclose(row["score"], want, rtol=1e-9)
    for head in (r for r in combined if r["fit"] == "subjects"):
        subs = [r["score"] for r in combined if r["fit"] == "subject" and key(r) == key(head)]
        np.testing.assert_allclose(head["score"], np.mean(subs), rtol=1e-9)
        assert head["ci_low"] <= head["score"] <= head["ci_high"]
    csv_rows = (together.output / "scores.csv").read_text().splitlines()
    assert csv_rows[0].startswith("story,") and len(csv_rows) - 1 == len(story_rows) + len(rows)


def test_killed_run_resumes_where_it_stopped(world, together, tmp_path):
    tmp, model = world
    cfg = dataclasses.replace(config(tmp, model, "all", tasks=("all",)), output=tmp_path / "out",
                              cache_dir=tmp_path / "cache")
    (tmp_path / "cfg.pkl").write_bytes(pickle.dumps(cfg))
    code = f"import pickle; from assocjax.pipeline import score; score(pickle.load(open({str(tmp_path / 'cfg.pkl')!r}, 'rb')))"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=os.environ | {"PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 300
        while not list(cfg.cache_dir.glob("scores/*/layer-*.npz")) and time.monotonic() < deadline:
            assert proc.poll() is None, "the run ended before writing a result"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    done = len(list(cfg.cache_dir.glob("scores/*/layer-*.npz")))
    total = len(STORIES) * len(together.layers)
    if done == total:
        pytest.skip("the machine finished every (story, layer) before the kill landed")
    res = score(cfg)
    assert sum(len(v) for v in res.computed.values()) == total - done
    np.testing.assert_allclose([r["score"] for r in res.rows], [r["score"] for r in together.rows], rtol=1e-6, atol=1e-7)


def test_sweep_through_submitit_aggregates_to_the_same_tables(world, tmp_path):
    tmp, model = world
    other = gpt2_with_real_tokenizer(tmp_path / "other", seed=1)
    base = config(tmp, model, "base", cache="unused")
    base = dataclasses.replace(base, cache_dir=tmp_path / "cache", features=FeatureOptions(context=256, layers=(2,)))
    sweep = SweepConfig(base=base, models=(str(model), str(other)), stories=STORIES[:2], executor="local",
                        folder=tmp_path / "sweep", cpus_per_task=1, mem_gb=4, timeout_min=20)
    results = run_sweep(sweep)
    assert set(results) == {("model", "plain"), ("other", "plain")}
    for m in (model, other):
        res = results[(m.name, "plain")]
        assert res.computed == {s: () for s in STORIES[:2]}  # the jobs fitted everything; aggregation fitted nothing
        direct = score(dataclasses.replace(base, output=tmp_path / f"direct-{m.name}", cache_dir=tmp_path / f"c-{m.name}",
                                           model=ModelOptions(path=str(m)),
                                           data=dataclasses.replace(base.data, stories=STORIES[:2])))
        np.testing.assert_allclose([r["score"] for r in res.rows], [r["score"] for r in direct.rows], rtol=1e-6, atol=1e-7)
    jobs = json.loads((tmp_path / "sweep" / "jobs.json").read_text())
    assert len(jobs) == 4 and {j["story"] for j in jobs} == set(STORIES[:2])


def test_aggregate_refuses_missing_results(world, tmp_path):
    tmp, model = world
    cfg = dataclasses.replace(config(tmp, model, "agg", stories=STORIES[:2]), cache_dir=tmp_path / "empty",
                              aggregate=True)
    with pytest.raises(FileNotFoundError, match=r"--aggregate: results missing .*piemanpni: layers \[0, 1, 2\]"):
        score(cfg)
