"""The real-data loader reads the synthetic dataset unchanged, and the planted ground truth
comes back through loader + regions + ceiling."""
import nibabel as nib
import numpy as np
import pytest

from assocjax import rois
from assocjax.ceiling import split_half_ceiling
from assocjax.data import load_dataset, read_surface, trim_to_story
from assocjax.data.synthetic import SyntheticConfig, make_synthetic

SPACE, N_VERT = "tinysphere", 120


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "narratives"
    manifest = make_synthetic(SyntheticConfig(out=out, space=SPACE, n_vertices=N_VERT, story_trs=240, feature_dim=6,
                                              n_subjects=8, seed=3))
    return out, manifest


def test_loader_reads_what_the_generator_wrote(synth):
    root, manifest = synth
    ds = load_dataset(root)
    found = {s.stem: s for s in ds.scans(include_excluded=True)}
    written = {s["stem"]: s for s in manifest["scans"]}
    assert set(found) == set(written)
    for stem, truth in written.items():
        scan = found[stem]
        assert scan.excluded == truth["excluded"] and scan.tr == truth["tr"]
        assert scan.audio_onset == truth["audio_onset"]
        (story,) = scan.stories
        assert [story.onset_tr, story.onset_tr + story.n_trs] == manifest["tasks"][scan.task]["story_window_trs"]
    assert len(ds.excluded) == sum(s["excluded"] for s in manifest["scans"]) >= 1
    assert ds.subjects_without_scans or ds.unscanned  # the generator lists one subject with no scans

    scan = next(s for s in found.values() if not s.excluded)
    bold = read_surface(scan, space=SPACE)
    sub = scan.subject
    raw = np.concatenate([np.stack([d.data for d in nib.load(
        root / f"derivatives/afni-nosmooth/{sub}/func/{scan.stem}_space-{SPACE}_hemi-{h}_desc-clean.func.gii").darrays])
        for h in "LR"], 1)
    np.testing.assert_array_equal(bold.data, raw)
    np.testing.assert_array_equal(bold.mask, np.isfinite(raw).all(0))
    assert bold.data.shape == (written[scan.stem]["n_trs"], 2 * N_VERT)


def test_planted_ceiling_comes_back_through_loader_regions_and_ceiling(synth):
    root, manifest = synth
    ds = load_dataset(root)
    atlas = rois.load_annot(root / manifest["atlas"]["annot"]["L"], root / manifest["atlas"]["annot"]["R"])
    task = sorted(manifest["tasks"])[0]
    scans = ds.scans(task=task)
    y = np.stack([trim_to_story(read_surface(s, space=SPACE)).data for s in scans])
    assert y.shape[1] == 240
    rel = np.asarray(split_half_ceiling(y, n_splits=40, seed=0))
    expected = manifest["tasks"][task]["expected_ceiling"]
    for group, parcel in (("mtl", "mtl_hippocampus"), ("language", "language_stg")):
        mask = rois.group_mask(atlas, group, strict=False) & np.isfinite(rel)
        exp = expected[parcel]["reliability"]
        assert abs(np.median(rel[mask]) - exp) < 0.08, (group, np.median(rel[mask]), exp)
    medial = ~np.isfinite(y).all((0, 1))
    assert medial.any() and np.all(np.isnan(rel[medial]))
