import json

import numpy as np
import pytest

from assocjax.demo import DemoConfig, run_demo


@pytest.mark.slow
def test_demo_recovers_planted_signal_and_analytic_ceiling(tmp_path):
    cfg = DemoConfig(n_stories=4, trs_per_story=120, n_voxels=120, output=tmp_path / "demo")
    summary = run_demo(cfg)
    # The ceiling measured from subjects must match the generator's analytic one.
    assert abs(summary["median_max_r"] - summary["median_expected_max_r"]) < 0.03
    # The model is the true linear map up to noise, so it gets close to the ceiling...
    assert 0.8 < summary["median_normalized"] < 1.05
    # ...and the written table agrees with the summary.
    rows = np.genfromtxt(tmp_path / "demo" / "voxel_scores.csv", delimiter=",", names=True)
    assert len(rows) == 120
    assert np.isclose(np.median(rows["r"]), summary["median_r"], atol=1e-6)
    run = json.loads((tmp_path / "demo" / "run.json").read_text())
    assert run["seed"] == 0 and run["config"]["n_voxels"] == 120
