import numpy as np
import pytest

from assocjax.ridge import buffered, nested_folds


def test_buffer_drops_training_rows_near_test_rows_of_the_same_run_only():
    runs = np.repeat([0, 1], [20, 10])
    idx = np.arange(30)
    middle = np.arange(5, 10)
    end = np.array([18, 19])
    folds = [(np.setdiff1d(idx, middle), middle), (np.setdiff1d(idx, end), end)]
    (tr_mid, te_mid), (tr_end, te_end) = buffered(folds, runs, buffer=2)
    np.testing.assert_array_equal(te_mid, middle)
    np.testing.assert_array_equal(tr_mid, np.setdiff1d(idx, np.r_[3:12]))
    # Rows 20.. belong to the next run: adjacent in the array, not in time.
    np.testing.assert_array_equal(tr_end, np.setdiff1d(idx, np.r_[16:20]))
    # Without runs every row is one time series: the buffer crosses the run boundary.
    (_, _), (tr_one, _) = buffered(folds, None, buffer=2)
    np.testing.assert_array_equal(tr_one, np.setdiff1d(idx, np.r_[16:22]))
    # A held-out whole run needs nothing dropped.
    whole = [(np.arange(20), np.arange(20, 30))]
    np.testing.assert_array_equal(buffered(whole, runs, buffer=5)[0][0], np.arange(20))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(buffered(folds, runs, 0), folds))


def test_nested_folds_buffer_outer_and_inner_test_rows():
    groups = np.repeat([0, 1, 2, 3], 10)  # one story cut into four contiguous chunks
    f = nested_folds(groups, inner_folds=5, buffer=2)
    assert f.test_groups == ((0,), (1,), (2,), (3,)) and f.buffer == 2
    tr, te = f.outer[1]
    np.testing.assert_array_equal(te, np.arange(10, 20))
    np.testing.assert_array_equal(tr, np.r_[0:8, 22:40])
    inner = {tuple(np.unique(groups[t])): (a, t) for a, t in f.inner[1]}
    assert len(f.inner[1]) == 3, "inner folds are capped at the 3 outer-training groups"
    a, t = inner[(2,)]
    np.testing.assert_array_equal(t, np.arange(22, 30))  # inner test rows: outer-training rows of chunk 2
    np.testing.assert_array_equal(a, np.r_[0:8, 32:40])
    a, t = inner[(0,)]
    np.testing.assert_array_equal(t, np.arange(0, 8))
    np.testing.assert_array_equal(a, np.r_[22:40])  # rows 8, 9 were never training rows; 22 is > 2 rows from 7
    for (otr, _), inn in zip(f.outer, f.inner):
        for a, t in inn:
            assert set(a) <= set(otr) and set(t) <= set(otr) and not set(a) & set(t)


def test_stories_as_runs_need_no_buffer_between_them():
    groups = np.repeat(["a", "b", "c"], [8, 6, 7])
    f = nested_folds(groups, runs_N=groups, buffer=3)
    for (tr, te), (tr0, te0) in zip(f.outer, nested_folds(groups).outer):
        np.testing.assert_array_equal(tr, tr0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(groups_N=np.repeat([0, 1, 2, 3], 5), buffer=-1), "buffer must be >= 0"),
        (dict(groups_N=np.repeat([0, 1, 2, 3], 5), buffer=20), "leaves no training rows"),
        (dict(groups_N=np.repeat([0, 1], 5)), "at least 2 groups"),
        (dict(groups_N=np.repeat([0, 1, 2], 5), runs_N=np.tile([0, 1, 2], 5)), "contiguously"),
        (dict(groups_N=np.repeat([0, 1, 2], 5), runs_N=np.zeros(7)), "runs has shape"),
    ],
)
def test_nested_fold_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nested_folds(**kwargs)
