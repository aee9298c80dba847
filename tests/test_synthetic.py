"""Synthetic Narratives: real layout, files that parse, and the planted ground truth is measurable."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import nibabel as nib
import numpy as np
import pytest

from assocjax.ceiling import split_half_ceiling
from assocjax.data.synthetic import (Parcels, SyntheticConfig, make_synthetic, planted_signal, random_embedding,
                                     scan_bold, spm_hrf, stimulus_design, summary_line, vertex_maps)
from assocjax.stimuli import audio_onset, read_gentle_csv, read_tr
from synthetic_null import NULL_SNR_ARGS, NULL_SPACE, make_null_dataset

ROOT = Path(__file__).resolve().parents[1]
NARRATIVES = ROOT.parent / "shared" / "narratives"
SPACE, N_VERT = "tinysphere", 150
# 250 story TRs: the split-half r of one vertex then has a sampling SD of about 0.05, so the
# median of ~46 vertices per parcel is good to ~0.01 (see test_ceiling_matches_manifest).
TINY = dict(space=SPACE, n_vertices=N_VERT, story_trs=250, feature_dim=8, n_subjects=7, volume_shape=(5, 6, 5))


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "narratives"
    manifest = make_synthetic(SyntheticConfig(out=out, **TINY))
    return out, manifest


def _bold(root: Path, stem: str, space: str = SPACE) -> np.ndarray:
    """(T, V) both hemispheres of one scan, left first."""
    sub = stem.split("_")[0]
    halves = []
    for h in "LR":
        img = nib.load(root / f"derivatives/afni-nosmooth/{sub}/func/{stem}_space-{space}_hemi-{h}_desc-clean.func.gii")
        assert all(d.intent == nib.nifti1.intent_codes["NIFTI_INTENT_TIME_SERIES"] for d in img.darrays)
        assert all(d.data.dtype == np.float32 for d in img.darrays)
        halves.append(np.stack([d.data for d in img.darrays]))
    return np.concatenate(halves, 1)


def _atlas(root: Path, manifest: dict) -> tuple[np.ndarray, list[str]]:
    labels, names = [], None
    for h in "LR":
        lab, _, nm = nib.freesurfer.read_annot(root / manifest["atlas"]["annot"][h])
        labels.append(lab)
        names = [n.decode() for n in nm]
    return np.concatenate(labels), names


def _tsv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _story_bold(root: Path, manifest: dict, task: str) -> np.ndarray:
    """(S, T_story, V) the included subjects' scans of one task, story window only."""
    t = manifest["tasks"][task]
    a, b = t["story_window_trs"]
    return np.stack([_bold(root, f"{s}_task-{task}")[a:b] for s in t["included_subjects"]])


def test_layout_parses_like_narratives(ds):
    root, m = ds
    for name in ("participants.tsv", "dataset_description.json", "code/scan_exclude.json", "code/event_meta.json",
                 "associations.json", "manifest.json"):
        assert (root / name).is_file(), name
    meta = json.loads((root / "code/event_meta.json").read_text())
    labels, names = _atlas(root, m)
    assert names == ["medial_wall", "language_stg", "frontal_ifg", "parietal_angular", "mtl_hippocampus",
                     "mtl_parahippocampal", "visual_control"]
    assert set(np.unique(labels)) == set(range(len(names)))
    for scan in m["scans"]:
        func = root / scan["subject"] / "func" / scan["stem"]
        assert read_tr(f"{func}_bold.json") == 1.5
        assert json.loads(Path(f"{func}_bold.json").read_text())["TaskName"] == scan["task"]
        assert audio_onset(f"{func}_events.tsv") == 3.0
        events = _tsv(Path(f"{func}_events.tsv"))
        assert [e["trial_type"] for e in events] == ["music", "story"]
        story = meta[scan["task"]][scan["task"]]
        assert float(events[1]["onset"]) == story["onset"] * 1.5
        y = _bold(root, scan["stem"])
        assert y.shape == (scan["n_trs"], 2 * N_VERT)
        assert np.array_equal(np.isnan(y).all(0), labels == 0) and not np.isnan(y[:, labels != 0]).any()
    for task in m["tasks"]:
        t = read_gentle_csv(root / f"stimuli/gentle/{task}/align.csv")
        assert t.n_missing > 0 and len(t.words) > 500
        onsets, _ = t.times(3.0)  # audio clock -> scan clock: the story event starts at onset TR 8
        assert onsets[0] >= 8 * 1.5 and onsets[-1] < (8 + 250) * 1.5
    vol = nib.load(root / "derivatives/afni-nosmooth/sub-001/func/sub-001_task-storya_space-MNI152NLin2009cAsym_res-native_desc-clean_bold.nii.gz")
    assert vol.shape == (5, 6, 5, m["scans"][0]["n_trs"]) and vol.header.get_zooms()[3] == 1.5
    brain = nib.load(root / "derivatives/fmriprep/sub-001/func/sub-001_task-storya_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz")
    inside = np.asarray(brain.dataobj).astype(bool)
    assert np.allclose(brain.affine, vol.affine) and 0 < inside.sum() < inside.size
    assert np.isfinite(vol.get_fdata()).all() and (vol.get_fdata()[~inside] == 0).all()


def test_participants_and_exclusions(ds):
    root, m = ds
    rows = _tsv(root / "participants.tsv")
    assert list(rows[0]) == ["participant_id", "age", "sex", "task", "condition", "comprehension"]
    multi = [r for r in rows if "," in r["task"]]
    assert multi and all(len(r[c].split(",")) == len(r["task"].split(",")) for r in multi for c in ("age", "sex"))
    without = [r["participant_id"] for r in rows if not (root / r["participant_id"]).exists()]
    assert without == ["sub-008"]
    exclude = json.loads((root / "code/scan_exclude.json").read_text())
    stems = [s for subs in exclude.values() for lst in subs.values() for s in lst]
    assert stems == ["sub-001_task-storyb"]
    assert (root / f"derivatives/afni-nosmooth/sub-001/func/{stems[0]}_space-{SPACE}_hemi-L_desc-clean.func.gii").is_file()
    assert m["tasks"]["storyb"]["excluded_scans"] == stems
    assert "sub-001" not in m["tasks"]["storyb"]["included_subjects"]


def test_ceiling_matches_manifest(ds):
    """Median split-half reliability per parcel = S*snr / (1 + S*snr) from the manifest.

    Per vertex the SB-corrected split-half r has a sampling SD near (1 - r^2) / sqrt(T)
    ~ 0.05 at T = 250; the median of ~46 vertices is good to ~0.01 (~0.02 in the null
    parcel, where Spearman-Brown doubles a near-zero r). Over 10 other seeds the largest
    miss was 0.033; 0.06 is about 3 SD of the worst parcel.
    """
    root, m = ds
    labels, names = _atlas(root, m)
    task = "storya"
    assert len(m["tasks"][task]["included_subjects"]) == 6  # even: no odd-S Spearman-Brown bias
    rel = np.asarray(split_half_ceiling(jnp.asarray(_story_bold(root, m, task)), n_splits=40))
    assert np.isnan(rel[labels == 0]).all()
    for i, name in enumerate(names[1:], start=1):
        want = m["tasks"][task]["expected_ceiling"][name]
        assert want["max_r"] == pytest.approx(np.sqrt(want["reliability"]))
        assert np.median(rel[labels == i]) == pytest.approx(want["reliability"], abs=0.06), name


def test_images_are_the_model_functions_of_the_files(ds):
    """The writer adds nothing to the generative model: a scan's image is `scan_bold` of the
    `planted_signal` of `stimulus_design` over the files written (alignment, associations,
    atlas), with the manifest's seed and window; the excluded scan is noise only."""
    root, m = ds
    cfg = SyntheticConfig(out=root, **TINY)
    parcels = Parcels.from_snr(cfg.snr)
    assoc = json.loads((root / "associations.json").read_text())
    for scan in (next(s for s in m["scans"] if not s["excluded"]), next(s for s in m["scans"] if s["excluded"])):
        window = tuple(m["tasks"][scan["task"]]["story_window_trs"])
        t = read_gentle_csv(root / f"stimuli/gentle/{scan['task']}/align.csv", on_unsorted="sort")
        heard, assoc_NP = stimulus_design(t, scan["audio_onset"], scan["n_trs"], scan["tr"],
                                          random_embedding(cfg.feature_dim, cfg.seed), assoc, window)
        for h in "LR":
            labels = nib.freesurfer.read_annot(root / m["atlas"]["annot"][h])[0]
            maps = vertex_maps(cfg.seed, h, heard.shape[1], assoc_NP.shape[1], labels.size)
            signal = None if scan["excluded"] else planted_signal(heard, assoc_NP, maps, labels, parcels,
                                                                  cfg.assoc_share, window)
            want = scan_bold(cfg.seed, scan["stem"], h, labels, parcels, cfg.noise_ar1, scan["n_trs"], signal)
            img = nib.load(root / f"derivatives/afni-nosmooth/{scan['subject']}/func/{scan['stem']}_space-{SPACE}"
                                  f"_hemi-{h}_desc-clean.func.gii")
            np.testing.assert_array_equal(np.stack([d.data for d in img.darrays]), want)


def test_excluded_scan_has_no_signal(ds):
    root, m = ds
    labels, names = _atlas(root, m)
    stg = labels == names.index("language_stg")
    a, b = m["tasks"]["storyb"]["story_window_trs"]
    group = _story_bold(root, m, "storyb")[..., stg].mean(0)

    def r_with_group(stem):
        y = _bold(root, stem)[a:b, stg]
        return np.median([np.corrcoef(y[:, v], group[:, v])[0, 1] for v in range(y.shape[1])])

    assert abs(r_with_group("sub-001_task-storyb")) < 0.12
    assert r_with_group("sub-006_task-storyb") > 0.3


def test_only_mtl_parcels_carry_associates(ds):
    """Associate-word features add explained variance beyond the heard words only in mtl_ parcels.

    Chance gain of 8 extra regressors over 250 TRs is ~8/250 = 0.03 of the residual variance;
    the planted MTL gain is ~0.2 (half the MTL signal, group mean of 6 subjects).
    """
    root, m = ds
    labels, names = _atlas(root, m)
    task = "storya"
    t = m["tasks"][task]
    a, b = t["story_window_trs"]
    scan = next(s for s in m["scans"] if s["task"] == task)
    heard, assoc = stimulus_design(
        read_gentle_csv(root / f"stimuli/gentle/{task}/align.csv"),
        audio_onset(root / scan["subject"] / "func" / f"{scan['stem']}_events.tsv"), scan["n_trs"], scan["tr"],
        random_embedding(m["feature_dim"], m["feature_seed"]), json.loads((root / m["associations"]).read_text()),
        (a, b), m["response"])
    y = _story_bold(root, m, task).mean(0)

    def r2(x):
        x = np.c_[np.ones(b - a), x[a:b]]
        res = y - x @ np.linalg.lstsq(x, np.nan_to_num(y), rcond=None)[0]
        return 1 - res.var(0) / y.var(0)

    gain = r2(np.c_[heard, assoc]) - r2(heard)
    for i, name in enumerate(names[1:], start=1):
        g = np.median(gain[labels == i])
        if m["parcels"][name]["mtl"]:
            assert g > 0.1, (name, g)
        else:
            assert g < 0.07, (name, g)
    assert np.median(r2(heard)[labels == names.index("language_stg")]) > 0.5


def test_same_seed_same_bytes_and_overwrite(ds, tmp_path):
    root, _ = ds
    again = tmp_path / "again"
    make_synthetic(SyntheticConfig(out=again, **TINY))
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((root / f).read_bytes() == (again / f).read_bytes() for f in files)

    with pytest.raises(FileExistsError):
        make_synthetic(SyntheticConfig(out=again, **TINY))
    (again / "notes.txt").write_text("mine")
    small = {**TINY, "n_subjects": 3, "story_trs": 40, "volume_shape": None}
    make_synthetic(SyntheticConfig(out=again, seed=1, overwrite=True, **small))
    assert (again / "notes.txt").read_text() == "mine"  # only files the generator wrote are removed
    assert not (again / "sub-007").exists() and not (again / "derivatives/afni-nosmooth/sub-007").exists()
    stem = "sub-001_task-storya"
    assert not np.array_equal(np.nan_to_num(_bold(again, stem)[:40]), np.nan_to_num(_bold(root, stem)[:40]))


def test_feature_callable_and_fir(tmp_path):
    calls = []

    def lm_layer(words):
        calls.append(len(words))
        return random_embedding(5, seed=3)(words) * 10.0  # any scale: features are z-scored

    lm_layer.__name__ = "tiny-lm/layer-2"
    m = make_synthetic(SyntheticConfig(out=tmp_path / "d", space=SPACE, n_vertices=40, n_subjects=2, story_trs=40,
                                       response="fir", planted_layer=2), features=lm_layer)
    assert calls and m["feature_source"] == "tiny-lm/layer-2" and m["feature_dim"] == 5
    assert m["planted_layer"] == 2 and m["feature_seed"] is None and m["response"] == "fir"


def test_spm_hrf_shape():
    h = spm_hrf(0.5)
    assert h.sum() == pytest.approx(1.0)
    assert 4.5 <= np.argmax(h) * 0.5 <= 5.5  # peak ~5 s
    assert h.min() < 0 and 12 <= np.argmin(h) * 0.5 <= 17  # undershoot ~15 s
    assert spm_hrf(1.5).size == 22  # 0..32 s, every TR, as in SPM


@pytest.mark.skipif(not NARRATIVES.is_dir(), reason="shared Narratives metadata not available")
def test_from_real_metadata_cli(tmp_path):
    out = tmp_path / "real"
    cmd = [sys.executable, str(ROOT / "scripts/make_synthetic.py"), "--out", str(out), "--from-metadata", str(NARRATIVES),
           "--stories", "pieman", "--n-subjects", "2", "--space", SPACE, "--n-vertices", "60"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("wrote 4 scans (2 subjects")
    m = json.loads((out / "manifest.json").read_text())
    # sub-001's pieman scans are all excluded, so the first two usable listeners are sub-002/003.
    assert m["tasks"]["pieman"]["included_subjects"] == ["sub-002", "sub-003"]
    assert (out / "stimuli/gentle/pieman/align.csv").read_bytes() == (NARRATIVES / "stimuli/gentle/pieman/align.csv").read_bytes()
    copied = sorted(p.relative_to(out) for p in out.glob("sub-*/func/*"))
    assert len(copied) == 8  # 2 subjects x run-1/run-2 x (sidecar, events)
    assert all((out / p).read_bytes() == (NARRATIVES / p).read_bytes() for p in copied)
    assert [r["task"] for r in _tsv(out / "participants.tsv")] == ["pieman", "pieman"]
    meta = json.loads((out / "code/event_meta.json").read_text())
    assert meta == {"pieman": json.loads((NARRATIVES / "code/event_meta.json").read_text())["pieman"]}
    # Scan length: the last event ends at 437 s = 291.3 TRs -> 292, plus 8 tail TRs.
    y = _bold(out, "sub-002_task-pieman_run-1")
    assert y.shape == (300, 120) and all(s["n_trs"] == 300 for s in m["scans"])


# ---------------------------------------------------------------- noise: white (default) and AR(1)

def _noise_draws(manifest: dict, stem: str, index: int, n_trs: int, n_v: int) -> np.ndarray:
    """The standard-normal draws of one scan, from the stream the manifest documents
    (noise = 5, + blake2b-8 hash of the scan stem, + 0/1/2 for L/R/vol)."""
    import hashlib
    assert "noise=5 (+ hash of the scan stem, L/R/vol)" in manifest["seed_streams"]
    h = int.from_bytes(hashlib.blake2b(stem.encode(), digest_size=8).digest(), "little")
    return np.random.default_rng([manifest["seed"], 5, h, index]).standard_normal((n_trs, n_v))


def _ar1_reference(z_NV: np.ndarray, rho: float) -> np.ndarray:
    """float64 closed form of the stationary AR(1): e_t = rho^t z_0 + sqrt(1-rho^2) sum_{1<=k<=t} rho^(t-k) z_k."""
    t = np.arange(z_NV.shape[0])
    lag = t[:, None] - t[None, :]
    L = np.where(lag >= 0, float(rho) ** np.maximum(lag, 0), 0.0) * np.sqrt(1 - rho ** 2)
    L[:, 0] = float(rho) ** t
    return L @ z_NV


def _hemi_bold(root: Path, scan: dict, hemi: str, space: str) -> np.ndarray:
    func = root / f"derivatives/afni-nosmooth/{scan['subject']}/func/{scan['stem']}_space-{space}_hemi-{hemi}_desc-clean.func.gii"
    return np.stack([d.data for d in nib.load(func).darrays])


@pytest.mark.parametrize("workers", [1, 3])
def test_default_noise_bytes_unchanged(tmp_path, workers):
    """With noise_ar1 left at 0 every file is byte-identical to what the generator wrote
    before the option existed (hashes in tests/data, retaken when midpoints moved the signal), however many
    threads write the images."""
    import hashlib
    rec = json.loads((ROOT / "tests/data/synthetic_default_sha256.json").read_text())
    if (np.__version__, nib.__version__) != (rec["numpy"], rec["nibabel"]):
        pytest.skip(f"hashes were taken with numpy {rec['numpy']} / nibabel {rec['nibabel']}, whose random "
                    f"streams and encoders the bytes depend on; this is numpy {np.__version__} / nibabel {nib.__version__}")
    out = tmp_path / "d"
    make_synthetic(SyntheticConfig(out=out, **{**rec["config"], "volume_shape": tuple(rec["config"]["volume_shape"])}),
                   workers=workers)
    got = {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*") if p.is_file()}
    assert sorted(got) == sorted(rec["sha256"])
    assert [f for f in got if got[f] != rec["sha256"][f]] == []
    assert "noise_ar1" not in json.loads((out / "manifest.json").read_text())["config"]


def test_default_noise_is_the_white_stream(ds):
    """Version-independent form of the same promise: where there is no signal (visual_control,
    SNR 0, noise_sd 1) every value is the scan's standard-normal draw itself, in float32."""
    root, m = ds
    assert "noise" not in m and m["parcels"]["visual_control"]["noise_sd"] == 1.0
    for scan in m["scans"][:3]:
        for i, h in enumerate("LR"):
            lab, _, names = nib.freesurfer.read_annot(root / m["atlas"]["annot"][h])
            null = lab == [n.decode() for n in names].index("visual_control")
            z = _noise_draws(m, scan["stem"], i, scan["n_trs"], N_VERT)
            assert np.array_equal(_hemi_bold(root, scan, h, SPACE)[:, null], z[:, null].astype(np.float32))


def test_ar1_noise_matches_reference(tmp_path):
    """noise_ar1 = rho: y = signal + noise_sd * AR(1)(z) with the same draws z as white noise, so
    y_rho - noise_sd * reference(z) recovers the very signal y_0 - noise_sd * z does (float32
    rounding apart), in every parcel, for both hemispheres and the volume."""
    small = dict(space=SPACE, n_vertices=40, n_stories=1, n_subjects=2, story_trs=40, feature_dim=4,
                 volume_shape=(4, 5, 4))
    m0 = make_synthetic(SyntheticConfig(out=tmp_path / "white", **small))
    rho = 0.7
    m1 = make_synthetic(SyntheticConfig(out=tmp_path / "ar1", noise_ar1=rho, **small))
    assert m1["config"]["noise_ar1"] == rho and m1["noise"]["rho"] == rho
    assert m1["tasks"] == m0["tasks"]  # same expected ceilings: marginal variances do not change
    sd = {i: p["noise_sd"] for p in m0["parcels"].values() if (i := p["index"])}
    checked = 0
    for scan in m0["scans"]:
        for i, h in enumerate("LR"):
            lab = nib.freesurfer.read_annot(tmp_path / "white" / m0["atlas"]["annot"][h])[0]
            keep = lab > 0
            sd_V = np.array([sd.get(int(l), np.nan) for l in lab])
            z = _noise_draws(m0, scan["stem"], i, scan["n_trs"], lab.size)
            s0 = _hemi_bold(tmp_path / "white", scan, h, SPACE) - sd_V * z
            s1 = _hemi_bold(tmp_path / "ar1", scan, h, SPACE) - sd_V * _ar1_reference(z, rho)
            assert np.isnan(s1[:, ~keep]).all()
            np.testing.assert_allclose(s1[:, keep], s0[:, keep], rtol=0, atol=1e-5)
            assert np.abs(s1[:, keep]).max() > 0.5 or scan["excluded"]  # the signal is there (or planted nowhere)
            checked += 1
    assert checked == 2 * len(m0["scans"])
    vol = nib.load(tmp_path / "ar1" / "derivatives/afni-nosmooth/sub-001/func/sub-001_task-storya_space-MNI152NLin2009cAsym_res-native_desc-clean_bold.nii.gz")
    vol0 = nib.load(tmp_path / "white" / "derivatives/afni-nosmooth/sub-001/func/sub-001_task-storya_space-MNI152NLin2009cAsym_res-native_desc-clean_bold.nii.gz")
    assert not np.array_equal(vol.get_fdata(), vol0.get_fdata())  # the volume gets AR(1) noise too


def test_ar1_noise_statistics(tmp_path):
    """Null dataset (no signal, noise_sd 1), rho = 0.8, 3 scans x ~270 vertices x 316 TRs.

    Pooled over ~800 series (~250k TR pairs), known mean 0: the lag-k autocorrelation estimate has
    SD ~ 0.002, the variance ~ 0.005 overall and ~ 0.05 at one TR; a cross-vertex or cross-scan
    correlation of independent AR(1) series has SD sqrt((1 + rho^2) / ((1 - rho^2) T)) = 0.12,
    ~0.001 for the mean over all vertex pairs of a scan, ~0.007 over a scan pair's vertices.
    Tolerances are about 5 SD.
    """
    rho = 0.8
    root, m = make_null_dataset(tmp_path, rho=rho, n_subjects=3, n_vertices=150, story_trs=300)
    assert m["noise"]["rho"] == rho
    assert all(p["snr"] == 0.0 and p["noise_sd"] == 1.0 for p in m["parcels"].values() if p["index"])
    labels = np.concatenate([nib.freesurfer.read_annot(root / m["atlas"]["annot"][h])[0] for h in "LR"])
    e = np.stack([np.concatenate([_hemi_bold(root, s, h, NULL_SPACE) for h in "LR"], 1)[:, labels > 0]
                  for s in m["scans"]]).astype(np.float64)  # (scans, T, V)
    n_scans, T, V = e.shape
    assert n_scans == 3 and T == 316
    for k in (1, 2, 5):
        assert (e[:, k:] * e[:, :-k]).mean() / (e ** 2).mean() == pytest.approx(rho ** k, abs=0.01), k
    assert (e ** 2).mean() == pytest.approx(1.0, abs=0.025)
    assert (e[:, 0] ** 2).mean() == pytest.approx(1.0, abs=0.25)  # stationary start: not 1 - rho^2, not 1/(1 - rho^2)
    assert (e[:, -1] ** 2).mean() == pytest.approx(1.0, abs=0.25)
    sd_r = np.sqrt((1 + rho ** 2) / ((1 - rho ** 2) * T))
    for scan in e:  # across vertices of a scan
        r = np.corrcoef(scan.T)[np.triu_indices(V, 1)]
        assert abs(r.mean()) < 0.005 and r.std() == pytest.approx(sd_r, rel=0.1)
    for a, b in ((0, 1), (0, 2), (1, 2)):  # across scans (subjects), vertex by vertex
        za, zb = (x - x.mean(0) for x in (e[a], e[b]))
        r = (za * zb).sum(0) / np.sqrt((za ** 2).sum(0) * (zb ** 2).sum(0))
        assert abs(r.mean()) < 5 * sd_r / np.sqrt(V) and r.std() == pytest.approx(sd_r, rel=0.15)


def test_context_mode_plants_the_story_read_with_its_associates(ds, tmp_path):
    """assoc_mode "context": the MTL regressors are a context-dependent feature function's values at
    the heard words of the story read with every word followed by its associates, and the images are
    the model functions of exactly that design; a context-free function hears nothing new there."""
    from assocjax.data.synthetic.model import read_with_associates

    root, m = ds
    assoc = json.loads((root / "associations.json").read_text())
    emb = random_embedding(8, 3)

    def running_mean(words):  # each word's feature depends on everything read before it
        x = emb(words).astype(np.float64)
        return (np.cumsum(x, 0) / np.arange(1, len(words) + 1)[:, None]).astype(np.float32)

    running_mean.__name__ = "running mean"
    words = ["Kapo", "lime", "kapo"]
    small = {a: [f"{a}x", f"{a}y"] for a in ("kapo", "lime")}
    read, at = read_with_associates(words, small)
    assert read == ["Kapo", "kapox", "kapoy", "lime", "limex", "limey", "kapo", "kapox", "kapoy"]
    assert at.tolist() == [0, 3, 6]

    scan = next(s for s in m["scans"] if not s["excluded"])
    window = tuple(m["tasks"][scan["task"]]["story_window_trs"])
    t = read_gentle_csv(root / f"stimuli/gentle/{scan['task']}/align.csv", on_unsorted="sort")
    kw = dict(onset_s=scan["audio_onset"], n_trs=scan["n_trs"], tr=scan["tr"], associations=assoc, window=window)
    heard, ctx = stimulus_design(t, features=running_mean, assoc_mode="context", **kw)
    read, at = read_with_associates(list(t.words), assoc)
    in_context = running_mean(read)[at]

    def story_in_context(ws):  # the story's words -> their in-context features (anything else: as before)
        return in_context if list(ws) == list(t.words) else running_mean(ws)

    want, _ = stimulus_design(t, features=story_in_context, **kw)  # their "heard" regressors
    np.testing.assert_array_equal(ctx, want)
    assert not np.allclose(ctx, heard)
    free_heard, free_ctx = stimulus_design(t, features=emb, assoc_mode="context", **kw)
    np.testing.assert_array_equal(free_ctx, free_heard)
    with pytest.raises(ValueError, match="assoc_mode must be one of"):
        stimulus_design(t, features=emb, assoc_mode="oracle", **kw)

    cfg = SyntheticConfig(out=tmp_path / "ctx", **{**TINY, "n_subjects": 3, "story_trs": 60, "volume_shape": None},
                          assoc_mode="context")
    m2 = make_synthetic(cfg, features=running_mean)
    assert m2["config"]["assoc_mode"] == "context" and m2["assoc_mode"]["mode"] == "context"
    assert "assoc_mode" not in m["config"] and "assoc_mode" not in m  # the default keeps its bytes
    parcels = Parcels.from_snr(cfg.snr)
    assoc2 = json.loads((cfg.out / "associations.json").read_text())
    scan = next(s for s in m2["scans"] if not s["excluded"])
    window = tuple(m2["tasks"][scan["task"]]["story_window_trs"])
    t = read_gentle_csv(cfg.out / f"stimuli/gentle/{scan['task']}/align.csv", on_unsorted="sort")
    heard, ctx = stimulus_design(t, scan["audio_onset"], scan["n_trs"], scan["tr"], running_mean, assoc2, window,
                                 assoc_mode="context")
    labels = nib.freesurfer.read_annot(cfg.out / m2["atlas"]["annot"]["L"])[0]
    maps = vertex_maps(cfg.seed, "L", heard.shape[1], ctx.shape[1], labels.size)
    signal = planted_signal(heard, ctx, maps, labels, parcels, cfg.assoc_share, window)
    want = scan_bold(cfg.seed, scan["stem"], "L", labels, parcels, cfg.noise_ar1, scan["n_trs"], signal)
    np.testing.assert_array_equal(_hemi_bold(cfg.out, scan, "L", SPACE), want)
    with pytest.raises(ValueError, match="--assoc-mode 'oracle' must be one of"):
        make_synthetic(SyntheticConfig(out=tmp_path / "bad", space=SPACE, n_vertices=20, assoc_mode="oracle"))


@pytest.mark.parametrize("rho", [-0.1, 1.0, float("nan")])
def test_noise_ar1_must_be_in_unit_interval(tmp_path, rho):
    with pytest.raises(ValueError, match=r"--noise-ar1 .* must be in \[0, 1\): the AR\(1\) rho"):
        make_synthetic(SyntheticConfig(out=tmp_path / "d", space=SPACE, n_vertices=20, noise_ar1=rho))
    assert not (tmp_path / "d").exists()


def test_null_dataset_from_the_command_line(tmp_path):
    """Every SNR 0 with AR(1) noise from the CLI (tyro's dict syntax: --snr.<parcel> 0) writes the
    same files as the python helper the null tests import."""
    out = tmp_path / "cli" / "narratives"
    cmd = [sys.executable, str(ROOT / "scripts/make_synthetic.py"), "--out", str(out), "--n-stories", "1",
           "--n-subjects", "2", "--story-trs", "40", "--space", NULL_SPACE, "--n-vertices", "30",
           *NULL_SNR_ARGS, "--noise-ar1", "0.8"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no signal (every SNR 0); AR(1) noise, rho 0.8" in done.stdout
    m = json.loads((out / "manifest.json").read_text())
    assert set(m["config"]["snr"]) == set(m["parcels"]) - {"medial_wall"} and not any(m["config"]["snr"].values())
    assert m["config"]["noise_ar1"] == 0.8
    assert all(c["max_r"] == 0.0 for t in m["tasks"].values() for c in t["expected_ceiling"].values())
    api, m_api = make_null_dataset(tmp_path / "api", rho=0.8, n_subjects=2, n_vertices=30, story_trs=40)
    assert summary_line(m_api, api) == done.stdout.strip().replace(str(out), str(api))
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(api) for p in api.rglob("*") if p.is_file())
    assert all((out / f).read_bytes() == (api / f).read_bytes() for f in files)


def test_builtin_options_reach_the_generator_by_name(tmp_path):
    """`SyntheticOptions` (score.py --synthetic.*) passes every generator field on under its
    own name; the rest of `SyntheticConfig` keeps the generator's defaults."""
    import dataclasses

    from assocjax.pipeline import SyntheticOptions

    opts = SyntheticOptions(n_stories=3, n_subjects=5, story_trs=77, space="somesphere", n_vertices=99,
                            planted_layer=1, response="fir", seed=4)
    cfg = opts.generator_config(tmp_path, vocab_size=123)
    generator = {f.name: f for f in dataclasses.fields(SyntheticConfig)}
    passed = [f.name for f in dataclasses.fields(opts) if f.name not in SyntheticOptions.MODEL_FIELDS]
    assert not set(SyntheticOptions.MODEL_FIELDS) & set(generator)
    assert len(passed) == 10 and all(getattr(cfg, k) == getattr(opts, k) for k in passed)
    assert cfg.out == tmp_path and cfg.vocab_size == 123
    defaults = SyntheticConfig(out=tmp_path)
    assert all(getattr(cfg, k) == getattr(defaults, k) for k in generator if k not in passed + ["out", "vocab_size"])

    @dataclasses.dataclass
    class Diverged(SyntheticOptions):
        not_a_generator_field: int = 1

    with pytest.raises(TypeError, match="not_a_generator_field"):
        Diverged().generator_config(tmp_path)
