"""The augmentation file format: insertions of associated text after heard words of a story.

An augmentation is made for one story's alignment words (Gentle `align.csv`) and is pinned to
them by `story_hash` (sha256 of the words joined by newlines) and `n_words`. Each insertion
sits after the heard word `anchor` (an index into those words); its `text` is inserted as
whitespace-split words. JSON layout (version 1):

    {"format": "assocjax-augmentation", "version": 1, "story": "pieman",
     "story_hash": "<64 hex>", "n_words": 957,
     "provenance": {"generator": ..., "prompt": ..., "seed": ..., ...},
     "insertions": [{"anchor": 12, "after_word": "hospital", "text": "doctor, nurse",
                     "level": "word", "source": "manual", "pos": ["NOUN", "NOUN"]}, ...]}

`after_word` is `words[anchor]`, written for people reading the file and checked on load
when the words are given: an anchor that is off by one lands on another word and is caught.
It may be null/absent in hand-written files. `pos` (optional) is the part of speech of each
inserted word (its whitespace-split words, in order), a Universal Dependencies tag (`UPOS`); a
one-word insertion may give it as a string. Either every insertion of a file carries `pos` or
none does (subsets by part of speech, `augment.pos`, need all words labelled). A file without
labels has the id it had before labels existed. Host-side Python: this runs once per story.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..fingerprint import text_digest
from ..io import atomic_write_text
from ..stimuli import Reading

LEVELS = ("word", "sentence")
SOURCES = ("manual", "model", "random")
FORMAT = "assocjax-augmentation"
VERSION = 1

_TOP_FIELDS = ("format", "version", "story", "story_hash", "n_words", "provenance", "insertions")
_INSERTION_FIELDS = ("anchor", "text", "level", "source")
_OPTIONAL_INSERTION_FIELDS = ("after_word", "pos")
# Universal Dependencies v2 part-of-speech tags (spaCy's `Token.pos_`), https://universaldependencies.org/u/pos/
UPOS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT", "SCONJ",
        "SYM", "VERB", "X")
# Every character str.splitlines() breaks on: inserted text must stay on one line.
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


@dataclasses.dataclass(frozen=True)
class Insertion:
    """`text` inserted after heard word `anchor`. `after_word` (words[anchor]) is optional
    bookkeeping for the file; it takes no part in equality or the augmentation id. `pos`: one
    UPOS tag per word of `text.split()`, or None (unlabelled); labels are content (they choose
    the part-of-speech subsets), so they enter the id when given."""

    anchor: int
    text: str
    level: str
    source: str
    after_word: str | None = dataclasses.field(default=None, compare=False)
    pos: tuple[str, ...] | None = None

    def __post_init__(self):
        if isinstance(self.pos, list):  # a parsed JSON list; a tuple keeps the insertion hashable
            object.__setattr__(self, "pos", tuple(self.pos))


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Insertions for one story. The constructor only normalizes (tuple, stable sort by
    anchor, provenance None -> {}); `validate` checks everything."""

    story: str
    story_hash: str
    n_words: int
    insertions: tuple[Insertion, ...]
    provenance: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        ins = tuple(self.insertions)
        if all(isinstance(i, Insertion) and _is_int(i.anchor) for i in ins):
            ins = tuple(sorted(ins, key=lambda i: i.anchor))  # stable: same-anchor order kept
        object.__setattr__(self, "insertions", ins)
        if self.provenance is None:
            object.__setattr__(self, "provenance", {})

    @property
    def id(self) -> str:
        """16 hex digits of sha256 over the canonical JSON (sorted keys, no spaces, no
        after_word): the same content gives the same id whatever the key order or layout."""
        blob = json.dumps(_content(self), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return text_digest(blob, 16)

    @property
    def n_inserted_words(self) -> int:
        return sum(len(i.text.split()) for i in self.insertions)

    @property
    def level(self) -> str:
        return _common({i.level for i in self.insertions})

    @property
    def labelled(self) -> bool:
        """Every insertion carries part-of-speech labels (`validate` allows all or none)."""
        return bool(self.insertions) and all(i.pos is not None for i in self.insertions)

    @property
    def source(self) -> str:
        return _common({i.source for i in self.insertions})


def _common(values: set) -> str:
    if not values:
        return "none"
    return next(iter(values)) if len(values) == 1 else "mixed"


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def story_hash(words: Sequence[str]) -> str:
    """sha256 (hex) of the words joined by newlines: pins an augmentation to one alignment."""
    return text_digest("\n".join(words))


def _prefix(where: str) -> str:
    return f"{where}: " if where else "augmentation: "


def _content(aug: Augmentation) -> dict:
    return {
        "format": FORMAT, "version": VERSION, "story": aug.story, "story_hash": aug.story_hash,
        "n_words": int(aug.n_words), "provenance": aug.provenance,
        "insertions": [_insertion_content(i) for i in aug.insertions],
    }


def _insertion_content(ins: Insertion) -> dict:
    # no "pos" key without labels: an unlabelled file keeps the id it had before labels existed
    out = {"anchor": int(ins.anchor), "text": ins.text, "level": ins.level, "source": ins.source}
    return out if ins.pos is None else out | {"pos": list(ins.pos)}


def _check_insertion(i: int, ins: Insertion, n_words, p: str) -> None:
    at = f"{p}insertion {i}"
    if not isinstance(ins, Insertion):
        raise ValueError(f"{at}: expected an Insertion, got {type(ins).__name__}")
    if not _is_int(ins.anchor):
        raise ValueError(f"{at}: field 'anchor' must be an int, got {ins.anchor!r} ({type(ins.anchor).__name__})")
    if _is_int(n_words) and not 0 <= ins.anchor < n_words:
        raise ValueError(f"{at}: field 'anchor' {ins.anchor} is out of range [0, {n_words}) (n_words = {n_words})")
    if not isinstance(ins.text, str) or not ins.text.strip():
        raise ValueError(f"{at} (anchor {ins.anchor}): field 'text' is empty: {ins.text!r}")
    if "[" in ins.text or "]" in ins.text:
        raise ValueError(f"{at} (anchor {ins.anchor}): field 'text' contains a bracket: {ins.text!r}")
    if any(c in _LINE_BREAKS for c in ins.text):
        raise ValueError(f"{at} (anchor {ins.anchor}): field 'text' contains a line break: {ins.text!r}")
    if ins.level not in LEVELS:
        raise ValueError(f"{at}: field 'level' is {ins.level!r}; expected one of {LEVELS}")
    if ins.source not in SOURCES:
        raise ValueError(f"{at}: field 'source' is {ins.source!r}; expected one of {SOURCES}")
    if ins.after_word is not None and not isinstance(ins.after_word, str):
        raise ValueError(f"{at}: field 'after_word' must be a string or null, got {ins.after_word!r}")
    if ins.pos is not None:
        _check_pos(ins, at)


def _check_pos(ins: Insertion, at: str) -> None:
    words = ins.text.split()
    if not isinstance(ins.pos, tuple) or not all(isinstance(t, str) for t in ins.pos):
        raise ValueError(f"{at} (anchor {ins.anchor}): field 'pos' must be a list of tags, got {ins.pos!r}")
    if len(ins.pos) != len(words):
        raise ValueError(f"{at} (anchor {ins.anchor}): field 'pos' has {len(ins.pos)} tags for the {len(words)} "
                         f"words of {ins.text!r}: one tag per whitespace-separated word")
    bad = [t for t in ins.pos if t not in UPOS]
    if bad:
        raise ValueError(f"{at} (anchor {ins.anchor}): field 'pos' has unknown tag(s) {bad}; known (Universal "
                         f"Dependencies): {', '.join(UPOS)}")


def _check_all_or_none(insertions, p: str) -> None:
    """Labels on every insertion or on none: a subset by part of speech must see every word."""
    has = [ins.pos is not None for ins in insertions]
    if any(has) and not all(has):
        i, j = has.index(True), has.index(False)
        raise ValueError(f"{p}insertion {j} (anchor {insertions[j].anchor}): field 'pos' is missing while insertion {i} "
                         "has it: label every insertion or none")


def _check_top(story, h, n_words, provenance, p: str) -> None:
    if not isinstance(story, str) or not story.strip():
        raise ValueError(f"{p}field 'story' must be a non-empty string, got {story!r}")
    if not (isinstance(h, str) and len(h) == 64 and all(c in "0123456789abcdef" for c in h)):
        raise ValueError(f"{p}field 'story_hash' must be 64 lower-case hex digits (sha256), got {h!r}")
    if not _is_int(n_words) or n_words < 1:
        raise ValueError(f"{p}field 'n_words' must be a positive int, got {n_words!r}")
    if not isinstance(provenance, dict):
        raise ValueError(f"{p}field 'provenance' must be a dict, got {type(provenance).__name__}")
    try:
        json.dumps(provenance, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{p}field 'provenance' is not JSON-serializable: {e}") from None


def validate(aug: Augmentation, words: Sequence[str] | None = None, where: str = "") -> None:
    """Raise ValueError (naming `where`, the field and the insertion index) unless `aug` is
    well formed; with `words` also check it was made for them (hash, n_words, after_word)."""
    p = _prefix(where)
    if not isinstance(aug, Augmentation):
        raise ValueError(f"{p}expected an Augmentation, got {type(aug).__name__}")
    _check_top(aug.story, aug.story_hash, aug.n_words, aug.provenance, p)
    if not isinstance(aug.insertions, tuple) or not aug.insertions:
        raise ValueError(f"{p}field 'insertions' is empty: an augmentation needs at least one insertion")
    for i, ins in enumerate(aug.insertions):
        _check_insertion(i, ins, aug.n_words, p)
    _check_all_or_none(aug.insertions, p)
    if words is None:
        return
    words = list(words)
    given = story_hash(words)
    if given != aug.story_hash:
        raise ValueError(
            f"{p}made for a different story: the augmentation is for story {aug.story!r} "
            f"({aug.n_words} words, story_hash {aug.story_hash[:12]}...), the given words are "
            f"{len(words)} words with story_hash {given[:12]}...")
    if aug.n_words != len(words):
        raise ValueError(f"{p}field 'n_words' is {aug.n_words} but the story ({aug.story!r}) has {len(words)} words")
    for i, ins in enumerate(aug.insertions):
        if ins.after_word is not None and ins.after_word != words[ins.anchor]:
            raise ValueError(
                f"{p}insertion {i} (anchor {ins.anchor}): field 'after_word' is {ins.after_word!r} but "
                f"word {ins.anchor} of the story is {words[ins.anchor]!r} (anchor points at the wrong word)")


def to_json(aug: Augmentation, words: Sequence[str] | None = None) -> dict:
    """The file's JSON object. `after_word` comes from `words` when given, else from the
    insertion (null when unknown)."""
    obj = _content(aug)
    for entry, ins in zip(obj["insertions"], aug.insertions):
        after = words[ins.anchor] if words is not None else ins.after_word
        # after_word goes right after anchor in the file, for the reader
        entry.clear()
        entry.update(anchor=int(ins.anchor), after_word=after, text=ins.text, level=ins.level, source=ins.source)
        if ins.pos is not None:
            entry["pos"] = list(ins.pos)
    return obj


def from_json(obj: Any, where: str = "") -> Augmentation:
    """Build an Augmentation from a parsed JSON object, checking its structure."""
    p = _prefix(where)
    if not isinstance(obj, dict):
        raise ValueError(f"{p}expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in _TOP_FIELDS if k not in obj]
    if missing:
        raise ValueError(f"{p}missing field(s) {missing}")
    unknown = sorted(set(obj) - set(_TOP_FIELDS))
    if unknown:
        raise ValueError(f"{p}unknown field(s) {unknown}; known: {list(_TOP_FIELDS)}")
    if obj["format"] != FORMAT:
        raise ValueError(f"{p}field 'format' is {obj['format']!r}; expected {FORMAT!r}")
    if not _is_int(obj["version"]) or obj["version"] != VERSION:
        raise ValueError(f"{p}field 'version' is {obj['version']!r}; this reader knows version {VERSION}")
    _check_top(obj["story"], obj["story_hash"], obj["n_words"], obj["provenance"], p)
    if not isinstance(obj["insertions"], list):
        raise ValueError(f"{p}field 'insertions' must be a list, got {type(obj['insertions']).__name__}")
    insertions = []
    for i, e in enumerate(obj["insertions"]):
        at = f"{p}insertion {i}"
        if not isinstance(e, dict):
            raise ValueError(f"{at}: expected a JSON object, got {type(e).__name__}")
        missing = [k for k in _INSERTION_FIELDS if k not in e]
        if missing:
            raise ValueError(f"{at}: missing field(s) {missing}")
        unknown = sorted(set(e) - set(_INSERTION_FIELDS) - set(_OPTIONAL_INSERTION_FIELDS))
        if unknown:
            raise ValueError(f"{at}: unknown field(s) {unknown}")
        ins = Insertion(e["anchor"], e["text"], e["level"], e["source"], e.get("after_word"), _read_pos(e, at))
        _check_insertion(i, ins, obj["n_words"], p)  # file order, so the index matches the file
        insertions.append(ins)
    _check_all_or_none(insertions, p)  # file order too
    aug = Augmentation(obj["story"], obj["story_hash"], obj["n_words"], tuple(insertions), obj["provenance"])
    validate(aug, where=where)
    return aug


def _read_pos(e: dict, at: str):
    """The file's `pos`: a list of tags, a string for a one-word insertion, or absent/null."""
    pos = e.get("pos")
    if isinstance(pos, str):
        if isinstance(e["text"], str) and len(e["text"].split()) != 1:
            raise ValueError(f"{at} (anchor {e['anchor']}): field 'pos' is one tag ({pos!r}) for the "
                             f"{len(e['text'].split())} words of {e['text']!r}: give a list, one tag per word")
        return (pos,)
    if pos is not None and not isinstance(pos, list):
        raise ValueError(f"{at} (anchor {e['anchor']}): field 'pos' must be a list of tags, got {pos!r}")
    return pos


def load(path: str | os.PathLike, words: Sequence[str] | None = None) -> Augmentation:
    """Read and validate an augmentation file; with `words` also check it fits them."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"augmentation file not found: {path}")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    aug = from_json(obj, where=str(path))
    if words is not None:
        validate(aug, words, where=str(path))
    return aug


def save(aug: Augmentation, path: str | os.PathLike, words: Sequence[str] | None = None) -> Path:
    """Validate (against `words` when given, which also fills `after_word`), then write the
    JSON atomically: on any error no file, old or partial, is changed."""
    validate(aug, words, where=str(path))
    text = json.dumps(to_json(aug, words), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


def augmented_reading(reading: Reading, aug: Augmentation) -> tuple[Reading, np.ndarray, np.ndarray]:
    """(the reading with the insertions, heard_index_A, anchor_A), A = words + inserted words.

    Inserted words follow their anchor word and its punctuation ("hospital, [doctor nurse]
    and"), several insertions at one anchor in file order, each whitespace-separated word
    of an insertion a word of its own. heard_index_A: index of the heard word, -1 for
    inserted words. anchor_A: a heard word's own index, or for inserted words the heard
    word they follow.
    """
    if aug.n_words != len(reading):
        raise ValueError(f"augmentation of {aug.n_words} words for a reading of {len(reading)} words")
    after: dict[int, list[str]] = {}
    for ins in aug.insertions:
        after.setdefault(int(ins.anchor), []).extend(ins.text.split())
    return reading.with_insertions(after)


def augmented_words(words: Sequence[str], aug: Augmentation) -> tuple[list[str], np.ndarray, np.ndarray]:
    """`augmented_reading` of the words joined by spaces, as a word list."""
    validate(aug, words)
    read, heard, anchor = augmented_reading(Reading.from_words(words), aug)
    return read.words, heard, anchor
