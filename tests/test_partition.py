"""`score.py --augment.mode timed --augment.partition`: the variance the associations explain beyond
the plain story, per layer, region, hemisphere and subject (`assocjax.pipeline.partition`)."""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from assocjax.augment.oracle import write_oracle
from assocjax.pipeline import (AugmentOptions, DataOptions, FeatureOptions, ModelOptions, ReportOptions, ScoreConfig,
                               partition, score)
from assocjax.pipeline.config import CeilingOptions, check_options
from conftest import GT_SPACE as SPACE, context_free_world

N_VERT = 300


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """tests/test_compare.py's ground-truth world, smaller: a GPT-2 whose hidden state 0 is
    context-free (so the heard words' band holds nothing of the associates), BOLD planted from
    it: heard words everywhere, the associates' features in MTL. Scored in timed mode with the
    oracle augmentations and --augment.partition, stories pooled."""
    tmp = tmp_path_factory.mktemp("partition")
    model_dir, model, tok, root = context_free_world(tmp, n_stories=3, n_subjects=8, story_trs=200,
                                                     n_vertices=N_VERT)
    written = write_oracle(root, tmp / "aug", seed=1, tokenizer=tok)   # story -> [oracle file, its random control]
    cfg = ScoreConfig(output=tmp / "out", cache_dir=tmp / "cache", progress=False,
                      model=ModelOptions(path=str(model_dir)), data=DataOptions(root=root, space=SPACE, pool_stories=True),
                      features=FeatureOptions(layers=(0,)), ceiling=CeilingOptions(n_splits=10),
                      report=ReportOptions(maps=False, figures=False),
                      augment=AugmentOptions(files=tuple(w[0] for w in written.values()), mode="timed", partition=True))
    res = score(cfg)
    with open(tmp / "out" / "partition.csv") as f:
        rows = list(csv.DictReader(f))
    return cfg, res, rows


def _value(rows, region, component, unit="all", hemi="both"):
    (row,) = [r for r in rows if (r["region"], r["component"], r["unit"], r["hemi"]) == (region, component, unit, hemi)]
    return {k: float(row[k]) for k in ("value", "ci_low", "ci_high")}


@pytest.mark.slow
def test_partition_finds_the_associations_in_mtl(run):
    """The planted associates live in MTL: there the associations' unique variance is positive
    with its subject-level CI above 0 and the largest of all regions (subjects and the
    subject-mean fit); elsewhere it is ~0 (an unused band's small cost), not positive.
    Measured (5 subjects): MTL 0.169 [0.168, 0.171] (subject-mean fit 0.283); language,
    frontal, parietal -0.0016 to -0.0018; visual control -0.0025 [-0.0030, -0.0020]."""
    _, _, rows = run
    regions = sorted({r["region"] for r in rows})
    for unit in ("all", "mean"):
        unique = {reg: _value(rows, reg, "unique_associations", unit)["value"] for reg in regions}
        assert max(unique, key=unique.get) == "mtl", unique
    mtl = _value(rows, "mtl", "unique_associations")
    assert mtl["ci_low"] > 0, mtl
    for region in ("language", "frontal_gyrus", "parietal", "visual_control"):
        other = _value(rows, region, "unique_associations")
        assert other["ci_high"] <= 0 and other["value"] > -0.01, (region, other)


@pytest.mark.slow
def test_partition_rows_add_up_and_summary(run):
    """Every row set is complete (each layer x region x hemisphere x component x unit: the
    subjects' mean, each subject, the subject-mean fit), the pieces add up (unique + unique + shared = R2 of both bands, per subject and so in the
    mean), and summary.txt carries the line."""
    cfg, res, rows = run
    hemis = {r["hemi"] for r in rows}
    regions = {r["region"] for r in rows}
    subjects = len({r["unit"] for r in rows} - {"all", "mean"})
    assert subjects == 5  # the listeners of all three stories (pooled)
    assert len(rows) == len(regions) * len(hemis) * len(partition.COMPONENTS) * (2 + subjects)
    # the subjects' mean is the mean of the subject rows
    one = [r for r in rows if (r["region"], r["hemi"], r["component"]) == ("mtl", "both", "unique_associations")]
    per = [float(r["value"]) for r in one if r["unit"] not in ("all", "mean")]
    assert float(next(r["value"] for r in one if r["unit"] == "all")) == pytest.approx(np.mean(per), rel=1e-6)
    for reg in regions:
        for unit in ("all", "mean"):
            v = {c: _value(rows, reg, c, unit)["value"] for c in partition.COMPONENTS}
            assert v["unique_associations"] + v["unique_plain"] + v["shared"] == pytest.approx(v["r2_both"], abs=1e-6)
            assert v["r2_both"] - v["r2_plain"] == pytest.approx(v["unique_associations"], abs=1e-6)
    text = (Path(cfg.output) / "summary.txt").read_text()
    assert "unique variance of the associations beyond the plain story" in text
    # cached: a rerun reads the partition files and gives the same rows
    again = score(dataclasses.replace(cfg, output=Path(cfg.output).with_name("out2")))
    with open(Path(again.output) / "partition.csv") as f:
        assert list(csv.DictReader(f)) == rows


def test_partition_needs_timed_mode(tmp_path):
    cfg = ScoreConfig(output=tmp_path / "out", augment=AugmentOptions(partition=True))
    with pytest.raises(ValueError, match="--augment.partition needs --augment.mode timed"):
        check_options(cfg)


def test_components_from_fold_results():
    """components(): fold means of the full and single-band models' held-out R^2."""
    both = np.array([[[0.3]], [[0.5]]])                 # (K, F, V)
    without = np.array([[[[0.1]], [[0.3]]], [[[0.2]], [[0.3]]]])  # (2: without plain, without associations)
    c = partition.components(dict(r2_both=both, r2_without=without))
    np.testing.assert_allclose(c["r2_both"], [[0.4]])
    np.testing.assert_allclose(c["r2_associations"], [[0.2]])  # without plain: the associations alone
    np.testing.assert_allclose(c["r2_plain"], [[0.25]])
    np.testing.assert_allclose(c["unique_associations"], [[0.4 - 0.25]])
    np.testing.assert_allclose(c["unique_plain"], [[0.4 - 0.2]])
    np.testing.assert_allclose(c["shared"], [[0.25 + 0.2 - 0.4]])


def test_rows_over_several_stories_get_the_two_level_ci():
    """Stories fitted one by one: a subject's value is its stories' TR-weighted mean, and the
    subjects' CI is the two-level one (studentized, symmetric about the mean, over stories then
    subjects) instead of the subject bootstrap, which one story keeps."""
    from types import SimpleNamespace

    from assocjax.stats import bootstrap_indices, bootstrap_mean_ci

    rng = np.random.default_rng(0)
    n_v = 6
    listeners = {"s1": ("a", "b", "c"), "s2": ("a", "b", "d"), "s3": ("c", "d")}
    trs = {"s1": 100, "s2": 200, "s3": 150}
    groups = [SimpleNamespace(name=n, sel=SimpleNamespace(subjects=ls, layers=(2,), story_name=n),
                              fit=SimpleNamespace(per_subject=True),
                              bold=SimpleNamespace(n_rows=trs[n])) for n, ls in listeners.items()]
    parts = {(n, 2): dict(r2_both=rng.normal(0.1, 0.05, (4, len(ls) + 1, n_v)),
                          r2_without=rng.normal(0.05, 0.05, (2, 4, len(ls) + 1, n_v))) for n, ls in listeners.items()}
    regs = [("all", "both", np.ones(n_v, bool))]
    rows = partition.partition_rows(groups, parts, lambda g: regs, 500, 0.95, 0)
    got = {r["unit"]: r for r in rows if r["component"] == "unique_associations"}
    own = {}
    for s in "abcd":
        vals = [(partition.components(parts[n, 2])["unique_associations"][list(ls).index(s)].mean(), trs[n])
                for n, ls in listeners.items() if s in ls]
        own[s] = sum(v * w for v, w in vals) / sum(w for _, w in vals)
        assert got[s]["value"] == pytest.approx(own[s], rel=1e-12)
    mean = np.mean(list(own.values()))
    head = got["all"]
    assert head["value"] == pytest.approx(mean, rel=1e-12)
    assert head["ci_low"] < mean < head["ci_high"] and head["ci_high"] - mean == pytest.approx(mean - head["ci_low"])
    _, b_lo, b_hi, _ = bootstrap_mean_ci(np.array(list(own.values()))[:, None], bootstrap_indices(4, 500, 0), 0.95)
    assert (head["ci_low"], head["ci_high"]) != pytest.approx((b_lo[0], b_hi[0]))
    one = partition.partition_rows(groups[:1], {k: v for k, v in parts.items() if k[0] == "s1"}, lambda g: regs, 500,
                                   0.95, 0)
    one_head = next(r for r in one if r["component"] == "unique_associations" and r["unit"] == "all")
    vals = np.array([[partition.components(parts["s1", 2])["unique_associations"][i].mean()] for i in range(3)])
    _, lo, hi, _ = bootstrap_mean_ci(vals, bootstrap_indices(3, 500, 0), 0.95)
    assert (one_head["ci_low"], one_head["ci_high"]) == pytest.approx((lo[0], hi[0]), rel=1e-12)
