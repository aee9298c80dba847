"""The numbers of the default run, a pooled whole-dataset run and experiment 1 are those the
library gave before the result-type redesign (issue 21): tests/data/pinned/ holds their tables
as `python tests/pinned_runs.py tests/data/pinned` wrote them on main 0a70b90, rewritten once since:
issue 24's default FIR delays (3-9 s: 2-6 TRs instead of 1-4) changed every fitted column (scores, their
CIs, normalized, alpha; the gains' base, new, change and their statistics), the keys and ceilings
stayed bitwise equal. Same columns in
the same order, the same rows (matched by their key columns: a table may list them in another
order), same text in every column (except `ceiling` and `normalized` of scores.csv, regenerated in issue 24 for the
ceiling's significance mask, `pipeline.ceilings`: with the mask off they are the old ones bit for bit); numbers
bitwise equal (a change of the
arithmetic must be argued in TOLERANCE with its largest difference, never widened to pass)."""
import csv
from pathlib import Path

import numpy as np
import pytest

from pinned_runs import PINNED, run_all

pytestmark = pytest.mark.slow  # three pipeline runs (about 25 s)

HERE = Path(__file__).resolve().parent / "data" / "pinned"
TOLERANCE: dict[str, float] = {}   # column -> largest allowed |difference|, with the reason beside it
KEYS = ("comparison", "kind", "story", "layer", "fit", "subject", "region", "hemi")


def _read(path: Path):
    """(header, rows sorted by the key columns)."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    keys = [rows[0].index(k) for k in KEYS if k in rows[0]]
    body = sorted(rows[1:], key=lambda r: [r[i] for i in keys])
    assert len({tuple(r[i] for i in keys) for r in body}) == len(body), f"{path}: two rows share a key"
    return rows[0], body


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return None


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return run_all(tmp_path_factory.mktemp("pinned"))


@pytest.mark.parametrize("run,name", PINNED, ids=[f"{r}/{n}" for r, n in PINNED])
def test_tables_equal_the_pinned_ones(runs, run, name):
    want_head, want = _read(HERE / run / name)
    got_head, got = _read(runs[run] / name)
    assert got_head == want_head, f"{run}/{name}: columns changed"
    assert len(got) == len(want), f"{run}/{name}: {len(got)} rows, pinned {len(want)}"
    for j, col in enumerate(want_head):
        a, b = [r[j] for r in want], [r[j] for r in got]
        if a == b:
            continue
        x, y = [_number(v) for v in a], [_number(v) for v in b]
        assert None not in x and None not in y, f"{run}/{name}: column {col!r} differs: " + \
            str(next((u, v) for u, v in zip(a, b) if u != v))
        x, y = np.array(x), np.array(y)
        np.testing.assert_array_equal(np.isnan(x), np.isnan(y), err_msg=f"{run}/{name} {col}: NaN at other rows")
        ok = ~np.isnan(x)
        diff = float(np.max(np.abs(x[ok] - y[ok]), initial=0.0))
        assert diff <= TOLERANCE.get(col, 0.0), f"{run}/{name} {col}: largest difference {diff:.3g}"
