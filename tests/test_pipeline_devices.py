"""The score pipeline on several devices (8 simulated CPU devices in a subprocess): each chunk's
targets are spread over a mesh and the numbers equal the single-device run's."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from assocjax.data.synthetic import SyntheticConfig, make_synthetic
from synthetic_null import make_drifting_model

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _score(tmp: Path, name: str, devices: int) -> dict:
    cmd = [sys.executable, "scripts/score.py", "--data.root", str(tmp / "ds"), "--data.space", "devsphere",
           "--model.path", str(tmp / "model"), "--features.context", "2048", "--output", str(tmp / name),
           "--cache-dir", str(tmp / f"cache-{name}"), "--no-progress", "--report.no-figures", "--report.no-maps",
           "--ridge.target-chunk", "600", "--ceiling.n-splits", "5"]
    env = os.environ | {"PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, env=env)
    return json.loads((tmp / name / "scores.json").read_text()) | {
        "run": json.loads((tmp / name / "run.json").read_text())}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("devices")
    make_synthetic(SyntheticConfig(out=tmp / "ds", n_stories=1, n_subjects=4, story_trs=200, space="devsphere",
                                   n_vertices=300, feature_dim=4))
    make_drifting_model(tmp / "model")
    return tmp, _score(tmp, "one", 1)


def test_eight_devices_equal_one(world):
    tmp_path, one = world
    eight = _score(tmp_path, "eight", 8)
    assert len(eight["run"]["devices"]) == 8 and len(one["run"]["devices"]) == 1
    assert [(r["story"], r["layer"], r["fit"], r["subject"], r["region"], r["hemi"]) for r in one["rows"]] == \
           [(r["story"], r["layer"], r["fit"], r["subject"], r["region"], r["hemi"]) for r in eight["rows"]]
    np.testing.assert_allclose([r["score"] for r in eight["rows"]], [r["score"] for r in one["rows"]], rtol=1e-5, atol=1e-6)


def test_two_processes_split_the_vertices_and_equal_one(world):
    """jax.distributed on one machine (two CPU processes, a shared cache): each process fits half
    of the vertices, process 0 joins them and writes the reports; the numbers equal one process's."""
    import socket

    tmp_path, one = world
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "scripts/score.py", "--data.root", str(tmp_path / "ds"), "--data.space", "devsphere",
           "--model.path", str(tmp_path / "model"), "--features.context", "2048", "--output", str(tmp_path / "two"),
           "--cache-dir", str(tmp_path / "cache-two"), "--no-progress", "--report.no-figures", "--report.no-maps",
           "--ridge.target-chunk", "600", "--ceiling.n-splits", "5", "--distributed",
           "--coordinator", f"localhost:{port}", "--num-processes", "2"]
    env = os.environ | {"PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen(cmd + ["--process-id", str(i)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    two = json.loads((tmp_path / "two" / "scores.json").read_text())
    run = json.loads((tmp_path / "two" / "run.json").read_text())
    assert run["config"]["num_processes"] == 2
    np.testing.assert_allclose([r["score"] for r in two["rows"]], [r["score"] for r in one["rows"]], rtol=1e-5, atol=1e-6)
    assert not list((tmp_path / "cache-two").glob("scores/*/*.part-*"))  # parts joined and removed
