"""The calibration benchmark (benchmarks/calibration/run.py) on a few tiny worlds: its machinery
runs end to end, the exchangeable association's draws p-values are the rank p of its draws and
not all small, and the counts it prints are those of its worlds. (The rates themselves, over
75 + 75 worlds, are in benchmarks/README.md.)"""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # 4 tiny worlds, each two comparisons (about 40 s on 2 cores)

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "calibration" / "run.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("calibration_run", RUN)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_small_calibration_runs_and_the_exchangeable_null_is_not_all_small(bench, tmp_path, capsys):
    k = 4
    args = bench.Args(out=tmp_path, worlds=2, draws=k, n_subjects=6, story_trs=60, n_vertices=100, n_boot=50)
    worlds = bench.main(args)
    assert [(w["planted"], w["seed"]) for w in worlds] == [(False, 0), (False, 1), (True, 0), (True, 1)]
    assert all(set(bench.TESTS) <= set(w) for w in worlds)
    p = np.array([x for w in worlds for x in w["exchangeable draws p (MTL, both)"]])
    assert p.size == 4 and set((p * (k + 1)).round().astype(int).tolist()) <= set(range(1, k + 2))
    assert not np.all(p == 1 / (k + 1)), p   # not ranked above every draw on every world (4 seeded worlds: 0.2 0.4 0.2 0.2)
    # a null world's oracle reading costs MTL (extra words), it never shows as a gain there
    assert not any(w["F oracle vs plain"] for w in worlds if not w["planted"])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["worlds"] == json.loads(json.dumps(worlds)) and saved["args"]["draws"] == k
    out = capsys.readouterr().out
    hits = sum(w["F exchangeable vs draws, subjects' p alone"] for w in worlds if not w["planted"])
    name = "F exchangeable vs draws, subjects' p alone"
    line = next(x for x in out.splitlines() if x.startswith(name))
    assert line[len(name):].split()[0] == f"{hits}/2", line


def test_clopper_pearson_matches_scipy_binomtest(bench):
    from scipy.stats import binomtest

    for k, n in ((0, 20), (1, 20), (7, 40), (20, 20)):
        ci = binomtest(k, n).proportion_ci(0.95, method="exact")
        np.testing.assert_allclose(bench.clopper_pearson(k, n), (ci.low, ci.high), rtol=1e-9, atol=1e-12)
