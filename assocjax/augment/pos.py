"""Which inserted words carry F: part-of-speech labels of inserted words, and the subsets of an
augmentation that hold one class of them.

Labels come from the annotation (`format`: an insertion's `pos`, one Universal Dependencies tag
per inserted word; the inline form's "word/TAG") or from a tagger that reads each inserted word in
its context: the story as the model reads it, with every insertion in place (`tag_augmentation`).
A tagger is anything with spaCy's call interface, `nlp(text)` -> tokens with `.text`, `.pos_`
and `.idx` (character offset): a spaCy pipeline (`load_tagger("spacy:en_core_web_sm")`; spaCy is
optional and no dependency) or a `RuleTagger` (the built-in world's rule, a test's lookup).

`score.py --augment.compare --augment.by-pos` splits each labelled word-level condition into one
subset per class (`split_conditions`): the same anchors, each insertion cut to its words of that
class (an insertion left empty is dropped), scored as a condition of its own ("oracle:NOUN") against
the plain stories. A subset holds fewer inserted words than its parent, and the classes different
numbers of them, so a subset needs a control of its own length: a random control of the parent
(`random_match` at the same anchors) is cut to each subset's lengths ("random-word:NOUN": as many
random words at the same places as "oracle:NOUN" has nouns). Sentence-level conditions are left
whole.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..stimuli import Reading
from .format import UPOS, Augmentation, augmented_reading, load, save

DEFAULT_CLASSES = ("NOUN", "VERB", "ADJ")  # the paper's grouping of inserted words
# spaCy gives these to the pieces of a word that are not the word ("doctor" "," ; "well" "-" "known")
_NOT_A_WORD = frozenset({"PUNCT", "SYM", "SPACE"})


class TaggerUnavailable(RuntimeError):
    """The asked-for tagger is not installed here (the message says what to install)."""


@dataclasses.dataclass(frozen=True)
class Token:
    """What `tag_augmentation` reads of a tagger's token (spaCy's `Token` has these attributes)."""

    text: str
    pos_: str
    idx: int


class RuleTagger:
    """A pipeline with spaCy's call interface that tags each token by `rule(token text)`: tokens
    are runs of word characters (with inner apostrophes) and single other characters, the latter
    tagged PUNCT. It sees no context; a context-sensitive tagger is spaCy's."""

    def __init__(self, rule: Callable[[str], str], name: str = "rule"):
        self.rule, self.name = rule, name

    def __call__(self, text: str) -> list[Token]:
        return [Token(m.group(), self.rule(m.group()) if m.group()[0].isalnum() or m.group()[0] == "_" else "PUNCT",
                      m.start()) for m in re.finditer(r"\w+(?:['’]\w+)*|[^\w\s]", text)]


def load_tagger(spec: str):
    """The tagger of `augment.py tag --tagger SPEC`: "spacy:<model>" (an installed spaCy pipeline,
    e.g. spacy:en_core_web_sm) or "synthetic" (the built-in world's rule, `oracle.synthetic_pos`).
    Raises TaggerUnavailable, saying what to install, when spaCy or its model is missing."""
    kind, _, name = spec.partition(":")
    if kind == "synthetic" and not name:
        from .oracle import synthetic_pos

        return RuleTagger(synthetic_pos, "synthetic")
    if kind != "spacy" or not name:
        raise ValueError(f"--tagger {spec!r}: expected spacy:<model> (e.g. spacy:en_core_web_sm) or synthetic")
    install = f"pip install spacy && python -m spacy download {name}"
    try:
        import spacy
    except ImportError:
        raise TaggerUnavailable(f"--tagger {spec}: spaCy is not installed; install it and its model with: "
                                f"{install}") from None
    try:
        return spacy.load(name, exclude=["ner"])  # the tagger and what it reads; entities are not needed
    except OSError as e:  # spaCy's "[E050] Can't find model ..."
        raise TaggerUnavailable(f"--tagger {spec}: spaCy model {name!r} is not installed ({str(e).splitlines()[0]}); "
                                f"install it with: python -m spacy download {name}") from None


def word_tags(reading: Reading, words: np.ndarray, nlp) -> list[str]:
    """The tag of each of `reading`'s words `words` (indices), from `nlp` run on the whole text:
    the first of the tokens starting inside the word's span that is not punctuation (e.g.
    "doctor," -> doctor's tag; "don't" -> do's), else the first token's."""
    tokens = list(nlp(reading.text))
    starts = np.asarray([int(t.idx) for t in tokens], np.int64)
    tags = [str(t.pos_) for t in tokens]
    out = []
    for w in words:
        a, b = (int(x) for x in reading.spans_W2[w])
        inside = range(int(np.searchsorted(starts, a)), int(np.searchsorted(starts, b)))
        if not inside:
            raise ValueError(f"the tagger gave no token inside word {w} {reading.text[a:b]!r} (characters {a}..{b}): "
                             "its tokens do not follow the text's words")
        chosen = next((tags[k] for k in inside if tags[k] not in _NOT_A_WORD), tags[inside[0]])
        if chosen not in UPOS:
            raise ValueError(f"the tagger tagged word {reading.text[a:b]!r} {chosen!r}, not a Universal Dependencies "
                             f"tag ({', '.join(UPOS)}): a pipeline without a part-of-speech tagger?")
        out.append(chosen)
    return out


def tag_augmentation(aug: Augmentation, reading: Reading, nlp, tagger: str) -> Augmentation:
    """`aug` with every inserted word labelled by `nlp`, which reads the story (`reading`: what the
    model reads) with every insertion in place, so each word is tagged in its context. Any labels
    `aug` had are replaced. The provenance records `tagger` and, as "tagged_from", the id of the
    file first tagged (the labels are part of the id): a random control matched to the unlabelled
    file is still found to be its control (`split_conditions`)."""
    read, heard, _ = augmented_reading(reading, aug)
    tags = iter(word_tags(read, np.flatnonzero(heard < 0), nlp))
    # augmented_reading inserts the insertions' words in the order of aug.insertions
    labelled = tuple(dataclasses.replace(ins, pos=tuple(next(tags) for _ in ins.text.split()))
                     for ins in aug.insertions)
    record = {"pos_tagger": tagger, "tagged_from": aug.provenance.get("tagged_from", aug.id)}
    return dataclasses.replace(aug, insertions=labelled, provenance=aug.provenance | record)


def class_tags(spec: str) -> frozenset[str]:
    """The tags of a class: "NOUN", or several joined by "+" ("NOUN+PROPN")."""
    tags = spec.split("+")
    bad = [t for t in tags if t not in UPOS]
    if bad:
        raise ValueError(f"--augment.pos-classes {spec!r}: unknown tag(s) {bad}; a class is a Universal Dependencies "
                         f"tag or several joined by '+' (NOUN+PROPN), tags: {', '.join(UPOS)}")
    return frozenset(tags)


def subset(aug: Augmentation, cls: str, condition: str) -> Augmentation | None:
    """The insertions of `aug` cut to their words of class `cls` (`class_tags`), same anchors,
    insertions left empty dropped; None when no word is of the class. Its provenance is the
    parent's with condition `condition` and the derivation (parent id, class, word counts)."""
    if not aug.labelled:
        raise ValueError(f"story {aug.story!r}: augmentation {aug.id} has no part-of-speech labels "
                         "(scripts/augment.py tag adds them)")
    tags = class_tags(cls)
    kept = []
    for ins in aug.insertions:
        pairs = [(w, t) for w, t in zip(ins.text.split(), ins.pos) if t in tags]
        if pairs:
            kept.append(dataclasses.replace(ins, text=" ".join(w for w, _ in pairs), pos=tuple(t for _, t in pairs)))
    if not kept:
        return None
    out = dataclasses.replace(aug, insertions=tuple(kept), provenance=aug.provenance | {"condition": condition})
    derived = dict(of=aug.id, cls=cls, words=out.n_inserted_words, of_words=aug.n_inserted_words)
    return dataclasses.replace(out, provenance=out.provenance | {"pos_subset": derived})


def subset_name(condition: str, cls: str) -> str:
    return f"{condition}:{cls}"


def matched_subset(control: Augmentation, parent: Augmentation, cls: str, condition: str) -> Augmentation | None:
    """The random control of `parent`'s class-`cls` subset: `control` (a `random_match` of
    `parent` at its anchors, insertion j drawn for parent's insertion j) with insertion j cut to
    its first n_j words, n_j the words of parent's insertion j in the class; None when the class
    is absent. Word-matched (exactly so for a control matched in words; a control matched in
    tokens gives at most its own words)."""
    tags = class_tags(cls)
    kept = []
    for own, theirs in zip(control.insertions, parent.insertions):
        n = sum(t in tags for t in theirs.pos)
        if n:
            words = own.text.split()[:n]
            kept.append(dataclasses.replace(own, text=" ".join(words), pos=own.pos[:len(words)] if own.pos else None))
    if not kept:
        return None
    named = {"condition": condition}
    if "control" in control.provenance:   # a draw of a control: the class's draws form their own distribution
        named["control"] = subset_name(control.provenance["control"], cls)
    out = dataclasses.replace(control, insertions=tuple(kept), provenance=control.provenance | named)
    derived = dict(of=control.id, cls=cls, matched_to=parent.id, words=out.n_inserted_words,
                   of_words=control.n_inserted_words)
    return dataclasses.replace(out, provenance=out.provenance | {"pos_subset": derived})


def _control_of(augs: list[Augmentation], parents: dict[str, tuple[str, Augmentation]]) -> str | None:
    """The split condition whose files `augs` are random controls of, insertion for insertion
    (`random_match` at the same anchors), or None."""
    found = {parents.get(a.provenance.get("matched_to"), (None,))[0] for a in augs}
    if len(found) != 1 or None in found:
        return None
    for a in augs:
        parent = parents[a.provenance["matched_to"]][1]  # the file itself, or the same file tagged
        if (a.provenance.get("generator") != "random_match" or a.story != parent.story
                or [i.anchor for i in a.insertions] != [i.anchor for i in parent.insertions]):
            return None
    return found.pop()


def _why_whole(files, augs: list[Augmentation]) -> str | None:
    levels = sorted({a.level for a in augs})
    if levels != ["word"]:
        return f"{'/'.join(levels)}-level insertions; only word-level ones are split by part of speech"
    unlabelled = [str(f) for f, a in zip(files, augs) if not a.labelled]
    if unlabelled:
        return f"no part-of-speech labels in {', '.join(unlabelled)}; scripts/augment.py tag adds them"
    return None


def split_conditions(conditions: dict[str, list[Path]], classes: Iterable[str], folder: Path
                     ) -> tuple[dict[str, list[Path]], list[str]]:
    """(conditions with each labelled word-level one followed by its subsets, notes). The random
    control of a split condition (`random_match` at its anchors) is cut to the lengths of each of
    its subsets instead (`matched_subset`): "random-word:NOUN" holds as many random words, at the
    same places, as "oracle:NOUN" holds nouns. A subset's files are written to
    folder/<condition_cls>/<story>.json (deterministic: the same files, and so the same ids and
    cache entries, on every run). A subset empty in any story is skipped with a note (the
    condition needs a file per story); other conditions are left whole, noted. Raises when no
    condition is word-level and labelled."""
    classes = list(dict.fromkeys(classes))
    for cls in classes:
        class_tags(cls)
    loaded = {name: [load(f) for f in files] for name, files in conditions.items()}
    parents = {key: (name, a) for name, augs in loaded.items() if _why_whole(conditions[name], augs) is None
               for a in augs for key in (a.id, a.provenance.get("tagged_from")) if key}
    out, notes = {}, []
    for name, files in conditions.items():
        out[name] = files
        augs = loaded[name]
        parent = _control_of(augs, parents)
        if parent is None:
            why = _why_whole(files, augs)
            if why:
                notes.append(f"{name}: left whole ({why})")
                continue
        for cls in classes:
            sub = subset_name(name, cls)
            if sub in conditions:
                raise ValueError(f"--augment.by-pos: condition {sub!r} exists already among --augment.files")
            if parent is None:
                parts = [subset(a, cls, sub) for a in augs]
            else:
                parts = [matched_subset(a, parents[a.provenance["matched_to"]][1], cls, sub) for a in augs]
            empty = [a.story for a, s in zip(augs, parts) if s is None]
            if empty:
                notes.append(f"{sub}: skipped (no {cls} word inserted in story/stories {', '.join(empty)})")
                continue
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in sub)
            out[sub] = [save(s, Path(folder) / safe / f"{s.story}.json") for s in parts]
            words, total = sum(s.n_inserted_words for s in parts), sum(a.n_inserted_words for a in augs)
            how = "" if parent is None else f", cut to the lengths of {subset_name(parent, cls)}"
            notes.append(f"{sub}: {words} of {name}'s {total} inserted words ({words / total:.0%}){how}, "
                         f"ids {', '.join(s.id for s in parts)}")
    if not parents:
        raise ValueError("--augment.by-pos: no condition can be split by part of speech: " + "; ".join(notes))
    return out, notes


__all__ = ["DEFAULT_CLASSES", "RuleTagger", "TaggerUnavailable", "Token", "class_tags", "load_tagger",
           "matched_subset", "split_conditions", "subset", "subset_name", "tag_augmentation", "word_tags"]
