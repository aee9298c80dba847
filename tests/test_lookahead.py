"""The lookahead check of augmentations (`assocjax.augment.lookahead`): an annotation that copies
words the story says later is flagged naming its anchors, an honest one is not, --forbid-lookahead
makes it an error (augment.py validate and score.py's loading of --augment.files); on real
Narratives stories random other-story words stay under the threshold and copied ones go over it."""
import types
import warnings

import numpy as np
import pytest

from assocjax.augment import format as fmt
from assocjax.augment.generate import is_content_word
from assocjax.augment.lookahead import CHANCE, THRESHOLD, lookahead, word_key
from assocjax.pipeline.inputs import resolve_augmentations
from assocjax.stimuli import read_gentle_csv
from conftest import SHARED
from scripts_loader import script
from test_augment_generate import run_cli, write_align

WORDS = ("The doctor walked to the river She saw a boat and a bridge Later the nurse found the boat near "
         "the castle and the dragon slept in the tower by the lake").split()


def _aug(pairs, source="manual") -> fmt.Augmentation:
    ins = tuple(fmt.Insertion(a, t, "word", source) for a, t in pairs)
    return fmt.Augmentation("tiny", fmt.story_hash(WORDS), len(WORDS), ins, {"generator": "test"})


# copies words heard only later: nurse (word 15), castle (21), dragon (24), tower (28), lake (31)
CHEAT = _aug([(1, "nurse"), (5, "castle, dragon"), (9, "Towers"), (12, "lake")])
# associations heard already (doctor 1, river 5, boat 9) or never in the story (hospital, water, sail)
HONEST = _aug([(1, "hospital"), (5, "water, doctor"), (9, "sail, river"), (21, "boat")])


def test_word_key_folds_case_punctuation_and_one_s():
    assert [word_key(w) for w in ("Nurses,", "towers", "glass", "bus", "is")] == ["nurse", "tower", "glass", "bus", "is"]


def test_copied_later_words_are_flagged_naming_their_anchors():
    found = lookahead(CHEAT, WORDS)
    assert found.n_content == 5 and found.flagged and found.rate == 1.0
    assert [(a.anchor, a.anchor_word, a.word, a.first) for a in found.ahead] == [
        (1, "doctor", "nurse", 15), (5, "river", "castle", 21), (5, "river", "dragon", 24), (9, "boat", "Towers", 28),
        (12, "bridge", "lake", 31)]
    text = found.message("cheat.json")
    for anchor, heard, word in ((1, "doctor", "nurse"), (5, "river", "castle"), (9, "boat", "Towers")):
        assert f"word {anchor} {heard!r} + {word!r}" in text
    assert text.startswith("cheat.json: 5 of 5 inserted content words (100%")


def test_an_honest_annotation_is_not_flagged():
    found = lookahead(HONEST, WORDS)
    assert found.n_content == 6 and found.ahead == () and not found.flagged


def test_few_or_rare_lookaheads_are_chance():
    one = _aug([(1, "nurse"), (5, "hospital")])                      # 1 of 2: too few to say
    assert not lookahead(one, WORDS).flagged
    assert CHANCE < THRESHOLD


def _story(words):
    return types.SimpleNamespace(name="tiny", transcript=types.SimpleNamespace(words=tuple(words)))


def test_score_loading_warns_and_forbid_raises(tmp_path):
    cheat, honest = fmt.save(CHEAT, tmp_path / "cheat.json", WORDS), fmt.save(HONEST, tmp_path / "honest.json", WORDS)
    with pytest.warns(UserWarning, match=r"cheat.json: 5 of 5 inserted content words .* word 1 'doctor' \+ 'nurse'"):
        assert resolve_augmentations([cheat], [_story(WORDS)])["tiny"] == CHEAT
    with pytest.raises(ValueError, match=r"cheat.json: .*only after their anchor.*--augment.forbid-lookahead"):
        resolve_augmentations([cheat], [_story(WORDS)], forbid_lookahead=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_augmentations([honest], [_story(WORDS)], forbid_lookahead=True)["tiny"] == HONEST


def test_cli_validate_warns_and_forbid_exits_1(tmp_path, capsys):
    story = write_align(tmp_path / "gentle" / "tiny" / "align.csv", WORDS)
    cheat, honest = fmt.save(CHEAT, tmp_path / "cheat.json", WORDS), fmt.save(HONEST, tmp_path / "honest.json", WORDS)
    with script("augment") as cli:
        rc, text, _ = run_cli(cli, capsys, "validate", cheat, "--align", story)
        assert rc == 0 and text.startswith("OK:") and "WARNING: " in text and "word 5 'river' + 'castle'" in text
        rc, text, _ = run_cli(cli, capsys, "validate", cheat, "--align", story, "--forbid-lookahead")
        assert rc == 1 and text.startswith("ERROR: ") and "word 12 'bridge' + 'lake'" in text
        rc, text, _ = run_cli(cli, capsys, "validate", honest, "--align", story, "--forbid-lookahead")
        assert rc == 0 and "lookahead: 0 of 6" in text and "WARNING" not in text


GENTLE = SHARED / "narratives" / "stimuli" / "gentle"
REAL = ("pieman", "tunnel", "lucy", "prettymouth", "black", "forgot", "merlin", "sherlock", "bronx", "shapessocial")


@pytest.mark.skipif(not GENTLE.is_dir(), reason="../shared/narratives not present")
def test_real_stories_random_words_under_and_copied_words_over_the_threshold():
    """Every 4th word that is a content word gets 2 words: drawn (seeded) from the other stories' content
    words, the chance rate, or from the story's next 200 words, a copying annotator."""
    words = {s: list(read_gentle_csv(GENTLE / s / "align.csv", on_unsorted="sort").words) for s in REAL}
    rng = np.random.default_rng(0)
    chance, copied = [], []
    for s, ws in words.items():
        pool = [w for o in REAL if o != s for w in words[o] if is_content_word(w)]
        anchors = [a for a in range(0, len(ws) - 1, 4) if is_content_word(ws[a])]
        future = {a: [w for w in ws[a + 1:a + 201] if is_content_word(w)] for a in anchors}
        drawn = [(a, rng.choice(pool, 2)) for a in anchors]
        copies = [(a, rng.choice(future[a], 2)) for a in anchors if future[a]]
        for picks, out in ((drawn, chance), (copies, copied)):
            ins = tuple(fmt.Insertion(a, " ".join(p), "word", "manual") for a, p in picks)
            out.append(lookahead(fmt.Augmentation(s, fmt.story_hash(ws), len(ws), ins), ws))
    assert max(f.rate for f in chance) < CHANCE and not any(f.flagged for f in chance)
    assert all(f.flagged for f in copied)
