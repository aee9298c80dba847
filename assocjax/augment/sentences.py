"""Sentence boundaries of a story, as the indices of the heard words that end a sentence.

From the transcript's punctuation when the text is available (Narratives keeps a
`transcript.txt` beside each Gentle `align.csv`; the aligned words carry no punctuation),
else from pauses in the speech. Host-side NumPy: this runs once per story.
"""
from __future__ import annotations

import os
import re
from typing import Sequence

import numpy as np

from ..stimuli import Transcript, find_transcript, map_tokens, normalize, read_transcript

DEFAULT_GAP_S = 0.8
# A sentence-final token: . ! ? (also "?!" or "..."), then optional closing quotes/brackets.
_FINAL = re.compile(r"[.!?]+[\"'”’»)\]]*$")
# Titles that end with a period inside a sentence ("Mr. Smith").
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "mt", "vs"})


def _ends_from_text(words: Sequence[str], text: str, where: str) -> np.ndarray:
    tokens = text.split()
    last, boundary = map_tokens(tokens, words, where)
    ends = {w for tok, w, b in zip(tokens, last, boundary)
            if w >= 0 and b and _FINAL.search(tok) and normalize(tok) not in _ABBREVIATIONS}
    return np.asarray(sorted(ends), np.int64)


def _ends_from_pauses(onsets_s, offsets_s, gap_s: float) -> np.ndarray:
    onsets_s, offsets_s = np.asarray(onsets_s, float), np.asarray(offsets_s, float)
    gap = onsets_s[1:] - offsets_s[:-1]  # NaN (untimed word on either side) compares False: no pause
    return np.flatnonzero(gap >= gap_s).astype(np.int64)


def sentence_ends(words: Sequence[str], onsets_s, offsets_s, transcript_text: str | None = None,
                  gap_s: float = DEFAULT_GAP_S) -> np.ndarray:
    """Sorted int64 indices of the words that end a sentence; the last word is always one.

    With `transcript_text`, its whitespace tokens are mapped onto `words` in order (the
    normalization of `stimuli.normalize`; a mismatch raises ValueError naming both words) and
    a sentence ends at the word where a token ending with . ! ? (optionally followed by
    closing quotes or brackets) ends; "Mr."-style titles do not end sentences.

    Without text, a sentence ends at word i when the silence before the next word,
    onset[i+1] - offset[i], is at least `gap_s`; NaN times count as no pause. Why 0.8 s:
    within a sentence, fluent narration pauses mostly for well under half a second (breaths
    and hesitations), while pauses at sentence ends run from about half a second to
    seconds. 0.8 s keeps clause-internal hesitations out at the cost of merging some short
    sentences; on the Gentle alignment of Narratives "pieman" it gives 73 segments with a
    mean of 13 words, close to written sentence lengths in narrative speech.
    """
    n = len(words)
    if n == 0:
        raise ValueError("sentence_ends: no words")
    if transcript_text is not None:
        ends = _ends_from_text(words, transcript_text, "transcript text")
    else:
        if not gap_s > 0:
            raise ValueError(f"sentence_ends: gap_s must be > 0, got {gap_s}")
        on, off = np.asarray(onsets_s, float), np.asarray(offsets_s, float)
        if on.shape != (n,) or off.shape != (n,):
            raise ValueError(f"sentence_ends: onsets {on.shape} and offsets {off.shape} must both have shape ({n},)")
        ends = _ends_from_pauses(on, off, gap_s)
    return np.union1d(ends, [n - 1]).astype(np.int64)


def story_sentence_ends(transcript: Transcript, align_path: str | os.PathLike | None = None,
                        gap_s: float = DEFAULT_GAP_S) -> np.ndarray:
    """`sentence_ends` for a story: punctuation of its transcript.txt when there is one (the
    text the Transcript was read with, or the file beside `align_path` / the Transcript's
    source, read by `stimuli.read_transcript`), else pauses."""
    if align_path is None and transcript.transcript_text is not None:
        text = transcript.transcript_text
    else:
        align_path = align_path if align_path is not None else (transcript.source or None)
        found = read_transcript(align_path, transcript.words) if align_path else None
        text = found[0] if found else None
    return sentence_ends(transcript.words, transcript.onsets, transcript.offsets, text, gap_s)


def boundary_source(align_path: str | os.PathLike, gap_s: float = DEFAULT_GAP_S) -> str:
    """Where `story_sentence_ends(t, align_path, gap_s)` finds the sentence ends, for provenance."""
    text = find_transcript(align_path)
    return f"punctuation of {text}" if text else f"pauses >= {gap_s} s"
