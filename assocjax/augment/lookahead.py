"""Lookahead check: inserted words that the story says only after their anchor.

A listener at word `anchor` has heard words[:anchor + 1]; an association there can draw on
them and on what the listener knew before, not on the rest of the story. A human annotator
reads the whole story, so an annotation can "associate" words that the story only brings up
later, which would make the augmented features predict the brain from the story's future.

An inserted word looks ahead when it is a content word (`generate.is_content_word`: at least
3 letters, not a stop word) whose key occurs among the story's words after the anchor and
never up to and including it. Key: `stimuli.normalize` (lower case, letters and digits only)
with one plural/verb "s" dropped ("nurses" -> "nurse", not "glass"), so that the inflection of a
copied word does not hide it; no further lemmatisation.

By chance some associates do recur later: the rate of a file (looked-ahead / inserted content
words) is compared with `THRESHOLD`, set above the chance rates measured on the built-in world's
oracle files and on length-matched random-word controls (docs/augment.md, "Lookahead"), and a
file is flagged only with at least `MIN_FLAGGED` such words. Every source is checked with the
same threshold: oracle insertions are written with source "manual" too, models read the story
up to the anchor only, random controls sit at chance.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Sequence

from ..stimuli import normalize
from .format import Augmentation
from .generate import is_content_word

THRESHOLD = 0.30    # share of inserted content words looking ahead above which a file is flagged (module doc)
CHANCE = 0.29       # the highest chance rate measured (the built-in world's shuffled oracle; docs/augment.md)
MIN_FLAGGED = 3     # fewer looked-ahead words than this never flag a file (one or two are chance in a short file)
SHOWN = 10          # anchors named in a message; the rest counted


def word_key(word: str) -> str:
    """The compared form of a word (module docstring): normalized, one final "s" dropped unless "ss"."""
    w = normalize(word)
    return w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w


@dataclasses.dataclass(frozen=True)
class Ahead:
    """An inserted `word` at `anchor` (heard `anchor_word`) that the story first says at word `first`."""

    anchor: int
    anchor_word: str
    word: str
    first: int

    def __str__(self) -> str:
        return f"word {self.anchor} {self.anchor_word!r} + {self.word!r} (first heard at word {self.first})"


@dataclasses.dataclass(frozen=True)
class Lookahead:
    """A file's lookahead count: its inserted content words and those that look ahead."""

    n_content: int
    ahead: tuple[Ahead, ...]

    @property
    def rate(self) -> float:
        return len(self.ahead) / self.n_content if self.n_content else 0.0

    @property
    def flagged(self) -> bool:
        return len(self.ahead) >= MIN_FLAGGED and self.rate > THRESHOLD

    def message(self, where: str) -> str:
        shown = "; ".join(map(str, self.ahead[:SHOWN]))
        more = f"; ... {len(self.ahead) - SHOWN} more" if len(self.ahead) > SHOWN else ""
        return (f"{where}: {len(self.ahead)} of {self.n_content} inserted content words ({self.rate:.0%}; by chance at "
                f"most {CHANCE:.0%}, flagged above {THRESHOLD:.0%}) occur in the story only after their anchor, never "
                f"up to it: the annotation may have read ahead. {shown}{more}")


def first_positions(words: Sequence[str]) -> dict[str, int]:
    """key -> the index of the story word where it is first heard."""
    first: dict[str, int] = {}
    for i, w in enumerate(words):
        first.setdefault(word_key(w), i)
    return first


def lookahead(aug: Augmentation, words: Sequence[str]) -> Lookahead:
    """Count `aug`'s inserted content words that look ahead in `words` (module docstring)."""
    first = first_positions(words)
    n, ahead = 0, []
    for ins in aug.insertions:
        for w in ins.text.split():
            if not is_content_word(w):
                continue
            n += 1
            at = first.get(word_key(w))
            if at is not None and at > ins.anchor:
                ahead.append(Ahead(ins.anchor, words[ins.anchor], w.strip(",.;:!?\"'"), at))
    return Lookahead(n, tuple(ahead))


def check(aug: Augmentation, words: Sequence[str], where: str, forbid: bool = False) -> Lookahead:
    """`lookahead`, and a flagged file (`Lookahead.flagged`) an error with `forbid`
    (--augment.forbid-lookahead), else a warning naming its anchors."""
    found = lookahead(aug, words)
    if found.flagged:
        if forbid:
            raise ValueError(found.message(where) + " (--augment.forbid-lookahead)")
        warnings.warn(found.message(where), stacklevel=2)
    return found


def lookahead_record(augs: dict, stories) -> dict:
    """story -> its file's lookahead count (run.json): inserted content words, those looking ahead, rate."""
    words = {s.name: list(s.transcript.words) for s in stories}
    out = {}
    for name, aug in augs.items():
        found = lookahead(aug, words[name])
        out[name] = dict(content_words=found.n_content, ahead=len(found.ahead), rate=found.rate, flagged=found.flagged)
    return out
