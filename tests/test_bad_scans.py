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


@pytest.mark.parametrize("damage", ["missing", "empty", "no story row"])
def test_events_missing_or_empty_leaves_that_subject_out(world, damage):
    """(No story row: the story's trial_type renamed; event_meta.json's TRs are not used instead.)"""
    root = _copy(world, f"events-{damage}")
    victim = sorted(_listeners(world))[-1]
    events = next((root / victim / "func").glob("*_events.tsv"))
    if damage == "missing":
        events.unlink()
    else:
        text = events.read_text()
        assert "\tstory\t" in text
        events.write_text("" if damage == "empty" else text.replace("\tstory\t", "\tspeech\t"))
    res = _run(world, root, f"events-{damage}")
    scored = {r["subject"] for r in res.rows if r["fit"] == "subject"}
    assert victim not in scored and scored
    assert any(victim in n and str(events) in n for n in res.notes), res.notes
    assert np.isfinite(res.summary["cv_best_score"])


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


def _edit_gifti(path, change):
    """Rewrite a GIfTI time series in place: change(y_NV) edits the (TRs, vertices) array."""
    img = nib.load(path)
    y = np.stack([d.data for d in img.darrays]).astype(np.float32)
    change(y)
    nib.save(nib.gifti.GiftiImage(darrays=[nib.gifti.GiftiDataArray(row) for row in y]), path)


def _by_fit(res):
    return {(r["fit"], r["subject"], r["hemi"]): r for r in res.rows if r["region"] == "all"}


@pytest.fixture(scope="module")
def clean(world):
    return _by_fit(_run(world, world[1], "clean"))


def _finite_columns(path, n):
    y = np.stack([d.data for d in nib.load(path).darrays])
    return np.flatnonzero(np.isfinite(y).all(0))[:n]


# damage of one subject's left hemisphere -> (how many of its vertices it loses, the reason named)
DAMAGE = {
    "one NaN time point": (lambda y, cols: y.__setitem__((50, slice(None)), np.nan), None, "non-finite values"),
    "NaN hemisphere": (lambda y, cols: y.__setitem__(slice(None), np.nan), None, "non-finite values"),
    "one 1e30 spike": (lambda y, cols: y.__setitem__((50, cols[0]), 1e30), 1, "a spike"),
    "5 NaN vertices": (lambda y, cols: y.__setitem__((slice(None), cols[:5]), np.nan), 5, "non-finite values"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_one_subjects_bad_data_costs_that_subject_only(world, clean, damage):
    change, lost, reason = DAMAGE[damage]
    name = "bad-" + damage.replace(" ", "-")
    root = _copy(world, name)
    victim = sorted(_listeners(world))[0]
    path = _gifti(root, victim, "L")
    cols = _finite_columns(path, 5)
    _edit_gifti(path, lambda y: change(y, cols))
    res = _run(world, root, name)
    got = _by_fit(res)
    lost = clean[("subject", victim, "L")]["n_vertices"] if lost is None else lost
    for (fit, sub, hemi), want in clean.items():
        row = got[(fit, sub, hemi)]
        if fit == "subject" and sub != victim:     # the other subjects' fits are untouched
            assert (row["score"], row["n_vertices"]) == (want["score"], want["n_vertices"]), (sub, hemi)
        elif fit == "subject" and hemi != "R":     # the victim loses exactly the damaged vertices
            assert row["n_vertices"] == want["n_vertices"] - lost, (hemi, row)
        else:                                      # the mean, the headline and the right hemisphere keep all
            assert row["n_vertices"] == want["n_vertices"] and np.isfinite(row["score"]), (fit, sub, hemi, row)
    mine = [n for n in res.notes if victim in n and str(path) in n]
    assert len(mine) == 1 and f"no usable data at {lost} of" in mine[0] and reason in mine[0], res.notes
    assert victim in (res.output / "summary.txt").read_text().splitlines()[1]


def _set_tr(root, sub, tr):
    sidecar = next((root / sub / "func").glob("*_bold.json"))
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps(meta | dict(RepetitionTime=tr)))
    return sidecar


def test_a_minority_tr_costs_only_its_subject(world):
    root = _copy(world, "minority-tr")
    victim, *others = sorted(_listeners(world))   # the first listener: its timing used to be the story's
    sidecar = _set_tr(root, victim, 2.0)
    res = _run(world, root, "minority-tr")
    assert {r["subject"] for r in res.rows if r["fit"] == "subject"} == set(others)
    assert any(victim in n and str(sidecar) in n and "most of its listeners" in n for n in res.notes), res.notes


def test_a_timing_tie_names_both_files(world):
    root = _copy(world, "tr-tie")
    first, second, *rest = sorted(_listeners(world))
    for sub in rest:                                # two usable listeners left, one of each TR
        next((root / sub / "func").glob("*_events.tsv")).unlink()
    odd = _set_tr(root, second, 2.0)
    with pytest.raises(ValueError, match="as many listeners' scans have one timing as another") as e:
        _run(world, root, "tr-tie")
    assert str(odd) in str(e.value) and str(next((root / first / "func").glob("*_bold.json"))) in str(e.value)


def _first_events(root):
    return next((root / sorted(p.name for p in root.glob("sub-*"))[0] / "func").glob("*_events.tsv"))


def _negative_onset(root):
    events = _first_events(root)
    head, first, *rest = events.read_text().splitlines()
    events.write_text("\n".join([head, "\t".join(["-30"] + first.split("\t")[1:]), *rest]) + "\n")
    return f"{events}:2: onset '-30'"


def _latin1_alignment(root):
    align = next((root / "stimuli" / "gentle").glob("*/align.csv"))
    align.write_bytes(align.read_bytes() + "café,café,1.0,1.5\n".encode("latin-1"))
    return f"{align}: not UTF-8 text"


def _tr_zero(root):
    return f"{_set_tr(root, sorted(p.name for p in root.glob('sub-*'))[0], 0)}: RepetitionTime 0 must be"


def _tr_in_milliseconds(root):
    sidecar = _set_tr(root, sorted(p.name for p in root.glob('sub-*'))[0], 1500)
    return f"{sidecar}: RepetitionTime 1500 s is implausible (above 20 s): milliseconds? BIDS gives seconds (1.5)"


@pytest.mark.parametrize("damage", [_negative_onset, _latin1_alignment, _tr_zero, _tr_in_milliseconds])
def test_a_broken_metadata_file_is_named(world, damage):
    root = _copy(world, damage.__name__)
    message = damage(root)
    with pytest.raises(ValueError) as e:
        _run(world, root, damage.__name__)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_trim_longer_than_the_story_names_the_trim(world):
    tmp, root, model, _ = world
    cfg = ScoreConfig(output=tmp / "out-trim", cache_dir=tmp / "cache-trim",
                      data=DataOptions(root=root, space="nullsphere", trim_start=10000),
                      model=ModelOptions(path=str(model)), features=FeatureOptions(layers=(0,)), progress=False)
    with pytest.raises(ValueError, match=r"--data.trim-start 10000 leaves story '\w+' \(\d+ TRs\) 0 rows, too few for "
                                                r"--features.delays up to 6 TRs: trim at most \d+"):
        score(cfg)


def test_a_vertex_left_with_one_subject_keeps_that_subjects_score(world, clean):
    root = _copy(world, "two-bad-hemispheres")
    *victims, keeper = sorted(_listeners(world))
    for sub in victims:   # only `keeper` has left-hemisphere data: no ceiling there, its score stays
        _edit_gifti(_gifti(root, sub, "L"), lambda y: y.__setitem__(slice(None), np.nan))
    got = _by_fit(_run(world, root, "two-bad-hemispheres"))
    for hemi in ("L", "R", "both"):
        row, want = got[("subject", keeper, hemi)], clean[("subject", keeper, hemi)]
        assert (row["score"], row["n_vertices"]) == (want["score"], want["n_vertices"]), hemi
    assert np.isnan(got[("subject", keeper, "L")]["ceiling"]) and got[("mean", "mean", "L")]["n_vertices"] == \
        clean[("mean", "mean", "L")]["n_vertices"]
