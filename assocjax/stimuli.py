"""Story stimuli: Gentle word alignments, scan timing (TR, audio onset) and the story text.

Gentle `align.csv` has no header: word, aligned word (lower case, `<unk>` when out of the
aligner's vocabulary), start s, end s; start/end are empty for words not found in the
audio. Times are relative to the audio file, which starts at the first event's onset in
the scan's events.tsv. A word's time is its midpoint (start + end) / 2, as in Huth-lab
code (`Transcript.times`). Host-side NumPy: this runs once per story.

What the language model reads (`Transcript.reading()`): the `transcript.txt` beside the
alignment when there is one (the real dataset keeps one per story: punctuation and case,
which the Gentle words lack), its whitespace tokens mapped onto the alignment words with
`map_tokens` (so "well-known" may cover two Gentle words and ’ equals ');
else the alignment words joined by single spaces.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .alignment import interpolate_missing_times
from .fingerprint import bytes_digest

UNSORTED_POLICIES = ("error", "sort", "warn")
TRANSCRIPT_NAME = "transcript.txt"
FROM_TRANSCRIPT, FROM_WORDS = "transcript.txt", "alignment words"  # `Reading.source` values


@dataclasses.dataclass(frozen=True)
class Reading:
    """The text a language model reads and where each word's letters lie in it.

    spans_W2: [start, end) character span of word i in `text` (increasing, disjoint). Text
    between spans (spaces, punctuation, hyphens) belongs to no word; a token belongs to
    the word whose span holds its last character (`features.word_token_index`).
    """

    text: str
    spans_W2: np.ndarray
    source: str = FROM_WORDS

    @classmethod
    def from_words(cls, words: Sequence[str]) -> "Reading":
        """The words joined by single spaces (each word's span is the whole word)."""
        words = [str(w) for w in words]
        if any(not w.strip() or w != w.strip() for w in words):
            bad = next(i for i, w in enumerate(words) if not w.strip() or w != w.strip())
            raise ValueError(f"word {bad} ({words[bad]!r}) is empty or has surrounding spaces")
        ends = np.cumsum([len(w) + 1 for w in words], dtype=np.int64) - 1
        lengths = np.asarray([len(w) for w in words], np.int64)
        return cls(" ".join(words), np.stack([ends - lengths, ends], 1).reshape(-1, 2), FROM_WORDS)

    def __len__(self) -> int:
        return len(self.spans_W2)

    @property
    def words(self) -> list[str]:
        """Each word's text as read (its span)."""
        return [self.text[a:b] for a, b in self.spans_W2]

    @property
    def id(self) -> str:
        """sha256 of the text and the spans: the feature cache's key for what is read."""
        return bytes_digest([self.text.encode(), np.ascontiguousarray(self.spans_W2, np.int64).tobytes()])

    @functools.cached_property
    def piece_ends(self) -> np.ndarray:
        """(W,) where word i's piece ends: its span extended over the characters attached to it
        ("hospital," -> after the comma), up to a space or the next word. Computed once."""
        ends = self.spans_W2[:, 1].copy()
        for i, (_, b) in enumerate(self.spans_W2):
            limit = self.spans_W2[i + 1, 0] if i + 1 < len(self) else len(self.text)
            while b < limit and not self.text[b].isspace():
                b += 1
            ends[i] = b
        return ends

    def passage(self, first: int, last: int) -> str:
        """The text of words first..last (inclusive) with their attached punctuation
        ("\"Hello," ... "there."); for plain words: " ".join(words[first:last + 1])."""
        if not 0 <= first <= last < len(self):
            raise ValueError(f"passage {first}..{last} is outside the {len(self)} words")
        ends = self.piece_ends
        start = self.spans_W2[first, 0]
        floor = ends[first - 1] if first else 0
        while start > floor and not self.text[start - 1].isspace():
            start -= 1  # an opening quote or bracket belongs to the passage
        return self.text[start:ends[last]]

    def with_insertions(self, after: Mapping[int, Sequence[str]]) -> tuple["Reading", np.ndarray, np.ndarray]:
        """(reading with extra words, heard_index_A, anchor_A): the words of after[k] are read
        after word k's piece (after its punctuation), each as a word of its own.

        heard_index_A: the heard word's index, -1 for inserted words; anchor_A: a heard word's
        own index, or the heard word an inserted word follows.
        """
        ends = self.piece_ends
        parts, spans, heard, anchor = [], [], [], []
        pos, length = 0, 0  # pos: read up to here in self.text; length: of the output so far
        for k, (a, b) in enumerate(self.spans_W2):
            parts.append(self.text[pos:ends[k]])
            spans.append((length + a - pos, length + b - pos))
            length += ends[k] - pos
            pos = ends[k]
            heard.append(k)
            anchor.append(k)
            for w in after.get(k, ()):
                w = str(w)
                if not w.strip() or w != w.strip():
                    raise ValueError(f"inserted word {w!r} after word {k} is empty or has surrounding spaces")
                parts.append(" " + w)
                spans.append((length + 1, length + 1 + len(w)))
                length += 1 + len(w)
                heard.append(-1)
                anchor.append(k)
        parts.append(self.text[pos:])
        return (Reading("".join(parts), np.asarray(spans, np.int64).reshape(-1, 2), self.source),
                np.asarray(heard, np.int32), np.asarray(anchor, np.int32))


@dataclasses.dataclass(frozen=True)
class Transcript:
    """A story's words in spoken order with onset/offset seconds (NaN where not aligned).

    transcript_text / spans_W2: the punctuated text from `transcript.txt` (whitespace runs
    collapsed to single spaces) and each word's character span in it, or None.
    """

    words: tuple[str, ...]
    onsets: np.ndarray
    offsets: np.ndarray
    source: str = ""
    transcript_text: str | None = None
    spans_W2: np.ndarray | None = None
    transcript_path: str = ""
    phone_onsets: np.ndarray | None = None
    """(H,) onset seconds (audio time) of every aligned phone, sorted; None when the alignment
    carries no phones (Gentle's align.csv never does; its align.json does: `read_gentle_json`)"""

    @property
    def text_source(self) -> str:
        """What the language model reads: "transcript.txt" or "alignment words"."""
        return FROM_TRANSCRIPT if self.transcript_text is not None else FROM_WORDS

    def reading(self) -> Reading:
        """What the language model reads (module docstring)."""
        if self.transcript_text is None:
            return Reading.from_words(self.words)
        return Reading(self.transcript_text, self.spans_W2, FROM_TRANSCRIPT)

    @property
    def text(self) -> str:
        """The text the language model reads (`reading().text`)."""
        return self.reading().text

    @property
    def n_missing(self) -> int:
        return int(np.isnan(self.onsets).sum())

    @property
    def midpoints(self) -> np.ndarray:
        """(start + end) / 2 per word; the start where Gentle gives no end; NaN where untimed."""
        return np.where(np.isnan(self.offsets), self.onsets, (self.onsets + self.offsets) / 2)

    def times(self, audio_onset: float = 0.0) -> tuple[np.ndarray, int]:
        """(word midpoints in scan seconds with gaps interpolated, number interpolated).

        The midpoint is the word's time everywhere (features -> TRs, synthetic BOLD,
        inserted words at their anchor's time), as in Huth-lab code; untimed words are
        interpolated by word index between their timed neighbours."""
        t, n = interpolate_missing_times(self.midpoints)
        return t + audio_onset, n


def find_transcript(align_path: str | os.PathLike) -> Path | None:
    """The `transcript.txt` beside an alignment file, or None."""
    path = Path(align_path).parent / TRANSCRIPT_NAME
    return path if path.is_file() else None


_CONTEXT = 4  # tokens/words of context shown around a text/words mismatch


def normalize(token: str) -> str:
    """Lower case with everything but letters and digits removed: "Hospital," -> "hospital",
    "I’m" -> "im". The one comparison used to map text onto alignment words."""
    return "".join(c for c in token.casefold() if c.isalnum())


def _context(items: Sequence[str], k: int) -> str:
    lo, hi = max(0, k - _CONTEXT), min(len(items), k + _CONTEXT + 1)
    shown = [f">>{x}<<" if i == k else x for i, x in enumerate(items[lo:hi], start=lo)]
    return ("... " if lo else "") + " ".join(shown) + (" ..." if hi < len(items) else "")


def map_tokens(tokens: Sequence[str], words: Sequence[str], what: str = "text",
               offsets: Sequence[int] | None = None,
               lines: Sequence[int] | None = None) -> tuple[list[int], list[bool]]:
    """Map text tokens onto alignment words in order.

    Returns (last_word, at_boundary): for token t the index of the word in which it ends and
    whether it ends exactly at that word's end. Tokens with no letters or digits (a lone
    "--") end where the previous token ended (-1 before the first word). Raises ValueError
    with the token position (line and character offset when `lines` / `offsets` are given),
    both words and context when the letters disagree or one side runs out.
    """
    norm_t = [normalize(t) for t in tokens]
    norm_w = [normalize(w) for w in words]
    last, boundary = [], []
    w, rest_w = 0, ""  # rest_w: the part of word w not yet matched
    cur_last, cur_boundary = -1, True

    def where(t: int) -> str:
        at = ", ".join(([f"line {lines[t]}"] if lines is not None else [])
                       + ([f"character {offsets[t]}"] if offsets is not None else []))
        at = f"token {t}" + (f" ({at})" if at else "")
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


def transcript_spans(text: str, words: Sequence[str], where: str = "transcript text") -> tuple[str, np.ndarray]:
    """(text with whitespace runs collapsed, (W, 2) character span of each word's letters in it).

    The text's whitespace tokens are checked against the words with `map_tokens`
    (ValueError naming the first token that disagrees, its line and character offset in
    `text`, and both contexts); then each word's span runs from its first to its last letter
    or digit.
    """
    matches = list(re.finditer(r"\S+", text))
    starts = [m.start() for m in matches]
    newlines = [m.start() for m in re.finditer("\n", text)]
    lines = (np.searchsorted(newlines, starts) + 1).tolist()  # a transcript is edited by line
    map_tokens([m.group() for m in matches], words, where, starts, lines)
    norm = [normalize(w) for w in words]
    empty = [i for i, n in enumerate(norm) if not n]
    if empty:
        raise ValueError(f"{where}: alignment word {empty[0]} {words[empty[0]]!r} has no letters or digits, "
                         "so it has no place in the text")
    collapsed = " ".join(m.group() for m in matches)
    spans = np.full((len(words), 2), -1, np.int64)
    w, done = 0, 0  # word, characters of it matched so far
    for i, c in enumerate(collapsed):
        for _ in normalize(c):  # map_tokens checked that these letters are the words' in order
            if spans[w, 0] < 0:
                spans[w, 0] = i
            spans[w, 1] = i + 1
            done += 1
            if done == len(norm[w]):
                w, done = w + 1, 0
    return collapsed, spans


def read_utf8(path: Path) -> str:
    """A text file's contents; a file in another encoding (e.g. Latin-1) is an error naming it.
    A leading byte-order mark (text editors on Windows write one) is dropped: it is not text,
    and in a transcript.txt the model would read it."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from None


def read_transcript(align_path: str | os.PathLike, words: Sequence[str]) -> tuple[str, np.ndarray, Path] | None:
    """(collapsed text, word spans, path) of the transcript.txt beside `align_path`, or None.
    A transcript that does not match the words raises ValueError naming both files."""
    path = find_transcript(align_path)
    if path is None:
        return None
    raw = read_utf8(path)
    try:
        text, spans = transcript_spans(raw, words, "transcript.txt")
    except ValueError as e:  # the folder is the story in the Narratives layout (stimuli/gentle/<story>/)
        raise ValueError(f"{path}: does not match the alignment {align_path} (story {path.parent.name!r}): {e}") from None
    return text, spans, path


def _float_or_nan(text: str, path, line: int) -> float:
    text = text.strip()
    if not text:
        return np.nan
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{path}:{line}: time {text!r} is not a number") from None


def _finish(words, onsets, offsets, lines, path, on_unsorted, transcript: bool = True, phones=None) -> Transcript:
    if on_unsorted not in UNSORTED_POLICIES:
        raise ValueError(f"on_unsorted must be one of {UNSORTED_POLICIES}, got {on_unsorted!r}")
    if not words:
        raise ValueError(f"{path}: the alignment has no words")
    onsets, offsets = np.asarray(onsets, float), np.asarray(offsets, float)
    if np.isnan(onsets).all():
        raise ValueError(f"{path}: no word has a time (all {len(words)} onsets are empty)")
    early = np.flatnonzero(offsets < onsets)
    if early.size:
        raise ValueError(f"{path}: line {lines[early[0]]}: word {words[early[0]]!r} ends ({offsets[early[0]]}) before "
                         f"it starts ({onsets[early[0]]})")
    text = read_transcript(path, words) if transcript else None
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
            if text is not None:
                warnings.warn(f"{text[2]} is not used: the words of {path} were re-sorted by onset, so they no "
                              "longer follow the transcript's order; the model reads the alignment words",
                              stacklevel=3)
                text = None
    if text is None:
        return Transcript(tuple(words), onsets, offsets, str(path), phone_onsets=phones)
    return Transcript(tuple(words), onsets, offsets, str(path), text[0], text[1], str(text[2]), phones)


def read_gentle_csv(path: str | Path, on_unsorted: str = "error", transcript: bool = True) -> Transcript:
    """Read a Gentle align.csv (see module docstring); with `transcript`, the transcript.txt
    beside it (if any) becomes what the model reads."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"alignment file not found: {path}")
    words, onsets, offsets, lines = [], [], [], []
    with io.StringIO(read_utf8(path), newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 4:
                raise ValueError(f"{path}:{line}: expected 4 columns (word, aligned word, start, end), got {len(row)}")
            words.append(row[0])
            onsets.append(_float_or_nan(row[2], path, line))
            offsets.append(_float_or_nan(row[3], path, line))
            lines.append(line)
    return _finish(words, onsets, offsets, lines, path, on_unsorted, transcript)


def read_gentle_json(path: str | Path, on_unsorted: str = "error", transcript: bool = True) -> Transcript:
    """Read Gentle's align.json ({"words": [{"word", "start", "end", "case", "phones"}, ...]}).
    A timed word's "phones" ([{"phone", "duration"}, ...], in spoken order) give each phone's
    onset: the word's start plus the durations of the phones before it (`Transcript.phone_onsets`;
    None when no word carries phones)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"alignment file not found: {path}")
    try:
        entries = json.loads(read_utf8(path))["words"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a Gentle align.json ({e})") from None
    words = [w["word"] for w in entries]
    onsets = [float(w["start"]) if w.get("case", "success") == "success" and "start" in w else np.nan for w in entries]
    offsets = [float(w["end"]) if w.get("case", "success") == "success" and "end" in w else np.nan for w in entries]
    return _finish(words, onsets, offsets, list(range(1, len(words) + 1)), path, on_unsorted, transcript,
                   _phone_onsets(entries, onsets, path))


def _phone_onsets(entries, onsets, path) -> np.ndarray | None:
    """(H,) sorted phone onsets of the timed words of a Gentle align.json (`read_gentle_json`)."""
    if not any("phones" in w for w in entries):
        return None
    out = []
    for i, (w, start) in enumerate(zip(entries, onsets)):
        if np.isnan(start):
            continue  # an untimed word's phones have no time
        try:
            durations = [float(p["duration"]) for p in w.get("phones", ())]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: word {i + 1} {w.get('word')!r}: a phone without a numeric duration ({e})") from None
        out += (start + np.concatenate([[0.0], np.cumsum(durations)[:-1]])).tolist() if durations else []
    return np.sort(np.asarray(out, np.float64))


def read_alignment(path: str | Path, on_unsorted: str = "error", transcript: bool = True) -> Transcript:
    path = Path(path)
    read = read_gentle_json if path.suffix == ".json" else read_gentle_csv
    return read(path, on_unsorted, transcript)


def alignment_names(stimuli_dir: str | Path) -> list[str]:
    """The stories under a Narratives `stimuli/gentle` folder: its subfolders holding an
    align.csv or align.json, sorted (empty when the folder does not exist)."""
    root = Path(stimuli_dir)
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if (d / "align.csv").is_file() or (d / "align.json").is_file())


def story_alignment(stimuli_dir: str | Path, story: str, on_unsorted: str = "error",
                    transcript: bool = True) -> Transcript:
    """The alignment of `story` under a Narratives `stimuli/gentle` folder (with its
    transcript.txt, when there is one and `transcript`)."""
    root = Path(stimuli_dir)
    folder = root / story
    for name in ("align.csv", "align.json"):
        if (folder / name).is_file():
            return read_alignment(folder / name, on_unsorted, transcript)
    known = alignment_names(root)
    raise ValueError(f"unknown story {story!r}: no align.csv/align.json in {folder}; known stories: {', '.join(known) or 'none'}")


MAX_TR_S = 20.0  # fMRI repetition times are seconds; even sparse-sampling protocols stay below this


def read_tr(sidecar: str | Path) -> float:
    """RepetitionTime (s) from a BOLD sidecar JSON."""
    sidecar = Path(sidecar)
    if not sidecar.is_file():
        raise FileNotFoundError(f"sidecar not found: {sidecar}")
    meta = json.loads(read_utf8(sidecar))
    if "RepetitionTime" not in meta:
        raise ValueError(f"{sidecar}: no RepetitionTime field")
    try:
        tr = float(meta["RepetitionTime"])
    except (TypeError, ValueError):
        tr = math.nan
    if not (math.isfinite(tr) and tr > 0):
        raise ValueError(f"{sidecar}: RepetitionTime {meta['RepetitionTime']!r} must be a positive number of seconds")
    if tr > MAX_TR_S:  # BIDS gives seconds; a sidecar in milliseconds would stretch every scan 1000 times
        raise ValueError(f"{sidecar}: RepetitionTime {tr:g} s is implausible (above {MAX_TR_S:g} s): milliseconds? "
                         f"BIDS gives seconds ({tr / 1000:g})")
    return tr


def audio_onset(events_tsv: str | Path) -> float:
    """Seconds from scan start to the audio start: the first event's onset."""
    events_tsv = Path(events_tsv)
    if not events_tsv.is_file():
        raise FileNotFoundError(f"events file not found: {events_tsv}")
    with io.StringIO(read_utf8(events_tsv), newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or "onset" not in rows[0]:
        raise ValueError(f"{events_tsv}: no events with an 'onset' column")
    return float(rows[0]["onset"])
