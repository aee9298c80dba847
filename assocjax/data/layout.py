"""The Narratives (OpenNeuro ds002345) BIDS metadata: which scans exist and what is in each.

Everything comes from the dataset's own plain-text files, host-side:
- scans are discovered from `sub-*/func/sub-XXX_task-T[_run-N]_bold.json`;
- subject, task, run come from the file name; condition from `participants.tsv`, whose
  task/condition/age/... cells are comma-joined lists aligned by position;
- TR from the scan's own sidecar (milkyway "synonyms" scans say 1.52 s, the rest 1.5 s);
- stories from the scan's `_events.tsv` rows with trial_type "story" (seconds), falling
  back to `code/event_meta.json` (TRs) when a scan has no events file or no story row;
- exclusions from `code/scan_exclude.json` (task -> subject -> file-name stems).

Story TR indices: onset_tr = floor(onset / TR + 0.5), n_trs = floor(duration / TR + 0.5)
(round half up, so a story never depends on float ties or banker's rounding). With these the
events reproduce `event_meta.json` for every scan of the release except where the metadata
file is stale: lucy (events onset fixed to 3.0 s in v1.1.3, meta still says 1 TR), two
milkyway/prettymouth subjects with earlier onsets, and milkyway synonyms, whose 404 s story
is 266 TRs of 1.52 s where meta counts 269 TRs of 1.5 s. The events win: they are per scan.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
import types
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping

from .. import stimuli

_BOLD_RE = re.compile(r"^(sub-[A-Za-z0-9]+)_task-([A-Za-z0-9]+)(?:_run-(\d+))?_bold\.json$")
_NA = {"n/a", "na", ""}


def to_trs(seconds: float, tr: float) -> int:
    """Seconds -> whole TRs, rounding half up (see the module docstring)."""
    return int(math.floor(seconds / tr + 0.5))


@dataclasses.dataclass(frozen=True)
class Story:
    """One story inside a scan.

    onset/duration are seconds from the scan start; onset_tr/n_trs index the scan's TRs
    (data rows onset_tr .. onset_tr + n_trs - 1). `audio` names the audio file the story is
    played from (stim_file without `_audio.wav`; None when unknown); `audio_onset` is the scan
    second at which that file starts (Gentle times are relative to it); `gentle` is the
    folder under `stimuli/gentle` holding its alignment, None when the dataset has none.
    `source` says where the timing came from: "events" or "event_meta".
    """

    name: str
    onset: float
    duration: float
    onset_tr: int
    n_trs: int
    audio: str | None
    audio_onset: float | None
    gentle: str | None
    source: str

    @property
    def stop_tr(self) -> int:
        return self.onset_tr + self.n_trs


@dataclasses.dataclass(frozen=True)
class Scan:
    """One functional run (one `_bold.json`), with everything the files say about it."""

    subject: str
    task: str
    run: int | None
    condition: str | None
    tr: float
    stories: tuple[Story, ...]
    audio_onset: float | None
    excluded_by: str | None
    stem: str
    root: Path
    events: Path | None

    @property
    def excluded(self) -> bool:
        return self.excluded_by is not None

    @property
    def sidecar(self) -> Path:
        return self.root / self.subject / "func" / f"{self.stem}_bold.json"

    @property
    def gentle(self) -> str | None:
        """The alignment folder shared by all of the scan's stories (slumlordreach has one
        alignment for both stories); None when the stories differ (schema) or have none."""
        names = {s.gentle for s in self.stories}
        return names.pop() if len(names) == 1 else None

    @property
    def n_trs_needed(self) -> int:
        """Rows an image must have to hold every story (the last story's end)."""
        return max((s.stop_tr for s in self.stories), default=0)

    def story(self, story: "Story | str | None" = None) -> Story:
        """A story of this scan by name (or the only one when `story` is None)."""
        if isinstance(story, Story):
            if story not in self.stories:
                raise ValueError(f"{self.stem}: story {story.name!r} does not belong to this scan")
            return story
        names = [s.name for s in self.stories]
        if story is None:
            if len(self.stories) != 1:
                raise ValueError(f"{self.stem} holds {len(names)} stories ({', '.join(names) or 'none'}); name one")
            return self.stories[0]
        found = find_story(self.stories, story)
        if found is not None:
            return found
        raise ValueError(f"{self.stem} has no story {story!r}; it holds: {', '.join(names) or 'none'}")


def story_named(story: Story, name: str) -> bool:
    """Whether `name` names the story: its name, its audio file or its alignment folder
    (e.g. "reach", "friends", "milkywaysynonyms")."""
    return name in (story.name, story.audio, story.gentle)


# Stimuli that tell one story: the same text told again (piemanpni: pieman retold, a third of
# their word 6-grams shared) or with words swapped (milkyway's vodka/synonyms versions, the
# scrambled notthefall). Tuning on one of them and scoring another leaks the story's content.
SAME_STORY = (frozenset({"pieman", "piemanpni"}),
              frozenset({"milkywayoriginal", "milkywaysynonyms", "milkywayvodka"}),
              frozenset({"notthefallintact", "notthefalllongscram", "notthefallshortscram"}))


def same_story(name: str) -> frozenset[str]:
    """`name` and every stimulus name telling the same story (`SAME_STORY`)."""
    return next((group for group in SAME_STORY if name in group), frozenset({name}))


def tells_story(story: Story, name: str) -> bool:
    """Whether `story` is, or tells the same story as, the story `name` names (`story_named`,
    `same_story`): what makes a tuning text overlap a scored story."""
    return any(story_named(story, n) for n in same_story(name))


def find_stories(stories: Iterable[Story], *names: str) -> tuple[Story, ...]:
    """The stories (in their order) that any of `names` names (`story_named`)."""
    return tuple(s for s in stories if any(story_named(s, n) for n in names))


def find_story(stories: Iterable[Story], name: str) -> Story | None:
    """The first story that `name` names (`story_named`), or None."""
    return next(iter(find_stories(stories, name)), None)


def split_commas(items: Iterable) -> tuple[str, ...]:
    """("a,b", " c") -> ("a", "b", "c"): lists whose items may be comma-joined (command-line
    options, participants.tsv cells); blanks around items and empty items are dropped."""
    return tuple(s.strip() for item in items for s in str(item).split(",") if s.strip())


def _read_tsv(path: Path) -> list[dict[str, str]]:
    with io.StringIO(stimuli.read_utf8(path), newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _cell(value: str | None) -> str | None:
    value = (value or "").strip()
    return None if value.lower() in _NA else value


def _read_participants(path: Path) -> dict[str, dict[str, dict[str, str | None]]]:
    """subject -> task -> {column: value} from the comma-joined participants.tsv rows."""
    out: dict[str, dict[str, dict[str, str | None]]] = {}
    for line, row in enumerate(_read_tsv(path), start=2):
        sub = (row.get("participant_id") or "").strip()
        if not sub:
            raise ValueError(f"{path}:{line}: no participant_id")
        tasks = split_commas([row.get("task") or ""])
        per_task: dict[str, dict[str, str | None]] = {t: {} for t in tasks}
        for col, value in row.items():
            if col in ("participant_id", "task") or col is None:
                continue
            parts = (value or "").split(",")
            # A single value is shared by all tasks; a list must line up with the tasks.
            if len(parts) == 1:
                parts = parts * len(tasks)
            if len(parts) != len(tasks):
                raise ValueError(f"{path}:{line}: {sub} lists {len(tasks)} task(s) but {len(parts)} "
                                 f"comma-separated {col!r} value(s)")
            for t, v in zip(tasks, parts):
                per_task[t][col] = _cell(v)
        if sub in out:
            raise ValueError(f"{path}:{line}: {sub} is listed twice")
        out[sub] = per_task
    return out


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(stimuli.read_utf8(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def _audio_name(stim_file: str | None) -> str | None:
    stim = _cell(stim_file)
    if stim is None:
        return None
    name = Path(stim).name.split(".")[0]
    return name[: -len("_audio")] if name.endswith("_audio") else name


def _gentle_for(audio: str | None, task: str, condition: str | None, gentle: frozenset[str]) -> str | None:
    # The stim_file names the audio exactly (milkywayvodka, friends, notthefalllongscram);
    # only without it do we guess from task + condition (milkyway+synonyms) or the task.
    if audio is not None:
        return audio if audio in gentle else None
    for cand in ((task + condition) if condition else None, task):
        if cand and cand in gentle:
            return cand
    return None


def _num(row: dict, col: str, path: Path) -> float:
    try:
        return float(row[col])
    except (TypeError, ValueError):
        raise ValueError(f"{path}: {col} {row[col]!r} is not a number") from None


def _check_onsets(path: Path, rows) -> None:
    """Onsets are seconds from the scan's first volume: a negative one places the story before
    the scan (a wrong unit or reference), which would shift every word of it."""
    for line, row in enumerate(rows, start=2):
        onset = _num(row, "onset", path)
        if not (math.isfinite(onset) and onset >= 0):
            raise ValueError(f"{path}:{line}: onset {row['onset']!r} must be seconds >= 0 from the scan's start")


def _stories_from_events(path: Path, rows, tr, task, condition, meta_task, gentle) -> list[Story]:
    story_rows = sorted((r for r in rows if (r.get("trial_type") or "").strip() == "story"),
                        key=lambda r: _num(r, "onset", path))
    if not story_rows:
        return []
    # Names: event_meta when it splits the scan into several stories (slumlordreach), else
    # the audio file (schema plays a different file per story), else the task.
    meta_names = [k for k, _ in sorted(meta_task.items(), key=lambda kv: float(kv[1]["onset"]))]
    if len(meta_names) > 1 and len(meta_names) != len(story_rows):
        raise ValueError(f"{path}: {len(story_rows)} story row(s) but code/event_meta.json splits task "
                         f"{task!r} into {len(meta_names)} stories ({', '.join(meta_names)})")
    first_onset = {}
    for r in rows:  # the audio file starts with its first event (music often precedes the story)
        first_onset.setdefault(_audio_name(r.get("stim_file")), _num(r, "onset", path))
    stories = []
    for i, r in enumerate(story_rows):
        audio = _audio_name(r.get("stim_file"))
        name = meta_names[i] if len(meta_names) > 1 else (audio or task)
        onset, duration = _num(r, "onset", path), _num(r, "duration", path)
        a_onset = first_onset.get(audio, _num(rows[0], "onset", path))
        stories.append(Story(name, onset, duration, to_trs(onset, tr), to_trs(duration, tr), audio, a_onset,
                             _gentle_for(audio, task, condition, gentle), "events"))
    return stories


def _stories_from_meta(meta_task, tr, task, condition, gentle, audio_onset) -> list[Story]:
    out = []
    g = _gentle_for(None, task, condition, gentle)
    for name, m in sorted(meta_task.items(), key=lambda kv: float(kv[1]["onset"])):
        on, n = int(m["onset"]), int(m["duration"])
        out.append(Story(name, on * tr, n * tr, on, n, None, audio_onset, g, "event_meta"))
    return out


def _scan_audio_onset(events: Path | None, rows, stories) -> float | None:
    """`stimuli.audio_onset` (the first event) when every story plays from the audio file
    that starts with that first event; None when they do not (schema: a movie comes first
    and each story has its own file, so use `Story.audio_onset`)."""
    if events is None or not rows:
        return None
    if not {s.audio for s in stories} <= {_audio_name(rows[0].get("stim_file"))}:
        return None
    return stimuli.audio_onset(events)


@dataclasses.dataclass(frozen=True, eq=False)
class Narratives:
    """A Narratives BIDS dataset's metadata (see the module docstring). Build with
    `load_dataset(root)`.

    Reports (never errors, since they are facts of the release):
    `unscanned`: (subject, task) pairs participants.tsv lists without a scan file;
    `subjects_without_scans`: listed subjects with no scan at all;
    `unlisted`: scan stems whose subject/task participants.tsv does not list (condition None);
    `unmatched_exclusions`: scan_exclude.json stems that match no scan file;
    `unparsed`: `_bold.json` files whose name is not sub-X_task-Y[_run-N]_bold.json.
    """

    root: Path
    all_scans: tuple[Scan, ...]
    participants: Mapping[str, Mapping[str, Mapping[str, str | None]]]
    event_meta: Mapping[str, Mapping[str, Mapping[str, int]]]
    gentle_stories: tuple[str, ...]
    unscanned: tuple[tuple[str, str], ...]
    subjects_without_scans: tuple[str, ...]
    unlisted: tuple[str, ...]
    unmatched_exclusions: tuple[str, ...]
    unparsed: tuple[Path, ...]

    @property
    def subjects(self) -> tuple[str, ...]:
        """Every subject in participants.tsv, scanned or not."""
        return tuple(sorted(self.participants))

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(sorted({s.task for s in self.all_scans}))

    @property
    def excluded(self) -> tuple[Scan, ...]:
        return tuple(s for s in self.all_scans if s.excluded)

    @property
    def gentle_dir(self) -> Path:
        return self.root / "stimuli" / "gentle"

    def counts(self, include_excluded: bool = False) -> dict[str, int]:
        """task -> number of scans."""
        c = Counter(s.task for s in self.all_scans if include_excluded or not s.excluded)
        return dict(sorted(c.items()))

    def scans(self, task: str | Iterable[str] | None = None, subjects: str | int | Iterable[str | int] | None = None,
              include_excluded: bool = False, condition: str | None = None,
              story: str | None = None) -> tuple[Scan, ...]:
        """Scans matching every given filter, in (subject, task, run) order.

        `subjects` takes "sub-001", "001" or 1; `story` matches a story name, audio or
        alignment name (e.g. "reach", "friends", "milkywaysynonyms"). Raises ValueError when
        nothing matches, saying what was asked and why nothing is left.
        """
        tasks = _as_set(task)
        subs = None if subjects is None else {_subject_id(s) for s in _as_list(subjects)}
        asked = ", ".join(f"{k}={v!r}" for k, v in (("task", task), ("subjects", subjects), ("condition", condition),
                                                     ("story", story)) if v is not None) or "all scans"
        if tasks is not None and not tasks & set(self.tasks):
            raise ValueError(f"no scan for {asked}: unknown task(s) {sorted(tasks)}; known: {', '.join(self.tasks)}")
        hits = [s for s in self.all_scans
                if (tasks is None or s.task in tasks) and (subs is None or s.subject in subs)
                and (condition is None or s.condition == condition)
                and (story is None or find_story(s.stories, story) is not None)]
        kept = [s for s in hits if include_excluded or not s.excluded]
        if not kept:
            why = (f"all {len(hits)} matching scan(s) are excluded by code/scan_exclude.json "
                   "(pass include_excluded=True to get them)" if hits else "no scan file matches")
            raise ValueError(f"no scan for {asked}: {why}")
        return tuple(kept)

    def scan(self, subject: str | int, task: str, run: int | None = None, include_excluded: bool = True) -> Scan:
        """The one scan of `subject` for `task` (and `run` where the task has runs)."""
        hits = [s for s in self.scans(task=task, subjects=subject, include_excluded=include_excluded)
                if run is None or s.run == run]
        if len(hits) != 1:
            have = ", ".join(s.stem for s in hits) or "none"
            raise ValueError(f"{len(hits)} scans for subject={subject!r} task={task!r} run={run!r} "
                             f"(found: {have}); pass run= to pick one")
        return hits[0]

    def alignment_name(self, name: str) -> str | None:
        """The alignment folder (under stimuli/gentle) for a story, audio, alignment or task
        name: `name` itself when it is a folder, else that of the first story (in scan order)
        it names or of a story of task `name`; None when none has an alignment."""
        if name in self.gentle_stories:
            return name
        return next((st.gentle for sc in self.all_scans for st in sc.stories
                     if st.gentle and (story_named(st, name) or sc.task == name)), None)

    def alignment(self, story: Story, on_unsorted: str = "error") -> stimuli.Transcript:
        """The story's Gentle alignment (`stimuli.story_alignment`); times stay relative to the
        audio, so add `story.audio_onset` for scan seconds."""
        if story.gentle is None:
            raise ValueError(f"story {story.name!r} (audio {story.audio!r}) has no alignment under {self.gentle_dir}")
        return stimuli.story_alignment(self.gentle_dir, story.gentle, on_unsorted=on_unsorted)

    def summary(self) -> str:
        n_ex = len(self.excluded)
        lines = [f"Narratives at {self.root}: {len(self.participants)} subjects, {len(self.all_scans)} scans "
                 f"({n_ex} excluded) over {len(self.tasks)} tasks"]
        lines += [f"  {t}: {n}" for t, n in self.counts().items()]
        for label, items in (("listed without a scan", [f"{s} {t}" for s, t in self.unscanned]),
                             ("subjects without scans", self.subjects_without_scans),
                             ("scans not in participants.tsv", self.unlisted),
                             ("exclusions matching no file", self.unmatched_exclusions),
                             ("unparsed sidecars", [str(p) for p in self.unparsed])):
            if items:
                lines.append(f"  {label}: {', '.join(items)}")
        return "\n".join(lines)


def _as_list(x) -> list:
    return [x] if isinstance(x, (str, int)) else list(x)


def _as_set(x) -> set[str] | None:
    return None if x is None else set(_as_list(x))


def _subject_id(s: str | int) -> str:
    if isinstance(s, int):
        return f"sub-{s:03d}"
    return s if s.startswith("sub-") else f"sub-{s}"


def _freeze(d):
    return types.MappingProxyType({k: _freeze(v) for k, v in d.items()}) if isinstance(d, dict) else d


def load_dataset(root: str | Path) -> Narratives:
    """Read a Narratives BIDS folder's metadata (no images). See `Narratives`."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root not found: {root}")
    for name in ("participants.tsv", "dataset_description.json"):
        if not (root / name).is_file():
            raise FileNotFoundError(f"{root} is not a BIDS dataset root: {name} is missing")
    participants = _read_participants(root / "participants.tsv")
    event_meta = _read_json(root / "code" / "event_meta.json")
    exclude = _read_json(root / "code" / "scan_exclude.json")
    gentle = frozenset(stimuli.alignment_names(root / "stimuli" / "gentle"))

    scans, unparsed, unlisted, used_stems = [], [], [], set()
    for sidecar in sorted(root.glob("sub-*/func/*_bold.json")):
        m = _BOLD_RE.match(sidecar.name)
        if m is None or m.group(1) != sidecar.parent.parent.name:
            unparsed.append(sidecar)
            continue
        sub, task, run = m.group(1), m.group(2), m.group(3)
        stem = sidecar.name[: -len("_bold.json")]
        listed = participants.get(sub, {}).get(task)
        if listed is None:
            unlisted.append(stem)
        condition = (listed or {}).get("condition")
        try:
            tr = stimuli.read_tr(sidecar)
        except json.JSONDecodeError as e:
            raise ValueError(f"{sidecar}: not valid JSON ({e})") from None
        events = sidecar.with_name(f"{stem}_events.tsv")
        events = events if events.is_file() else None
        rows = _read_tsv(events) if events else []
        if events and rows and not {"onset", "duration"} <= set(rows[0]):
            raise ValueError(f"{events}: needs 'onset' and 'duration' columns, has {', '.join(rows[0])}")
        _check_onsets(events, rows)
        meta_task = event_meta.get(task, {})
        stories = _stories_from_events(events, rows, tr, task, condition, meta_task, gentle) if rows else []
        if not stories:
            first = _num(rows[0], "onset", events) if rows else None
            stories = _stories_from_meta(meta_task, tr, task, condition, gentle, first)
        # A stem excludes a file when it is a substring of its name; stems only act within
        # their own task, so "sub-021_task-pieman" cannot catch sub-021's piemanpni scan.
        hit = next((st for st in exclude.get(task, {}).get(sub, []) if st in sidecar.name), None)
        if hit is not None:
            used_stems.add((task, sub, hit))
        scans.append(Scan(sub, task, None if run is None else int(run), condition, tr, tuple(stories),
                          _scan_audio_onset(events, rows, stories), hit, stem, root, events))

    scans.sort(key=lambda s: (s.subject, s.task, s.run or 0))
    have = {(s.subject, s.task) for s in scans}
    unscanned = tuple(sorted((sub, t) for sub, ts in participants.items() for t in ts if (sub, t) not in have))
    scanned_subs = {s.subject for s in scans}
    unmatched = tuple(sorted(st for t, subs in exclude.items() for sub, stems in subs.items() for st in stems
                             if (t, sub, st) not in used_stems))
    return Narratives(root, tuple(scans), _freeze(participants), _freeze(event_meta), tuple(sorted(gentle)),
                      unscanned, tuple(s for s in sorted(participants) if s not in scanned_subs),
                      tuple(unlisted), unmatched, tuple(unparsed))
