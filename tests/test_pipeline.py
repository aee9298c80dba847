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
from assocjax.pipeline import (CeilingOptions, DataOptions, FeatureOptions, ModelOptions, RidgeOptions, ScoreConfig,
                               SyntheticOptions, score)

pytestmark = pytest.mark.slow  # module fixtures run whole pipelines (README: Tests)

REPO = Path(__file__).resolve().parents[1]
# 1500 vertices per hemisphere: enough per parcel for the ceiling and planted-layer checks.
TINY = SyntheticOptions(n_stories=3, n_subjects=8, story_trs=120, space="tinysphere", n_vertices=1500)


def tiny_config(tmp: Path, **kw) -> ScoreConfig:
    """The tiny built-in data with its three 120-TR stories pooled (fitted together, whole stories
    held out): per story, 114 TRs in four chunks would leave too few training rows to reach the
    ceiling; the per-story mode has its own tests (test_stories.py)."""
    data = kw.pop("data", DataOptions(pool_stories=True))
    return ScoreConfig(output=tmp / "out", cache_dir=tmp / "cache", synthetic=TINY, progress=False, data=data, **kw)


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
                          synthetic={TINY!r}, data=DataOptions(pool_stories=True), progress=False))
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


def test_cached_layer_lacking_a_field_is_recomputed(run, tmp_path):
    cfg, full = run
    layer = full.layers[-1]
    path = next(cfg.cache_dir.glob(f"scores/*/layer-{layer:03d}.npz"))
    with np.load(path) as z:
        kept = {k: z[k] for k in z.files if k != "alpha_idx"}
    np.savez(path, **kept)  # a valid zip, one field short
    with pytest.warns(UserWarning, match=r"layer-\d+\.npz lacks field\(s\) \['alpha_idx'\] .*; recomputing"):
        res = score(dataclasses.replace(cfg, output=tmp_path / "out"))
    assert list(res.computed_layers) == [layer]
    np.testing.assert_allclose(res.r_LV, full.r_LV, rtol=1e-5, atol=1e-6)
    with np.load(path) as z:
        assert "alpha_idx" in z.files  # the cache holds the whole layer again


def _bad(run, tmp_path, **kw):
    cfg, res = run
    data = dict(root=res.data_root, space=TINY.space, pool_stories=True) | kw.pop("data", {})
    model = kw.pop("model", str(res.model_path))
    return ScoreConfig(output=tmp_path / "out", cache_dir=tmp_path / "cache", data=DataOptions(**data),
                       model=ModelOptions(path=model), progress=False, **kw)


def _bad_output_file(run, tmp_path):
    cfg = _bad(run, tmp_path)
    (tmp_path / "out").write_text("not a folder")
    return cfg


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
    ("subject_without_story", ValueError, "subject sub-003: storyb: no usable scan.*stories fitted together"),
    ("layer", ValueError, r"layers \[7\] out of range.*0\.\.4"),
    ("excluded", ValueError, "excluded by code/scan_exclude.json"),
    ("delays_empty", ValueError, "--features.delays is empty"),
    ("delays_acausal", ValueError, r"--features.delays \[0, -1\] <= 0.*--features.allow-acausal"),
    ("delays_too_long", ValueError, "--features.delays up to 1000 TRs: longer than story"),
    ("context_zero", ValueError, "--features.context 0 must be >= 1"),
    ("batch_zero", ValueError, "--features.batch-size 0 must be >= 1"),
    ("vertex_chunk_zero", ValueError, "--ceiling.vertex-chunk 0 must be >= 1"),
    ("alphas", ValueError, r"--ridge.alphas \[10.0, -1.0\] must be values in \(0, "),
    ("output_is_file", NotADirectoryError, "exists and is not a folder"),
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
        "delays_empty": lambda: _bad(run, tmp_path, features=FeatureOptions(delays=())),
        "delays_acausal": lambda: _bad(run, tmp_path, features=FeatureOptions(delays=(0, -1, 2))),
        "delays_too_long": lambda: _bad(run, tmp_path, features=FeatureOptions(delays=(1, 1000))),
        "context_zero": lambda: _bad(run, tmp_path, features=FeatureOptions(context=0)),
        "batch_zero": lambda: _bad(run, tmp_path, features=FeatureOptions(batch_size=0)),
        "vertex_chunk_zero": lambda: _bad(run, tmp_path, ceiling=CeilingOptions(vertex_chunk=0)),
        "alphas": lambda: _bad(run, tmp_path, ridge=RidgeOptions(alphas=(10.0, -1.0))),
        "output_is_file": lambda: _bad_output_file(run, tmp_path),
    }[case]()
    t0 = time.perf_counter()
    with pytest.raises(error, match=match):
        score(cfg)
    assert time.perf_counter() - t0 < 10 and not (cfg.cache_dir / "scores").exists() and not (cfg.cache_dir / "bold").exists()
    assert not cfg.output.is_dir()


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


def test_rerun_with_fewer_layers_leaves_no_stale_maps(run, tmp_path):
    cfg, res = run
    out = tmp_path / "rerun"
    shutil.copytree(cfg.output, out)
    fewer = res.layers[:2]
    again = score(dataclasses.replace(cfg, output=out, features=FeatureOptions(layers=fewer)))
    assert again.reused_layers == fewer  # from the results cache: no refit
    maps = sorted(p.name for p in (out / "maps").iterdir())
    assert maps == sorted(f"layer-{l:03d}_hemi-{h}_score.func.gii" for l in fewer for h in "LR")
    assert {r["layer"] for r in json.loads((out / "scores.json").read_text())["rows"]} == set(fewer)


def _ms_times(run, tmp_path) -> Path:
    """A copy of the built-in dataset whose first story's alignment is in milliseconds."""
    _, res = run
    root = tmp_path / "ms"
    shutil.copytree(res.data_root, root)
    align = root / "stimuli/gentle/storya/align.csv"
    rows = [line.split(",") for line in align.read_text().splitlines()]
    ms = lambda v: f"{float(v) * 1000:.0f}" if v else v  # noqa: E731
    align.write_text("\n".join(",".join([w, a, ms(t0), ms(t1)]) for w, a, t0, t1 in rows) + "\n")
    return root


def test_word_times_in_the_wrong_unit_are_refused(run, tmp_path):
    root = _ms_times(run, tmp_path)
    cfg = _bad(run, tmp_path, data=dict(root=root, stories=("storya",)))
    with pytest.raises(ValueError, match=r"story 'storya'.*words fall outside its scan.*milliseconds"):
        score(cfg)
    assert not (cfg.cache_dir / "bold").exists()  # refused before any BOLD was read
    # accepting them on purpose leaves a design with no words: refused as well, naming the story
    lenient = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, max_words_outside=1.0))
    with pytest.raises(ValueError, match=r"story 'storya', hidden state \d+: \d+ of the design's \d+ columns are zero"):
        score(lenient)
