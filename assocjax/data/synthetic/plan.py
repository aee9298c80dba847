"""What a synthetic dataset holds: its stories, subjects, scans and metadata files.

`plan_generated` invents them (Zipf-ish pseudo-word stories with Poisson onsets, a few
untimed words, every third subject hearing one story only, one excluded scan);
`plan_from_metadata` copies a real Narratives release's stories, events, sidecars and
alignments. Either way the result is a `Plan`: the metadata files' bytes and the scans whose
images the writer then synthesises.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from pathlib import Path

import numpy as np

from ...stimuli import audio_onset, read_gentle_csv, read_tr
from .config import SyntheticConfig
from .model import PEOPLE_STREAM, STORY_STREAM, VOCAB_STREAM, normalize_word, pseudo_words

PARTICIPANT_COLUMNS = ("participant_id", "age", "sex", "task", "condition", "comprehension")


@dataclasses.dataclass
class PlannedScan:
    """One scan to synthesise: its BIDS names, timing, story window (TRs) and exclusion."""

    subject: str
    task: str
    stem: str
    tr: float
    audio_onset: float
    n_trs: int
    window: tuple[int, int]
    excluded: bool


@dataclasses.dataclass
class Plan:
    """The metadata files (relative path -> bytes), the scans, the tasks and the vocabulary."""

    files: dict[str, bytes]
    scans: list[PlannedScan]
    tasks: list[str]
    vocabulary: list[str]


def _story_csv(vocab, cfg: SyntheticConfig, rng, start_s: float, end_s: float) -> str:
    """Gentle align.csv text: Zipf-ish words, Poisson onsets, sentence capitals, a few untimed words."""
    p = 1.0 / np.arange(1, len(vocab) + 1) ** 0.8
    gaps = rng.exponential(1.0 / cfg.words_per_second, int(cfg.words_per_second * (end_s - start_s) * 2) + 20) + 0.05
    onsets = start_s + np.cumsum(gaps)
    onsets, gaps = onsets[onsets < end_s], gaps[1:][: (onsets < end_s).sum()]
    words = [vocab[i] for i in rng.choice(len(vocab), size=onsets.size, p=p / p.sum())]
    inner = np.arange(1, max(onsets.size - 1, 1))  # first and last words keep their times
    untimed = set(rng.choice(inner, min(inner.size, int(cfg.untimed_fraction * onsets.size)), replace=False).tolist())
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    left = 0
    for i, (w, t) in enumerate(zip(words, onsets)):
        if left == 0:
            w, left = w.capitalize(), int(rng.geometric(1 / 10))
        left -= 1
        dur = min(0.9 * gaps[i], rng.uniform(0.15, 0.5))
        writer.writerow([w, "", "", ""] if i in untimed else [w, w.lower(), f"{t:.2f}", f"{t + dur:.2f}"])
    return buf.getvalue()


def _events_tsv(rows) -> bytes:
    lines = ["onset\tduration\ttrial_type\tstim_file"] + ["\t".join(map(str, r)) for r in rows]
    return ("\n".join(lines) + "\n").encode()


def _participants_tsv(rows: list[dict]) -> bytes:
    lines = ["\t".join(PARTICIPANT_COLUMNS)] + ["\t".join(r[c] for c in PARTICIPANT_COLUMNS) for r in rows]
    return ("\n".join(lines) + "\n").encode()


def json_bytes(obj, indent=2) -> bytes:
    return (json.dumps(obj, indent=indent, sort_keys=True) + "\n").encode()


def plan_generated(cfg: SyntheticConfig) -> Plan:
    seed, tr = cfg.seed, cfg.tr
    tasks = list(cfg.stories) or [f"story{chr(ord('a') + i)}" for i in range(cfg.n_stories)]
    story_onset = cfg.lead_trs * tr
    vocab = pseudo_words(cfg.vocab_size, np.random.default_rng([seed, VOCAB_STREAM]))
    n_trs = cfg.lead_trs + cfg.story_trs + cfg.tail_trs
    window = (cfg.lead_trs, cfg.lead_trs + cfg.story_trs)
    files: dict[str, bytes] = {}
    for i, task in enumerate(tasks):
        rng = np.random.default_rng([seed, STORY_STREAM, i])
        audio_start = story_onset - cfg.audio_onset  # story start on the audio's clock
        files[f"stimuli/gentle/{task}/align.csv"] = _story_csv(
            vocab, cfg, rng, audio_start + 0.3, audio_start + cfg.story_trs * tr - 0.5).encode()
    # Every third subject hears a single story; the others hear them all (comma-joined rows).
    heard = {j: [tasks[(j // 3) % len(tasks)]] if j % 3 == 2 else list(tasks) for j in range(cfg.n_subjects)}
    first_of_last = next(j for j in range(cfg.n_subjects) if tasks[-1] in heard[j])
    rng = np.random.default_rng([seed, PEOPLE_STREAM])
    rows, scans, exclude = [], [], {t: {} for t in tasks}
    for j in range(cfg.n_subjects + 1):
        sid = f"sub-{j + 1:03d}"
        mine = heard.get(j, tasks[:1])  # the extra last subject is listed but has no scans
        age, sex = str(rng.integers(18, 40)), str(rng.choice(["F", "M"]))
        rows.append(dict(participant_id=sid, age=",".join([age] * len(mine)), sex=",".join([sex] * len(mine)),
                         task=",".join(mine), condition=",".join(["n/a"] * len(mine)),
                         comprehension=",".join(["n/a"] * len(mine))))
        if j == cfg.n_subjects:
            continue
        for task in mine:
            stem = f"{sid}_task-{task}"
            excluded = j == first_of_last and task == tasks[-1]
            if excluded:
                exclude[task][sid] = [stem]
            files[f"{sid}/func/{stem}_bold.json"] = json_bytes(dict(
                RepetitionTime=tr, TaskName=task, TaskDescription=f"Passively listened to audio story '{task}'",
                Manufacturer="assocjax synthetic"))
            files[f"{sid}/func/{stem}_events.tsv"] = _events_tsv([
                (cfg.audio_onset, cfg.music_seconds, "music", f"{task}_audio.wav"),
                (story_onset, cfg.story_trs * tr, "story", f"{task}_audio.wav")])
            scans.append(PlannedScan(sid, task, stem, tr, cfg.audio_onset, n_trs, window, excluded))
    files["participants.tsv"] = _participants_tsv(rows)
    files["code/scan_exclude.json"] = json_bytes(exclude)
    files["code/event_meta.json"] = json_bytes(
        {t: {t: dict(onset=cfg.lead_trs, duration=cfg.story_trs)} for t in tasks})
    files["dataset_description.json"] = json_bytes(dict(
        Name="Narratives (synthetic)", BIDSVersion="1.2.1", License="CC0",
        GeneratedBy=[dict(Name="assocjax.data.synthetic", Description="generated stories, subjects and images")]))
    return Plan(files, scans, tasks, vocab)


# ---------------------------------------------------------------- copying the real metadata

def _read_participants(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _only_tasks(row: dict, keep: list[str]) -> dict:
    """A participants row cut down to the given tasks (per-task columns are comma-joined)."""
    tasks = row["task"].split(",")
    idx = [i for i, t in enumerate(tasks) if t in keep]
    out = dict(row)
    for col in PARTICIPANT_COLUMNS[1:]:
        vals = row[col].split(",")
        if len(vals) == len(tasks):
            out[col] = ",".join(vals[i] for i in idx)
    return out


def plan_from_metadata(cfg: SyntheticConfig) -> Plan:
    src = Path(cfg.from_metadata)
    meta = json.loads((src / "code/event_meta.json").read_text())
    excl = json.loads((src / "code/scan_exclude.json").read_text())
    people = _read_participants(src / "participants.tsv")
    tasks = list(cfg.stories)
    if not tasks:
        raise ValueError("from_metadata needs stories=[...] (task names such as pieman, tunnel)")
    known = sorted(t for t in meta if (src / "stimuli/gentle" / t / "align.csv").is_file())
    files: dict[str, bytes] = {}
    scans, chosen_tasks, exclude = [], {}, {}
    for task in tasks:
        if task not in known:
            raise ValueError(f"story {task!r} has no event_meta entry or align.csv in {src}; known: {', '.join(known)}")
        files[f"stimuli/gentle/{task}/align.csv"] = (src / "stimuli/gentle" / task / "align.csv").read_bytes()
        bad = excl.get(task, {})
        exclude[task] = {}
        meta_on = min(s["onset"] for s in meta[task].values())
        meta_end = max(s["onset"] + s["duration"] for s in meta[task].values())
        n_chosen = 0
        for row in people:
            sid = row["participant_id"]
            if task not in row["task"].split(","):
                continue
            sidecars = sorted((src / sid / "func").glob(f"{sid}_task-{task}_*bold.json"))
            stems = [p.name[: -len("_bold.json")] for p in sidecars]
            # A subject whose scans are all excluded gives a loader nothing: take the next one.
            if not stems or all(s in bad.get(sid, []) for s in stems):
                continue
            n_chosen += 1
            chosen_tasks.setdefault(sid, []).append(task)
            if sid in bad:
                exclude[task][sid] = [s for s in bad[sid] if s in stems]
            for stem in stems:
                for suffix in ("_bold.json", "_events.tsv"):
                    files[f"{sid}/func/{stem}{suffix}"] = (src / sid / "func" / f"{stem}{suffix}").read_bytes()
                tr = read_tr(src / sid / "func" / f"{stem}_bold.json")
                onset = audio_onset(src / sid / "func" / f"{stem}_events.tsv")
                with open(src / sid / "func" / f"{stem}_events.tsv", newline="") as f:
                    ev_end = max(float(r["onset"]) + float(r["duration"]) for r in csv.DictReader(f, delimiter="\t"))
                n_trs = max(meta_end, math.ceil(ev_end / tr - 1e-6)) + cfg.tail_trs
                scans.append(PlannedScan(sid, task, stem, tr, onset, n_trs, (meta_on, meta_end), stem in bad.get(sid, [])))
            if n_chosen == cfg.n_subjects:
                break
        if n_chosen == 0:
            raise ValueError(f"story {task!r}: no subject with a usable (not excluded) scan in {src}")
    rows = [_only_tasks(r, chosen_tasks[r["participant_id"]]) for r in people if r["participant_id"] in chosen_tasks]
    files["participants.tsv"] = _participants_tsv(rows)
    files["code/event_meta.json"] = json_bytes({t: meta[t] for t in tasks})
    files["code/scan_exclude.json"] = json_bytes(exclude)
    if (src / "participants.json").is_file():
        files["participants.json"] = (src / "participants.json").read_bytes()
    desc = json.loads((src / "dataset_description.json").read_text())
    desc["Name"] = f"{desc.get('Name', 'Narratives')} (synthetic images)"
    desc["GeneratedBy"] = [dict(Name="assocjax.data.synthetic",
                                Description="real metadata and alignments; generated images")]
    files["dataset_description.json"] = json_bytes(desc, indent=4)
    vocab = sorted({normalize_word(w) for t in tasks
                    for w in read_gentle_csv(src / "stimuli/gentle" / t / "align.csv", on_unsorted="sort").words})
    return Plan(files, scans, tasks, vocab)
