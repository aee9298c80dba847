import json
import shutil
import warnings

import numpy as np
import pytest

from assocjax import features as F
from assocjax import stimuli
from assocjax.alignment import downsample
from assocjax.models import load_pretrained
from conftest import SHARED, save_tiny

GENTLE = SHARED / "narratives" / "stimuli" / "gentle"
TOKENIZER = SHARED / "tokenizers" / "gpt2"
pytestmark = pytest.mark.skipif(not TOKENIZER.is_dir(), reason="needs ../shared (real GPT-2 tokenizer, Narratives)")


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """A tiny random GPT-2 with the real 50257-token BPE vocabulary and 64 positions."""
    folder = save_tiny("gpt2", tmp_path_factory.mktemp("gpt2bpe"), vocab_size=50257, n_positions=64, n_embd=16, n_head=2)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(TOKENIZER / f, folder / f)
    return load_pretrained(folder)


@pytest.fixture(scope="module")
def story_words():
    return list(stimuli.story_alignment(GENTLE, "pieman").words[:60])


def test_word_token_index_covers_every_word(lm, story_words):
    _, tok = lm
    words = story_words[:12] + ["pie-man,", "'struck", "again'."]
    ids, word_of, _ = F.word_token_index(tok, words)
    assert np.all(np.diff(word_of) >= 0) and set(word_of) == set(range(len(words)))
    for i, w in enumerate(words):
        assert tok.decode(ids[word_of == i]).strip() == w


def naive_prefix_features(model, ids, word_of, n_words, start=0):
    """Earlier brain-score code: one forward per word over its prefix (from `start`)."""
    out = []
    for i in range(n_words):
        last = np.flatnonzero(word_of == i)[-1]
        hs = np.asarray(model.hidden_states(ids[None, start:last + 1]))
        out.append(hs[:, 0, -1])
    return np.stack(out, axis=1)


@pytest.mark.slow
def test_windowed_equals_full_prefix_when_context_covers_story(lm, story_words):
    model, tok = lm
    words = story_words[:30]
    ids, word_of, _ = F.word_token_index(tok, words)
    assert len(ids) <= 64
    feats = F.word_features(model, tok, words, context=64, stride=32)
    assert feats.shape == (model.cfg.n_layers + 1, 30, 16)
    np.testing.assert_allclose(feats, naive_prefix_features(model, ids, word_of, 30), atol=1e-5)


def test_long_stories_use_the_documented_windows(lm, story_words):
    model, tok = lm
    ids, word_of, _ = F.word_token_index(tok, story_words)
    context, stride = 24, 8
    feats = F.word_features(model, tok, story_words, context=context, stride=stride)
    wins = F.windows(len(ids), context, stride)
    assert len(wins) > 3
    hits = 0
    for i in (2, 20, 41, 59):
        last = np.flatnonzero(word_of == i)[-1]
        start, first, end = next(w for w in wins if w[1] <= last < w[2])
        assert last - start >= context - stride or start == 0
        expected = np.asarray(model.hidden_states(ids[None, start:last + 1]))[:, 0, -1]
        np.testing.assert_allclose(feats[:, i], expected, atol=1e-5)
        full = np.asarray(model.hidden_states(ids[None, :last + 1]))[:, 0, -1] if last < 64 else None
        hits += full is not None and not np.allclose(feats[-1, i], full[-1], atol=1e-3)
    assert hits >= 1, "beyond the first window the features must differ from full-prefix ones"


def test_no_word_sees_its_future(lm, story_words):
    model, tok = lm
    rng = np.random.default_rng(0)
    base = F.word_features(model, tok, story_words, context=24, stride=8)
    for _ in range(4):
        i = int(rng.integers(1, len(story_words) - 1))
        future = list(rng.choice(story_words, size=int(rng.integers(1, 30))))
        changed = F.word_features(model, tok, story_words[:i + 1] + future, context=24, stride=8)
        layer = int(rng.integers(0, base.shape[0]))
        np.testing.assert_allclose(changed[layer, :i + 1], base[layer, :i + 1], atol=1e-6)
        assert not np.allclose(changed[layer, i + 1:i + 2], base[layer, i + 1:i + 2])


def test_mean_pooling_averages_the_words_tokens(lm):
    model, tok = lm
    words = ["unbelievably", "pie-man,", "said"]
    ids, word_of, _ = F.word_token_index(tok, words)
    tokens = F.token_features(model, ids, 64, 32)
    mean = F.word_features(model, tok, words, context=64, stride=32, pooling="mean")
    np.testing.assert_allclose(mean[:, 1], tokens[:, word_of == 1].mean(1), atol=1e-6)
    assert (word_of == 1).sum() > 1


def test_pieman_gives_a_design_of_the_scans_length(lm):
    model, tok = lm
    transcript = stimuli.story_alignment(GENTLE, "pieman")
    func = SHARED / "narratives" / "sub-001" / "func"
    tr = stimuli.read_tr(func / "sub-001_task-pieman_run-1_bold.json")
    onset = stimuli.audio_onset(func / "sub-001_task-pieman_run-1_events.tsv")
    times, n_filled = transcript.times(onset)
    assert tr == 1.5 and n_filled == transcript.n_missing
    feats = F.word_features(model, tok, transcript.words, context=64, stride=32, batch_size=16)
    design = F.tr_features(feats, times, n_trs=300, tr=tr, layers=[2])
    assert design.shape == (1, 300, 16 * 4)
    _, dropped = downsample(feats[2], times, 300, tr)
    assert int(dropped) == 0  # the story ends inside the 300-TR (450 s) scan
    assert np.all(design[0, :8] == 0) and np.abs(design[0, 20:280]).sum(1).min() > 0


def test_every_story_reads_and_tokenizes(lm):
    _, tok = lm
    stories = sorted(p.name for p in GENTLE.iterdir() if (p / "align.csv").exists())
    assert len(stories) >= 26
    for story in stories:
        t = stimuli.story_alignment(GENTLE, story)  # all 26 are monotonic: strict policy
        ids, word_of, _ = F.word_token_index(tok, t.words)
        assert len(t.words) > 100 and len(ids) >= len(t.words) and word_of[-1] == len(t.words) - 1


def test_cache_hits_recomputes_and_survives_corruption(lm, story_words, tmp_path, monkeypatch):
    model, tok = lm
    calls = []
    real = F._word_features
    monkeypatch.setattr(F, "_word_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    kw = dict(context=32, stride=16, cache_dir=tmp_path)
    first = F.word_features(model, tok, story_words, **kw)
    again = F.word_features(model, tok, story_words, **kw)
    assert len(calls) == 1
    np.testing.assert_array_equal(first, again)
    F.word_features(model, tok, story_words, context=32, stride=8, cache_dir=tmp_path)
    F.word_features(model, tok, story_words, **kw, augmentation_id="assoc-words")
    assert len(calls) == 3
    stamps = {p: json.loads(p.read_text()) for p in tmp_path.glob("*.npy.stamp.json")}
    (stamp,) = [p for p, m in stamps.items() if m["key"]["stride"] == 16 and m["key"]["augmentation"] == "none"]
    npy = tmp_path / stamp.name.removesuffix(".stamp.json")
    assert isinstance(first, np.memmap) and not first.flags.writeable  # a read-only map of the cache file
    np.testing.assert_array_equal(first, real(model, tok, story_words, context=32, stride=16))  # = uncached
    first = np.array(first)  # the test damages the file in place below (the cache itself only renames)
    npy.write_bytes(npy.read_bytes()[:-200])
    with pytest.warns(UserWarning, match="truncated"):
        healed = F.word_features(model, tok, story_words, **kw)
    assert len(calls) == 4
    np.testing.assert_array_equal(healed, first)
    stamp.write_text("{not json")
    with pytest.warns(UserWarning, match="stamp .* is unreadable"):
        F.word_features(model, tok, story_words, **kw)
    assert len(calls) == 5
    stamp.unlink()  # an entry without its stamp is unfinished: recomputed without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        F.word_features(model, tok, story_words, **kw)
    assert len(calls) == 6
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("damage", ["overwritten with 1.0", "copied from another entry", "copied with its stamp"])
def test_damaged_feature_cache_is_recomputed_with_a_warning(lm, story_words, tmp_path, damage):
    """Damage that keeps the file's size and header (the old size check passed it) is caught
    by the stamp: the entry is recomputed, never used."""
    model, tok = lm
    kw = dict(context=32, cache_dir=tmp_path)
    want = np.array(F.word_features(model, tok, story_words, stride=16, **kw))
    other = np.array(F.word_features(model, tok, story_words, stride=8, **kw))
    assert not np.array_equal(want, other)  # the copy below would change the numbers
    (npy,) = [p for p in tmp_path.glob("*.npy") if np.array_equal(np.load(p), want)]
    (src,) = [p for p in tmp_path.glob("*.npy") if p != npy]
    if damage == "overwritten with 1.0":
        np.load(npy, mmap_mode="r+")[...] = 1.0
    else:
        shutil.copy(src, npy)
        if damage == "copied with its stamp":
            shutil.copy(src.with_name(src.name + ".stamp.json"), npy.with_name(npy.name + ".stamp.json"))
    match = "another key" if damage == "copied with its stamp" else "differ from the checksum"
    with pytest.warns(UserWarning, match=f"feature cache file .*{npy.name}: .*{match}.*; recomputing"):
        got = F.word_features(model, tok, story_words, stride=16, **kw)
    np.testing.assert_array_equal(got, want)


def test_feature_cache_write_on_a_full_disk_names_the_folder_and_leaves_nothing(lm, story_words, tmp_path,
                                                                                monkeypatch):
    import errno
    import os

    from assocjax.io import WriteRefusedError

    model, tok = lm

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(WriteRefusedError, match=f"^no space left on device: {tmp_path}; free space or point "
                                                "--cache-dir elsewhere$"):
        F.word_features(model, tok, story_words, context=32, stride=16, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # no partial file, no stamp


def test_bad_stimuli_get_clear_errors(lm, tmp_path, checkpoints):
    with pytest.raises(ValueError, match="unknown story 'nostory'.*pieman"):
        stimuli.story_alignment(GENTLE, "nostory")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="no words"):
        stimuli.read_gentle_csv(empty)
    untimed = tmp_path / "untimed.csv"
    untimed.write_text("a,a,,\nb,b,,\n")
    with pytest.raises(ValueError, match="no word has a time"):
        stimuli.read_gentle_csv(untimed)
    back = tmp_path / "back.csv"
    back.write_text("a,a,1.0,1.2\nb,b,,\nc,c,0.5,0.7\nd,d,2.0,2.1\n")
    with pytest.raises(ValueError, match="line 3"):
        stimuli.read_gentle_csv(back)
    fixed = stimuli.read_gentle_csv(back, on_unsorted="sort")
    assert fixed.words == ("c", "b", "a", "d")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stimuli.read_gentle_csv(back, on_unsorted="warn")
    assert any("line 3" in str(w.message) for w in caught)
    _, tok = lm
    small, _ = load_pretrained(checkpoints["gpt2"], tokenizer=False)
    with pytest.raises(ValueError, match="50257 tokens but the model's embedding has 101"):
        F.word_features(small, tok, ["hello", "world"])
