"""The augmentation core: file format, inline annotations, sentence ends, random controls."""
import itertools
import json
import os

import numpy as np
import pytest
from conftest import SHARED

from assocjax import stimuli
from assocjax.augment import format as fmt
from assocjax.augment.manual import import_json, parse_inline
from assocjax.augment.random_control import random_match, shuffled_control, token_count
from assocjax.augment.sentences import find_transcript, sentence_ends, story_sentence_ends
from assocjax.augment.stories import dataset_alignment

WORDS = ["I", "went", "to", "the", "hospital", "and", "the", "nurse", "said", "hello"]
PIEMAN = SHARED / "narratives" / "stimuli" / "gentle" / "pieman" / "align.csv"
GPT2 = SHARED / "tokenizers" / "gpt2"


def make_aug(words=WORDS, provenance=None):
    ins = (fmt.Insertion(4, "doctor, nurse", "word", "manual"),
           fmt.Insertion(9, "The nurse smiled.", "sentence", "model"),
           fmt.Insertion(4, "ambulance", "word", "manual"))
    return fmt.Augmentation("toy", fmt.story_hash(words), len(words), ins,
                            {"generator": "test", "seed": 3} if provenance is None else provenance)


@pytest.fixture(scope="module")
def gpt2_tok():
    if not GPT2.is_dir():
        pytest.skip(f"real GPT-2 tokenizer not available at {GPT2}")
    from transformers import GPT2TokenizerFast
    return GPT2TokenizerFast.from_pretrained(str(GPT2))


# ---------------------------------------------------------------------------- format


def test_save_load_round_trip_is_byte_stable(tmp_path):
    aug = make_aug()
    p1 = fmt.save(aug, tmp_path / "a.json", WORDS)
    loaded = fmt.load(p1, WORDS)
    assert loaded == aug and loaded.id == aug.id
    assert [i.after_word for i in loaded.insertions] == ["hospital", "hospital", "hello"]
    p2 = fmt.save(loaded, tmp_path / "b.json")  # after_word travels with the loaded insertions
    assert p1.read_bytes() == p2.read_bytes()
    obj = json.loads(p1.read_text())
    assert obj["format"] == fmt.FORMAT and obj["version"] == fmt.VERSION and obj["n_words"] == len(WORDS)
    assert list(obj["insertions"][0]) == ["anchor", "after_word", "text", "level", "source"]
    assert import_json(p1, WORDS) == aug


def test_insertions_sorted_stably_and_summary_properties():
    aug = make_aug()
    assert [(i.anchor, i.text) for i in aug.insertions] == [
        (4, "doctor, nurse"), (4, "ambulance"), (9, "The nurse smiled.")]
    assert aug.n_inserted_words == 2 + 1 + 3
    assert (aug.level, aug.source) == ("mixed", "mixed")
    one = fmt.Augmentation("toy", fmt.story_hash(WORDS), 10, (fmt.Insertion(1, "x", "word", "random"),), {})
    assert (one.level, one.source) == ("word", "random")


def test_id_is_independent_of_key_order_layout_and_after_word(tmp_path):
    a = make_aug(provenance={"generator": "test", "seed": 3, "nested": {"b": 1, "a": [1, 2]}})
    b = make_aug(provenance={"nested": {"a": [1, 2], "b": 1}, "seed": 3, "generator": "test"})
    assert a.id == b.id and len(a.id) == 16
    # a hand-written file: other key order, other indentation, after_word absent
    obj = fmt.to_json(a)
    for e in obj["insertions"]:
        del e["after_word"]
    shuffled = {k: obj[k] for k in reversed(list(obj))}
    (tmp_path / "hand.json").write_text(json.dumps(shuffled, indent=None))
    assert fmt.load(tmp_path / "hand.json", WORDS).id == a.id
    # the documented recipe, written out: sha256 of sorted-key, no-space JSON without after_word
    import hashlib
    canonical = {"format": "assocjax-augmentation", "version": 1, "story": "toy", "story_hash": fmt.story_hash(WORDS),
                 "n_words": 10, "provenance": {"generator": "test", "seed": 3}, "insertions": [
                     {"anchor": 4, "text": "doctor, nurse", "level": "word", "source": "manual"},
                     {"anchor": 4, "text": "ambulance", "level": "word", "source": "manual"},
                     {"anchor": 9, "text": "The nurse smiled.", "level": "sentence", "source": "model"}]}
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert make_aug().id == hashlib.sha256(blob).hexdigest()[:16]
    # pinned: changing the canonical form would silently invalidate every feature cache
    assert make_aug().id == "e484337f7ad8c09d"
    changed = fmt.Augmentation(a.story, a.story_hash, a.n_words,
                               a.insertions[:2] + (fmt.Insertion(9, "The nurse frowned.", "sentence", "model"),),
                               a.provenance)
    assert changed.id != a.id


def _file_obj():
    return fmt.to_json(make_aug(), WORDS)


def _set(path, value):
    def edit(obj):
        *head, last = path
        for k in head:
            obj = obj[k]
        if value is KeyError:
            del obj[last]
        else:
            obj[last] = value
    return edit


BAD_FILES = [  # (edit, words to check against, substrings the error must contain)
    (_set(["insertions", 1, "anchor"], 10), None, ["insertion 1", "'anchor'", "out of range [0, 10)"]),
    (_set(["insertions", 0, "anchor"], -1), None, ["insertion 0", "'anchor'", "out of range"]),
    (_set(["insertions", 2, "anchor"], 3.0), None, ["insertion 2", "'anchor'", "must be an int"]),
    (_set(["insertions", 2, "anchor"], "3"), None, ["insertion 2", "'anchor'", "must be an int"]),
    (_set(["insertions", 2, "anchor"], True), None, ["insertion 2", "'anchor'", "must be an int"]),
    (_set(["insertions", 1, "text"], ""), None, ["insertion 1", "'text'", "empty"]),
    (_set(["insertions", 1, "text"], " \t "), None, ["insertion 1", "'text'", "empty"]),
    (_set(["insertions", 0, "text"], "a [b]"), None, ["insertion 0", "'text'", "bracket"]),
    (_set(["insertions", 0, "text"], "a\nb"), None, ["insertion 0", "'text'", "line break"]),
    (_set(["insertions", 0, "level"], "phrase"), None, ["insertion 0", "'level'", "'phrase'"]),
    (_set(["insertions", 0, "source"], "gpt4"), None, ["insertion 0", "'source'", "'gpt4'"]),
    (_set(["insertions", 0, "source"], KeyError), None, ["insertion 0", "missing", "source"]),
    (_set(["insertions", 0, "color"], "red"), None, ["insertion 0", "unknown", "color"]),
    (_set(["insertions", 0], "hospital"), None, ["insertion 0", "JSON object"]),
    (_set(["insertions"], []), None, ["'insertions'", "empty"]),
    (_set(["format"], "other"), None, ["'format'", "other"]),
    (_set(["version"], 2), None, ["'version'", "2"]),
    (_set(["story_hash"], KeyError), None, ["missing", "story_hash"]),
    (_set(["extra"], 1), None, ["unknown", "extra"]),
    (_set(["story_hash"], "abc"), None, ["'story_hash'", "64"]),
    (_set(["n_words"], 0), None, ["'n_words'", "positive"]),
    (_set(["provenance"], [1]), None, ["'provenance'", "dict"]),
    (_set(["insertions", 0, "after_word"], "nurse"), WORDS, ["insertion 0", "'after_word'", "'nurse'", "'hospital'"]),
    (lambda o: None, WORDS[:-1] + ["goodbye"], ["made for a different story", "'toy'", "10 words",
                                                fmt.story_hash(WORDS)[:12],
                                                fmt.story_hash(WORDS[:-1] + ["goodbye"])[:12]]),
    (_set(["n_words"], 12), WORDS, ["'n_words'", "12", "10 words"]),
]


@pytest.mark.parametrize("edit, words, expected", BAD_FILES)
def test_bad_file_errors_name_file_field_and_index(tmp_path, edit, words, expected):
    obj = _file_obj()
    edit(obj)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(ValueError) as err:
        fmt.load(path, words)
    msg = str(err.value)
    assert str(path) in msg
    for part in expected:
        assert part in msg, (part, msg)


def test_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        fmt.load(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"x\.json: not valid JSON"):
        fmt.load(tmp_path / "x.json")


def test_failed_save_leaves_no_file(tmp_path):
    bad = fmt.Augmentation("toy", fmt.story_hash(WORDS), 10, (fmt.Insertion(10, "x", "word", "manual"),), {})
    with pytest.raises(ValueError, match="out of range"):
        fmt.save(bad, tmp_path / "bad.json")
    with pytest.raises(ValueError, match="different story"):
        fmt.save(make_aug(), tmp_path / "other.json", WORDS[::-1])
    old = fmt.save(make_aug(), tmp_path / "keep.json")
    before = old.read_bytes()
    with pytest.raises(ValueError, match="out of range"):
        fmt.save(bad, old)
    assert old.read_bytes() == before  # an existing file is not touched either
    (tmp_path / "afile").write_text("")
    with pytest.raises(OSError):
        fmt.save(make_aug(), tmp_path / "afile" / "aug.json")
    with pytest.raises(ValueError, match="not JSON-serializable"):
        fmt.save(make_aug(provenance={"x": object()}), tmp_path / "prov.json")
    assert sorted(os.listdir(tmp_path)) == ["afile", "keep.json"]


def test_augmented_words_order_and_indices():
    words, heard, anchor = fmt.augmented_words(WORDS, make_aug())
    assert words == ["I", "went", "to", "the", "hospital", "doctor,", "nurse", "ambulance", "and", "the", "nurse",
                     "said", "hello", "The", "nurse", "smiled."]
    np.testing.assert_array_equal(heard, [0, 1, 2, 3, 4, -1, -1, -1, 5, 6, 7, 8, 9, -1, -1, -1])
    np.testing.assert_array_equal(anchor, [0, 1, 2, 3, 4, 4, 4, 4, 5, 6, 7, 8, 9, 9, 9, 9])
    assert heard.dtype == anchor.dtype == np.int32
    with pytest.raises(ValueError, match="different story"):
        fmt.augmented_words(WORDS[:-1], make_aug())


# ---------------------------------------------------------------------------- inline


GENTLE = ["I", "went", "to", "the", "hospital", "and", "the", "nurse", "said", "I’m", "well", "known"]


def test_normalize():
    assert stimuli.normalize("Hospital,") == "hospital" and stimuli.normalize("I’m") == stimuli.normalize("i'm") == "im"
    assert stimuli.normalize("--") == ""


def test_parse_inline_maps_punctuated_text_onto_alignment():
    text = ('I went to the Hospital, [doctor,   nurse] [ambulance]\nand the nurse said: '
            '"im [self] well-known!" [fame]')
    aug = parse_inline(text, GENTLE, "toy", level="word")
    assert [(i.anchor, i.after_word, i.text) for i in aug.insertions] == [
        (4, "hospital", "doctor, nurse"), (4, "hospital", "ambulance"), (9, "I’m", "self"), (11, "known", "fame")]
    assert aug.source == "manual" and aug.level == "word" and aug.story_hash == fmt.story_hash(GENTLE)
    assert aug.provenance == {"generator": "manual-inline"}
    s = parse_inline("I went to the hospital. [It was cold.] and the nurse said I'm well known", GENTLE, "toy",
                     level="sentence", provenance={"annotator": "A"})
    assert s.insertions[0].level == "sentence" and s.provenance == {"annotator": "A"}


REST = " and the nurse said I'm well known"
BAD_INLINE = [
    ("I went to the hospi[doctor]tal" + REST, ["inside a word", "character 19"]),
    ("I went to the hosp [doctor] ital" + REST, ["inside a word", "'hosp'", "'hospital'"]),
    ("I went to the clinic [doctor]" + REST, ["token 4", "'clinic'", "word 4 'hospital'", ">>clinic<<", ">>hospital<<"]),
    ("[doctor] I went to the hospital" + REST, ["before the first word"]),
    ("I went to the hospital []" + REST, ["empty insertion", "character 23"]),
    ("I went to the hospital [  ]" + REST, ["empty insertion"]),
    ("I went to the hospital [a [b]]" + REST, ["nested '['", "character 26"]),
    ("I went to the hospital [doctor" + REST, ["never closed", "character 23"]),
    ("I went to the hospital doctor]" + REST, ["']'", "without an opening"]),
    ("I went to the hospital [doctor] and the nurse said I'm well", ["ends before alignment word 11", "'known'"]),
    ("I went to the hospital [doctor]" + REST + " today", ["past the last alignment word", "'today'"]),
    ("I went to the hospital" + REST, ["no insertions"]),
]


@pytest.mark.parametrize("text, expected", BAD_INLINE)
def test_parse_inline_errors(text, expected):
    with pytest.raises(ValueError) as err:
        parse_inline(text, GENTLE, "toy")
    for part in expected:
        assert part in str(err.value), (part, str(err.value))


# ---------------------------------------------------------------------------- sentences


def test_sentence_ends_from_text():
    words = ["Mr", "Smith", "went", "home", "Hi", "he", "said", "Then", "he", "slept", "well", "known"]
    text = 'Mr. Smith went home. "Hi!" he said... Then (he slept) well-known'
    np.testing.assert_array_equal(sentence_ends(words, None, None, text), [3, 4, 6, 11])
    with pytest.raises(ValueError, match="'Jones'"):
        sentence_ends(words, None, None, text.replace("Smith", "Jones"))


def test_sentence_ends_from_pauses():
    on = np.array([0.0, 0.5, 1.0, 2.5, 3.0, np.nan, 6.0, 6.5])
    off = np.array([0.4, 0.9, 1.7, 2.9, 3.2, np.nan, 6.4, 7.0])
    # gaps: 0.1 0.1 0.8 0.1 nan nan 0.1 -> only word 2 (exactly 0.8 s), plus the last word
    np.testing.assert_array_equal(sentence_ends(list("abcdefgh"), on, off), [2, 7])
    np.testing.assert_array_equal(sentence_ends(list("abcdefgh"), on, off, gap_s=0.05), [0, 1, 2, 3, 6, 7])
    with pytest.raises(ValueError, match=r"shape \(8,\)"):
        sentence_ends(list("abcdefgh"), on[:-1], off)


def test_story_sentence_ends_prefers_transcript_txt(tmp_path):
    (tmp_path / "align.csv").write_text("Hello,hello,0.0,0.3\nthere,there,0.35,0.6\n"
                                        "Bye,bye,0.7,0.9\nnow,now,2.0,2.2\n")
    t = stimuli.read_gentle_csv(tmp_path / "align.csv")
    assert find_transcript(tmp_path / "align.csv") is None
    np.testing.assert_array_equal(story_sentence_ends(t), [2, 3])  # pause of 1.1 s after "Bye"
    (tmp_path / "transcript.txt").write_text("Hello there. Bye now.\n")
    assert find_transcript(tmp_path / "align.csv") == tmp_path / "transcript.txt"
    np.testing.assert_array_equal(story_sentence_ends(t), [1, 3])
    (tmp_path / "transcript.txt").write_text("Hello there. Goodbye now.\n")
    with pytest.raises(ValueError, match="transcript.txt: does not match"):
        story_sentence_ends(t)


def test_sentence_ends_on_real_pieman_alignment():
    if not PIEMAN.is_file():
        pytest.skip(f"real Gentle alignment not available at {PIEMAN}")
    t = stimuli.read_gentle_csv(PIEMAN)
    ends = story_sentence_ends(t)  # shared/ has no transcript.txt: pauses
    assert ends[-1] == len(t.words) - 1 and np.all(np.diff(ends) > 0)
    mean_len = len(t.words) / len(ends)
    assert 5 <= mean_len <= 40, (len(ends), mean_len)  # 73 segments, 13.1 words each at 0.8 s


# ---------------------------------------------------------------------------- random control


def _story_aug(words, ends):
    ins = [fmt.Insertion(int(e), "The nurse said hospitals are scary, aren't they?", "sentence", "model")
           for e in ends[::3]]
    ins += [fmt.Insertion(5, "Mount Everest", "word", "model"), fmt.Insertion(5, "xylophone", "word", "model")]
    return fmt.Augmentation("story", fmt.story_hash(words), len(words), tuple(ins), {"generator": "test"})


def _is_run_of(text, pool):
    return f" {text} " in f" {' '.join(pool)} "


def test_random_control_matches_gpt2_tokens_exactly(gpt2_tok):
    words = [f"w{k}" for k in range(200)]
    ends = np.arange(9, 200, 10)
    aug = _story_aug(words, ends)
    pool = ("Once upon a time there lived a xylophonist named Zyzzyva who, quite unexpectedly, "
            "loved quantum-chromodynamics and ate 12,345 pancakes daily!").split() * 3
    for positions in ("matched", "random"):
        ctl = random_match(aug, words, pool, seed=7, positions=positions, tokenizer=gpt2_tok,
                           sentence_ends=ends, pool_name="toy pool")
        fmt.validate(ctl, words)
        assert len(ctl.insertions) == len(aug.insertions) and ctl.source == "random"
        orig = sorted((i.level, token_count(gpt2_tok, i.text)) for i in aug.insertions)
        got = sorted((i.level, token_count(gpt2_tok, i.text)) for i in ctl.insertions)
        assert got == orig
        assert all(_is_run_of(i.text, pool) for i in ctl.insertions)
        p = ctl.provenance
        assert (p["matched_to"], p["seed"], p["positions"], p["pool_name"]) == (aug.id, 7, positions, "toy pool")
        assert p["total_original"] == p["total_control"] == sum(n for _, n in orig)
        assert p["tokenizer"] == "gpt2" and p["unit"] == "tokens"
    matched = random_match(aug, words, pool, seed=7, tokenizer=gpt2_tok)
    assert [i.anchor for i in matched.insertions] == [i.anchor for i in aug.insertions]


def test_random_control_is_deterministic_by_seed_and_uses_words_without_tokenizer():
    words = [f"w{k}" for k in range(100)]
    aug = _story_aug(words, np.arange(4, 100, 5))
    pool = [f"p{k}" for k in range(60)]
    a = random_match(aug, words, pool, seed=1, positions="random")
    b = random_match(aug, words, pool, seed=1, positions="random")
    c = random_match(aug, words, pool, seed=2, positions="random")
    assert a == b and a.id == b.id and a.id != c.id
    assert sorted(len(i.text.split()) for i in a.insertions) == sorted(len(i.text.split()) for i in aug.insertions)
    assert all(_is_run_of(i.text, pool) for i in a.insertions)
    assert a.provenance["unit"] == "words" and a.provenance["tokenizer"] is None


def test_random_positions_in_range_distinct_and_at_sentence_ends():
    words = [f"w{k}" for k in range(300)]
    ends = np.arange(14, 300, 15)
    aug = _story_aug(words, ends)
    n_sent = sum(i.level == "sentence" for i in aug.insertions)
    seen = set()
    for seed in range(20):
        ctl = random_match(aug, words, [f"p{k}" for k in range(40)], seed=seed, positions="random",
                           sentence_ends=ends)
        anchors = [i.anchor for i in ctl.insertions]
        assert len(set(anchors)) == len(anchors) and all(0 <= a < 300 for a in anchors)
        sent = [i.anchor for i in ctl.insertions if i.level == "sentence"]
        assert len(sent) == n_sent and set(sent) <= set(ends.tolist())
        assert all(i.after_word == words[i.anchor] for i in ctl.insertions)
        seen.add(tuple(sorted(anchors)))
    assert len(seen) == 20  # every seed places the insertions differently
    unrestricted = {i.anchor for s in range(20) for i in random_match(
        aug, words, [f"p{k}" for k in range(40)], seed=s, positions="random").insertions if i.level == "sentence"}
    assert not unrestricted <= set(ends.tolist())


def test_random_control_errors(gpt2_tok):
    words = [f"w{k}" for k in range(50)]
    aug = _story_aug(words, np.arange(4, 50, 5))
    with pytest.raises(ValueError, match="pool of unrelated words is empty"):
        random_match(aug, words, [], seed=0)
    with pytest.raises(ValueError, match=r"has 5 words, shorter than the longest insertion \(8 words\)"):
        random_match(aug, words, list("abcde"), seed=0)
    with pytest.raises(ValueError, match=r"no run of pool words has exactly 11 tokens \(insertion 0\)"):
        random_match(aug, words, ["qwerty"] * 30, seed=0, tokenizer=gpt2_tok)  # 3 tokens per word
    with pytest.raises(ValueError, match="pool word 1"):
        random_match(aug, words, ["a", "b c", "d"], seed=0)
    with pytest.raises(ValueError, match="positions must be one of"):
        random_match(aug, words, list("abcdefghij"), seed=0, positions="shuffled")
    with pytest.raises(ValueError, match="sentence ends are left"):
        random_match(aug, words, list("abcdefghij"), seed=0, positions="random", sentence_ends=[4, 9])
    with pytest.raises(ValueError, match="different story"):
        random_match(aug, words[::-1], list("abcdefghij"), seed=0)


# ---------------------------------------------------------------------------- shuffled control


def _pairs(aug):
    return sorted((i.anchor, i.level, i.text) for i in aug.insertions)


def test_shuffled_control_moves_every_text_and_keeps_texts_and_anchors():
    words = [f"w{k}" for k in range(60)]
    ends = np.arange(4, 60, 5)
    word_texts = ["doctor, nurse", "ambulance", "river, bank, fish", "snow", "doctor, nurse", "lamp"]
    ins = [fmt.Insertion(int(e), f"Sentence number {k} was here.", "sentence", "model") for k, e in enumerate(ends)]
    ins += [fmt.Insertion(a, t, "word", "model") for a, t in zip([7, 7, 13, 21, 30, 41], word_texts)]
    aug = fmt.Augmentation("story", fmt.story_hash(words), len(words), tuple(ins), {"generator": "test"})
    ctl = shuffled_control(aug, words, seed=3)
    fmt.validate(ctl, words)
    assert sorted(i.text for i in ctl.insertions) == sorted(i.text for i in aug.insertions)
    assert sorted((i.anchor, i.level) for i in ctl.insertions) == sorted((i.anchor, i.level) for i in aug.insertions)
    for level in ("sentence", "word"):  # texts move within their level: a comma list stays after a word
        assert sorted(i.text for i in ctl.insertions if i.level == level) == sorted(
            i.text for i in aug.insertions if i.level == level)
    before = {(i.anchor, i.text) for i in aug.insertions}
    assert not before & {(i.anchor, i.text) for i in ctl.insertions}  # no text left where it was (anchor 7 too)
    assert ctl.source == "random" and all(i.after_word == words[i.anchor] for i in ctl.insertions)
    p = ctl.provenance
    assert (p["generator"], p["kind"], p["matched_to"], p["seed"], p["unmoved"]) == (
        "shuffled_control", "shuffled", aug.id, 3, 0)
    assert p["condition"] == "shuffled-mixed"
    again, other = shuffled_control(aug, words, seed=3), shuffled_control(aug, words, seed=4)
    assert again == ctl and again.id == ctl.id and other.id != ctl.id
    assert _pairs(other) != _pairs(ctl)


def test_shuffled_control_unmoved_is_the_least_possible():
    """Checked against every permutation on small augmentations with repeated anchors and texts,
    where single swaps can get stuck; a lone insertion of its level cannot move."""
    words = [f"w{k}" for k in range(8)]
    rng = np.random.default_rng(0)
    for _ in range(60):
        n = int(rng.integers(1, 7))
        anchors, texts = rng.integers(0, 3, n).tolist(), rng.choice(["x y", "z", "q, r"], n).tolist()
        aug = fmt.Augmentation("s", fmt.story_hash(words), 8,
                               tuple(fmt.Insertion(a, t, "word", "manual") for a, t in zip(anchors, texts)), {})
        before = {(i.anchor, i.text) for i in aug.insertions}
        slots = [i.anchor for i in aug.insertions]
        texts = [i.text for i in aug.insertions]
        least = min(sum((a, texts[j]) in before for a, j in zip(slots, perm))
                    for perm in itertools.permutations(range(n)))
        ctl = shuffled_control(aug, words, seed=int(rng.integers(1000)))
        assert sorted(i.text for i in ctl.insertions) == sorted(texts) and [i.anchor for i in ctl.insertions] == slots
        assert ctl.provenance["unmoved"] == sum((i.anchor, i.text) in before for i in ctl.insertions) == least
    lone = fmt.Augmentation("s", fmt.story_hash(words), 8, (fmt.Insertion(2, "a b", "sentence", "model"),
                                                              fmt.Insertion(3, "c", "word", "model"),
                                                              fmt.Insertion(5, "d", "word", "model")), {})
    ctl = shuffled_control(lone, words, seed=0)
    assert [i.text for i in ctl.insertions] == ["a b", "d", "c"] and ctl.provenance["unmoved"] == 1


def test_shuffled_control_errors():
    aug = make_aug()
    with pytest.raises(ValueError, match="different story"):
        shuffled_control(aug, WORDS[::-1], seed=0)
    with pytest.raises(ValueError, match="seed must be an int"):
        shuffled_control(aug, WORDS, seed=1.5)


# ---------------------------------------------------------------------------- story lookup

@pytest.mark.skipif(not (SHARED / "narratives").is_dir(), reason="../shared/narratives not present")
def test_dataset_alignment_by_folder_story_and_task():
    from assocjax.data import load_dataset

    root = SHARED / "narratives"
    first_scan = next(s for s in load_dataset(root).all_scans if s.task == "milkyway")  # dataset order
    assert dataset_alignment(root, "reach")[0] == "slumlordreach"  # a story whose alignment has another name
    gentle, t = dataset_alignment(root, "milkyway")                 # a task: the first such scan's story
    assert gentle == first_scan.stories[0].gentle != "milkyway" and t.words
    with pytest.raises(ValueError, match="no alignment for story 'nope'; alignments: 21styear, bigbang"):
        dataset_alignment(root, "nope")
