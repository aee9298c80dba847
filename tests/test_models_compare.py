"""Base models of different depth (`assocjax.pipeline.models_compare`): a 2-block GPT-2 against a
3-block LLaMA-style model on the built-in world gives one row per region and hemisphere with each
model's cross-validated best layer and the paired difference of those scores, no per-layer M; a
model of the same architecture and depth keeps its per-layer M in the same comparison."""
import csv
import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import save_tiny

from assocjax import results
from assocjax.gains import paired_change
from assocjax.stats import two_level_ci_p, two_level_draws, two_level_means
from assocjax.pipeline import (CompareOptions, ReportOptions, ScoreConfig, SyntheticOptions, compare)
from assocjax.pipeline.assets import ensure_builtin
from assocjax.pipeline.config import CeilingOptions

pytestmark = pytest.mark.slow  # a module fixture runs three pipelines

SMALL = SyntheticOptions(n_stories=3, n_subjects=6, story_trs=120, space="tinysphere", n_vertices=150, n_layers=2)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("depth")
    built = ensure_builtin(SMALL, tmp / "cache", progress=False)
    n_tokens = json.loads((built.model / "config.json").read_text())["vocab_size"]
    llama = save_tiny("llama", tmp / "llama", num_hidden_layers=3, vocab_size=n_tokens, max_position_embeddings=128)
    for f in built.model.glob("tokenizer*"):   # the built-in world's word-level tokenizer, read by both models
        shutil.copy(f, llama / f.name)
    noisy = tmp / "noisy"                       # the same GPT-2, its embeddings partly noise: M applies
    shutil.copytree(built.model, noisy)
    w = load_file(str(noisy / "model.safetensors"))
    rng = np.random.default_rng(5)
    save_file({k: (0.6 * v + 0.4 * rng.standard_normal(v.shape).astype(v.dtype) * v.std() if "wte" in k else v)
               for k, v in w.items()}, str(noisy / "model.safetensors"))
    cfg = ScoreConfig(output=tmp / "out", cache_dir=tmp / "cache", synthetic=SMALL, progress=False,
                      ceiling=CeilingOptions(n_splits=10), report=ReportOptions(maps=False, figures=True),
                      compare=CompareOptions(models=(str(llama), str(noisy)), names=("llama3", "noisy")))
    with pytest.warns(UserWarning, match="M is not computed across architectures"):
        res = compare(cfg)
    return cfg, res


def test_depth_rows_per_region_not_per_layer(world):
    cfg, res = world
    assert {k: str(v) for k, v in zip(res.depth["comparison"].values, res.depth["kind"].values)} == {
        "llama3 vs plain": "depth"}
    rows = list(csv.DictReader(open(cfg.output / "models.csv")))
    assert tuple(rows[0]) == results.DEPTH_COLUMNS
    pairs = [(r["region"], r["hemi"]) for r in rows]
    assert len(pairs) == len(set(pairs)) == int(res.runs["plain"].best["present"].sum())   # one row per region x hemi
    base, new = res.runs["plain"].best, res.runs["llama3"].best
    subjects = results.fit_units(base, results.SUBJECT)["unit"].values.tolist()
    # 3 stories fitted one by one: CI and p are two-level, over each subject's CV score per story
    (b_SXG, w_G), (n_SXG, _) = base.attrs["cv_by_story"], new.attrs["cv_by_story"]
    present = [(str(base["region"].values[i]), str(base["hemi"].values[j]))
               for i, j in zip(*np.nonzero(base["present"].values))]
    both = np.isfinite(b_SXG) & np.isfinite(n_SXG)
    draws = two_level_draws(len(subjects), len(w_G), cfg.report.n_boot, cfg.seed)
    boot = (two_level_means(np.where(both, n_SXG, np.nan), w_G, *draws)
            - two_level_means(np.where(both, b_SXG, np.nan), w_G, *draws))
    for r in rows:
        at = dict(region=r["region"], hemi=r["hemi"])
        b, n = (g["cv_score"].sel(unit=subjects, **at).values[:, None] for g in (base, new))
        want = paired_change(b, n, cfg.report.n_boot, cfg.report.ci, cfg.seed, cfg.compare.n_perm, cfg.compare.min_base)
        assert float(r["change"]) == pytest.approx(want["change"][0], abs=1e-12)
        x = present.index((r["region"], r["hemi"]))
        # each subject's per-story CV scores recombine (TR-weighted) to its CV score
        one_each = np.ones((len(subjects), len(w_G))), np.eye(len(subjects))   # every story, one subject a draw
        np.testing.assert_allclose(two_level_means(b_SXG[:, [x]], w_G, *one_each)[:, 0], b[:, 0], rtol=1e-12)
        lo, hi, p = two_level_ci_p(want["change"], boot[:, [x]], np.array([both[:, x].any(0).sum()]), cfg.report.ci)
        assert float(r["p"]) == pytest.approx(p[0]) and float(r["change_ci_low"]) == pytest.approx(lo[0])
        assert lo[0] < float(r["change"]) < hi[0]
        assert int(r["base_layer"]) == int(base["cv_layer"].sel(unit="all", **at))
        assert int(r["new_layer"]) == int(new["cv_layer"].sel(unit="all", **at))
        assert float(r["base_depth"]) == pytest.approx(int(r["base_layer"]) / 2)
        assert float(r["new_depth"]) == pytest.approx(int(r["new_layer"]) / 3)
    assert (cfg.output / "layer_depth.png").is_file()
    text = (cfg.output / "gains.txt").read_text()
    assert "llama3 vs plain [depth]" in text and "M is not computed across architectures" in text


def test_no_per_layer_m_across_architectures_but_kept_for_the_same_one(world):
    cfg, res = world
    comps = res.gains["comparison"].values.tolist()
    assert comps == ["noisy vs plain"] and res.gains["kind"].values.tolist() == ["M"]   # no llama3 M, no contrast
    assert not any("llama3" in r["comparison"] for r in csv.DictReader(open(cfg.output / "gains.csv")))


def test_runs_write_their_best_layer_tables(world):
    cfg, res = world
    for name, layers in (("plain", 3), ("llama3", 4)):
        run = res.runs[name]
        assert len(run.layers) == layers and (run.output / "best_layer.csv").is_file()
        assert run.summary["cv_best_layer"] in run.layers
