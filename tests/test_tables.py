"""Region summaries of the score pipeline: ceilings near 0 on noise, scores and ceilings over
the same vertices, the subject-level headline (the best layer: tests/test_best_layer.py)."""
import numpy as np
import pytest

from assocjax.pipeline import tables


def test_mean_fit_ceiling_is_near_zero_on_noise():
    rng = np.random.default_rng(0)
    rel = rng.normal(0.0, 0.1, 5000)            # split-half reliability of pure noise: centred on 0
    score = rng.normal(0.0, 0.05, 5000)
    masks = np.ones((1, 5000))
    _, ceiling, _ = tables.mean_fit_ceiling(rel, score, masks)
    assert ceiling[0] < 0.05
    # averaging sqrt over the positive-reliability vertices only (the old summary) reports ~0.25
    assert np.nanmean(np.where(rel >= 0, np.sqrt(np.clip(rel, 0, None)), np.nan)) > 0.2


def test_scores_and_ceilings_use_the_same_vertices():
    rel = np.array([0.81, 0.81, 0.01, 0.01])
    score = np.array([0.5, np.nan, 0.1, np.nan])       # only vertices 0 and 2 have a score
    s, c, n = tables.mean_fit_ceiling(rel, score, np.ones((1, 4)))
    assert s[0] == pytest.approx(0.3) and c[0] == pytest.approx(np.sqrt(0.41)) and n[0] == 2


def test_subject_ceiling_from_region_means():
    s, v = 6, 3000
    rng = np.random.default_rng(1)
    ceil = dict(split_half=rng.normal(0, 0.1, v).astype(np.float32),
                loso=rng.normal(0, 0.05, (s, v)).astype(np.float32), n_subjects=np.full(v, s))
    score = rng.normal(0, 0.05, (s, v))
    _, c, _, _ = tables.subject_ceilings(ceil, score, np.ones((1, v)))
    assert np.all(c[:, 0] < 0.1)  # noise: no subject ceiling to speak of


def _group(story, subjects, own, mean, n_own, n_mean):
    """One story's grid at layer 0, region all, hemi L: subjects' own scores, the mean fit's."""
    from assocjax import results

    s = np.array(([np.mean(own)] + list(own) if subjects else []) + [mean])[:, None]
    n = np.array(([max(n_own)] + list(n_own) if subjects else []) + [n_mean])[:, None]
    return results.scores(0, subjects, [("all", "L")], story, score=s, ci_low=np.full_like(s, np.nan),
                          ci_high=np.full_like(s, np.nan), ceiling=np.full_like(s, 0.5), normalized=s / 0.5,
                          alpha=np.ones_like(s), n_vertices=n)


def test_combined_grid_counts_each_fits_own_vertices():
    from assocjax import results
    from assocjax.pipeline import aggregate

    one = _group("one", ("a", "b"), [0.2, 0.2], 0.3, [10, 7], 10)
    two = _group("two", ("a", "c"), [0.1, 0.1], 0.2, [9, 4], 9)
    got = aggregate.combine([(one, 2.0, ("a", "b")), (two, 1.0, ("a", "c"))], n_boot=10, ci=0.95, seed=0,
                            min_ceiling=0.05)
    n = {(r["fit"], r["subject"]): r["n_vertices"] for r in results.to_rows(got)}
    assert n == {("subjects", "all"): 10, ("subject", "a"): 10, ("subject", "b"): 7, ("subject", "c"): 4,
                 ("mean", "mean"): 10}
    own = got.sel(layer=0, region="all", hemi="L")["score"]
    assert own.sel(unit="a").item() == pytest.approx((0.2 * 2 + 0.1) / 3) and own.sel(unit="b").item() == 0.2
    assert got["story"].item() == "all"


def test_a_story_with_one_listener_counts_its_mean_fit_as_that_subjects():
    from assocjax.pipeline import aggregate

    one = _group("one", ("a", "b"), [0.2, 0.4], 0.3, [10, 7], 10)
    alone = _group("two", (), [], 0.1, [], 5)   # one listener: no per-subject fit of its own
    got = aggregate.combine([(one, 1.0, ("a", "b")), (alone, 1.0, ("b",))], n_boot=10, ci=0.95, seed=0,
                            min_ceiling=0.05)
    score = got.sel(layer=0, region="all", hemi="L")["score"]
    assert score.sel(unit="b").item() == pytest.approx(0.25) and score.sel(unit="a").item() == pytest.approx(0.2)


def test_weighted_mean_sums_each_lane_as_its_own_finite_values():
    """Bitwise the one-lane `np.sum(v[ok] * w[ok]) / np.sum(w[ok])` the rows were combined with,
    with more stories than numpy's pairwise block (8), where the order of a sum shows."""
    from assocjax.pipeline.aggregate import weighted_mean

    rng = np.random.default_rng(3)
    v = rng.normal(size=(50, 23))
    v[rng.random(v.shape) < 0.3] = np.nan
    v[0] = np.nan
    w = rng.uniform(50, 400, 23)
    got = weighted_mean(v, w)
    for lane, g in zip(v, got):
        ok = np.isfinite(lane)
        want = np.sum(lane[ok] * w[ok]) / np.sum(w[ok]) if ok.any() else np.nan
        assert g == want or (np.isnan(g) and np.isnan(want))


def test_normalized_is_nan_below_the_ceiling_floor():
    from assocjax.results import normalized

    got = normalized([0.2, 0.2, 0.2, 0.2, np.nan], [0.5, 0.04, np.nan, 0.0, 0.5], 0.05)
    np.testing.assert_array_equal(np.isnan(got), [False, True, True, True, True])
    assert got[0] == 0.2 / 0.5
    assert np.isnan(normalized(0.2, 0.0, 0.0))   # a zero ceiling has no ratio, whatever the floor


def test_rows_have_the_tables_columns_and_only_present_regions():
    from assocjax import results

    s = np.arange(9.0).reshape(3, 3)          # units (all, a, mean) x pairs; mtl has no "both" here
    ds = results.scores(4, ("a",), [("all", "L"), ("all", "both"), ("mtl", "L")], "st", score=s, ci_low=s,
                        ci_high=s, ceiling=s, normalized=s, alpha=s, n_vertices=np.ones((3, 3), int))
    assert ds.sizes == dict(layer=1, unit=3, region=2, hemi=2) and not ds["present"].sel(region="mtl", hemi="both")
    ds = results.concat([ds, ds.assign_coords(layer=[5])], "layer")
    rows = results.to_rows(ds)
    assert len(rows) == 2 * 3 * 3 and tuple(rows[0]) == results.SCORE_COLUMNS
    assert ("mtl", "both") not in {(r["region"], r["hemi"]) for r in rows}
    assert [r["score"] for r in rows if r["layer"] == 4 and r["subject"] == "a"] == [3.0, 4.0, 5.0]
    assert rows[0] == dict(story="st", layer=4, region="all", hemi="L", n_vertices=1, fit="subjects", subject="all",
                           score=0.0, ci_low=0.0, ci_high=0.0, ceiling=0.0, normalized=0.0, alpha=0.0)
    assert {type(rows[0][k]) for k in ("layer", "n_vertices")} == {int}
