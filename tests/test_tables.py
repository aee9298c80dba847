"""Region summaries of the score pipeline: ceilings near 0 on noise, scores and ceilings over
the same vertices, the subject-level headline and the cross-validated best layer."""
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


def test_cv_best_layer_chooses_on_other_folds():
    folds = np.array([[0.10, 0.10, 0.10, 0.50],    # layer 0: great on fold 3 only
                      [0.20, 0.20, 0.20, 0.00],    # layer 1
                      [0.00, 0.30, 0.00, 0.00]])   # layer 2: lucky on fold 1
    got = tables.cv_best_layer([0, 1, 2], folds)
    # fold 0: others' means (0.23, 0.13, 0.1) -> layer 0 scores 0.10; fold 1 -> layer 0 (0.23 vs 0.13) 0.10;
    # fold 2 -> layer 0 scores 0.10; fold 3: (0.10, 0.20, 0.10) -> layer 1 scores 0.00
    assert got["cv_best_layers"] == [0, 0, 0, 1]
    assert got["cv_best_score"] == pytest.approx(np.mean([0.1, 0.1, 0.1, 0.0]))
    assert folds.mean(1).max() > got["cv_best_score"]   # the plain argmax is optimistic


def _rows(scores, fit="subjects"):
    return [dict(layer=l, region="all", hemi="both", fit=fit, score=s, ci_low=s - 0.01, ci_high=s + 0.01,
                 ceiling=0.5, normalized=s / 0.5) for l, s in enumerate(scores)]


def test_summary_headline_and_all_nan_error():
    rows = _rows([0.1, 0.3, 0.2]) + _rows([0.2, 0.25, 0.4], fit="mean")
    s = tables.summary(rows)
    assert s["fit"] == "subjects" and s["best_layer"] == 1 and s["mean_fit_score"] == 0.25
    assert tables.summary(_rows([0.1, 0.3], fit="mean"))["fit"] == "mean"
    with pytest.raises(ValueError, match="every layer's brain score is NaN"):
        tables.summary(_rows([np.nan, np.nan]))


def test_combined_rows_count_each_fits_own_vertices():
    from assocjax.pipeline import aggregate

    def row(fit, subject, score, n):
        return dict(layer=0, region="all", hemi="L", fit=fit, subject=subject, score=score, ceiling=0.5, alpha=1.0,
                    n_vertices=n)

    one = [row("subjects", "all", 0.2, 10), row("subject", "a", 0.2, 10), row("subject", "b", 0.2, 7),
           row("mean", "mean", 0.3, 10)]
    two = [row("subjects", "all", 0.1, 9), row("subject", "a", 0.1, 9), row("subject", "c", 0.1, 4),
           row("mean", "mean", 0.2, 9)]
    got = aggregate.combine([(one, 2.0, ("a", "b")), (two, 1.0, ("a", "c"))], n_boot=10, ci=0.95, seed=0,
                            min_ceiling=0.05)
    n = {(r["fit"], r["subject"]): r["n_vertices"] for r in got}
    assert n == {("subjects", "all"): 10, ("subject", "a"): 10, ("subject", "b"): 7, ("subject", "c"): 4,
                 ("mean", "mean"): 10}
