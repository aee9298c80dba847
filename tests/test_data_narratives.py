"""assocjax.data: Narratives metadata (the real release in ../shared) and image reading (fakes)."""
import json
import re
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from assocjax import stimuli
from assocjax.data import (BoldData, find_stories, find_story, load_dataset, read_scans, read_surface, read_volume,
                           split_commas, surface_paths, trim_to_story, volume_paths)

NARRATIVES = Path(__file__).resolve().parents[1].parent / "shared" / "narratives"
needs_shared = pytest.mark.skipif(not NARRATIVES.is_dir(), reason="../shared/narratives not present")

# Scans per task as the release's file names have them (sub-*/func/*_bold.json), all included.
RELEASE_COUNTS = {"21styear": 25, "black": 46, "bronx": 47, "forgot": 46, "lucy": 16, "merlin": 36, "milkyway": 53,
                  "notthefallintact": 56, "notthefalllongscram": 24, "notthefallshortscram": 23, "pieman": 96,
                  "piemanpni": 46, "prettymouth": 40, "schema": 124, "shapesphysical": 59, "shapessocial": 59,
                  "sherlock": 36, "slumlordreach": 18, "tunnel": 23}


@pytest.fixture(scope="module")
def real():
    if not NARRATIVES.is_dir():
        pytest.skip("../shared/narratives not present")
    return load_dataset(NARRATIVES)


# ---------------------------------------------------------------- the real release metadata

@needs_shared
def test_all_subjects_and_scans_parse(real):
    with open(NARRATIVES / "participants.tsv") as f:
        listed = [line.split("\t")[0] for line in f.read().splitlines()[1:] if line.strip()]
    assert len(listed) == 345 and real.subjects == tuple(sorted(listed))
    globbed = Counter(re.search(r"_task-([a-z0-9]+)", p.name).group(1)
                      for p in NARRATIVES.glob("sub-*/func/*_bold.json"))
    assert real.counts(include_excluded=True) == dict(globbed) == RELEASE_COUNTS
    assert len(real.all_scans) == 873 and len(real.tasks) == 19
    assert real.unparsed == () and real.unlisted == ()


@needs_shared
def test_runs(real):
    pieman = real.scans(task="pieman", include_excluded=True)
    runs = Counter(s.run for s in pieman)
    assert runs == {None: 68, 1: 14, 2: 14}
    assert sorted(s.stem for s in pieman if s.subject == "sub-001") == ["sub-001_task-pieman_run-1",
                                                                       "sub-001_task-pieman_run-2"]
    schema = real.scans(task="schema", include_excluded=True)
    assert Counter(s.run for s in schema) == {1: 31, 2: 31, 3: 31, 4: 31}
    with pytest.raises(ValueError, match="run="):
        real.scan("sub-001", "pieman")
    assert real.scan(1, "pieman", run=2).stem == "sub-001_task-pieman_run-2"


@needs_shared
def test_exclusions_match_the_stems(real):
    exclude = json.loads((NARRATIVES / "code" / "scan_exclude.json").read_text())
    matched = set()
    for task, subs in exclude.items():
        for sub, stems in subs.items():
            for p in (NARRATIVES / sub / "func").glob(f"{sub}_task-{task}_*bold.json"):
                if re.match(rf"{sub}_task-{task}(_run-\d+)?_bold\.json$", p.name) and any(st in p.name for st in stems):
                    matched.add(p.name[: -len("_bold.json")])
    assert len(matched) == 27 == sum(len(v) for subs in exclude.values() for v in subs.values())
    assert {s.stem for s in real.excluded} == matched and real.unmatched_exclusions == ()
    kept = real.counts()
    assert sum(kept.values()) == 873 - 27 == 846
    assert kept["pieman"] == 86 and kept["lucy"] == 14 and kept["slumlordreach"] == 17
    # a stem only acts within its task: sub-021 is excluded from pieman, nothing else
    assert all(not s.excluded for s in real.all_scans if s.subject == "sub-021" and s.task != "pieman")


@needs_shared
def test_conditions_tr_and_alignment_names(real):
    milky = real.scans(task="milkyway", include_excluded=True)
    assert Counter(s.condition for s in milky) == {"vodka": 18, "original": 18, "synonyms": 17}
    for s in milky:
        assert s.tr == (1.52 if s.condition == "synonyms" else 1.5)
        assert s.gentle == "milkyway" + s.condition
    assert {s.tr for s in real.all_scans if s.task != "milkyway"} == {1.5}
    assert real.scan("sub-001", "tunnel").condition is None  # "n/a"
    assert Counter(s.condition for s in real.scans(task="prettymouth", include_excluded=True)) == {
        "affair": 20, "paranoia": 20}
    gentle = {p.name for p in (NARRATIVES / "stimuli" / "gentle").iterdir()}
    used = {st.gentle for s in real.all_scans for st in s.stories}
    assert used - {None} == gentle and len(gentle) == 26
    assert {s.gentle for s in real.scans(task=["shapesphysical", "notthefallintact"], include_excluded=True)} == {
        "shapesphysical", "notthefallintact"}
    assert {s.gentle for s in real.scans(task="notthefalllongscram", include_excluded=True)} == {None}


@needs_shared
def test_slumlordreach_split_matches_event_meta(real):
    meta = json.loads((NARRATIVES / "code" / "event_meta.json").read_text())["slumlordreach"]
    scans = real.scans(task="slumlordreach", include_excluded=True)
    assert len(scans) == 18
    for s in scans:
        assert [st.name for st in s.stories] == ["slumlord", "reach"]
        for st in s.stories:
            assert (st.onset_tr, st.n_trs) == (meta[st.name]["onset"], meta[st.name]["duration"])
            assert st.gentle == "slumlordreach" and st.source == "events"
    assert (scans[0].stories[1].onset, scans[0].stories[1].duration) == (969.5, 825.0)
    assert real.scans(story="reach", include_excluded=True) == scans


@needs_shared
def test_story_timing_against_event_meta(real):
    meta = json.loads((NARRATIVES / "code" / "event_meta.json").read_text())
    off = Counter()
    for s in real.all_scans:
        if s.task in meta and len(s.stories) == 1:
            m = meta[s.task][next(iter(meta[s.task]))]
            if (s.stories[0].onset_tr, s.stories[0].n_trs) != (m["onset"], m["duration"]):
                odd = s.subject if s.subject in ("sub-038", "sub-105") else s.condition if s.task == "milkyway" else None
                off[(s.task, odd)] += 1
    # The per-scan events win where event_meta is stale (lucy, fixed to 3.0 s in v1.1.3),
    # per-subject (sub-038/sub-105 heard milkyway and prettymouth earlier), or assumes 1.5 s TRs.
    assert off == {("lucy", None): 16, ("milkyway", "synonyms"): 17, ("milkyway", "sub-038"): 1,
                   ("milkyway", "sub-105"): 1, ("prettymouth", "sub-038"): 1, ("prettymouth", "sub-105"): 1}
    synonyms = real.scans(task="milkyway", condition="synonyms", include_excluded=True)
    assert {s.stories[0].n_trs for s in synonyms} == {266}  # 404 s / 1.52 s


@needs_shared
def test_audio_onsets(real):
    for s in real.all_scans:
        if s.task == "schema":
            assert s.audio_onset is None and len(s.stories) == 2
            assert all(st.audio_onset == st.onset for st in s.stories)
        else:
            assert s.audio_onset == stimuli.audio_onset(s.events) == s.stories[0].audio_onset
    story = real.scan("sub-001", "pieman", run=1).story()
    assert story.audio_onset == 0.0 and story.onset == 15.0
    words = real.alignment(story)
    assert len(words.words) > 100


@needs_shared
def test_reports_and_queries(real):
    assert real.unscanned == (("sub-278", "black"), ("sub-278", "forgot"), ("sub-280", "piemanpni"))
    assert real.subjects_without_scans == ()
    with pytest.raises(ValueError, match="unknown task.*nope"):
        real.scans(task="nope")
    with pytest.raises(ValueError, match="excluded.*include_excluded"):
        real.scans(task="lucy", subjects="sub-053")
    assert len(real.scans(task="lucy", subjects="053", include_excluded=True)) == 1
    with pytest.raises(ValueError, match="no scan file matches"):
        real.scans(task="lucy", subjects=1)


def test_root_must_be_bids(tmp_path):
    (tmp_path / "participants.tsv").write_text("participant_id\ttask\n")
    with pytest.raises(FileNotFoundError, match="dataset_description.json"):
        load_dataset(tmp_path)


# ---------------------------------------------------------------- a tiny fake dataset with images

def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _events(path: Path, rows) -> None:
    _write(path, "onset\tduration\ttrial_type\tstim_file\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows))


def _gifti(path: Path, rows_tv: np.ndarray, one_array: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if one_array:  # a single (V, T) data array, the other way writers store time series
        arrays = [nib.gifti.GiftiDataArray(np.ascontiguousarray(rows_tv.T), intent="NIFTI_INTENT_TIME_SERIES",
                                           datatype="NIFTI_TYPE_FLOAT32")]
    else:
        arrays = [nib.gifti.GiftiDataArray(r.astype(np.float32), intent="NIFTI_INTENT_TIME_SERIES",
                                           datatype="NIFTI_TYPE_FLOAT32") for r in rows_tv]
    nib.save(nib.gifti.GiftiImage(darrays=arrays), path)


def _surface(rng, n_trs: int, n_vertices: int, medial: int) -> np.ndarray:
    x = rng.standard_normal((n_trs, n_vertices)).astype(np.float32)
    x[:, :medial] = np.nan
    return x


@pytest.fixture
def fake(tmp_path):
    """sub-001 pieman (TR 1.5, story at TR 2 for 8 TRs, 12 TRs imaged) and slumlordreach (TR 2,
    slumlord TRs 2..5, reach 6..10); sub-002 milkyway synonyms (TR 1.52, no events: event_meta
    timing, no image); sub-003 listed for tunnel without a scan."""
    root = tmp_path / "ds"
    _write(root / "dataset_description.json", '{"Name": "fake", "BIDSVersion": "1.2.1"}')
    _write(root / "participants.tsv", "participant_id\tage\ttask\tcondition\n"
           "sub-001\t20,20\tpieman,slumlordreach\tn/a,n/a\nsub-002\t30\tmilkyway\tsynonyms\nsub-003\t40\ttunnel\tn/a\n")
    _write(root / "code" / "event_meta.json", json.dumps({
        "milkyway": {"milkyway": {"onset": 1, "duration": 5}},
        "slumlordreach": {"reach": {"onset": 6, "duration": 4}, "slumlord": {"onset": 2, "duration": 3}}}))
    _write(root / "code" / "scan_exclude.json", json.dumps({"tunnel": {"sub-003": ["sub-003_task-tunnel"]}}))
    _write(root / "stimuli" / "gentle" / "milkywaysynonyms" / "align.csv", "Hello,hello,0.5,0.9\n")
    func1, func2 = root / "sub-001" / "func", root / "sub-002" / "func"
    _write(func1 / "sub-001_task-pieman_bold.json", '{"RepetitionTime": 1.5}')
    _events(func1 / "sub-001_task-pieman_events.tsv", [(0.0, 3.0, "music", "pieman_audio.wav"),
                                                        (3.0, 12.0, "story", "pieman_audio.wav")])
    _write(func1 / "sub-001_task-slumlordreach_bold.json", '{"RepetitionTime": 2.0}')
    _events(func1 / "sub-001_task-slumlordreach_events.tsv", [(4.0, 6.0, "story", "slumlordreach_audio.wav"),
                                                               (12.0, 8.0, "story", "slumlordreach_audio.wav")])
    _write(func2 / "sub-002_task-milkyway_bold.json", '{"RepetitionTime": 1.52}')

    rng = np.random.default_rng(0)
    arrays = {}
    for stem, n_trs in (("sub-001_task-pieman", 12), ("sub-001_task-slumlordreach", 10)):
        for hemi, n_v in (("L", 50), ("R", 30)):
            x = _surface(rng, n_trs, n_v, medial=4)
            arrays[stem, hemi] = x
            _gifti(root / "derivatives" / "afni-nosmooth" / "sub-001" / "func" /
                   f"{stem}_space-test_hemi-{hemi}_desc-clean.func.gii", x, one_array=(hemi == "R"))
    return load_dataset(root), arrays


def test_fake_metadata(fake):
    ds, _ = fake
    pieman, slr = ds.scan(1, "pieman"), ds.scan(1, "slumlordreach")
    st = pieman.story()
    assert (st.name, st.onset_tr, st.n_trs, st.audio_onset, st.gentle) == ("pieman", 2, 8, 0.0, None)
    assert [(s.name, s.onset_tr, s.n_trs) for s in slr.stories] == [("slumlord", 2, 3), ("reach", 6, 4)]
    milky = ds.scan(2, "milkyway")
    assert milky.tr == 1.52 and milky.condition == "synonyms" and milky.events is None
    m = milky.story()
    assert (m.source, m.onset_tr, m.n_trs, m.onset, m.gentle) == ("event_meta", 1, 5, 1.52, "milkywaysynonyms")
    assert ds.alignment(m).words == ("Hello",)
    assert ds.unscanned == (("sub-003", "tunnel"),) and ds.subjects_without_scans == ("sub-003",)
    assert ds.unmatched_exclusions == ("sub-003_task-tunnel",)


def test_surface_roundtrip_mask_and_trim(fake):
    ds, arrays = fake
    scan = ds.scan(1, "pieman")
    bold = read_surface(scan, space="test")
    want = np.concatenate([arrays["sub-001_task-pieman", "L"], arrays["sub-001_task-pieman", "R"]], axis=1)
    assert bold.data.dtype == np.float32 and bold.data.shape == (12, 80)
    np.testing.assert_array_equal(bold.data, want)  # NaNs compare equal here
    expect_mask = np.ones(80, bool)
    expect_mask[:4] = expect_mask[50:54] = False
    np.testing.assert_array_equal(bold.mask, expect_mask)
    assert bold.hemi_sizes == (50, 30) and bold.tr == 1.5
    np.testing.assert_array_equal(bold.hemi("R"), arrays["sub-001_task-pieman", "R"])
    left = read_surface(scan, hemi="L", space="test")
    np.testing.assert_array_equal(left.data, arrays["sub-001_task-pieman", "L"])

    trimmed = trim_to_story(bold, scan)
    np.testing.assert_array_equal(trimmed.data, want[2:10])
    assert (trimmed.first_tr, trimmed.story, trimmed.n_trs) == (2, "pieman", 8)
    np.testing.assert_array_equal(trim_to_story(want, scan), want[2:10])

    slr = ds.scan(1, "slumlordreach")
    b = read_surface(slr, space="test")
    reach = trim_to_story(b, slr, "reach")
    np.testing.assert_array_equal(reach.data, b.data[6:10])
    with pytest.raises(ValueError, match="slumlord"):
        trim_to_story(reach, story="slumlord")  # TRs 2..5 were cut away
    with pytest.raises(ValueError, match="name one"):
        trim_to_story(b)
    with pytest.raises(ValueError, match="not the scan"):
        trim_to_story(b, scan)


def test_fmriprep_surface_paths(fake):
    ds, arrays = fake
    scan = ds.scan(1, "pieman")
    path = surface_paths(scan, "L", "fmriprep", "test")[0]
    assert path.name == "sub-001_task-pieman_space-test_hemi-L.func.gii"
    _gifti(path, arrays["sub-001_task-pieman", "L"])
    np.testing.assert_array_equal(read_surface(scan, "L", "fmriprep", "test").data, arrays["sub-001_task-pieman", "L"])
    assert surface_paths(scan)[1].name == "sub-001_task-pieman_space-fsaverage6_hemi-R_desc-clean.func.gii"


def test_missing_images_are_skipped_and_reported(fake):
    ds, _ = fake
    with pytest.warns(UserWarning, match="(?s)1 of 3 scans.*sub-002_task-milkyway"):
        reader = read_scans(ds.scans(), space="test")
    assert [m.scan.stem for m in reader.missing] == ["sub-002_task-milkyway"]
    assert len(reader.missing[0].paths) == 2 and len(reader) == 2
    got = list(reader)
    assert [b.scan.stem for b in got] == ["sub-001_task-pieman", "sub-001_task-slumlordreach"]
    with pytest.raises(FileNotFoundError, match="sub-002_task-milkyway"):
        read_scans(ds.scans(), space="test", on_missing="error")
    with pytest.raises(FileNotFoundError, match="sub-002_task-milkyway_space-test_hemi-L"):
        read_surface(ds.scan(2, "milkyway"), space="test")


def test_bad_gifti_errors_name_file_and_numbers(fake):
    ds, arrays = fake
    slr = ds.scan(1, "slumlordreach")
    left, _ = surface_paths(slr, space="test")
    _gifti(left, arrays["sub-001_task-slumlordreach", "L"][:9])
    with pytest.raises(ValueError, match=rf"{re.escape(str(left))}: 9 TRs.*'reach' at TR 10"):
        read_surface(slr, space="test")

    pieman = ds.scan(1, "pieman")
    wrong = surface_paths(pieman, "L", space="fsaverage5")[0]
    _gifti(wrong, arrays["sub-001_task-pieman", "L"])
    with pytest.raises(ValueError, match=rf"{re.escape(str(wrong))}: 50 vertices.*'fsaverage5' has 10242"):
        read_surface(pieman, "L", space="fsaverage5")

    wrong.write_bytes(b"not a gifti")
    with pytest.raises(ValueError, match=rf"cannot read surface image {re.escape(str(wrong))}"):
        read_surface(pieman, "L", space="fsaverage5")


def _nifti(path: Path, data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([3.0, 3.0, 3.0, 1.0])), path)


def test_volume_with_brain_mask(fake):
    ds, _ = fake
    scan = ds.scan(1, "pieman")
    rng = np.random.default_rng(1)
    vol = rng.standard_normal((4, 5, 3, 12)).astype(np.float32)
    brain = rng.random((4, 5, 3)) > 0.4
    vol[np.nonzero(brain)[0][0], np.nonzero(brain)[1][0], np.nonzero(brain)[2][0]] = np.nan
    bold_path, masks = volume_paths(scan)
    assert bold_path.name == "sub-001_task-pieman_space-MNI152NLin2009cAsym_res-native_desc-clean_bold.nii.gz"
    _nifti(bold_path, vol)
    with pytest.raises(FileNotFoundError, match="no brain mask.*desc-brain_mask"):
        read_volume(scan)
    _nifti(masks[-1], brain.astype(np.uint8))  # fMRIPrep's mask serves the afni volume too
    bold = read_volume(scan)
    assert isinstance(bold, BoldData) and bold.data.shape == (12, brain.sum())
    np.testing.assert_array_equal(bold.data, vol[brain].T)
    assert bold.mask.sum() == brain.sum() - 1 and not bold.mask[0]
    np.testing.assert_array_equal(trim_to_story(bold).data, vol[brain].T[2:10])

    prep, _ = volume_paths(scan, "fmriprep")
    assert prep.name == "sub-001_task-pieman_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
    _nifti(prep, vol[..., :5])
    with pytest.raises(ValueError, match=rf"{re.escape(str(prep))}: 5 TRs.*TR 10"):
        read_volume(scan, "fmriprep")
    with pytest.raises(ValueError, match=r"shape \(4, 5\).*\(4, 5, 3\)"):
        read_volume(scan, mask=np.ones((4, 5), bool))


def test_one_story_lookup_by_name_audio_or_alignment(fake):
    ds, _ = fake
    slr = ds.scan(1, "slumlordreach")
    slumlord, reach = slr.stories
    assert find_story(slr.stories, "reach") == reach == slr.story("reach")
    # both stories play from one audio file: by its name the first is "the" story, as before
    assert find_story(slr.stories, "slumlordreach") == slumlord == slr.story("slumlordreach")
    assert find_stories(slr.stories, "slumlordreach") == (slumlord, reach)
    assert find_stories(slr.stories, "reach", "nostory") == (reach,) and find_story(slr.stories, "nostory") is None
    assert [s.stem for s in ds.scans(story="reach")] == [slr.stem]
    # alignment folders: by their own name, a story's (milkyway: task + condition) or a task's
    assert ds.alignment_name("milkywaysynonyms") == ds.alignment_name("milkyway") == "milkywaysynonyms"
    assert ds.alignment_name("reach") is None and ds.alignment_name("nostory") is None
    assert split_commas(["a,b", " c ,", "", "d"]) == ("a", "b", "c", "d")
