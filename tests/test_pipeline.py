"""The score.py pipeline end to end on the built-in synthetic data (tiny sizes): outputs,
planted-layer recovery against the manifest, kill-and-resume, and early input errors."""
import csv
import dataclasses
import errno
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
import xarray as xr

from assocjax.data.synthetic import expected_reliability
from assocjax.outputs import STAGING_PREFIX, OutputError, OutputFolder
from assocjax.pipeline import assets, store
from assocjax.pipeline import (CeilingOptions, DataOptions, FeatureOptions, ModelOptions, RidgeOptions, ScoreConfig,
                               SyntheticOptions, score)
from assocjax.pipeline import grid_edges

pytestmark = pytest.mark.slow  # module fixtures run whole pipelines (docs/testing.md)

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
    assert js["summary"]["cv_best_layer"] == res.summary["cv_best_layer"]

    n = TINY.n_vertices
    for i, layer in enumerate(res.layers):
        for h, half in (("L", slice(0, n)), ("R", slice(n, 2 * n))):
            img = nib.load(out / "maps" / f"layer-{layer:03d}_hemi-{h}_score.func.gii")
            r, ceiling, _ = (np.asarray(d.data) for d in img.darrays)
            np.testing.assert_array_equal(r, res.r_LV[i, half])
            np.testing.assert_array_equal(ceiling, res.max_r_V[half])
    whole = res.scores.sel(unit="mean", region="all", hemi="both", layer=res.layers[-1])
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
    assert res.summary["cv_best_layer"] == manifest["planted_layer"] == TINY.planted_layer
    scores = res.summary["layer_scores"]
    assert scores[TINY.planted_layer] > max(v for l, v in scores.items() if l != TINY.planted_layer)

    n_subjects = len(json.loads((cfg.output / "run.json").read_text())["selection"]["subjects"])
    mean_fit = res.scores.sel(unit="mean", hemi="both", layer=TINY.planted_layer)
    for region, parcel in (("language", "language_stg"), ("frontal_gyrus", "frontal_ifg")):
        expected = math.sqrt(expected_reliability(manifest["parcels"][parcel]["snr"], n_subjects))
        row = {k: float(v) for k, v in mean_fit.sel(region=region)[["score", "ceiling"]].items()}
        assert abs(row["ceiling"] - expected) < 0.08, (region, row["ceiling"], expected)
        # the planted features are the model's own: close to the ceiling, never far above it
        assert 0.6 < row["score"] / expected < 1.05, (region, row["score"], expected)
    control = mean_fit.sel(region="visual_control")
    assert abs(float(control["score"])) < 0.05  # no planted signal there


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
    xr.testing.assert_allclose(res.scores["score"], full.scores["score"], rtol=1e-5, atol=1e-6)
    assert res.summary["cv_best_layer"] == full.summary["cv_best_layer"]


def test_cached_layer_lacking_a_field_is_recomputed(run, tmp_path):
    cfg, full = run
    layer = full.layers[-1]
    path = next(cfg.cache_dir.glob(f"scores/*/layer-{layer:03d}.npz"))
    with np.load(path) as z:
        kept = {k: z[k] for k in z.files if k != "alpha_idx"}
    store.save(path, **kept)  # a stamped file one field short (written by code that stored fewer)
    with pytest.warns(UserWarning, match=r"layer-\d+\.npz: it lacks field\(s\) \['alpha_idx'\] .*; recomputing"):
        res = score(dataclasses.replace(cfg, output=tmp_path / "out"))
    assert list(res.computed_layers) == [layer]
    np.testing.assert_allclose(res.r_LV, full.r_LV, rtol=1e-5, atol=1e-6)
    with np.load(path) as z:
        assert "alpha_idx" in z.files  # the cache holds the whole layer again



def test_damaged_results_cache_is_recomputed_with_a_warning(run, tmp_path):
    """Another layer's file copied over a layer's, and the ceiling edited in place (valid .npz
    files of the right shapes, which the old field checks used) are recomputed, named."""
    cfg, full = run
    first, last = full.layers[0], full.layers[-1]
    folder = next(cfg.cache_dir.glob(f"scores/*/layer-{last:03d}.npz")).parent
    shutil.copy(store.layer_path(folder, first), store.layer_path(folder, last))
    with np.load(folder / "ceiling.npz") as z:
        ceiling = {k: z[k] for k in z.files}
    np.savez(folder / "ceiling.npz", **(ceiling | dict(max_r=np.ones_like(ceiling["max_r"]))))
    with pytest.warns(UserWarning) as caught:
        res = score(dataclasses.replace(cfg, output=tmp_path / "out"))
    said = "\n".join(str(w.message) for w in caught)
    assert f"layer-{last:03d}.npz: its bytes differ from the checksum" in said and "ceiling.npz: its bytes" in said
    assert list(res.computed_layers) == [last]
    np.testing.assert_allclose(res.r_LV, full.r_LV, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.max_r_V, full.max_r_V, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["bold", "features"])
def test_a_bumped_cache_version_reaches_the_results_key(run, tmp_path, monkeypatch, kind):
    """Features or BOLD made by other code give other scores: a bump of their cache's version
    must not find the results computed from the old ones."""
    from assocjax.features import cache as feature_cache
    from assocjax.pipeline import bold

    cfg, _ = run
    module = bold if kind == "bold" else feature_cache
    monkeypatch.setattr(module, "CACHE", dataclasses.replace(module.CACHE, version=module.CACHE.version + 1))
    # One layer is enough and a fifth of the refitting: results are cached per layer, so without
    # the bump this rerun would reuse it (test_rerun_with_fewer_layers_leaves_no_stale_maps_...).
    layer = (TINY.planted_layer,)
    res = score(dataclasses.replace(cfg, output=tmp_path / "out", features=FeatureOptions(layers=layer)))
    assert tuple(res.computed_layers) == layer and tuple(res.reused_layers) == ()


def test_a_complete_read_only_cache_serves_a_run_without_writing(run, tmp_path, monkeypatch):
    """As root chmod does not stop writes: every way the package creates or replaces a file in
    the cache is made to fail as a read-only disk would, and the rerun must not try any."""
    import errno
    import tempfile

    cfg, full = run
    cache = cfg.cache_dir.resolve()
    tried = []

    def refuse(path):
        if cache in Path(path).resolve().parents:
            tried.append(str(path))
            raise PermissionError(errno.EROFS, "read-only file system", str(path))

    real_mkstemp, real_replace, real_mkdir = tempfile.mkstemp, os.replace, Path.mkdir

    def mkstemp(*a, dir=None, **k):
        refuse(Path(dir) / "new")
        return real_mkstemp(*a, dir=dir, **k)

    def replace(src, dst):
        refuse(dst)
        return real_replace(src, dst)

    def mkdir(self, *a, **k):
        if not self.exists():
            refuse(self / "new")
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(Path, "mkdir", mkdir)
    res = score(dataclasses.replace(cfg, output=tmp_path / "out"))
    assert tried == [] and res.computed_layers == ()
    assert (tmp_path / "out" / "scores.csv").is_file()


@pytest.mark.parametrize("damage", ["edited", "added"])
def test_damaged_builtin_world_is_rebuilt_with_a_warning(run, tmp_path, monkeypatch, damage):
    cfg, _ = run
    shutil.copytree(cfg.cache_dir / "builtin", tmp_path / "builtin")

    def build(*a, **k):
        raise RuntimeError("rebuilding")

    monkeypatch.setattr(assets, "_build", build)
    assets.ensure_builtin(TINY, tmp_path, progress=False)  # an intact copy is used as it is
    image = next((tmp_path / "builtin").rglob("*.func.gii"))
    if damage == "edited":
        data = bytearray(image.read_bytes())
        data[len(data) // 2] ^= 1  # same size
        image.write_bytes(bytes(data))
    else:
        image.with_name("sub-999_" + image.name).write_bytes(image.read_bytes())  # an extra scan would be selected
    match = f"/{image.name}: its bytes differ" if damage == "edited" else "files added since it was written: .*sub-999_"
    with pytest.warns(UserWarning, match=f"built-in world .*{match}.*; recomputing"), \
            pytest.raises(RuntimeError, match="rebuilding"):
        assets.ensure_builtin(TINY, tmp_path, progress=False)


def _disk_full(*a, **k):
    import errno

    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_while_saving_a_result_names_the_folder_and_leaves_nothing(tmp_path, monkeypatch):
    from assocjax.io import WriteRefusedError

    folder = tmp_path / "scores" / "abc"
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(WriteRefusedError, match=f"^no space left on device: {folder}; free space or point --cache-dir "
                                                "elsewhere$"):
        store.save(store.layer_path(folder, 1), r_folds=np.zeros((2, 3), np.float32))
    assert list(folder.iterdir()) == []


def test_full_disk_while_building_the_builtin_world_names_the_folder_and_leaves_nothing(tmp_path, monkeypatch):
    from assocjax.io import WriteRefusedError

    def build(opts, out, *a):
        (out / "narratives").mkdir(parents=True)
        (out / "narratives" / "half.gii").write_bytes(b"half")  # the disk fills half-way through
        _disk_full()

    monkeypatch.setattr(assets, "_build", build)
    with pytest.raises(WriteRefusedError, match=f"^no space left on device: {tmp_path / 'builtin'}; free space"):
        assets.ensure_builtin(TINY, tmp_path, progress=False)
    assert list((tmp_path / "builtin").iterdir()) == []  # the half-built copy is removed

def test_alpha_grid_edges_are_recorded_and_quiet_on_the_default_grid(run):
    """Every layer's shares of inner-CV choices at the grid's edges, per fit, in run.json and
    summary.txt. Measured on this data (default 9 alphas, 0.1..1e7): per-subject fits 0.12..0.21
    low, 0.30..0.34 high; subject-mean fit 0.07..0.14 low, 0.19..0.36 high: no note."""
    cfg, res = run
    record = json.loads((cfg.output / "run.json").read_text())
    edges = record["summary"]["alpha_grid_edges"]
    assert edges["alphas"] == [min(cfg.ridge.alphas), max(cfg.ridge.alphas)]
    assert sorted(map(int, edges["layers"])) == list(res.layers)
    (story,) = edges["stories"].values()  # pooled stories: one fit group
    for fits in list(edges["layers"].values()) + list(story.values()):
        assert set(fits) == {"subjects", "mean"}
        assert all(0 <= s["low"] <= edges["warn_above"] and 0 <= s["high"] <= edges["warn_above"] and s["choices"] > 0
                   for s in fits.values())
    assert not [n for n in record["notes"] if n.startswith("alpha grid")]
    assert "alpha at the grid's edges" in (cfg.output / "summary.txt").read_text()


def test_a_grid_stopping_too_low_is_warned_about(run, tmp_path, capsys):
    """--ridge.alphas 0.1 1 10 on data with signal: measured 0.53..0.67 of the per-subject and
    0.65..0.82 of the subject-mean choices at 10 (layers 0..4; on pure noise such a grid puts
    0.42 at either edge, the default grid at most 0.26: tests/test_protocol.py)."""
    cfg, _ = run
    narrow = dataclasses.replace(cfg, output=tmp_path / "out", ridge=RidgeOptions(alphas=(0.1, 1.0, 10.0)),
                                 features=FeatureOptions(layers=(TINY.planted_layer,)))
    res = score(narrow)
    (note,) = [n for n in res.notes if n.startswith("alpha grid")]
    assert "the largest alpha (10)" in note and "--ridge.alphas" in note
    assert f"note: {note}" in capsys.readouterr().err
    record = json.loads((narrow.output / "run.json").read_text())
    assert note in record["notes"]
    high = record["summary"]["alpha_grid_edges"]["layers"][str(TINY.planted_layer)]["mean"]["high"]
    assert high > grid_edges.WARN_ABOVE


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


def _output_under_a_file(run, tmp_path):
    cfg = _bad(run, tmp_path)
    (tmp_path / "out").write_text("not a folder")
    return dataclasses.replace(cfg, output=tmp_path / "out" / "sub")


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
    ("output_under_a_file", NotADirectoryError, "--output .*/out/sub: .*/out exists and is not a folder"),
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
        "output_under_a_file": lambda: _output_under_a_file(run, tmp_path),
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


def test_rerun_with_fewer_layers_leaves_no_stale_maps_and_keeps_the_users_files(run, tmp_path):
    cfg, res = run
    out = tmp_path / "rerun"
    shutil.copytree(cfg.output, out)
    users = {out / "maps" / "poster.png": b"a user's poster", out / "figures" / "talk.png": b"a user's figure"}
    for path, data in users.items():
        path.write_bytes(data)
    fewer = res.layers[:2]
    again = score(dataclasses.replace(cfg, output=out, features=FeatureOptions(layers=fewer)))
    assert again.reused_layers == fewer  # from the results cache: no refit
    maps = sorted(p.name for p in (out / "maps").iterdir())
    assert maps == sorted(["poster.png"] + [f"layer-{l:03d}_hemi-{h}_score.func.gii" for l in fewer for h in "LR"])
    assert {r["layer"] for r in json.loads((out / "scores.json").read_text())["rows"]} == set(fewer)
    assert all(path.read_bytes() == data for path, data in users.items())
    assert all(p.is_file() and out in p.parents and STAGING_PREFIX not in str(p) for p in again.files)  # not staged


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_run_into_the_same_output_fails_at_once(run, tmp_path):
    cfg, _ = run
    other = dataclasses.replace(cfg, output=tmp_path / "out", cache_dir=tmp_path / "cache")
    t0 = time.perf_counter()
    with OutputFolder(other.output):  # another run holds it
        with pytest.raises(OutputError, match=rf"--output {other.output} is in use by another run "
                                              rf"\(process {os.getpid()}\)"):
            score(other)
    assert time.perf_counter() - t0 < 10 and not other.cache_dir.exists()


def test_full_output_disk_leaves_the_previous_outputs_byte_identical(run, tmp_path, monkeypatch):
    cfg, res = run
    out = tmp_path / "full"
    shutil.copytree(cfg.output, out)
    before = _snapshot(out)
    real_fsync, written = os.fsync, []

    def fsync(fd):  # the disk of --output fills up after the rerun's first file (scores.csv)
        if Path(os.readlink(f"/proc/self/fd/{fd}")).is_relative_to(out.resolve()):
            written.append(fd)
            if len(written) > 1:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OutputError, match=f"--output {out}: no space left on its disk"):
        score(dataclasses.replace(cfg, output=out, features=FeatureOptions(layers=res.layers[:2])))
    assert _snapshot(out) == before and not list(out.glob(STAGING_PREFIX + "*"))


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
