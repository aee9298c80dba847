"""Manual annotations: the inline-text form and JSON import.

Inline form: the story text with bracketed insertions after words,

    ... he went to the hospital [doctor, nurse] and the nurse said ...

The text outside brackets must be the story: its whitespace tokens are mapped onto the
alignment words in order, comparing `normalize`d forms (lower case, punctuation removed),
so a punctuated transcript maps onto Gentle words, which carry none. A token may span
several alignment words (Gentle splits "well-known") and a word several tokens, as long as
the letters agree; an insertion is anchored at the last word of the token before it.
"""
from __future__ import annotations

import bisect
import os
import re
from typing import Sequence

from .format import Augmentation, Insertion, load, story_hash, validate

_CONTEXT = 4  # tokens/words of context shown around a mismatch


def normalize(token: str) -> str:
    """Lower case with everything but letters and digits removed: "Hospital," -> "hospital",
    "I’m" -> "im". The one comparison used to map text onto alignment words."""
    return "".join(c for c in token.casefold() if c.isalnum())


def _context(items: Sequence[str], k: int) -> str:
    lo, hi = max(0, k - _CONTEXT), min(len(items), k + _CONTEXT + 1)
    shown = [f">>{x}<<" if i == k else x for i, x in enumerate(items[lo:hi], start=lo)]
    return ("... " if lo else "") + " ".join(shown) + (" ..." if hi < len(items) else "")


def map_tokens(tokens: Sequence[str], words: Sequence[str], what: str = "text",
               offsets: Sequence[int] | None = None) -> tuple[list[int], list[bool]]:
    """Map text tokens onto alignment words in order.

    Returns (last_word, at_boundary): for token t the index of the word in which it ends and
    whether it ends exactly at that word's end. Tokens with no letters or digits (a lone
    "--") end where the previous token ended (-1 before the first word). Raises ValueError
    with the token position (character offset when `offsets` is given), both words and
    context when the letters disagree or one side runs out.
    """
    norm_t = [normalize(t) for t in tokens]
    norm_w = [normalize(w) for w in words]
    last, boundary = [], []
    w, rest_w = 0, ""  # rest_w: the part of word w not yet matched
    cur_last, cur_boundary = -1, True

    def where(t: int) -> str:
        at = f"token {t}" + (f" (character {offsets[t]})" if offsets is not None else "")
        return f"{what}: {at} {tokens[t]!r}"

    def next_word():
        nonlocal w, rest_w
        while w < len(words) and not norm_w[w]:
            w += 1  # alignment words without letters match nothing
        rest_w = norm_w[w] if w < len(words) else ""

    next_word()
    for t, rest_t in enumerate(norm_t):
        while rest_t:
            if w >= len(words):
                raise ValueError(f"{where(t)} is past the last alignment word ({len(words)} words); "
                                 f"text: {_context(tokens, t)}")
            n = min(len(rest_t), len(rest_w))
            if rest_t[:n] != rest_w[:n]:
                raise ValueError(
                    f"{where(t)} does not match alignment word {w} {words[w]!r} "
                    f"(normalized {rest_t!r} vs {rest_w!r}); text: {_context(tokens, t)}; "
                    f"words: {_context(list(words), w)}")
            rest_t, rest_w = rest_t[n:], rest_w[n:]
            cur_last, cur_boundary = w, not rest_w
            if not rest_w:
                w += 1
                next_word()
        last.append(cur_last)
        boundary.append(cur_boundary)
    if w < len(words):
        raise ValueError(f"{what}: ends before alignment word {w} {words[w]!r} of {len(words)}; "
                         f"words: {_context(list(words), w)}")
    return last, boundary


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
        insertions.append(Insertion(last[t], content, level, "manual", words[last[t]]))
    if not insertions:
        raise ValueError("inline text: no insertions found (write them as 'word [inserted text]')")
    aug = Augmentation(story, story_hash(words), len(words), tuple(insertions),
                       {"generator": "manual-inline"} if provenance is None else dict(provenance))
    validate(aug, words, where="inline text")
    return aug


def import_json(path: str | os.PathLike, words: Sequence[str]) -> Augmentation:
    """Load a hand-written augmentation file and check it against the story's words."""
    return load(path, words)
