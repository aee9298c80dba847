"""What the model reads when a transcript.txt sits beside the alignment (punctuation and
case mapped onto the Gentle words), and the words' times (midpoints)."""
import shutil

import numpy as np
import pytest

from assocjax import augment, stimuli
from assocjax import features as F
from assocjax.augment import format as fmt
from assocjax.data.synthetic import stimulus_design
from assocjax.models import load_pretrained
from assocjax.tune import dataset
from conftest import SHARED, save_tiny

TOKENIZER = SHARED / "tokenizers" / "gpt2"
# Gentle's words: no punctuation, "well-known" split in two, curly apostrophes.
ALIGN = ("Hello,hello,0.10,0.50\nworld,world,0.60,1.00\nIt’s,it's,1.50,1.70\na,a,1.70,1.80\n"
         "well,well,1.80,2.00\nknown,known,2.00,2.40\nfact,fact,,\nsaid,said,3.00,3.40\nMr,mr,3.50,3.60\n"
         "Smith,smith,3.60,4.00\n")
TEXT = 'Hello, world.\n\n"It\'s a well-known fact!" said  Mr. Smith.\n'


@pytest.fixture
def story(tmp_path):
    (tmp_path / "align.csv").write_text(ALIGN, encoding="utf-8")
    (tmp_path / "transcript.txt").write_text(TEXT, encoding="utf-8")
    return tmp_path


def test_transcript_text_is_mapped_onto_the_alignment_words(story):
    t = stimuli.read_gentle_csv(story / "align.csv")
    assert t.text_source == "transcript.txt" and t.transcript_path == str(story / "transcript.txt")
    r = t.reading()
    assert r.text == 'Hello, world. "It\'s a well-known fact!" said Mr. Smith.'  # whitespace runs collapsed
    assert r.words == ["Hello", "world", "It's", "a", "well", "known", "fact", "said", "Mr", "Smith"]
    assert r.passage(0, 1) == "Hello, world."
    assert r.passage(2, 6) == '"It\'s a well-known fact!"'  # the opening quote and the anchor's punctuation
    assert r.passage(4, 4) == "well-"  # a word that ends inside a transcript token keeps what follows up to the next word
    plain = stimuli.read_gentle_csv(story / "align.csv", transcript=False)
    assert plain.text_source == "alignment words" and plain.text == "Hello world It’s a well known fact said Mr Smith"
    np.testing.assert_array_equal(augment.story_sentence_ends(t), [1, 6, 9])  # "fact!\"" ends one; "Mr." does not


def test_transcript_that_does_not_match_names_file_and_position(story):
    wrong = "Hello, world. It's a well-known fact! said Dr. Smith."
    (story / "transcript.txt").write_text(wrong)
    with pytest.raises(ValueError, match=rf"transcript.txt: does not match the alignment .*align.csv.*"
                                         rf"token 7 \(line 1, character {wrong.index('Dr.')}\) 'Dr.'.*alignment word 8 'Mr'"):
        stimuli.read_gentle_csv(story / "align.csv")
    (story / "transcript.txt").write_text("Hello, world. It's a well-known fact! said Mr. Smith. Bye.")
    with pytest.raises(ValueError, match=r"transcript.txt: .*'Bye.' is past the last alignment word"):
        stimuli.read_gentle_csv(story / "align.csv")
    (story / "transcript.txt").write_text("Hello, world. It's a well-known fact!")
    with pytest.raises(ValueError, match=r"transcript.txt: .*ends before alignment word 7 'said'"):
        stimuli.read_gentle_csv(story / "align.csv")
    # Without the file: today's behaviour, the words joined by spaces.
    (story / "transcript.txt").unlink()
    assert stimuli.read_gentle_csv(story / "align.csv").text_source == "alignment words"


def test_resorted_alignment_does_not_use_the_transcript(story):
    (story / "align.csv").write_text(ALIGN.replace("said,said,3.00", "said,said,1.00"), encoding="utf-8")
    with pytest.warns(UserWarning, match="re-sorted by onset"):
        t = stimuli.read_gentle_csv(story / "align.csv", on_unsorted="sort")
    assert t.text_source == "alignment words"


def test_word_times_are_midpoints(story):
    t = stimuli.read_gentle_csv(story / "align.csv")
    times, n = t.times(10.0)
    assert n == 1
    np.testing.assert_allclose(times[:2], [10.3, 10.8])
    np.testing.assert_allclose(times[6], (2.2 + 3.2) / 2 + 10.0)  # untimed "fact": halfway between its neighbours
    (story / "bad.csv").write_text("a,a,1.0,0.9\n")
    with pytest.raises(ValueError, match=r"bad.csv: line 1: word 'a' ends \(0.9\) before it starts \(1.0\)"):
        stimuli.read_gentle_csv(story / "bad.csv")


def test_synthetic_designs_place_words_at_their_midpoints():
    words = tuple(f"w{i}" for i in range(40))
    on = np.arange(40) * 0.7
    early, late = stimuli.Transcript(words, on, on + 0.1), stimuli.Transcript(words, on, on + 0.6)
    mid = stimuli.Transcript(words, on + 0.3, on + 0.3)
    rng = np.random.default_rng(0)
    table = {w: rng.standard_normal(3) for w in words}

    def feats(ws):
        return np.stack([table[w] for w in ws])

    assoc = {w: [words[(i + 1) % 40]] for i, w in enumerate(words)}
    kw = dict(onset_s=2.0, n_trs=30, tr=1.5, features=feats, associations=assoc, window=(0, 30))
    a, b, m = (stimulus_design(t, **kw)[0] for t in (early, late, mid))
    assert not np.allclose(a, b)  # the words' ends move them: midpoints, not onsets
    np.testing.assert_allclose(b, m, atol=1e-12)


def test_augmented_reading_inserts_after_the_anchors_punctuation(story):
    t = stimuli.read_gentle_csv(story / "align.csv")
    aug = fmt.Augmentation("s", fmt.story_hash(t.words), len(t.words),
                           (fmt.Insertion(1, "Planet, earth", "word", "model"),
                            fmt.Insertion(6, "trivia", "word", "model")), {})
    read, heard, anchor = fmt.augmented_reading(t.reading(), aug)
    assert read.text == 'Hello, world. Planet, earth "It\'s a well-known fact!" trivia said Mr. Smith.'
    assert read.words[:4] == ["Hello", "world", "Planet,", "earth"]
    np.testing.assert_array_equal(heard, [0, 1, -1, -1, 2, 3, 4, 5, 6, -1, 7, 8, 9])
    np.testing.assert_array_equal(anchor, [0, 1, 1, 1, 2, 3, 4, 5, 6, 6, 7, 8, 9])
    words, _, _ = fmt.augmented_words(list(t.words), aug)  # without a transcript: the words joined by spaces
    assert " ".join(words) == "Hello world Planet, earth It’s a well known fact trivia said Mr Smith"


def test_prompts_and_dataset_quote_the_transcript(story):
    t = stimuli.read_gentle_csv(story / "align.csv")
    prompts = []

    def generator(asked):
        prompts.extend(asked)
        return ["nurse"] * len(asked)

    augment.generate_augmentation(t.words, [1, 9], "s", generator, level="sentence", every=1, reading=t.reading(),
                                  prompt_template="{context}")
    assert prompts == ["Hello, world."]
    aug = fmt.Augmentation("s", fmt.story_hash(t.words), len(t.words), (fmt.Insertion(6, "trivia", "word", "model"),), {})
    rec = dataset.build_records({"s": list(t.words)}, {"s": [aug]}, n=1, passage_words=(5, 5), task="continue",
                                readings={"s": t.reading()})
    assert rec[0]["input"] == '"It\'s a well-known fact!"'
    assert rec[0]["output"] == "said Mr. Smith."
    plain = dataset.build_records({"s": list(t.words)}, {"s": [aug]}, n=1, passage_words=(5, 5), task="continue")
    assert plain[0]["input"] == "It’s a well known fact"


@pytest.mark.skipif(not TOKENIZER.is_dir(), reason="needs ../shared/tokenizers/gpt2")
def test_features_read_the_punctuated_text_at_the_alignment_words(story, tmp_path_factory):
    folder = save_tiny("gpt2", tmp_path_factory.mktemp("gpt2p"), vocab_size=50257, n_positions=64, n_embd=16, n_head=2)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(TOKENIZER / f, folder / f)
    model, tok = load_pretrained(folder)
    t = stimuli.read_gentle_csv(story / "align.csv")
    ids, word_of, prefix = F.word_token_index(tok, t.reading())
    assert prefix == () and tok.decode(ids) == t.reading().text
    assert [tok.decode(ids[word_of == i]).strip() for i in range(len(t.words))] == t.reading().words
    assert [tok.decode([i]).strip() for i in ids[word_of == -1]] == [",", ".", '"', "-", '!"', ".", "."]  # read, but no word's
    feats = F.word_features(model, tok, t.reading(), context=64, stride=32)
    full = np.asarray(model.hidden_states(ids[None]))[:, 0]
    for i in range(len(t.words)):
        np.testing.assert_allclose(feats[:, i], full[:, np.flatnonzero(word_of == i)[-1]], atol=1e-5)
    plain = F.word_features(model, tok, t.words, context=64, stride=32)
    assert not np.allclose(plain[-1, 1:], feats[-1, 1:], atol=1e-3)  # punctuation and case change what is read
