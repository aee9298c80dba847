"""FIR delays from a span in seconds at each story's TR (`pipeline.delays`), and their checks."""
import json
from types import SimpleNamespace

import numpy as np
import pytest

from assocjax.pipeline import (CeilingOptions, DataOptions, FeatureOptions, ReportOptions, RidgeOptions, ScoreConfig,
                               SyntheticOptions, score)
from assocjax.pipeline.config import check_options
from assocjax.pipeline.delays import DEFAULT_SPAN, check_stories, default_buffer, span_delays, story_delays
from assocjax.pipeline.inputs import _check_delays


@pytest.mark.parametrize("span, tr, want", [
    ((1.5, 6.0), 1.5, (1, 2, 3, 4)),
    ((1.5, 6.0), 1.52, (1, 2, 3, 4)),   # milkyway's odd scans: 6 / 1.52 = 3.95 rounds to 4
    ((1.5, 6.0), 2.0, (1, 2, 3)),       # 0.75..3
    ((2.0, 8.0), 2.0, (1, 2, 3, 4)),    # Huth-lab: 1-4 TRs at TR 2 s
    ((3.0, 9.0), 2.0, (2, 3, 4, 5)),    # halves round up: 1.5 -> 2, 4.5 -> 5
    ((0.2, 3.0), 1.5, (1, 2)),          # a start below half a TR is still one TR (never the word's own TR)
    ((1.5, 12.0), 1.5, tuple(range(1, 9))),
])
def test_span_gives_the_rounded_tr_multiples(span, tr, want):
    assert span_delays(span, tr) == want


def test_the_default_span_is_the_measured_one():
    """benchmarks/delays chose 3-9 s (docs/protocol.md): 2-6 TRs at TR 1.5 s and milkyway's 1.52 s, 2-5 at 2 s."""
    assert DEFAULT_SPAN == (3.0, 9.0) == FeatureOptions().delay_span and FeatureOptions().delays is None
    assert span_delays(DEFAULT_SPAN, 1.5) == span_delays(DEFAULT_SPAN, 1.52) == (2, 3, 4, 5, 6)
    assert span_delays(DEFAULT_SPAN, 2.0) == (2, 3, 4, 5)


def test_span_without_a_whole_tr_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"--features.delay-span 0.2 0.5 s holds no delay .* at TR 2 s"):
        span_delays((0.2, 0.5), 2.0)


def test_delays_in_trs_override_the_span_at_every_tr():
    opts = FeatureOptions(delays=(2, 5), delay_span=(1.0, 20.0))
    assert story_delays(opts, 1.5) == story_delays(opts, 2.0) == (2, 5)
    assert story_delays(FeatureOptions(), 1.5) == span_delays(DEFAULT_SPAN, 1.5)


@pytest.mark.parametrize("span", [(0.0, 6.0), (-1.5, 6.0), (6.0, 1.5), (float("nan"), 6.0), (1.5, float("inf"))])
def test_bad_span_fails_in_check_options(tmp_path, span):
    cfg = ScoreConfig(output=tmp_path / "o", features=FeatureOptions(delay_span=span))
    with pytest.raises(ValueError, match="--features.delay-span .*0 < LO <= HI"):
        check_options(cfg)


def test_a_bad_span_is_ignored_when_delays_are_given(tmp_path):
    check_options(ScoreConfig(output=tmp_path / "o", features=FeatureOptions(delays=(1, 2), delay_span=(0.0, -1.0))))


def _story(name, tr, n_trs=100):
    return SimpleNamespace(name=name, tr=tr, n_trs=n_trs)


def test_pooled_stories_with_different_delay_counts_are_refused_naming_them():
    stories, span = [_story("pieman", 1.5), _story("odd", 2.0)], FeatureOptions(delay_span=(1.5, 6.0))
    with pytest.raises(ValueError, match=r"--features.delay-span 1.5 6 s gives the stories fitted together .* "
                                         r"pieman \(TR 1.5 s\): \[1, 2, 3, 4\]; odd \(TR 2 s\): \[1, 2, 3\]"):
        check_stories(stories, span, pooled=True)
    # fitted one by one, each story keeps its own; delays in TRs are the same for both
    assert check_stories(stories, span, pooled=False) == {"pieman": (1, 2, 3, 4), "odd": (1, 2, 3)}
    assert set(check_stories(stories, FeatureOptions(delays=(1, 2)), pooled=True).values()) == {(1, 2)}
    # the 1.52 s scans of milkyway pool with 1.5 s stories
    for opts in (span, FeatureOptions()):
        check_stories([_story("pieman", 1.5), _story("milkyway", 1.52)], opts, pooled=True)


def test_the_checks_before_any_work_use_each_storys_own_delays(tmp_path):
    cfg = ScoreConfig(output=tmp_path / "o", features=FeatureOptions(delay_span=(1.5, 15.0)),
                      data=DataOptions(trim_start=0))
    # 10 TRs at TR 1.5 s; the span reaches 10 TRs there but only 5 at TR 3 s
    unset = r"\(--features.delays unset: from --features.delay-span 1.5 15 s at TR 1.5 s\)"
    with pytest.raises(ValueError, match=r"--features.delays up to 10 TRs: longer than story 'short' .*" + unset):
        _check_delays([_story("short", 1.5, 10), _story("long", 1.5, 100)], cfg)
    _check_delays([_story("short", 3.0, 10), _story("long", 1.5, 100)], cfg)


def test_default_buffer_is_the_groups_longest_delay_plus_8():
    assert default_buffer([_story("a", 1.5), _story("b", 2.0)], FeatureOptions()) == 6 + 8
    assert default_buffer([_story("b", 2.0)], FeatureOptions()) == 5 + 8
    assert default_buffer([_story("b", 2.0)], FeatureOptions(delays=(1, 9))) == 9 + 8


TR2 = SyntheticOptions(n_stories=2, n_subjects=4, story_trs=80, space="tinysphere", n_vertices=40, tr=2.0, n_layers=1,
                       hidden=16, n_heads=2, positions=128, planted_layer=1)


@pytest.mark.slow  # two pipeline runs on a tiny world (9 s on a quiet machine, a minute under load)
def test_a_tr_2_world_is_fitted_with_the_spans_delays_and_records_them(tmp_path):
    """At TR 2 s the default span gives 2-5 TRs: the scores equal those of --features.delays 2 3 4 5
    (bitwise); run.json records them, the span and the buffer they set (two stories are cut into
    chunks, so the buffer is used)."""
    base = dict(cache_dir=tmp_path / "cache", synthetic=TR2, progress=False,
                ceiling=CeilingOptions(n_splits=5), report=ReportOptions(maps=False, figures=False, n_boot=20),
                ridge=RidgeOptions(per_subject=False))

    def run(name, **features):
        res = score(ScoreConfig(output=tmp_path / name, features=FeatureOptions(layers=(1,), **features), **base))
        return res, json.loads((tmp_path / name / "run.json").read_text())

    span, info = run("span")
    trs, _ = run("trs", delays=(2, 3, 4, 5))
    cv = info["stories"]["storya"]["cv"]
    assert cv["delays_trs"]["storya"] == [2, 3, 4, 5] and cv["delay_span_s"] == list(DEFAULT_SPAN)
    assert cv["chunks_per_story"] > 1 and cv["buffer_trs"] == 5 + 8
    assert info["config"]["features"]["delays"] is None
    np.testing.assert_array_equal([r["score"] for r in span.rows], [r["score"] for r in trs.rows])


def _bench():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "delays" / "run.py"
    spec = importlib.util.spec_from_file_location("delays_run", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    return module


def test_the_benchmark_picks_the_best_span_over_both_trs_and_fewer_delays_on_a_tie():
    """benchmarks/delays/run.py's choice on made-up scores: ratios per world and region, the
    null region left out, the best mean over TRs, a tie going to fewer delays."""
    bench = _bench()
    spans = [bench.span_label(s) for s in bench.SPANS]
    good = {"1.5-9 s": 1.0, "4-10 s": 0.998}   # at TR 1.5 s: 1-6 TRs, and 3-7 (fewer, though listed later)
    records = []
    for tr in (1.5, 2.0):
        for label, delays in bench.candidates(tr).items():
            s = good.get(label, 0.5) if label in spans else 0.9
            scores = {"language": {"headline": 0.2 * s, "mean": 0.4 * s},
                      "mtl": {"headline": 0.05 * s, "mean": 0.1 * s},
                      "all": {"headline": 0.1 * s, "mean": 0.2 * s}, bench.NULL_REGION: {"headline": 0.0, "mean": 0.0}}
            records.append(dict(tr=tr, seed=0, candidate=label, delays=list(delays), scores=scores))
    records = bench.with_ratios(records)
    assert bench.planted_regions(records) == ["language", "mtl"]
    assert bench.criterion(records, "1.5-9 s") == 1.0 and bench.criterion(records, "1.5-6 s") == 0.5
    assert bench.NULL_REGION not in records[0]["ratio"]
    assert bench.choose(records, tie=0.005) == "4-10 s" and bench.choose(records, tie=0.001) == "1.5-9 s"
