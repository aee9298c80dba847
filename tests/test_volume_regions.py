"""Regions on volumes: Harvard-Oxford atlases resampled to the BOLD grid (checked against
nibabel's resampler), the voxel hemispheres, where --data.atlas finds a volume's atlas (offline:
nothing is downloaded here), and a synthetic volume run with a planted hippocampus-only effect
that the score tables find in the hippocampus rows and in no region apart from it."""
import csv
import math
from pathlib import Path

import nibabel as nib
import nibabel.processing
import numpy as np
import pytest

from assocjax import rois
from assocjax.data.narratives import VOLUME_SPACE
from assocjax.data.synthetic import SyntheticConfig, make_synthetic, pseudo_words
from assocjax.data.synthetic.writer import HO_ATLAS
from assocjax.features import word_features
from assocjax.models import load_pretrained
from assocjax.pipeline import (DataOptions, FeatureOptions, ModelOptions, ReportOptions, ScoreConfig, SyntheticOptions,
                               assets, score, tables, volume_atlas)

SUB = ["Background", "Left Thalamus", "Left Hippocampus", "Left Amygdala", "Right Thalamus", "Right Hippocampus",
       "Right Amygdala", "Brain-Stem"]
PHG = "Parahippocampal Gyrus, anterior division"


def _labels(shape, seed, n=8):
    return np.random.default_rng(seed).integers(0, n, shape).astype(np.int16)


def test_resampling_is_nibabels_nearest_neighbour():
    """On a shifted, rotated, coarser grid (no centre half-way between atlas voxels) the labels
    are nibabel.processing.resample_from_to's order-0 ones; a centre in the outer half of an edge
    voxel (scipy: outside, cval) takes that voxel's label, one farther out is -1."""
    atlas = nib.Nifti1Image(_labels((12, 14, 10), 0, 50), np.diag([2.0, 2.0, 2.0, 1.0]) + np.c_[np.zeros((4, 3)),
                                                                                                  [-11, -13, -9, 0]])
    c, s = math.cos(0.3), math.sin(0.3)
    target = np.array([[3.1 * c, -3.1 * s, 0, -12.3], [3.1 * s, 3.1 * c, 0, -10.7], [0, 0, 2.9, -8.2], [0, 0, 0, 1]])
    shape = (9, 8, 7)
    ours = rois.resample_labels(atlas, shape, target)
    ref = np.asarray(nibabel.processing.resample_from_to(atlas, (shape, target), order=0, cval=-1).dataobj)
    ijk = nib.affines.apply_affine(np.linalg.solve(atlas.affine, target), np.indices(shape).reshape(3, -1).T)
    inner = np.all((ijk >= 0) & (ijk <= np.asarray(atlas.shape) - 1), 1).reshape(shape)
    edge = np.all((ijk >= -0.5) & (ijk < np.asarray(atlas.shape) - 0.5), 1).reshape(shape) & ~inner
    assert inner.sum() > 100 and edge.sum() > 10 and (~inner & ~edge).sum() > 10
    np.testing.assert_array_equal(ours[inner], ref[inner])
    assert (ours[edge] >= 0).all() and (ours[~inner & ~edge] == -1).all()
    # on its own grid: the image's values, untouched
    np.testing.assert_array_equal(rois.resample_labels(atlas, atlas.shape, atlas.affine), np.asarray(atlas.dataobj))


def test_a_finer_atlas_gives_the_native_labels():
    """A 2 mm atlas whose every other voxel centre is a 4 mm BOLD voxel centre labels the BOLD
    voxels as the 4 mm atlas itself does (the synthetic geometry: 4 mm, centred on 0)."""
    shape = (6, 5, 4)
    coarse = np.diag([4.0, 4.0, 4.0, 1.0])
    coarse[:3, 3] = -2.0 * (np.asarray(shape) - 1)
    labels = _labels(shape, 1)
    fine = np.repeat(np.repeat(np.repeat(labels, 2, 0), 2, 1), 2, 2)[:11, :9, :7]  # centres 2 mm apart
    fine_affine = coarse.copy()
    fine_affine[:3, :3] /= 2
    got = rois.resample_labels(nib.Nifti1Image(fine, fine_affine), shape, coarse)
    np.testing.assert_array_equal(got, labels)


def test_voxel_hemispheres_midline():
    odd = np.diag([2.0, 2.0, 2.0, 1.0])
    odd[0, 3] = -4.0  # x = -4, -2, 0, 2, 4: the x = 0 column straddles the midline
    assert list(rois.voxel_hemispheres(odd, (5, 1, 1)).ravel()) == ["L", "L", "", "R", "R"]
    even = odd.copy()
    even[0, 3] = -3.0  # x = -3, -1, 1, 3: every voxel on one side (x = -1 spans -2..0)
    assert list(rois.voxel_hemispheres(even, (4, 1, 1)).ravel()) == ["L", "L", "R", "R"]
    flipped = np.diag([-2.0, 2.0, 2.0, 1.0])  # FSL's radiological storage: i grows to the left
    flipped[0, 3] = 3.0
    assert list(rois.voxel_hemispheres(flipped, (4, 1, 1)).ravel()) == ["R", "R", "L", "L"]


def test_named_sides_and_left_out_structures():
    """A combined label image: "Left X" / "Right X" is structure X on that side (the name wins
    over the voxel's x), thalamus and brain stem are no group's and left out."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[0, 3] = -3.0  # x = -3, -1, 1, 3
    names = SUB + [PHG]
    data = np.array([SUB.index("Left Hippocampus"), SUB.index("Right Hippocampus"), SUB.index("Left Hippocampus"),
                     SUB.index("Left Thalamus")], np.int16).reshape(4, 1, 1)
    data = np.concatenate([data, np.array([len(SUB), SUB.index("Brain-Stem"), 0, len(SUB)], np.int16).reshape(4, 1, 1)],
                          1)
    atlas = rois.load_harvard_oxford(nib.Nifti1Image(data, affine), names)
    got = [(atlas.names.get(k, ""), h) for k, h in zip(atlas.labels_V, atlas.hemi_V)]
    assert got == [("Hippocampus", "L"), (PHG, "L"), ("Hippocampus", "R"), ("", "L"), ("Hippocampus", "L"),
                   ("Background", "R"), ("", "R"), (PHG, "R")]
    assert sorted(atlas.names.values()) == ["Amygdala", "Background", "Hippocampus", PHG]
    hippo = rois.group_mask(atlas, "hippocampus", "L")
    assert hippo.sum() == 2 and rois.group_mask(atlas, "hippocampus", "R").sum() == 1
    assert not rois.group_mask(atlas, "amygdala").any()
    assert set(rois.groups_for("harvard_oxford")) >= set(rois.MTL_STRUCTURES)
    assert not any(set(rois.groups_for(src)) & set(rois.MTL_STRUCTURES) for src in ("destrieux", "hcp_mmp",
                                                                                      "synthetic"))


def test_no_overlap_names_both_grids():
    img = nib.Nifti1Image(np.ones((3, 3, 3), np.int16), np.eye(4))
    far = np.eye(4)
    far[:3, 3] = 500.0
    with pytest.raises(ValueError, match=r"atlas \(shape \(3, 3, 3\).*labels none of the data.s 8 voxels \(shape \(2, 2, 2\), affine .*500"):
        rois.load_harvard_oxford(img, ["Background", PHG], mask=np.ones((2, 2, 2), bool), grid=((2, 2, 2), far))


def _write_label_image(path: Path, names_suffix: str):
    data = np.zeros((4, 3, 3), np.int16)
    data[0], data[3] = 1, 2
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    names = ["Background", "Left Hippocampus", PHG]
    if names_suffix == ".tsv":
        text = "index\tname\n" + "".join(f"{i}\t{n}\n" for i, n in enumerate(names) if i)
    else:
        text = "\n".join(names) + "\n"
    path.with_name(path.name.removesuffix(".nii.gz") + names_suffix).write_text(text)


@pytest.mark.parametrize("suffix", [".tsv", ".txt"])
def test_atlas_path_with_names_beside_it(tmp_path, suffix):
    img = tmp_path / "my_dseg.nii.gz"
    _write_label_image(img, suffix)
    files, note = volume_atlas.resolve(tmp_path, VOLUME_SPACE, str(img))
    assert note is None and files == (img, img.with_name("my_dseg" + suffix))
    atlas = volume_atlas.load(files, np.ones((4, 3, 3), bool), np.eye(4))
    assert rois.group_mask(atlas, "hippocampus").sum() == 9 and rois.group_mask(atlas, "parahippocampal", strict=False).sum() == 9


def _fsl_folder(folder: Path, res: int = 2) -> Path:
    (folder / "HarvardOxford").mkdir(parents=True)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    for kind, names, xml in (("cort", [PHG], "Cortical"), ("sub", SUB[1:], "Subcortical")):
        nib.save(nib.Nifti1Image(np.ones((3, 3, 3), np.int16), affine),
                 folder / "HarvardOxford" / f"HarvardOxford-{kind}-maxprob-thr25-{res}mm.nii.gz")
        items = "".join(f'<label index="{i}">{n}</label>' for i, n in enumerate(names))
        (folder / f"HarvardOxford-{xml}.xml").write_text(f"<atlas><data>{items}</data></atlas>")
    return folder


def test_atlas_paths_errors_and_fsl_folders(tmp_path):
    fsl = _fsl_folder(tmp_path / "atlases")
    want = rois.harvard_oxford_fsl_files(fsl)
    assert volume_atlas.resolve(tmp_path, VOLUME_SPACE, str(fsl)) == (want, None)
    assert volume_atlas.resolve(tmp_path, VOLUME_SPACE, str(fsl / "HarvardOxford-Cortical.xml")) == (want, None)
    one_mm = _fsl_folder(tmp_path / "fsl1", res=1)  # no 2 mm files: the 1 mm ones
    assert volume_atlas.files_of(one_mm)[0].name == "HarvardOxford-cort-maxprob-thr25-1mm.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((2, 2, 2), np.int16), np.eye(4)), tmp_path / "lonely.nii.gz")
    with pytest.raises(FileNotFoundError, match=r"names file is missing: .*lonely\.tsv"):
        volume_atlas.resolve(tmp_path, VOLUME_SPACE, str(tmp_path / "lonely.nii.gz"))
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        volume_atlas.resolve(tmp_path, VOLUME_SPACE, str(tmp_path / "nowhere.nii.gz"))
    with pytest.raises(ValueError, match="aparc.a2009s is a surface atlas"):
        volume_atlas.resolve(tmp_path, VOLUME_SPACE, "aparc.a2009s")
    assert volume_atlas.resolve(tmp_path, VOLUME_SPACE, "none") == (None, None)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No FSL, an empty nilearn data folder, no network: what this machine has."""
    monkeypatch.delenv("FSLDIR", raising=False)
    monkeypatch.delenv("NILEARN_SHARED_DATA", raising=False)
    monkeypatch.setenv("NILEARN_DATA", str(tmp_path / "nilearn_data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(volume_atlas, "_online", lambda timeout=5.0: False)
    return tmp_path


def test_offline_auto_is_a_note_and_harvard_oxford_an_error(offline):
    root = offline / "ds"
    root.mkdir()
    files, note = volume_atlas.resolve(root, VOLUME_SPACE, "auto")
    assert files is None and "whole-brain scores only" in note
    for said in ("no network", "HarvardOxford.tgz", str(offline / "nilearn_data" / "fsl/data/atlases"), "--data.atlas"):
        assert said in note
    with pytest.raises(FileNotFoundError, match="HarvardOxford.tgz"):
        volume_atlas.resolve(root, VOLUME_SPACE, "harvard_oxford")


def test_auto_finds_fsldir_nilearn_cache_and_the_datasets_own(offline, monkeypatch):
    root = offline / "ds"
    root.mkdir()
    cache = _fsl_folder(offline / "nilearn_data" / "fsl/data/atlases")
    assert volume_atlas.resolve(root, VOLUME_SPACE, "auto") == (rois.harvard_oxford_fsl_files(cache), None)
    fsl = _fsl_folder(offline / "fsl" / "data" / "atlases")
    monkeypatch.setenv("FSLDIR", str(offline / "fsl"))
    assert volume_atlas.resolve(root, VOLUME_SPACE, "auto")[0][0].is_relative_to(fsl)
    own = root / "derivatives" / "atlases" / f"space-{VOLUME_SPACE}_atlas-HarvardOxford_dseg.nii.gz"
    own.parent.mkdir(parents=True)
    _write_label_image(own, ".tsv")
    assert volume_atlas.resolve(root, VOLUME_SPACE, "harvard_oxford")[0][0] == own


def test_synthetic_harvard_oxford_atlas(tmp_path):
    """--ho-atlas: the volume's parcels under Harvard-Oxford names (subcortical ones lateralised by
    x, unlateralised on the x = 0 column), read back onto the brain-mask voxels as the parcels
    the images were planted with; off, the manifest is what it was."""
    snr = {**SNR, "language_stg": 0.2}
    cfg = SyntheticConfig(out=tmp_path / "ds", n_stories=1, n_subjects=1, story_trs=20, lead_trs=8, space="tinysphere",
                          n_vertices=20, volume_shape=(7, 6, 5), ho_atlas=True, snr=snr)
    manifest = make_synthetic(cfg, workers=1)
    assert (cfg.out / f"{HO_ATLAS}.nii.gz").is_file()
    assert manifest["atlas"]["harvard_oxford"] == f"{HO_ATLAS}.nii.gz" and f"{HO_ATLAS}.tsv" in manifest["files"]
    names = (cfg.out / f"{HO_ATLAS}.tsv").read_text()
    assert "Left Hippocampus" in names and "Right Amygdala" in names and "\tHippocampus\n" in names
    mask_img = nib.load(next((cfg.out / "derivatives/fmriprep").rglob("*brain_mask.nii.gz")))
    mask = np.asarray(mask_img.dataobj).astype(bool)
    atlas = volume_atlas.load(volume_atlas.resolve(cfg.out, VOLUME_SPACE, "auto")[0], mask, mask_img.affine)
    dseg = nib.load(cfg.out / f"derivatives/synthetic/space-{VOLUME_SPACE}_res-native_desc-synthetic_dseg.nii.gz")
    parcel_V = np.asarray(dseg.dataobj)[mask]
    parcels = ["medial_wall", *snr]
    for group, parcel in (("hippocampus", "mtl_hippocampus"), ("amygdala", "mtl_amygdala"),
                          ("parahippocampal", "mtl_parahippocampal"), ("visual_control", "visual_control")):
        np.testing.assert_array_equal(rois.group_mask(atlas, group, strict=False), parcel_V == parcels.index(parcel))
    np.testing.assert_array_equal(rois.group_mask(atlas, "mtl", strict=False),
                                  np.isin(parcel_V, [parcels.index(p) for p in parcels if p.startswith("mtl_")]))
    x = nib.affines.apply_affine(mask_img.affine, np.argwhere(mask))[:, 0]
    np.testing.assert_array_equal(atlas.hemi_V, np.where(x < 0, "L", np.where(x > 0, "R", "")))
    # without an amygdala parcel the atlas has no Amygdala: no amygdala rows, the others as they were
    keep = atlas.labels_V != next(k for k, n in atlas.names.items() if n == "Amygdala")
    cut = rois.Atlas(atlas.labels_V[keep], {k: n for k, n in atlas.names.items() if n != "Amygdala"},
                     atlas.hemi_V[keep], atlas.source)
    assert rois.reported_groups(cut) == [g for g in rois.reported_groups(atlas) if g != "amygdala"]
    assert {"hippocampus", "amygdala", "mtl", "language"} <= set(rois.reported_groups(atlas))
    regions = tables.regions(cut, cut.hemi_V, np.ones(keep.sum(), bool))
    assert {r for r, _, _ in regions} == {"all", *rois.reported_groups(cut)}
    plain = make_synthetic(SyntheticConfig(out=tmp_path / "plain", n_stories=1, n_subjects=1, story_trs=20,
                                           space="tinysphere", n_vertices=20, volume_shape=(7, 6, 5)), workers=1)
    assert "ho_atlas" not in plain["config"] and "harvard_oxford" not in plain["atlas"]
    with pytest.raises(ValueError, match="--ho-atlas labels the volume: give --volume-shape"):
        make_synthetic(SyntheticConfig(out=tmp_path / "x", ho_atlas=True, space="tinysphere", n_vertices=20))
    with pytest.raises(ValueError, match=r"parcels \['mtl_thalamus'\] of --snr stand for no Harvard-Oxford"):
        make_synthetic(SyntheticConfig(out=tmp_path / "y", ho_atlas=True, volume_shape=(4, 4, 4), space="tinysphere",
                                       n_vertices=20, snr={**SNR, "mtl_thalamus": 0.1}))


# ---------------------------------------------------------------- a planted hippocampal effect, end to end

MODEL = SyntheticOptions(n_layers=2, hidden=32, n_heads=4, positions=64, planted_layer=1)
SNR = dict(language_stg=0.0, frontal_ifg=0.0, parietal_angular=0.0, mtl_hippocampus=0.5, mtl_parahippocampal=0.0,
           mtl_amygdala=0.0, visual_control=0.0)


def _planted_world(tmp: Path) -> tuple[Path, Path, dict]:
    """A random model and a synthetic volume dataset whose hippocampus voxels (only) carry that
    model's planted-layer features (assoc_share 0: the plain story), with its Harvard-Oxford-style atlas."""
    vocab = pseudo_words(assets.VOCAB_SIZE, np.random.default_rng([MODEL.seed, 0]))  # the generator's vocab stream
    model_dir = tmp / "model"
    assets.save_tokenizer(vocab, model_dir)
    assets.save_random_gpt2(MODEL, assets.VOCAB_SIZE + 2, model_dir)
    model, tok = load_pretrained(model_dir)
    plant = assets.planting(MODEL)

    def features(words):
        return word_features(model, tok, list(words), plant["context"], plant["stride"], plant["pooling"])[plant["layer"]]

    cfg = SyntheticConfig(out=tmp / "ds", vocab_size=assets.VOCAB_SIZE, n_stories=1, n_subjects=8, story_trs=240,
                          space="tinysphere", n_vertices=40, volume_shape=(8, 9, 8), ho_atlas=True, snr=SNR,
                          assoc_share=0.0, planted_layer=MODEL.planted_layer, seed=MODEL.seed)
    manifest = make_synthetic(cfg, features=features, workers=1)
    return cfg.out, model_dir, manifest


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("volume")
    root, model_dir, manifest = _planted_world(tmp)
    cfg = ScoreConfig(output=tmp / "out", cache_dir=tmp / "cache", progress=False,
                      data=DataOptions(root=root, space=VOLUME_SPACE, atlas=str(root / f"{HO_ATLAS}.nii.gz"),
                                       ),
                      model=ModelOptions(path=str(model_dir)), features=FeatureOptions(layers=(MODEL.planted_layer,)),
                      report=ReportOptions(figures=False, maps=False, n_boot=200))
    res = score(cfg)
    rows = list(csv.DictReader(open(cfg.output / "scores.csv")))
    return res, rows, manifest


@pytest.mark.slow  # ~35 s: a model, a dataset and a score run
def test_planted_hippocampus_is_found_there_only(planted):
    """The hippocampus rows (L, R, both) are far above 0; every row without a hippocampus voxel
    (all but hippocampus, mtl, all) is null: |r| < 0.05, and at most 2 of the ~18 have a
    subject-bootstrap CI that misses 0. The bound: measured on this world the null rows' r have
    RMS 0.006 and max 0.015 (all 18 CIs cover 0), so 0.05 is ~8 null SDs; the hippocampus rows'
    r is 0.32-0.36 (CI lows >= 0.31), 20x the largest null row."""
    res, rows, manifest = planted
    subjects = {(r["region"], r["hemi"]): r for r in rows if r["fit"] == "subjects"}
    regions = {r for r, _ in subjects}
    assert {"hippocampus", "parahippocampal", "amygdala", "mtl", "language", "parietal", "frontal_gyrus",
            "visual_control", "all"} <= regions
    assert {h for _, h in subjects} == {"L", "R", "both"}
    score_of = {k: float(r["score"]) for k, r in subjects.items()}
    low = {k: float(r["ci_low"]) for k, r in subjects.items()}
    high = {k: float(r["ci_high"]) for k, r in subjects.items()}
    for h in ("L", "R", "both"):
        assert low[("hippocampus", h)] > 0.2, (h, score_of[("hippocampus", h)], low[("hippocampus", h)])
        assert low[("mtl", h)] > 0.05  # a third of its voxels are the hippocampus's
    null = [k for k in subjects if k[0] not in ("hippocampus", "mtl", "all")]
    assert len(null) == 18
    assert all(abs(score_of[k]) < 0.05 for k in null), {k: score_of[k] for k in null}
    assert sum(not low[k] < 0 < high[k] for k in null) <= 2
    assert score_of[("hippocampus", "both")] > 10 * max(abs(score_of[k]) for k in null)
    # the parcels the manifest says were planted: the hippocampus only
    planted_parcels = {p for p, v in manifest["parcels"].items() if v["snr"]}
    assert planted_parcels == {"mtl_hippocampus"}
