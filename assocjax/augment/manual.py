"""Manual annotations: the inline-text form and JSON import.

Inline form: the story text with bracketed insertions after words,

    ... he went to the hospital [doctor, nurse] and the nurse said ...

The text outside brackets must be the story: its whitespace tokens are mapped onto the
alignment words in order, comparing `stimuli.normalize`d forms (lower case, punctuation removed),
so a punctuated transcript maps onto Gentle words, which carry none. A token may span
several alignment words (Gentle splits "well-known") and a word several tokens, as long as
the letters agree; an insertion is anchored at the last word of the token before it.

Part of speech (optional): each inserted word may carry its Universal Dependencies tag after a
slash, punctuation after the tag, "... hospital [doctor/NOUN, nurse/NOUN] and ..." (inserted
text "doctor, nurse", pos NOUN NOUN). Tag every inserted word of the file or none (`format`).
A slash followed by anything but a known tag ("and/or") is part of the word.
"""
from __future__ import annotations

import bisect
import os
import re
from typing import Sequence

from ..stimuli import map_tokens
from .format import UPOS, Augmentation, Insertion, load, story_hash, validate

# "word/TAG" with the word's trailing punctuation after the tag: "doctor/NOUN," -> ("doctor,", "NOUN")
_TAGGED = re.compile(r"^(?P<word>.+)/(?P<tag>[A-Z]+)(?P<after>[^\w/]*)$")


def _split_tags(content: str) -> tuple[str, tuple[str, ...] | None]:
    """(the inserted text without tags, one tag per word or None when no word is tagged). A
    bracket with some words tagged and some not is an error naming the untagged word."""
    words, tags = [], []
    for w in content.split():
        m = _TAGGED.match(w)
        if m and m["tag"] in UPOS:
            words.append(m["word"] + m["after"])
            tags.append(m["tag"])
        else:
            words.append(w)
            tags.append(None)
    if all(t is None for t in tags):
        return content, None
    if None in tags:
        raise ValueError(f"inline text: inserted word {words[tags.index(None)]!r} in [{content}] has no part-of-speech "
                         f"tag while others have: tag every word (word/TAG, TAG one of {', '.join(UPOS)}) or none")
    return " ".join(words), tuple(tags)


def _brackets(text: str) -> list[tuple[int, int]]:
    """(open, close) character positions of every [...] group; errors for bad nesting."""
    groups, open_at = [], None
    for i, c in enumerate(text):
        if c == "[":
            if open_at is not None:
                raise ValueError(f"inline text: nested '[' at character {i} inside the bracket opened at "
                                 f"character {open_at}: {text[max(0, open_at - 30):i + 30]!r}")
            open_at = i
        elif c == "]":
            if open_at is None:
                raise ValueError(f"inline text: ']' at character {i} without an opening '[': "
                                 f"{text[max(0, i - 30):i + 30]!r}")
            groups.append((open_at, i))
            open_at = None
    if open_at is not None:
        raise ValueError(f"inline text: '[' at character {open_at} is never closed: "
                         f"{text[max(0, open_at - 30):open_at + 30]!r}")
    return groups


def parse_inline(text: str, words: Sequence[str], story: str, level: str = "word",
                 provenance: dict | None = None) -> Augmentation:
    """Parse the inline form (module docstring) into an Augmentation of `words` (source "manual")."""
    groups = _brackets(text)
    outside = list(text)
    for a, b in groups:
        outside[a:b + 1] = " " * (b + 1 - a)  # keep character offsets for error messages
    matches = list(re.finditer(r"\S+", "".join(outside)))
    tokens, offsets = [m.group() for m in matches], [m.start() for m in matches]
    last, boundary = map_tokens(tokens, words, "inline text", offsets)
    ends = [m.end() for m in matches]
    insertions = []
    for a, b in groups:
        snippet = text[max(0, a - 30):b + 31]
        if a > 0 and b + 1 < len(text) and text[a - 1].isalnum() and text[b + 1].isalnum():
            raise ValueError(f"inline text: an insertion inside a word at character {a}: {snippet!r}")
        content = " ".join(text[a + 1:b].split())
        if not content:
            raise ValueError(f"inline text: empty insertion '[]' at character {a}: {snippet!r}")
        t = bisect.bisect_right(ends, a) - 1  # the token right before the bracket
        if t < 0 or last[t] < 0:
            raise ValueError(f"inline text: insertion at character {a} comes before the first word: {snippet!r}")
        if not boundary[t]:
            w = last[t]
            raise ValueError(f"inline text: an insertion inside a word at character {a}: token {tokens[t]!r} "
                             f"ends inside alignment word {w} {words[w]!r}: {snippet!r}")
        try:
            content, pos = _split_tags(content)
        except ValueError as e:
            raise ValueError(f"{e} (character {a})") from None
        insertions.append(Insertion(last[t], content, level, "manual", words[last[t]], pos))
    if not insertions:
        raise ValueError("inline text: no insertions found (write them as 'word [inserted text]')")
    aug = Augmentation(story, story_hash(words), len(words), tuple(insertions),
                       {"generator": "manual-inline"} if provenance is None else dict(provenance))
    validate(aug, words, where="inline text")
    return aug


def import_json(path: str | os.PathLike, words: Sequence[str]) -> Augmentation:
    """Load a hand-written augmentation file and check it against the story's words."""
    return load(path, words)
