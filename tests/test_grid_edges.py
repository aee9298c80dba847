"""The alpha-grid edge diagnostic (`pipeline.grid_edges`) on hand-made choices: exact shares per
fit family, pooling over stories, and when a note warns. The thresholds come from measured runs
(module docstring of grid_edges; docs/score.md: alpha grid edges); the end-to-end warning is checked in
test_pipeline.py and the quiet null in test_protocol.py."""
import numpy as np
import pytest

from assocjax.pipeline import grid_edges

NAN = np.nan


def test_shares_count_every_fold_choice_with_a_finite_score():
    # K = 2 outer folds, F = 2 subjects + the mean, V = 3 vertices, a grid of 4 alphas (edges: 0 and 3)
    alpha_idx_KFV = np.array([[[0, 3, 1], [0, 0, 2], [3, 3, 0]],
                              [[0, 1, 3], [2, 3, 3], [3, 1, 2]]], np.uint16)
    r_folds_KFV = np.full((2, 3, 3), 0.1)
    r_folds_KFV[1, 1, 2] = NAN                   # sub 2 lacks data there: its choice (3) is not counted
    r_folds_KFV[:, 2] = [[0.2, 0.4, NAN], [0.4, 0.0, 0.2]]  # the mean fit; fold 0's choice 0 at vertex 2 uncounted
    got = grid_edges.edge_shares(alpha_idx_KFV, r_folds_KFV, n_alphas=4)
    assert got["subjects"] == pytest.approx(dict(low=4 / 11, high=3 / 11, score=0.1, choices=11))
    assert got["mean"] == pytest.approx(dict(low=0.0, high=3 / 5, score=0.7 / 3, choices=5))


def test_a_mean_only_fit_has_no_subject_family():
    got = grid_edges.edge_shares(np.array([[[0, 2]]]), np.array([[[0.3, -0.1]]]), n_alphas=3)
    assert list(got) == ["mean"] and got["mean"] == pytest.approx(dict(low=0.5, high=0.5, score=0.1, choices=2))


def test_stories_pool_weighted_by_their_choices():
    a = dict(mean=dict(low=0.5, high=0.0, score=0.2, choices=10))
    b = dict(mean=dict(low=0.0, high=0.3, score=0.1, choices=30),
             subjects=dict(low=0.2, high=0.2, score=0.0, choices=5))
    got = grid_edges.pooled([a, b])
    assert got["mean"] == pytest.approx(dict(low=5 / 40, high=9 / 40, score=5 / 40, choices=40))
    assert got["subjects"] == pytest.approx(b["subjects"])  # only the story that has the family


def _results(low: int, high: int, r: float, n_alphas: int = 9) -> dict:
    """One layer (2) of 10 mean-fit targets in one outer fold: `low` of them at the grid's
    smallest alpha, `high` at its largest, every held-out score `r`."""
    idx = np.full((1, 1, 10), 1, np.uint16)
    idx[0, 0, :low] = 0
    idx[0, 0, low:low + high] = n_alphas - 1
    return {2: dict(alpha_idx=idx, r_folds=np.full((1, 1, 10), r))}


def _edges(low: int, high: int, r: float, n_alphas: int = 9) -> dict:
    return grid_edges.run_edges({"storya": _results(low, high, r, n_alphas)}, [2], np.logspace(-1, 7, n_alphas))


@pytest.mark.parametrize("low, high, r, n_alphas, warned", [
    (6, 0, -0.05, 9, "smallest alpha (0.1)"),       # the low edge warns even without signal
    (0, 6, 0.05, 9, "largest alpha (1e+07)"),       # the high edge where the fit scores r > 0
    (0, 6, -0.05, 9, None),                         # ... not where it does not (no signal: not the grid's fault)
    (5, 5, 0.05, 9, None),                          # half at each edge is not past the threshold
    (0, 10, 0.05, 2, None),                         # 2 alphas: every choice is an edge, nothing to judge
])
def test_notes_warn_past_the_threshold(low, high, r, n_alphas, warned):
    notes = grid_edges.edge_notes(_edges(low, high, r, n_alphas))
    if warned is None:
        assert notes == []
    else:
        (note,) = notes
        assert warned in note and "60%" in note and "storya layer(s) 2 (subject-mean fits)" in note


def test_summary_line_lists_each_layer():
    line = grid_edges.summary_line(_edges(2, 3, 0.1))
    assert line.endswith("per layer: 2: 20%/30%") and "smallest 0.1 / largest 1e+07" in line


def test_stories_fitted_apart_are_judged_and_named_apart():
    edges = grid_edges.run_edges({"storya": _results(0, 8, 0.05), "storyb": _results(0, 2, 0.05)}, [2],
                                 np.logspace(-1, 7, 9))
    assert edges["layers"][2]["mean"]["high"] == 0.5  # pooled over both stories: not past the threshold
    (note,) = grid_edges.edge_notes(edges)
    assert "80%" in note and "storya layer(s) 2" in note and "storyb" not in note
