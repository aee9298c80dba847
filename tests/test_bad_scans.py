"""Broken scans of one subject among good ones: each is named (file, counts) or that subject is
left out with a note, never a traceback or an all-NaN result."""
import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from assocjax.pipeline import DataOptions, FeatureOptions, ModelOptions, ReportOptions, ScoreConfig, score
from synthetic_null import make_drifting_model, make_null_dataset


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("badscans")
    root, manifest = make_null_dataset(tmp, rho=0.0, n_subjects=4, n_vertices=30, story_trs=120)
    return tmp, root, make_drifting_model(tmp / "model"), manifest


def _copy(world, name):
    tmp, root, model, _ = world
    out = tmp / name
    shutil.copytree(root, out)
    return out


def _run(world, root, name):
    tmp, _, model, _ = world
    cfg = ScoreConfig(output=tmp / f"out-{name}", cache_dir=tmp / f"cache-{name}",
                      data=DataOptions(root=root, space="nullsphere"), model=ModelOptions(path=str(model)),
                      features=FeatureOptions(layers=(0,)), report=ReportOptions(figures=False, maps=False),
                      progress=False)
    return score(cfg)


def _gifti(root, sub, hemi):
    return next((root / "derivatives" / "afni-nosmooth" / sub / "func").glob(f"*hemi-{hemi}_desc-clean.func.gii"))


def _listeners(world):
    return [s["subject"] for s in world[3]["scans"] if not s.get("excluded")]


@pytest.mark.parametrize("damage", ["missing", "empty"])
def test_events_missing_or_empty_leaves_that_subject_out(world, damage):
    root = _copy(world, f"events-{damage}")
    victim = sorted(_listeners(world))[-1]
    events = next((root / victim / "func").glob("*_events.tsv"))
    events.unlink() if damage == "missing" else events.write_text("")
    res = _run(world, root, f"events-{damage}")
    scored = {r["subject"] for r in res.rows if r["fit"] == "subject"}
    assert victim not in scored and scored
    assert any(victim in n and str(events) in n for n in res.notes), res.notes
    assert np.isfinite(res.summary["best_score"])


def test_flat_scan_is_named(world):
    root = _copy(world, "flat")
    victim = sorted(_listeners(world))[0]
    for hemi in "LR":
        path = _gifti(root, victim, hemi)
        img = nib.load(path)
        for d in img.darrays:
            d.data[:] = 0.0
        nib.save(img, path)
    with pytest.raises(ValueError, match=rf"{_gifti(root, victim, 'L')}.*constant or non-finite at every vertex.*"
                                         rf"leave {victim} out"):
        _run(world, root, "flat")


def test_other_vertex_count_names_both_files_and_counts(world):
    root = _copy(world, "count")
    victim = sorted(_listeners(world))[-1]
    path = _gifti(root, victim, "L")
    img = nib.load(path)
    nib.save(nib.gifti.GiftiImage(darrays=[nib.gifti.GiftiDataArray(d.data[:20]) for d in img.darrays]), path)
    with pytest.raises(ValueError, match=r"hemi-L 20, hemi-R 30\).*hemi-L 30, hemi-R 30\)|"
                                         r"hemi-L 30, hemi-R 30\).*hemi-L 20, hemi-R 30\)") as e:
        _run(world, root, "count")
    assert str(path) in str(e.value)


def test_a_story_with_one_usable_listener_scores_without_a_ceiling(world):
    root = _copy(world, "one-listener")
    keep, *others = sorted(_listeners(world))
    for sub in others:
        next((root / sub / "func").glob("*_events.tsv")).unlink()
    res = _run(world, root, "one-listener")
    whole = [r for r in res.rows if r["region"] == "all" and r["hemi"] == "both"]
    run = json.loads((res.output / "run.json").read_text())
    assert [s["subjects"] for s in run["stories"].values()] == [[keep]]
    assert whole and all(np.isfinite(r["score"]) and np.isnan(r["ceiling"]) for r in whole), whole
