"""The transcript path on real text: pieman's transcript.txt as Narratives ships it (the words
of its real Gentle align.csv, column 1, with the punctuation of a story transcript: sentence
ends, commas, straight and curly quotes, apostrophes, hyphens ("hard-boiled", "working- to
middle-class"), spaced and unspaced dashes, an ellipsis, paragraph breaks), read through the
real dataset layout (`load_dataset` of the real metadata).

../shared holds no real transcript.txt, so the test builds one: GLUE gives, after word i of
align.csv, the text up to the next word whenever it is not a single space (the words are
checked, so an edited align.csv fails here loudly). The words are the alignment's own, so the
built text keeps the story's case and its curly apostrophes ("I’m"), as the real files do.
"""
import csv
import re
import shutil

import numpy as np
import pytest

from assocjax import augment, stimuli
from assocjax import features as F
from assocjax.data import layout
from conftest import SHARED

NARRATIVES = SHARED / "narratives"
ALIGN = NARRATIVES / "stimuli" / "gentle" / "pieman" / "align.csv"
TOKENIZER = SHARED / "tokenizers" / "gpt2"
pytestmark = pytest.mark.skipif(not ALIGN.is_file(), reason="needs ../shared/narratives")

UNTIMED = (421, 499, 881)  # align.csv rows without times: "to", "Beale", "brought"
GLUE = [
    (9, 'Bronx', ', '), (15, 'hard', '-'), (20, 'Ram', ', '), (26, 'University', '. '), (29, 'day', ', '),
    (42, 'McGowan', ', '), (51, 'working', '- '), (53, 'middle', '-'), (57, 'wealthier', ', '), (60, 'ones', '. '),
    (66, 'notebook', ', '), (72, 'him', ', '), (75, 'say', ', "'), (77, 'McGowan', ', '), (92, 'rate', ', '),
    (95, 'so', ', '), (103, 'mission', '?"\n\n'), (106, 'stops', ', '), (110, 'me', ', '), (113, 'says', ', "'),
    (115, 'up', ', '), (116, 'punk', '." '), (128, 'eye', ', '), (136, 'pie', ', '), (152, 'face', '. '),
    (156, 'away', '. '), (163, 'cream', '. '), (169, 'moment', ', '), (173, 'say', ', "'), (175, 'McGowan', ', '),
    (184, 'attack', '?" '), (188, 'says', ', "'), (189, 'Yes', ', '), (194, 'comment', '. '), (196, 'you', '."\n\n'),
    (206, 'scoop', ', '), (211, 'editor', ', '), (213, 'Dwyer', ', '), (216, 'senior', ' -- '), (226, 'Prize', ', '),
    (229, 'true', ' -- '), (234, 'guy', '. '), (239, 'story', ', '), (245, 'seen', ', '), (248, 'says', ', "'),
    (250, 'McGowan', ' -- '), (254, 'dick', '. '), (257, 'up', '."\n\n'), (263, 'story', ', '), (268, 'good', ', '),
    (282, 'embellishment', '. '), (285, 'this', ' "'), (288, 'up', '." '), (295, 'line', '. '), (306, 'high', '-'),
    (313, 'pastry', ', '), (319, 'it', '. '), (325, 'was', ', '), (331, 'name', '. '), (336, 'Man', ', '),
    (338, 'P', ', '), (340, 'M', '. '), (347, 'cape', '-'), (348, 'wearing', ', '), (350, 'avenger', '. '),
    (356, 'capeless', '. '), (364, 'scene', ', '), (371, 'glee', '. '), (379, 'Latin', '. '), (385, 'out', ', "'),
    (390, 'bestia', '," '), (392, 'means', ', "'), (397, 'animal', '." '), (401, 'sense', '. '),
    (404, 'something', '. '), (406, 'Catholic', ', '), (411, 'me', '.\n\n'), (416, 'story', ', '),
    (422, 'Dwyer', ', '), (425, 'reads', ', '), (428, 'says', ', "'), (430, 'Man', '! '), (433, 'it', '! '),
    (435, 'one', '!" '), (443, 'crossed', '.\n\n'), (447, 'later', ', '), (451, 'letter', '. '),
    (453, 'says', ', "'), (455, 'Jim', ', '), (457, 'story', '. '), (459, 'details', '. '), (468, 'action', ', '),
    (475, 'Library', ', '), (479, 'o’clock', ', '), (480, 'signed', ', '), (482, 'Man', '." '), (492, 'Ram', '. '),
    (495, 'enough', ', '), (499, 'Beale', ', '), (502, 'president', '. '), (504, 'now', ', '), (522, 'part', '-'),
    (524, 'jobs', '. '), (527, 'well', '-'), (528, 'bred', '. '), (532, 'spirit', '. '), (544, 'of', '. '),
    (554, 'her', ' -- '), (557, 'office', ', '), (560, 'desk', '. '), (565, 'rumor', '; '), (573, 'rumor', '. '),
    (579, 'that', '.\n\n'), (583, 'was', ', '), (595, 'campus', '. '), (597, 'infamous', ' "'),
    (602, 'barbecues', '" '), (603, 'rule', '. '), (605, 'right', ', '), (606, 'boo', ', '), (608, 'rule', '. '),
    (617, 'taste', '. '), (624, 'next', '. '), (631, 'late', '-'), (635, 'box', ', '), (638, 'delivery', ', '),
    (642, 'crying', ', “'), (647, 'bestia', '!” '), (663, 'day', ', '), (673, 'scene', ', '), (677, 'him', ', '),
    (679, 'this', '. '), (688, 'campus', '. '), (698, 'class', '. '), (707, 'Man', ', '), (712, 'me', '.\n\n'),
    (719, 'run', ', '), (727, 'night', ', '), (730, 'saw', '—'), (732, 'came', ', '), (735, 'saw', '—'),
    (738, 'corner', ', '), (748, 'friends', '. '), (750, 'now', ', '), (759, 'months', '. '), (760, 'Or', ', '),
    (766, 'her', ', '), (781, 'existed', '. '), (783, 'I', '... '), (797, 'it', '. '), (808, 'round', ', '),
    (816, 'shoulder', '. '), (820, 'her', '. '), (823, 'said', ', "'), (824, 'Jim', ', '), (842, 'strike', '. '),
    (846, 'wondering', ': '), (850, 'Man', '?"\n\n'), (853, 'knew', ', '), (859, 'it', ', '), (866, 'yes', ', '),
    (872, 'me', '. '), (878, 'Man', '? '), (884, 'being', '? '), (892, 'me', '? '), (906, 'answer', '. '),
    (908, 'fact', ', '), (912, 'Man', '. '), (917, 'knew', ', '), (926, 'costume', '. '), (931, 'her', ', '),
    (934, 'said', ', "'), (935, 'Yes', ', '), (936, 'Angela', '. '), (940, 'Man', '." '), (943, 'said', ', "'),
    (944, 'Oh', ', '), (945, 'good', '. '), (956, 'it', '."\n'),
]


def pieman_words() -> list[str]:
    with open(ALIGN, encoding="utf-8", newline="") as f:
        return [row[0] for row in csv.reader(f)]


def pieman_transcript(words, newline: str = "\n") -> str:
    """The punctuated transcript: the words joined by GLUE (else one space)."""
    glue = {i: g for i, _, g in GLUE}
    for i, word, _ in GLUE:
        assert words[i] == word, f"align.csv word {i} is {words[i]!r}, not {word!r}: GLUE is out of date"
    return "".join(w + glue.get(i, " ") for i, w in enumerate(words)).replace("\n", newline)


def attached(glue: str) -> str:
    """What of the glue after a word stays with it (up to a space): ',' of ', "', '-' of '-'."""
    return re.match(r"\S*", glue).group()


@pytest.fixture(scope="module")
def pieman_root(tmp_path_factory):
    """The real metadata, with only pieman's alignment and its transcript under stimuli/gentle."""
    root = tmp_path_factory.mktemp("narratives")
    for entry in NARRATIVES.iterdir():
        if entry.name != "stimuli":
            (root / entry.name).symlink_to(entry)
    story = root / "stimuli" / "gentle" / "pieman"
    story.mkdir(parents=True)
    shutil.copy(ALIGN, story / "align.csv")
    (story / "transcript.txt").write_text(pieman_transcript(pieman_words()), encoding="utf-8")
    return root


def read_pieman(root):
    ds = layout.load_dataset(root)
    story = next(st for sc in ds.all_scans if sc.task == "pieman" for st in sc.stories)
    return ds.alignment(story), story


def test_every_aligned_word_is_read_at_its_place_in_the_punctuated_text(pieman_root):
    words = pieman_words()
    t, _ = read_pieman(pieman_root)
    assert t.text_source == "transcript.txt" and t.words == tuple(words)
    r = t.reading()
    assert r.text == " ".join(pieman_transcript(words).split())  # paragraph breaks read as spaces
    assert r.words == words  # all 957, in order: none dropped, none duplicated
    starts, ends = r.spans_W2.T
    assert np.all(starts[1:] >= ends[:-1]) and np.all(ends > starts)
    between = "".join(r.text[b:a] for b, a in zip(np.r_[0, ends], np.r_[starts, len(r.text)]))
    assert not any(c.isalnum() for c in between)  # every letter of the text is some word's
    # Punctuation stays with the word before it: "Bronx," "hard-" "mission?"" ...
    glue = {i: g for i, _, g in GLUE}
    got = [r.text[b:e] for b, e in zip(ends, r.piece_ends)]
    assert got == [attached(glue.get(i, " ")) for i in range(len(words))]
    # ... and an opening quote with the word after it.
    first = words.index("Listen")
    assert r.passage(first, first + 2) == '"Listen up, punk."'
    assert r.passage(643, 647) == "“Ego sum non an bestia!”"  # curly quotes too
    assert r.passage(729, 731) == "I saw—I"  # an em dash between two words belongs to the first
    assert r.passage(UNTIMED[1] - 2, UNTIMED[1] + 3) == "comes Sheila Beale, student body president."


def test_sentences_end_at_the_transcripts_punctuation(pieman_root):
    t, _ = read_pieman(pieman_root)
    expected = sorted({i for i, _, g in GLUE if g[0] in ".?!"})
    np.testing.assert_array_equal(augment.story_sentence_ends(t), expected)
    text = pieman_transcript(pieman_words())  # counted on the text itself: 74 sentences
    assert len(expected) == len(re.findall(r'[.!?]+["”]?(?:\s|$)', text)) == 74 and expected[-1] == len(t.words) - 1


def test_words_gentle_did_not_find_are_placed_with_interpolated_times(pieman_root):
    t, story = read_pieman(pieman_root)
    mid = t.midpoints
    assert np.flatnonzero(np.isnan(mid)).tolist() == list(UNTIMED)
    assert [t.reading().words[i] for i in UNTIMED] == ["to", "Beale", "brought"]
    times, n = t.times(story.audio_onset)
    timed = np.flatnonzero(~np.isnan(mid))
    reference = np.interp(np.arange(len(mid)), timed, mid[timed].astype(np.float64)) + story.audio_onset
    assert n == 3
    np.testing.assert_allclose(times, reference, rtol=0, atol=1e-12)
    for i in UNTIMED:  # between its neighbours, which are both timed
        assert mid[i - 1] < times[i] - story.audio_onset < mid[i + 1]


@pytest.mark.skipif(not TOKENIZER.is_dir(), reason="needs ../shared/tokenizers/gpt2")
def test_gpt2_reads_every_word_and_its_punctuation(pieman_root):
    t, _ = read_pieman(pieman_root)
    r = t.reading()
    from transformers import GPT2TokenizerFast

    tok = GPT2TokenizerFast.from_pretrained(str(TOKENIZER))  # the real GPT-2 BPE
    ids, word_of, prefix = F.word_token_index(tok, r)
    assert prefix == () and tok.decode(ids) == r.text
    assert np.all(np.diff(word_of[word_of >= 0]) >= 0)  # tokens follow the words' order
    for i, w in enumerate(t.words):
        assert stimuli.normalize(tok.decode(ids[word_of == i])) == stimuli.normalize(w), i
    assert not any(c.isalnum() for c in tok.decode(ids[word_of == -1]))  # only punctuation is nobody's
    assert (word_of == -1).sum() > 100  # the quotes, commas and stops are read


def test_byte_order_mark_and_windows_line_ends_read_the_same(pieman_root, tmp_path):
    words = pieman_words()
    shutil.copy(ALIGN, tmp_path / "align.csv")
    (tmp_path / "transcript.txt").write_bytes(b"\xef\xbb\xbf" + pieman_transcript(words, "\r\n").encode())
    t = stimuli.read_gentle_csv(tmp_path / "align.csv")
    plain, _ = read_pieman(pieman_root)
    assert t.reading().text == plain.reading().text and t.reading().text.startswith("I began")
    np.testing.assert_array_equal(t.spans_W2, plain.spans_W2)


@pytest.mark.parametrize("edit, index", [
    (lambda ws: ws.__setitem__(42, "McGown"), 42),  # a misspelt word
    (lambda ws: ws.pop(UNTIMED[0]), UNTIMED[0]),  # a word left out (one Gentle did not find)
    (lambda ws: ws.insert(140, ws[140]), 141),  # a word written twice ("the guy guy standing")
])
def test_a_transcript_that_disagrees_names_story_line_and_word(tmp_path, edit, index):
    words = pieman_words()
    story = tmp_path / "pieman"
    story.mkdir()
    shutil.copy(ALIGN, story / "align.csv")
    edited = list(words)
    edit(edited)
    glue = {i: g for i, _, g in GLUE}
    text = "".join(w + glue.get(i, " ") for i, w in enumerate(edited))
    (story / "transcript.txt").write_text(text, encoding="utf-8")
    at = sum(len(w) + len(glue.get(i, " ")) for i, w in enumerate(edited[:index]))  # edited word `index`
    line = text[:at].count("\n") + 1
    assert (index, line) in ((42, 1), (421, 9), (141, 3))
    with pytest.raises(ValueError, match=rf"pieman/transcript.txt: does not match the alignment .*align.csv "
                                         rf"\(story 'pieman'\): transcript.txt: token \d+ \(line {line}, character \d+\)"
                                         rf" .*alignment word {index} {words[index]!r}"):
        stimuli.read_gentle_csv(story / "align.csv")
