"""The streamed BOLD store (pipeline.bold): chunks equal the directly read, trimmed, per-group
z-scored data; a subject without data at a vertex is NaN there only; the cache is reused."""
import shutil
from pathlib import Path

import numpy as np
import pytest

from assocjax.data import read_surface, trim_to_story
from assocjax.data.synthetic import SyntheticConfig, make_synthetic
from assocjax.pipeline import DataOptions, ModelOptions, ScoreConfig
from assocjax.pipeline.bold import prepare
from assocjax.pipeline.design import run_ids, story_rows
from assocjax.pipeline.inputs import select
from conftest import SHARED

N_VERT = 40


@pytest.fixture(scope="module")
def selection(tmp_path_factory, checkpoints):
    tmp = tmp_path_factory.mktemp("bold")
    make_synthetic(SyntheticConfig(out=tmp / "ds", space="tiny", n_vertices=N_VERT, story_trs=60, n_stories=2,
                                   n_subjects=4, feature_dim=4))
    model = tmp / "model"  # selection checks for tokenizer files; the BOLD store never uses the model
    shutil.copytree(checkpoints["gpt2"], model)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(SHARED / "tokenizers" / "gpt2" / name, model / name)
    cfg = ScoreConfig(output=tmp / "out", cache_dir=tmp / "cache", data=DataOptions(root=tmp / "ds", space="tiny", pool_stories=True),
                      model=ModelOptions(path=str(model)), progress=False)
    return cfg, select(cfg, tmp / "ds", str(model), "tiny")


def zscore_reference(y_NX, runs_N):
    """float64 NumPy: per-run z-score; a column flat or non-finite in any run is NaN throughout."""
    y = np.asarray(y_NX, np.float64).copy()
    bad = np.zeros(y.shape[1:], bool)
    for r in np.unique(runs_N):
        part = y[runs_N == r]
        sd = part.std(0)
        bad |= ~np.isfinite(sd) | (sd <= 1e-6 * np.maximum(np.abs(part.mean(0)), 1))
        y[runs_N == r] = (part - part.mean(0)) / np.where(sd > 0, sd, 1)
    y[:, bad] = np.nan
    return y


def test_fits_from_block_matches_numpy_and_masks_flat_columns():
    from assocjax.pipeline.bold import fits_from_block

    rng = np.random.default_rng(0)
    y = rng.normal(3, 2, (50, 2, 6)).astype(np.float32)
    y[:20, 0, 4] = 7.0                      # constant within the first story only
    y[30, 1, 5] = np.nan
    runs = np.repeat([0, 1], [20, 30])
    got = np.asarray(fits_from_block(y, runs, n_runs=2))
    want = zscore_reference(y.reshape(50, -1), runs).reshape(50, 2, 6)
    np.testing.assert_allclose(got[:, :2], want, rtol=1e-5, atol=1e-5)
    assert np.isnan(got[:, 0, 4]).all() and np.isnan(got[:, 1, 5]).all()  # whole columns, not half of one
    np.testing.assert_allclose(got[:, 2, :4], want[:, :, :4].mean(1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[:, 2, 4], want[:, 1, 4], rtol=1e-5, atol=1e-5)   # the subject with data


def test_chunks_equal_direct_reads(selection, tmp_path):
    cfg, sel = selection
    trim = 3
    bold = prepare(sel, tmp_path / "cache", trim_start=trim)
    rows = story_rows(sel, trim)
    groups = run_ids(rows)
    assert bold.rows == tuple(rows) and bold.n_rows == sum(rows)
    direct = []
    for sub in sel.subjects:
        parts = []
        for story in sel.stories:
            scan, st = sel.scans[(sub, story.name)]
            parts.append(trim_to_story(read_surface(scan, "both", sel.derivative, sel.space), story=st).data[trim:])
        direct.append(np.concatenate(parts))
    raw = np.stack(direct, 1)[:, :, bold.keep_V]
    y_NSV = zscore_reference(raw.reshape(raw.shape[0], -1), groups).reshape(raw.shape)
    assert bold.keep_V.sum() < bold.keep_V.size  # the synthetic medial wall is dropped
    got = np.concatenate([np.asarray(bold.chunk(v0, v1, groups)) for v0, v1 in _ranges(bold.n_vertices, 7)], axis=2)
    np.testing.assert_allclose(got[:, :-1], y_NSV, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[:, -1], y_NSV.mean(1), rtol=1e-5, atol=1e-5)
    assert bold.chunk(0, 5, groups, with_subjects=False).shape == (bold.n_rows, 1, 5)


def test_missing_subject_data_is_nan_for_that_subject_only(selection, tmp_path, monkeypatch):
    cfg, sel = selection
    import assocjax.pipeline.bold as mod

    real = mod.read_surface
    victim = sel.subjects[1]

    def read(scan, *a, **k):
        out = real(scan, *a, **k)
        if scan.subject == victim:  # this subject's scan is flat at its first 5 cortical vertices
            cols = np.flatnonzero(np.isfinite(out.data).all(0))[:5]
            out.data[:, cols] = 0.0
        return out

    monkeypatch.setattr(mod, "read_surface", read)
    bold = prepare(sel, tmp_path / "cache")
    groups = run_ids(story_rows(sel, 0))
    y = np.asarray(bold.chunk(0, bold.n_vertices, groups))
    s = sel.subjects.index(victim)
    assert bold.dropped() == {sub: (5 if sub == victim else 0) for sub in sel.subjects}
    assert np.isnan(y[:, s, :5]).all() and np.isfinite(y[:, s, 5:]).all()
    others = [i for i in range(len(sel.subjects)) if i != s]
    assert np.isfinite(y[:, others]).all()
    np.testing.assert_allclose(y[:, -1, :5], y[:, others, :5].mean(1), rtol=1e-5, atol=1e-6)


def test_cache_is_reused_and_a_corrupt_file_is_reread(selection, tmp_path, monkeypatch):
    cfg, sel = selection
    first = prepare(sel, tmp_path / "cache")
    groups = run_ids(story_rows(sel, 0))
    want = np.asarray(first.chunk(0, 10, groups))
    import assocjax.pipeline.bold as mod

    calls = []
    real = mod.read_surface
    monkeypatch.setattr(mod, "read_surface", lambda *a, **k: calls.append(1) or real(*a, **k))
    prepare(sel, tmp_path / "cache")
    assert not calls
    victim = next(iter(first.files.values()))
    Path(victim).write_bytes(Path(victim).read_bytes()[:100])   # truncated
    with pytest.warns(UserWarning, match=f"BOLD cache file .*{Path(victim).name}: .*truncated.*; recomputing"):
        again = prepare(sel, tmp_path / "cache")
    assert len(calls) == 1
    np.testing.assert_array_equal(np.asarray(again.chunk(0, 10, groups)), want)


@pytest.mark.parametrize("damage", ["filled with NaN", "copied from another subject", "meta edited"])
def test_damaged_bold_cache_is_reread_with_a_warning(selection, tmp_path, damage):
    """Damage that keeps a block's size and shape (the old shape check passed it) is caught by
    the stamp: the image is read again, the damaged block never used."""
    cfg, sel = selection
    first = prepare(sel, tmp_path / "cache")
    groups = run_ids(story_rows(sel, 0))
    want = np.asarray(first.chunk(0, first.n_vertices, groups))
    victim, other = (Path(first.files[(sub, sel.stories[0].name)]) for sub in sel.subjects[:2])
    if damage == "filled with NaN":
        np.load(victim, mmap_mode="r+")[...] = np.nan
    elif damage == "copied from another subject":
        shutil.copy(other, victim)
    else:  # one vertex marked without data: same size, a valid .npz
        meta = victim.with_name(victim.name.replace(".npy", ".meta.npz"))
        with np.load(meta) as z:
            m = {k: z[k] for k in z.files}
        m["has"][0] = not m["has"][0]
        np.savez(meta, **m)
        victim = meta
    with pytest.warns(UserWarning, match=f"BOLD cache file .*{victim.name}: .*differ from the checksum"):
        again = prepare(sel, tmp_path / "cache")
    np.testing.assert_array_equal(np.asarray(again.chunk(0, again.n_vertices, groups)), want)


def test_one_subjects_missing_hemisphere_is_dropped_for_that_subject_only(selection, tmp_path, monkeypatch):
    cfg, sel = selection
    import assocjax.pipeline.bold as mod

    real = mod.read_surface
    victim = sel.subjects[0]

    def read(scan, *a, **k):
        out = real(scan, *a, **k)
        if scan.subject == victim:  # this subject's right hemisphere is all NaN (a failed resampling)
            out.data[:, N_VERT:] = np.nan
        return out

    monkeypatch.setattr(mod, "read_surface", read)
    bold = prepare(sel, tmp_path / "cache")
    right = np.arange(bold.keep_V.size) >= N_VERT
    assert bold.keep_V[right].any()                      # the hemisphere stays for the others
    lost = int(bold.keep_V[right].sum())
    assert bold.dropped() == {sub: (lost if sub == victim else 0) for sub in sel.subjects}
    y = np.asarray(bold.chunk(0, bold.n_vertices, run_ids(story_rows(sel, 0))))
    kept_right = right[bold.keep_V]
    assert np.isnan(y[:, 0][:, kept_right]).all() and np.isfinite(y[:, 1:][:, :, kept_right]).all()


def test_full_disk_is_one_line_naming_the_cache_folder_and_leaves_no_file(selection, tmp_path, monkeypatch):
    import errno
    import os

    from assocjax.io import WriteRefusedError

    cfg, sel = selection

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    folder = tmp_path / "cache" / "bold"
    with pytest.raises(WriteRefusedError, match=f"^no space left on device: {folder}; free space or point --cache-dir "
                                                "elsewhere$"):
        prepare(sel, tmp_path / "cache")
    assert list(folder.iterdir()) == []  # neither a partial block nor a stamp


def test_no_data_reasons_name_each_kind_of_bad_series():
    from assocjax.pipeline.bold import NO_DATA, no_data_reasons

    rng = np.random.default_rng(0)
    n = 200
    series = {
        "normal": rng.normal(5, 2, n),
        "heavy tails (physiology, kept)": rng.standard_t(3, n),
        "one NaN time point": np.where(np.arange(n) == 9, np.nan, rng.normal(0, 1, n)),
        "flat": np.full(n, 7.0),
        "one 1e30 spike": np.where(np.arange(n) == 9, 1e30, rng.normal(0, 1, n)),
        "one spike of 1e6 robust SDs": np.where(np.arange(n) == 9, 1e6, rng.normal(0, 1, n)),
        "all values near 1e20": rng.normal(0, 1e20, n),
    }
    want = {"normal": 0, "heavy tails (physiology, kept)": 0, "one NaN time point": "non-finite values",
            "flat": "flat", "one 1e30 spike": "a spike", "one spike of 1e6 robust SDs": "a spike",
            "all values near 1e20": "too large for float32"}
    got = no_data_reasons(np.stack(list(series.values())).astype(np.float32), block=3)  # blocks: bounded memory
    for (name, code), expected in zip(zip(series, got), want.values()):
        assert (code == 0) if expected == 0 else (code and expected in NO_DATA[code]), (name, code)


def test_notes_name_the_subject_file_and_reason(selection, tmp_path, monkeypatch):
    cfg, sel = selection
    import assocjax.pipeline.bold as mod

    real = mod.read_surface
    victim = sel.subjects[-1]
    bad, st = sel.scans[(victim, sel.stories[0].name)]

    def read(scan, *a, **k):
        out = real(scan, *a, **k)
        if scan.stem == bad.stem:  # a spike at 3 cortical vertices during the first story
            cols = np.flatnonzero(np.isfinite(out.data).all(0))[:3]
            out.data[st.onset_tr + 1, cols] = 1e30
        return out

    monkeypatch.setattr(mod, "read_surface", read)
    bold = prepare(sel, tmp_path / "cache")
    assert bold.dropped() == {sub: (3 if sub == victim else 0) for sub in sel.subjects}
    left = mod.surface_paths(bad, sel.hemi, sel.derivative, sel.space)[0]
    assert len(bold.notes) == 1 and victim in bold.notes[0] and f"{left} ({sel.stories[0].name}): 3 (a spike" in \
        bold.notes[0], bold.notes
    assert prepare(sel, tmp_path / "cache").notes == bold.notes    # the same from the cache


def _ranges(n: int, width: int):
    """Consecutive [v0, v1) ranges of `width` covering n (the last one shorter)."""
    return [(v0, min(v0 + width, n)) for v0 in range(0, n, width)]
