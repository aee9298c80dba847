"""Which inserted words carry F: part-of-speech labels in the augmentation format (JSON, inline),
a tagger that reads each inserted word in context (a stand-in with spaCy's interface: spaCy is no
dependency), the per-class subsets, and `score.py --augment.compare --augment.by-pos` end to end."""
import csv
import dataclasses
import json
import sys
import types

import pytest

from scripts_loader import script, write_tagged_oracle

from assocjax import augment, results
from assocjax.augment import format as fmt
from assocjax.augment import pos
from assocjax.augment.oracle import SYNTHETIC_CLASSES, synthetic_pos
from assocjax.pipeline import (AugmentOptions, CeilingOptions, FeatureOptions, ReportOptions, ScoreConfig,
                               SyntheticOptions, compare)
from assocjax.pipeline.assets import ensure_builtin
from assocjax.pipeline.compare import main as compare_main
from assocjax.pipeline.config import check_options
from assocjax.stimuli import Reading

WORDS = ["I", "went", "to", "the", "hospital", "and", "the", "nurse", "said", "hello"]


def make_aug(pos_a=None, pos_b=None, pos_c=None, provenance=None):
    ins = (fmt.Insertion(4, "doctor, nurse", "word", "manual", pos=pos_a),
           fmt.Insertion(9, "a quick run", "word", "model", pos=pos_b),
           fmt.Insertion(4, "ambulance", "word", "manual", pos=pos_c))
    return fmt.Augmentation("toy", fmt.story_hash(WORDS), len(WORDS), ins,
                            {"generator": "test", "seed": 3} if provenance is None else provenance)


LABELS = dict(pos_a=("NOUN", "NOUN"), pos_b=("DET", "ADJ", "NOUN"), pos_c=("NOUN",))


# ---------------------------------------------------------------------------- format


def test_unlabelled_ids_are_those_of_files_before_labels_existed():
    """Ids computed by main e500468 (before the field): caches of unlabelled files stay valid."""
    assert make_aug().id == "2d7532b34cd93444"
    words = "he went to the hospital and the nurse said hello".split()
    inline = augment.parse_inline("he went to the hospital [doctor, nurse] and the nurse said [hi there] hello",
                                  words, "s")
    assert inline.id == "bced9395ee1bf834"
    assert "pos" not in json.dumps(fmt.to_json(make_aug()))
    assert make_aug(**LABELS).id != make_aug().id  # labels choose the subsets: they are content


def test_labelled_round_trip(tmp_path):
    aug = make_aug(**LABELS)
    path = fmt.save(aug, tmp_path / "a.json", WORDS)
    obj = json.loads(path.read_text())
    assert [e["pos"] for e in obj["insertions"]] == [["NOUN", "NOUN"], ["NOUN"], ["DET", "ADJ", "NOUN"]]
    assert list(obj["insertions"][0]) == ["anchor", "after_word", "text", "level", "source", "pos"]
    loaded = fmt.load(path, WORDS)
    assert loaded == aug and loaded.id == aug.id and loaded.labelled
    assert fmt.save(loaded, tmp_path / "b.json").read_bytes() == path.read_bytes()
    # a one-word insertion may give its tag as a string
    obj["insertions"][1]["pos"] = "NOUN"
    (tmp_path / "c.json").write_text(json.dumps(obj))
    assert fmt.load(tmp_path / "c.json").id == aug.id


@pytest.mark.parametrize("index, value, message", [
    (0, ["NOUN"], r"insertion 0 \(anchor 4\): field 'pos' has 1 tags for the 2 words of 'doctor, nurse'"),
    (2, ["DET", "ADJ", "NOUNS"], r"insertion 2 \(anchor 9\): field 'pos' has unknown tag\(s\) \['NOUNS'\]"),
    (2, "NOUN", r"insertion 2 \(anchor 9\): field 'pos' is one tag \('NOUN'\) for the 3 words of 'a quick run'"),
    (0, {"doctor": "NOUN"}, r"insertion 0 \(anchor 4\): field 'pos' must be a list of tags"),
    (1, None, r"insertion 1 \(anchor 4\): field 'pos' is missing while insertion 0 has it"),
])
def test_bad_labels_name_the_file_insertion_and_field(tmp_path, index, value, message):
    obj = fmt.to_json(make_aug(**LABELS), WORDS)
    if value is None:
        del obj["insertions"][index]["pos"]
    else:
        obj["insertions"][index]["pos"] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(ValueError, match=f"^{path}: {message}"):
        fmt.load(path)


def test_inline_tags():
    words = "he went to the hospital and the nurse said hello".split()
    aug = augment.parse_inline("he went to the hospital [doctor/NOUN, nurse/NOUN] and the nurse said "
                               "[hi/INTJ and/or/CCONJ there/ADV] hello", words, "s")
    assert [(i.text, i.pos) for i in aug.insertions] == [("doctor, nurse", ("NOUN", "NOUN")),
                                                         ("hi and/or there", ("INTJ", "CCONJ", "ADV"))]
    plain = augment.parse_inline("he went to the hospital [doctor, nurse] and the nurse said [hi and/or there] hello",
                                 words, "s")
    assert [i.text for i in plain.insertions] == [i.text for i in aug.insertions] and not plain.labelled
    with pytest.raises(ValueError, match="inserted word 'nurse' in .* has no part-of-speech tag"):
        augment.parse_inline("he went to the hospital [doctor/NOUN, nurse] and the nurse said hello", words, "s")
    with pytest.raises(ValueError, match="insertion 1 .*field 'pos' is missing while insertion 0 has it"):
        augment.parse_inline("he went to the hospital [doctor/NOUN] and the nurse said [hi] hello", words, "s")


# ---------------------------------------------------------------------------- tagging in context


class ContextTagger:
    """A stand-in spaCy pipeline: splits punctuation and "n't" off words as spaCy does, and tags a
    word by a lookup of (previous token, word) before one of the word alone, so the same word gets
    another tag in another context. Records the texts it was given."""

    TAGS = {"run": "VERB", "quick": "ADJ", "a": "DET", "to": "PART", "do": "AUX", "n't": "PART"}
    AFTER = {("a", "run"): "NOUN", ("quick", "run"): "NOUN"}

    def __init__(self):
        self.texts = []

    def __call__(self, text):
        import re

        self.texts.append(text)
        tokens, prev = [], None
        for m in re.finditer(r"n't|\w+(?=n't)|\w+|[^\w\s]", text):
            t = m.group()
            tag = "PUNCT" if not t[0].isalnum() and t != "n't" else self.AFTER.get((prev, t.lower()),
                                                                                 self.TAGS.get(t.lower(), "NOUN"))
            tokens.append(types.SimpleNamespace(text=t, pos_=tag, idx=m.start()))
            prev = t.lower()
        return tokens


def test_tagger_reads_each_inserted_word_in_its_context():
    words = ["She", "wanted", "to", "go", "for", "a", "walk"]
    reading = Reading("She wanted to go for a walk.", Reading.from_words(words).spans_W2, "transcript.txt")
    ins = (fmt.Insertion(2, "run", "word", "model"),            # "... to run go ..."   -> VERB
           fmt.Insertion(5, "quick run,", "word", "model"),     # "... a quick run, walk" -> ADJ NOUN
           fmt.Insertion(6, "don't", "word", "model"))          # after "walk.": do + n't -> AUX
    aug = fmt.Augmentation("toy", fmt.story_hash(words), len(words), ins, {})
    nlp = ContextTagger()
    tagged = pos.tag_augmentation(aug, reading, nlp, "stand-in")
    assert nlp.texts == ["She wanted to run go for a quick run, walk. don't"]  # the whole story, insertions in place
    assert [i.pos for i in tagged.insertions] == [("VERB",), ("ADJ", "NOUN"), ("AUX",)]
    assert tagged.provenance == {"pos_tagger": "stand-in", "tagged_from": aug.id} and tagged.labelled
    again = pos.tag_augmentation(tagged, reading, ContextTagger(), "another")
    assert again.provenance == {"pos_tagger": "another", "tagged_from": aug.id}  # the first file's id
    assert [i.text for i in tagged.insertions] == [i.text for i in aug.insertions]
    # the same word alone gets another tag: the context decides
    assert pos.word_tags(Reading.from_words(["run,"]), [0], ContextTagger()) == ["VERB"]


def test_a_pipeline_without_tags_is_refused():
    nlp = lambda text: [types.SimpleNamespace(text=t, pos_="", idx=i) for i, t in enumerate(text) if t != " "]  # noqa: E731
    with pytest.raises(ValueError, match="not a Universal Dependencies tag"):
        pos.tag_augmentation(make_aug(), Reading.from_words(WORDS), nlp, "untagged")


def test_missing_spacy_or_model_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "spacy", None)  # import spacy -> ImportError, installed or not
    with pytest.raises(pos.TaggerUnavailable, match=r"spaCy is not installed.*pip install spacy && python -m spacy "
                                                    r"download en_core_web_sm"):
        pos.load_tagger("spacy:en_core_web_sm")
    align = tmp_path / "toy" / "align.csv"
    align.parent.mkdir()
    align.write_text("".join(f"{w},{w.lower()},{i}.0,{i}.5\n" for i, w in enumerate(WORDS)))
    fmt.save(make_aug(), tmp_path / "a.json", WORDS)
    with script("augment") as cli:
        code = cli.main(["tag", str(tmp_path / "a.json"), "--align", str(align), "--out", str(tmp_path / "b.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "pip install spacy && python -m spacy download en_core_web_sm" in err
    assert not (tmp_path / "b.json").exists()
    fake = types.ModuleType("spacy")

    def load(name, exclude=()):
        raise OSError(f"[E050] Can't find model '{name}'. It doesn't seem to be a Python package.")

    fake.load = load
    monkeypatch.setitem(sys.modules, "spacy", fake)
    with pytest.raises(pos.TaggerUnavailable, match="model 'en_core_web_sm' is not installed .*python -m spacy "
                                                    "download en_core_web_sm"):
        pos.load_tagger("spacy:en_core_web_sm")
    with pytest.raises(ValueError, match="expected spacy:<model>"):
        pos.load_tagger("nltk")
    with script("augment") as cli:  # the built-in world's rule needs nothing installed
        assert cli.main(["tag", str(tmp_path / "a.json"), "--align", str(align), "--tagger", "synthetic",
                         "--out", str(tmp_path / "b.json")]) == 0
    tagged = fmt.load(tmp_path / "b.json", WORDS)
    assert [i.pos for i in tagged.insertions] == [tuple(synthetic_pos(w.strip(",")) for w in i.text.split())
                                                  for i in tagged.insertions]


def test_synthetic_rule_is_deterministic_and_spreads_over_the_classes():
    from assocjax.data.synthetic import pseudo_words
    import numpy as np

    vocab = pseudo_words(300, np.random.default_rng([0, 0]))
    tags = [synthetic_pos(w) for w in vocab]
    assert tags == [synthetic_pos(w.upper()) for w in vocab]  # by the normalized spelling
    counts = [tags.count(c) for c in SYNTHETIC_CLASSES]
    assert min(counts) > 60, counts  # about a third each (100 expected)


# ---------------------------------------------------------------------------- subsets


def test_subset_keeps_anchors_and_the_class_words_only():
    aug = make_aug(**LABELS)
    nouns = pos.subset(aug, "NOUN", "toy:NOUN")
    assert [(i.anchor, i.text, i.pos, i.level, i.source) for i in nouns.insertions] == [
        (4, "doctor, nurse", ("NOUN", "NOUN"), "word", "manual"), (4, "ambulance", ("NOUN",), "word", "manual"),
        (9, "run", ("NOUN",), "word", "model")]
    adj = pos.subset(aug, "ADJ", "toy:ADJ")
    assert [(i.anchor, i.text) for i in adj.insertions] == [(9, "quick")]  # insertions without an ADJ dropped
    assert adj.provenance == {"generator": "test", "seed": 3, "condition": "toy:ADJ",
                              "pos_subset": {"of": aug.id, "cls": "ADJ", "words": 1, "of_words": 6}}
    assert pos.subset(aug, "VERB", "toy:VERB") is None
    both = pos.subset(aug, "ADJ+DET", "toy:ADJ+DET")
    assert [i.text for i in both.insertions] == ["a quick"]
    assert pos.subset(make_aug(**LABELS), "ADJ", "toy:ADJ").id == adj.id  # deterministic: same id, same cache
    with pytest.raises(ValueError, match="no part-of-speech labels"):
        pos.subset(make_aug(), "NOUN", "toy:NOUN")
    with pytest.raises(ValueError, match=r"--augment.pos-classes 'NOUN\+NOUNS': unknown tag\(s\) \['NOUNS'\]"):
        pos.subset(aug, "NOUN+NOUNS", "x")


def test_split_conditions_notes_what_it_leaves_whole(tmp_path):
    labelled = fmt.save(make_aug(**LABELS, provenance={"condition": "manual"}), tmp_path / "m.json", WORDS)
    unlabelled = fmt.save(make_aug(provenance={"condition": "model"}), tmp_path / "u.json", WORDS)
    sentence = fmt.Augmentation("toy", fmt.story_hash(WORDS), len(WORDS),
                                (fmt.Insertion(9, "The nurse smiled.", "sentence", "model", pos=("DET", "NOUN", "VERB")),),
                                {"condition": "sent"})
    sent = fmt.save(sentence, tmp_path / "s.json", WORDS)
    conditions = {"manual": [labelled], "model": [unlabelled], "sent": [sent]}
    out, notes = pos.split_conditions(conditions, ("NOUN", "VERB", "ADJ"), tmp_path / "subsets")
    assert list(out) == ["manual", "manual:NOUN", "manual:ADJ", "model", "sent"]
    assert out["manual:ADJ"] == [tmp_path / "subsets" / "manual_ADJ" / "toy.json"]
    sub = fmt.load(out["manual:ADJ"][0], WORDS)
    assert sub.provenance["condition"] == "manual:ADJ" and [i.text for i in sub.insertions] == ["quick"]
    text = "\n".join(notes)
    assert "manual:VERB: skipped (no VERB word inserted in story/stories toy)" in text
    assert f"model: left whole (no part-of-speech labels in {unlabelled}" in text
    assert "sent: left whole (sentence-level insertions" in text
    assert "manual:NOUN: 4 of manual's 6 inserted words (67%)" in text
    with pytest.raises(ValueError, match="no condition can be split by part of speech: model: left whole"):
        pos.split_conditions({"model": [unlabelled]}, ("NOUN",), tmp_path / "subsets")


def test_a_random_control_is_cut_to_each_subset_of_its_parent(tmp_path):
    """The control of "manual:NOUN" holds as many random words, at the same insertions, as it has
    nouns; a control that is not the parent's insertion for insertion is left whole."""
    from assocjax.augment.random_control import random_match

    parent = make_aug(**LABELS, provenance={"condition": "manual"})
    pool = [f"w{i}" for i in range(50)]
    control = random_match(parent, WORDS, pool, 0, "matched")
    moved = random_match(parent, WORDS, pool, 0, "random")
    files = {"manual": [fmt.save(parent, tmp_path / "m.json", WORDS)],
             "random-word": [fmt.save(control, tmp_path / "r.json", WORDS)],
             "moved": [fmt.save(dataclasses.replace(moved, provenance=moved.provenance | {"condition": "moved"}),
                                tmp_path / "x.json", WORDS)]}
    out, notes = pos.split_conditions(files, ("NOUN", "ADJ"), tmp_path / "subsets")
    assert list(out) == ["manual", "manual:NOUN", "manual:ADJ", "random-word", "random-word:NOUN", "random-word:ADJ",
                         "moved"]
    for cls in ("NOUN", "ADJ"):
        mine, theirs = fmt.load(out[f"manual:{cls}"][0]), fmt.load(out[f"random-word:{cls}"][0])
        assert [len(i.text.split()) for i in mine.insertions] == [len(i.text.split()) for i in theirs.insertions]
        assert [i.anchor for i in mine.insertions] == [i.anchor for i in theirs.insertions]
        assert theirs.provenance["pos_subset"]["matched_to"] == parent.id and theirs.source == "random"
        assert all(w in pool for i in theirs.insertions for w in i.text.split())
    nouns = fmt.load(out["random-word:NOUN"][0])
    whole = {i.anchor: i.text.split() for i in control.insertions if i.anchor == 9}
    assert nouns.insertions[-1].text.split() == whole[9][:1]  # "a quick run": one noun, the first random word
    assert "random-word:NOUN: 4 of random-word's 6 inserted words (67%), cut to the lengths of manual:NOUN" in notes[2]
    assert "moved: left whole (no part-of-speech labels" in "\n".join(notes)


def test_options_are_checked_before_any_work(tmp_path):
    cfg = ScoreConfig(output=tmp_path / "out", augment=AugmentOptions(files=(tmp_path / "a.json",), by_pos=True))
    with pytest.raises(ValueError, match="--augment.by-pos splits the conditions of --augment.compare"):
        compare_main(cfg)
    bad = dataclasses.replace(cfg, augment=dataclasses.replace(cfg.augment, compare=True, pos_classes=("NOUN", "NN")))
    with pytest.raises(ValueError, match=r"--augment.pos-classes 'NN': unknown tag"):
        check_options(bad)


# ---------------------------------------------------------------------------- end to end


SMALL = SyntheticOptions(n_stories=2, n_subjects=6, story_trs=100, space="tinysphere", n_vertices=200)


@pytest.mark.slow
def test_compare_by_pos_scores_each_class_as_a_condition(tmp_path, capsys):
    """The built-in world's oracle, tagged by its rule, and its random control: each class of the
    oracle becomes a condition of its own in gains.csv, with F against the plain stories and the
    contrasts, and the random control is cut to each class's lengths. Every associate carries the
    planted signal, so no class alone recovers the whole oracle's gain in MTL."""
    b = ensure_builtin(SMALL, tmp_path / "cache", progress=False)
    # the random controls, matched to the oracle before it was tagged, are found to be its controls
    files = write_tagged_oracle(b, tmp_path / "aug", tmp_path / "tagged")
    cfg = ScoreConfig(output=tmp_path / "out", cache_dir=tmp_path / "cache", synthetic=SMALL, progress=False,
                      features=FeatureOptions(layers=(SMALL.planted_layer,)), ceiling=CeilingOptions(n_splits=10),
                      report=ReportOptions(maps=False, figures=False),
                      augment=AugmentOptions(files=tuple(files), compare=True, by_pos=True))
    res = compare(cfg)
    classes = [f"oracle:{c}" for c in pos.DEFAULT_CLASSES]
    controls = [f"random-word:{c}" for c in pos.DEFAULT_CLASSES]
    assert list(res.runs) == ["plain", "oracle"] + classes + ["random-word"] + controls
    with open(cfg.output / "gains.csv") as f:
        comparisons = {r["comparison"]: r["kind"] for r in csv.DictReader(f)}
    for c, r in zip(classes, controls):
        assert comparisons[f"{c} vs plain"] == comparisons[f"{r} vs plain"] == "F"
        assert comparisons[f"oracle vs {c}"] == comparisons[f"{c} vs {r}"] == "contrast"
        mine, theirs = ([fmt.load(p) for p in json.loads((res.runs[x].output / "run.json").read_text())
                         ["augmentation"]["files"]] for x in (c, r))
        assert {a.provenance["condition"] for a in mine} == {c} and {a.provenance["condition"] for a in theirs} == {r}
        assert all(t == c.split(":")[1] for a in mine for i in a.insertions for t in i.pos)
        assert [a.n_inserted_words for a in mine] == [a.n_inserted_words for a in theirs]  # length-matched
    g = res.gains.sel(unit=results.ALL, hemi="both", region="mtl").isel(layer=0)
    whole = g["change"].sel(comparison="oracle vs plain").item()
    parts = [g["change"].sel(comparison=f"{c} vs plain").item() for c in classes]
    assert whole > 0.01 and whole > max(parts), (whole, parts)
    text = (cfg.output / "gains.txt").read_text()
    assert "by part of speech (--augment.by-pos):" in text and "cut to the lengths of oracle:NOUN" in text
    assert "oracle:NOUN vs plain [F]" in capsys.readouterr().out
