"""The score.py pipeline end to end on the built-in synthetic data (tiny sizes): outputs,
planted-layer recovery against the manifest, kill-and-resume, and early input errors."""
import csv
import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from assocjax.data.synthetic import expected_reliability
from assocjax.pipeline import DataOptions, FeatureOptions, ModelOptions, ScoreConfig, SyntheticOptions, score

pytestmark = pytest.mark.slow  # module fixtures run whole pipelines (README: Tests)

REPO = Path(__file__).resolve().parents[1]
# 1500 vertices per hemisphere: enough per parcel for the ceiling and planted-layer checks.
TINY = SyntheticOptions(n_stories=3, n_subjects=8, story_trs=120, space="tinysphere", n_vertices=1500)


def tiny_config(tmp: Path, **kw) -> ScoreConfig:
    return ScoreConfig(output=tmp / "out", cache_dir=tmp / "cache", synthetic=TINY, progress=False, **kw)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("score")
    cfg = tiny_config(tmp)
    return cfg, score(cfg)


def _float(x):
    return math.nan if x in (None, "nan", "") else float(x)


def test_outputs_exist_load_and_agree(run):
    cfg, res = run
    out = cfg.output
    rows = list(csv.DictReader(open(out / "scores.csv")))
    js = json.loads((out / "scores.json").read_text())
    assert len(rows) == len(js["rows"]) == len(res.rows) > 0
    for c, j in zip(rows, js["rows"]):
        assert (c["layer"], c["fit"], c["subject"], c["region"], c["hemi"]) == \
               (str(j["layer"]), j["fit"], j["subject"], j["region"], j["hemi"])
        for k in ("score", "ci_low", "ci_high", "ceiling", "normalized", "alpha"):
            np.testing.assert_allclose(_float(c[k]), _float(j[k]), rtol=1e-12, equal_nan=True)
    assert {r["fit"] for r in rows} == {"mean", "subject", "subjects"}
    assert js["summary"]["best_layer"] == res.summary["best_layer"]

    n = TINY.n_vertices
    for i, layer in enumerate(res.layers):
        for h, half in (("L", slice(0, n)), ("R", slice(n, 2 * n))):
            img = nib.load(out / "maps" / f"layer-{layer:03d}_hemi-{h}_score.func.gii")
            r, ceiling, _ = (np.asarray(d.data) for d in img.darrays)
            np.testing.assert_array_equal(r, res.r_LV[i, half])
            np.testing.assert_array_equal(ceiling, res.max_r_V[half])
    whole = next(r for r in res.rows if r["fit"] == "mean" and r["region"] == "all" and r["hemi"] == "both"
                 and r["layer"] == res.layers[-1])
    assert np.isclose(whole["score"], np.nanmean(res.r_LV[-1]))

    meta = json.loads((out / "run.json").read_text())
    assert meta["config"] == json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    assert {"jax", "flax", "numpy", "python"} <= set(meta["versions"])
    assert meta["seeds"]["ceiling_splits"] == cfg.seed and meta["builtin"]["planted"]["layer"] == TINY.planted_layer
    assert meta["computed_layers"] == list(res.layers) and meta["reused_layers"] == []
    assert "best layer" in (out / "summary.txt").read_text()
    try:
        import assocjax.plots  # noqa: F401  (written alongside; figures are skipped without it)
    except ImportError:
        return
    assert (out / "figures" / "layer_curve.png").is_file() and (out / "figures" / "region_bars.png").is_file()


def test_planted_layer_score_and_ceiling_match_manifest(run):
    cfg, res = run
    manifest = res.manifest
    assert res.summary["best_layer"] == manifest["planted_layer"] == TINY.planted_layer
    scores = res.summary["layer_scores"]
    assert scores[TINY.planted_layer] > max(v for l, v in scores.items() if l != TINY.planted_layer)

    n_subjects = len(json.loads((cfg.output / "run.json").read_text())["selection"]["subjects"])
    mean_rows = {(r["region"], r["layer"]): r for r in res.rows if r["fit"] == "mean" and r["hemi"] == "both"}
    for region, parcel in (("language", "language_stg"), ("frontal_gyrus", "frontal_ifg")):
        expected = math.sqrt(expected_reliability(manifest["parcels"][parcel]["snr"], n_subjects))
        row = mean_rows[(region, TINY.planted_layer)]
        assert abs(row["ceiling"] - expected) < 0.08, (region, row["ceiling"], expected)
        # the planted features are the model's own: close to the ceiling, never far above it
        assert 0.6 < row["score"] / expected < 1.05, (region, row["score"], expected)
    control = mean_rows[("visual_control", TINY.planted_layer)]
    assert abs(control["score"]) < 0.05  # no planted signal there


def test_kill_and_resume_gives_the_same_numbers(run, tmp_path):
    _, full = run
    cfg = tiny_config(tmp_path)
    paused = tmp_path / "paused-after-first-layer"
    # Event-driven, not timed: the child run stops for good right after its first layer file
    # is written (and says so with a file), so the kill lands between layers on any machine.
    code = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from assocjax.pipeline import *
        from assocjax.pipeline import store

        save = store.save

        def save_then_wait(path, **arrays):
            save(path, **arrays)
            if Path(path).name.startswith("layer-"):
                Path({str(paused)!r}).touch()
                time.sleep(3600)

        store.save = save_then_wait
        score(ScoreConfig(output=Path({str(cfg.output)!r}), cache_dir=Path({str(cfg.cache_dir)!r}),
                          synthetic={TINY!r}, progress=False))
    """)
    log = tmp_path / "child.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 600  # generous: CI machines may be loaded
        while not paused.exists():
            assert proc.poll() is None, ("the run ended without stopping after a layer file (are layers still "
                                         f"written with pipeline.store.save?): {log.read_text()[-2000:]}")
            assert time.monotonic() < deadline, "no layer file within 10 minutes"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = {p: p.stat().st_mtime_ns for p in cfg.cache_dir.glob("scores/*/layer-*.npz")}
    assert len(done) == 1 < len(full.layers)
    assert not (cfg.output / "run.json").exists()

    res = score(cfg)
    finished = sorted(int(p.stem.split("-")[1]) for p in done)
    assert list(res.reused_layers) == finished
    assert sorted(res.computed_layers) == [l for l in full.layers if l not in finished]
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # not rewritten
    np.testing.assert_allclose(res.r_LV, full.r_LV, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([r["score"] for r in res.rows], [r["score"] for r in full.rows], rtol=1e-5, atol=1e-6)
    assert res.summary["best_layer"] == full.summary["best_layer"]


def _bad(run, tmp_path, **kw):
    cfg, res = run
    data = dict(root=res.data_root, space=TINY.space) | kw.pop("data", {})
    model = kw.pop("model", str(res.model_path))
    return ScoreConfig(output=tmp_path / "out", cache_dir=tmp_path / "cache", data=DataOptions(**data),
                       model=ModelOptions(path=model), progress=False, **kw)


def _no_weights(tmp_path, run):
    folder = tmp_path / "noweights"
    shutil.copytree(run[1].model_path, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    return str(folder)


@pytest.mark.parametrize("case, error, match", [
    ("data_root", FileNotFoundError, "no_such_dataset"),
    ("space", FileNotFoundError, "space 'fsaverage6'.*has spaces: tinysphere"),
    ("model_path", FileNotFoundError, "no_such_model"),
    ("no_weights", FileNotFoundError, "noweights: no model.safetensors"),
    ("story", ValueError, "unknown story.*'nostory'"),
    ("subject", ValueError, "unknown subject.*sub-099"),
    ("subject_without_story", ValueError, "subject sub-003: no usable scan"),
    ("layer", ValueError, r"layers \[7\] out of range.*0\.\.4"),
    ("excluded", ValueError, "excluded by code/scan_exclude.json"),
])
def test_bad_inputs_fail_early_with_clear_errors(run, tmp_path, case, error, match):
    cfg = {
        "data_root": lambda: _bad(run, tmp_path, data=dict(root=tmp_path / "no_such_dataset")),
        "model_path": lambda: _bad(run, tmp_path, model=str(tmp_path / "no_such_model")),
        "no_weights": lambda: _bad(run, tmp_path, model=_no_weights(tmp_path, run)),
        "space": lambda: _bad(run, tmp_path, data=dict(space="fsaverage6")),
        "story": lambda: _bad(run, tmp_path, data=dict(stories=("nostory",))),
        "subject": lambda: _bad(run, tmp_path, data=dict(subjects=("sub-099",))),
        "subject_without_story": lambda: _bad(run, tmp_path, data=dict(subjects=("sub-002", "sub-003"))),
        "layer": lambda: _bad(run, tmp_path, features=FeatureOptions(layers=(0, 7))),
        # the generator excludes the first subject's scan of the last story
        "excluded": lambda: _bad(run, tmp_path, data=dict(tasks=("storyc",), subjects=("sub-001",))),
    }[case]()
    t0 = time.perf_counter()
    with pytest.raises(error, match=match):
        score(cfg)
    assert time.perf_counter() - t0 < 10 and not cfg.output.exists() and not (cfg.cache_dir / "scores").exists()


def test_cli_help_documents_every_option():
    out = subprocess.run([sys.executable, "scripts/score.py", "--help"], cwd=REPO, capture_output=True, text=True,
                         env=os.environ | {"COLUMNS": "200"}, check=True).stdout
    for flag in ("--output", "--cache-dir", "--distributed", "--model.path", "--data.root", "--data.stories",
                 "--data.subjects", "--data.hemi", "--data.space", "--features.layers", "--features.context",
                 "--features.delays", "--ridge.alphas", "--ridge.inner-folds", "--ceiling.n-splits"):
        assert flag in out, flag
    lines = out.splitlines()
    undocumented = [l for i, l in enumerate(lines) if l.lstrip("│ ").startswith("--")
                    and lines[i + 1].strip("│ ").startswith("(default")]
    assert not undocumented
