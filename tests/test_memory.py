"""The memory budget: a run whose targets take ~3 GiB unchunked stays within a 1 GiB budget
when it streams vertex chunks sized by --memory-gb, and exceeds it when told to solve every
target in one call. Peak RSS per stage comes from the run's own run.json (getrusage)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from assocjax.data.synthetic import DEFAULT_SNR, SyntheticConfig, make_synthetic
from synthetic_null import make_drifting_model

pytestmark = pytest.mark.slow  # module fixtures run whole pipelines (docs/testing.md)

REPO = Path(__file__).resolve().parents[1]
BUDGET_GB = 1.0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("memory")
    make_synthetic(SyntheticConfig(out=tmp / "ds", n_stories=1, n_subjects=6, story_trs=300, space="memsphere",
                                   n_vertices=20000, snr={k: 0.0 for k in DEFAULT_SNR}, feature_dim=4))
    return tmp, make_drifting_model(tmp / "model")


def _run(tmp: Path, model: Path, name: str, *extra: str) -> dict:
    out = tmp / name
    cmd = [sys.executable, "scripts/score.py", "--data.root", str(tmp / "ds"), "--data.space", "memsphere",
           "--model.path", str(model), "--features.layers", "0", "--features.context", "2048", "--output", str(out),
           "--cache-dir", str(tmp / f"cache-{name}"), "--no-progress", "--report.no-figures", "--report.no-maps",
           "--ceiling.n-splits", "4", "--ridge.alphas", "1", "100", "10000", "--ridge.inner-folds", "2", *extra]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, env=os.environ | {"PYTHONPATH": str(REPO)})
    return json.loads((out / "run.json").read_text())


def _growth_gb(run: dict) -> float:
    """Peak RSS reached while the BOLD, ceiling and ridge stages ran, above what the process
    held before them (imports, selection)."""
    st = run["stages"]
    return max(st[s]["peak_rss_gb"] for s in ("bold", "ceiling", "layers")) - st["start"]["peak_rss_gb"]


def test_small_budget_holds_with_chunks_and_breaks_without(dataset):
    tmp, model = dataset
    chunked = _run(tmp, model, "chunked", "--memory-gb", str(BUDGET_GB))
    whole = _run(tmp, model, "whole", "--ridge.target-chunk", "10000000")
    (story,), (whole_story,) = chunked["stories"].values(), whole["stories"].values()
    assert story["ridge_chunk_vertices"]["0"] < story["vertices"]["kept"]  # it did chunk
    assert whole_story["ridge_chunk_vertices"]["0"] == whole_story["vertices"]["kept"]
    assert _growth_gb(chunked) < BUDGET_GB, chunked["stages"]
    assert _growth_gb(whole) > BUDGET_GB, whole["stages"]
    assert chunked["summary"]["layer_scores"] == pytest.approx(whole["summary"]["layer_scores"], abs=1e-6)
