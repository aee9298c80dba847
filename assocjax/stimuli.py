"""Story stimuli: Gentle word alignments, scan timing (TR, audio onset) and the story text.

Gentle `align.csv` has no header: word, aligned word (lower case, `<unk>` when out of the
aligner's vocabulary), start s, end s; start/end are empty for words not found in the
audio. Times are relative to the audio file, which starts at the first event's onset in
the scan's events.tsv. Host-side NumPy: this runs once per story.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np

from .alignment import interpolate_missing_times

UNSORTED_POLICIES = ("error", "sort", "warn")


@dataclasses.dataclass(frozen=True)
class Transcript:
    """A story's words in spoken order with onset/offset seconds (NaN where not aligned)."""

    words: tuple[str, ...]
    onsets: np.ndarray
    offsets: np.ndarray
    source: str = ""

    @property
    def text(self) -> str:
        """The words joined by single spaces: what the language model reads."""
        return " ".join(self.words)

    @property
    def n_missing(self) -> int:
        return int(np.isnan(self.onsets).sum())

    def times(self, audio_onset: float = 0.0) -> tuple[np.ndarray, int]:
        """(onsets in scan seconds with gaps interpolated, number interpolated)."""
        t, n = interpolate_missing_times(self.onsets)
        return t + audio_onset, n


def _float_or_nan(text: str, path, line: int) -> float:
    text = text.strip()
    if not text:
        return np.nan
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{path}:{line}: time {text!r} is not a number") from None


def _finish(words, onsets, offsets, lines, path, on_unsorted) -> Transcript:
    if on_unsorted not in UNSORTED_POLICIES:
        raise ValueError(f"on_unsorted must be one of {UNSORTED_POLICIES}, got {on_unsorted!r}")
    if not words:
        raise ValueError(f"{path}: the alignment has no words")
    onsets, offsets = np.asarray(onsets, float), np.asarray(offsets, float)
    if np.isnan(onsets).all():
        raise ValueError(f"{path}: no word has a time (all {len(words)} onsets are empty)")
    timed = np.flatnonzero(~np.isnan(onsets))
    back = timed[1:][np.diff(onsets[timed]) < 0]
    if back.size:
        where = f"line {lines[back[0]]} (word {words[back[0]]!r} starts before the previous timed word)"
        if on_unsorted == "error":
            raise ValueError(f"{path}: onsets go backwards at {where}; {back.size} such place(s). "
                             "Pass on_unsorted='sort' or 'warn' to accept them")
        if on_unsorted == "warn":
            warnings.warn(f"{path}: onsets go backwards at {where}; kept in transcript order", stacklevel=3)
        else:  # sort the timed words by onset; untimed words keep their slots between them
            perm = np.arange(len(words))
            perm[timed] = timed[np.argsort(onsets[timed], kind="stable")]
            words = [words[i] for i in perm]
            onsets, offsets = onsets[perm], offsets[perm]
    return Transcript(tuple(words), onsets, offsets, str(path))


def read_gentle_csv(path: str | Path, on_unsorted: str = "error") -> Transcript:
    """Read a Gentle align.csv (see module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"alignment file not found: {path}")
    words, onsets, offsets, lines = [], [], [], []
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 4:
                raise ValueError(f"{path}:{line}: expected 4 columns (word, aligned word, start, end), got {len(row)}")
            words.append(row[0])
            onsets.append(_float_or_nan(row[2], path, line))
            offsets.append(_float_or_nan(row[3], path, line))
            lines.append(line)
    return _finish(words, onsets, offsets, lines, path, on_unsorted)


def read_gentle_json(path: str | Path, on_unsorted: str = "error") -> Transcript:
    """Read Gentle's align.json ({"words": [{"word", "start", "end", "case"}, ...]})."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"alignment file not found: {path}")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["words"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a Gentle align.json ({e})") from None
    words = [w["word"] for w in entries]
    onsets = [float(w["start"]) if w.get("case", "success") == "success" and "start" in w else np.nan for w in entries]
    offsets = [float(w["end"]) if w.get("case", "success") == "success" and "end" in w else np.nan for w in entries]
    return _finish(words, onsets, offsets, list(range(1, len(words) + 1)), path, on_unsorted)


def read_alignment(path: str | Path, on_unsorted: str = "error") -> Transcript:
    path = Path(path)
    return read_gentle_json(path, on_unsorted) if path.suffix == ".json" else read_gentle_csv(path, on_unsorted)


def story_alignment(stimuli_dir: str | Path, story: str, on_unsorted: str = "error") -> Transcript:
    """The alignment of `story` under a Narratives `stimuli/gentle` folder."""
    root = Path(stimuli_dir)
    folder = root / story
    for name in ("align.csv", "align.json"):
        if (folder / name).is_file():
            return read_alignment(folder / name, on_unsorted)
    known = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    raise ValueError(f"unknown story {story!r}: no align.csv/align.json in {folder}; known stories: {', '.join(known) or 'none'}")


def read_tr(sidecar: str | Path) -> float:
    """RepetitionTime (s) from a BOLD sidecar JSON."""
    sidecar = Path(sidecar)
    if not sidecar.is_file():
        raise FileNotFoundError(f"sidecar not found: {sidecar}")
    meta = json.loads(sidecar.read_text())
    if "RepetitionTime" not in meta:
        raise ValueError(f"{sidecar}: no RepetitionTime field")
    return float(meta["RepetitionTime"])


def audio_onset(events_tsv: str | Path) -> float:
    """Seconds from scan start to the audio start: the first event's onset."""
    events_tsv = Path(events_tsv)
    if not events_tsv.is_file():
        raise FileNotFoundError(f"events file not found: {events_tsv}")
    with open(events_tsv, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or "onset" not in rows[0]:
        raise ValueError(f"{events_tsv}: no events with an 'onset' column")
    return float(rows[0]["onset"])
