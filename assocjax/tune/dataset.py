"""The Association dataset: instruction records built from stories and their augmentations.

A record is one JSON object per line (JSONL)::

    {"instruction": str, "input": str, "output": str, "story": str, "id": str,
     "task": "association" | "continue" | "summarise",            # optional, default association
     "anchor": int, "draw": int}                                   # optional provenance

`input` is a passage of the story (its heard words) that ends at an insertion's anchor
word; for the association task `output` is that insertion's text (the associated content
a person or a model attached to that point of the story). Two control tasks of the same
size use the same sampled passages with non-associative outputs taken from the story
itself, so "any instruction tuning" can be told apart from "associative" tuning:

- continue: the story's own next words after the anchor, up to and including the end of
  the sentence (the rest of the current sentence, or the next sentence when the anchor
  ends one), at most `CONTINUE_MAX_WORDS` words.
- summarise: there is no summariser offline, so the summary is *extractive* (lead-1): the
  passage's first complete sentence (the first one that starts and ends inside the
  passage), else its leading words up to the first sentence end; at most
  `SUMMARY_MAX_WORDS` words.

Sentence ends: given per story (`build_records(sentence_ends=...)`, heard-word indices as
`assocjax.augment.sentences` gives them: transcript.txt punctuation, else pauses; what
`scripts/make_association.py` passes); by default the punctuation the words themselves carry
(Gentle words carry none: then only the story's last word ends a sentence).

Sampling is seeded: with n <= the number of insertions each is used at most once; with
more, every insertion is used once and the rest are drawn with replacement (`draw` > 0
marks a repeat; `describe(records)` counts them). Passage lengths are drawn per record.
Insertions after a story's last word are not used (nothing to continue there; all tasks
share one pool).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np

from ..augment.sentences import sentence_ends as find_sentence_ends
from ..io import atomic_write_text
from ..stimuli import Reading

if TYPE_CHECKING:  # the augmentation format is only read through .story / .insertions
    from ..augment.format import Augmentation
    from ..stimuli import Transcript

TASKS = ("association", "continue", "summarise")
# Instructions that ask for associations (the paper's "associative memory" content).
TEMPLATES = (
    "Read the passage and write what it brings to mind: related memories, ideas or associated words.",
    "What does the last part of this story remind you of? Write the associations it evokes.",
    "Listen to the story so far and say which thoughts, images or memories come to mind at this point.",
    "Write down the words, ideas and personal memories you associate with the end of this passage.",
)
# Non-associative controls, as many phrasings per task as TEMPLATES has.
CONTROL_TEMPLATES = {
    "summarise": (
        "Summarise the passage in one sentence.",
        "Give a one-sentence summary of the passage.",
        "State in one sentence what the passage says.",
        "Write a single sentence that summarises this passage.",
    ),
    "continue": (
        "Continue the passage with the next sentence.",
        "Write the sentence that comes next in the story.",
        "Continue the story: how does this sentence go on?",
        "Complete the passage with the words that follow.",
    ),
}
CONTINUE_MAX_WORDS = 40
SUMMARY_MAX_WORDS = 30
REQUIRED = {"instruction": str, "input": str, "output": str, "story": str, "id": str}
OPTIONAL = {"task": str, "anchor": int, "draw": int}
NONEMPTY = ("instruction", "output", "story", "id")


# -- building ------------------------------------------------------------------------------
def build_records(stories: Mapping[str, Sequence[str]], augmentations: Mapping[str, Sequence["Augmentation"]],
                  n: int = 1000, seed: int = 0, passage_words: tuple[int, int] = (30, 80),
                  task: str = "association", sentence_ends: Mapping[str, Sequence[int]] | None = None,
                  readings: Mapping[str, "Reading"] | None = None) -> list[dict]:
    """`n` records (module docstring) from `stories` (name -> heard words) and their
    augmentations (name -> Augmentation list). The same seed gives the same passages for
    every task, so a control set differs from the association set only in its outputs.
    sentence_ends: name -> indices of the words ending a sentence (module docstring).
    readings: name -> `Transcript.reading()`: passages and story-text outputs are quoted from
    it (the punctuated transcript, as the language model reads the story); by default the
    words joined by spaces."""
    if task not in TASKS:
        raise ValueError(f"task {task!r} is not one of {', '.join(TASKS)}")
    lo, hi = passage_words
    if not 1 <= lo <= hi:
        raise ValueError(f"passage_words={passage_words}: need 1 <= min <= max")
    if n < 1:
        raise ValueError(f"n={n}: need at least one record")
    pool = _insertion_pool(stories, augmentations)
    rng = np.random.default_rng(seed)
    picks = _sample(len(pool), n, rng)
    lengths = rng.integers(lo, hi + 1, size=n)
    which = rng.integers(0, len(TEMPLATES), size=n)
    words_of = {s: list(stories[s]) for s in {p[0] for p in pool}}
    texts = {s: (readings or {}).get(s) or Reading.from_words(words) for s, words in words_of.items()}
    for name, words in words_of.items():
        if len(texts[name]) != len(words):
            raise ValueError(f"story {name!r}: the reading has {len(texts[name])} words, the story {len(words)}")
    ends = {}
    for name, words in words_of.items():
        idx = (sentence_ends or {}).get(name)
        if idx is None:
            idx = find_sentence_ends(words, None, None, texts[name].text)
        ends[name] = np.isin(np.arange(len(words)), np.asarray(idx, int))
    records, draws = [], Counter()
    for k, length, t in zip(picks, lengths, which):
        story, a, j, anchor, text = pool[k]
        words = words_of[story]
        start = max(0, anchor + 1 - int(length))
        span = _output_span(task, len(words), ends[story], start, anchor)
        output = text if span is None else texts[story].passage(*span)
        instruction = (TEMPLATES if task == "association" else CONTROL_TEMPLATES[task])[t]
        draw = draws[k]
        draws[k] += 1
        records.append(dict(instruction=instruction, input=texts[story].passage(start, anchor), output=output, story=story,
                            id=f"{task}/{story}/{a}/{j}/{draw}", task=task, anchor=int(anchor), draw=draw))
    return records


def _insertion_pool(stories, augmentations) -> list[tuple[str, int, int, int, str]]:
    """(story, augmentation index, insertion index, anchor, text) for every usable insertion:
    one after the story's last word is left out (it has no continuation, and every task
    draws from the same pool so that their passages match)."""
    pool = []
    for story in sorted(augmentations):
        if story not in stories:
            raise ValueError(f"augmentations given for story {story!r}, which has no words; "
                             f"stories: {', '.join(sorted(stories))}")
        n_words = len(stories[story])
        for a, aug in enumerate(augmentations[story]):
            if aug.story != story:
                raise ValueError(f"augmentation {a} listed under story {story!r} is for story {aug.story!r}")
            for j, ins in enumerate(aug.insertions):
                if not 0 <= ins.anchor < n_words:
                    raise ValueError(f"story {story!r}, augmentation {a}, insertion {j}: anchor {ins.anchor} "
                                     f"is outside the story's {n_words} words")
                if ins.text.strip() and ins.anchor < n_words - 1:
                    pool.append((story, a, j, int(ins.anchor), " ".join(ins.text.split())))
    if not pool:
        raise ValueError("no insertions in the augmentations: nothing to build records from")
    return pool


def _sample(n_pool: int, n: int, rng) -> np.ndarray:
    if n <= n_pool:
        return rng.permutation(n_pool)[:n]
    extra = rng.integers(0, n_pool, size=n - n_pool)
    return rng.permutation(np.concatenate([np.arange(n_pool), extra]))


def _output_span(task, n_words, ends, start, anchor) -> tuple[int, int] | None:
    """(first, last) story words of a control task's output; None for association."""
    if task == "association":
        return None
    if task == "continue":
        last = anchor + 1
        while last < min(n_words, anchor + 1 + CONTINUE_MAX_WORDS) - 1 and not ends[last]:
            last += 1
        return anchor + 1, last
    # summarise: lead-1 of the passage
    first = start
    if start > 0 and not ends[start - 1]:  # the passage opens mid-sentence: skip to the next sentence
        inside = [i for i in range(start, anchor) if ends[i]]
        first = inside[0] + 1 if inside else start
    last = first
    while last < anchor and not ends[last] and last - first + 1 < SUMMARY_MAX_WORDS:
        last += 1
    return first, last


def load_transcripts(paths: Sequence) -> dict[str, "Transcript"]:
    """Story name -> its Gentle alignment (words, times, source file). Each path is an
    align.csv / align.json file (the story is its folder's name), a `stimuli/gentle` folder
    of <story>/align.csv, or a Narratives root holding stimuli/gentle."""
    from ..stimuli import alignment_names, read_alignment, story_alignment

    stories: dict[str, Transcript] = {}
    for p in map(Path, paths):
        if p.is_file():
            stories[p.parent.name] = read_alignment(p)
            continue
        gentle = p / "stimuli" / "gentle" if (p / "stimuli" / "gentle").is_dir() else p
        if not gentle.is_dir():
            raise FileNotFoundError(f"stories not found: {p} (expected align.csv files, a stimuli/gentle folder "
                                    "or a Narratives root)")
        names = alignment_names(gentle)
        if not names:
            raise FileNotFoundError(f"{gentle}: no <story>/align.csv or align.json inside")
        for name in names:
            stories[name] = story_alignment(gentle, name)
    return stories


def load_augmentations(paths: Sequence, stories: Mapping[str, Sequence[str]]) -> dict[str, list]:
    """Story name -> its augmentations, from augmentation JSON files or folders of them
    (*.json), each checked against its story's words (hash, anchors, after_word)."""
    from ..augment import format as augfmt

    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.glob("*.json"))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"augmentation file or folder not found: {p}")
    if not files:
        raise FileNotFoundError(f"no augmentation files (*.json) in {', '.join(map(str, paths))}")
    out: dict[str, list] = {}
    for f in files:
        aug = augfmt.load(f)
        if aug.story not in stories:
            raise ValueError(f"{f}: augmentation for story {aug.story!r}, which is not among the stories given "
                             f"({', '.join(sorted(stories)) or 'none'})")
        augfmt.validate(aug, stories[aug.story], where=str(f))
        out.setdefault(aug.story, []).append(aug)
    return out


def describe(records: Sequence[Mapping]) -> dict:
    """Counts for reports: records, stories, tasks, repeated insertions (draw > 0)."""
    return dict(n_records=len(records), n_stories=len({r["story"] for r in records}),
                tasks=dict(Counter(r.get("task", "association") for r in records)),
                n_repeats=sum(1 for r in records if r.get("draw", 0) > 0))


def split_by_story(records: Sequence[dict], val_fraction: float = 0.1, seed: int = 0) -> tuple[list, list]:
    """(train, validation): whole stories go to validation (shuffled by seed) until it holds
    at least `val_fraction` of the records; at least one story stays on each side."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction} must be in (0, 1)")
    counts = Counter(r["story"] for r in records)
    if len(counts) < 2:
        raise ValueError(f"a split by story needs at least two stories; the records come from "
                         f"{len(counts)} ({', '.join(counts) or 'none'})")
    names = sorted(counts)
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    val, n_val = set(), 0
    for story in order[:-1]:
        if n_val >= val_fraction * len(records):
            break
        val.add(story)
        n_val += counts[story]
    return [r for r in records if r["story"] not in val], [r for r in records if r["story"] in val]


# -- validation and files --------------------------------------------------------------------
def validate_record(rec, where: str = "record") -> dict:
    """Raise ValueError naming `where` (file:line) and the field when `rec` is not a record."""
    if not isinstance(rec, dict):
        raise ValueError(f"{where}: a record must be a JSON object, got {type(rec).__name__}")
    for field, kind in REQUIRED.items():
        if field not in rec:
            raise ValueError(f"{where}: missing field {field!r}")
        if not isinstance(rec[field], kind):
            raise ValueError(f"{where}: field {field!r} must be a string, got {type(rec[field]).__name__}")
    for field in NONEMPTY:
        if not rec[field].strip():
            raise ValueError(f"{where}: field {field!r} is empty")
    for field, kind in OPTIONAL.items():
        if field in rec and (not isinstance(rec[field], kind) or isinstance(rec[field], bool)):
            raise ValueError(f"{where}: field {field!r} must be {kind.__name__}, got {type(rec[field]).__name__}")
    if rec.get("task", "association") not in TASKS:
        raise ValueError(f"{where}: field 'task' is {rec['task']!r}; expected one of {', '.join(TASKS)}")
    return rec


def read_jsonl(path) -> list[dict]:
    """Every record of a JSONL file, each validated (errors name file:line and field).
    Blank lines are skipped; duplicate ids are an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    records, seen = [], {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        validate_record(rec, where)
        if rec["id"] in seen:
            raise ValueError(f"{where}: duplicate id {rec['id']!r} (first on line {seen[rec['id']]})")
        seen[rec["id"]] = line_no
        records.append(rec)
    if not records:
        raise ValueError(f"{path}: no records")
    return records


def write_jsonl(records: Iterable[dict], path) -> Path:
    """Validate every record, then write them atomically, one JSON object per line."""
    lines = []
    for i, rec in enumerate(records):
        validate_record(rec, f"record {i}")
        lines.append(json.dumps(rec, ensure_ascii=False))
    if not lines:
        raise ValueError(f"no records to write to {path}")
    return atomic_write_text(path, "\n".join(lines) + "\n")
