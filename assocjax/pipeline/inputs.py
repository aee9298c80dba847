"""Resolve and check every input before any long computation.

A run scores the selected stories in fit groups: by default each story on its own with every
subject who heard it (`Selection.groups`: one design and one ridge solve per story, its
listeners sharing it); with `--data.pool-stories` all selected stories together, with the
subjects who heard every one of them. Each error names the thing that is wrong (path,
story, subject, layer) and what would be valid. Listeners split by condition (prettymouth's
affair / paranoia) are a fit group per condition unless `--data.pool-conditions`
(`conditions`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .. import augment, stimuli
from ..augment import lookahead
from ..data import Narratives, Scan, Story, load_dataset, read_scans
from ..data.layout import _subject_id, find_stories, find_story, split_commas
from ..data.narratives import VOLUME_SPACE
from ..models.config import ModelConfig
from ..models.loading import check_weights, resolve
from . import conditions, delays, volume_atlas
from .config import ScoreConfig

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


@dataclasses.dataclass(frozen=True)
class StoryDesign:
    """A story's words and the scan timing its design is built on (the first subject's)."""

    name: str
    transcript: stimuli.Transcript
    word_times: np.ndarray  # (W,) word midpoints, scan seconds in the reference scan
    audio_onset: float
    onset_tr: int
    n_trs: int
    tr: float
    scan_end_tr: int = 0  # where the last story of the scan ends (slumlordreach: two stories share one alignment)

    @property
    def text_source(self) -> str:
        """What the model reads for this story: "transcript.txt" (punctuated) or "alignment words"."""
        return self.transcript.text_source

    @property
    def scan_trs(self) -> int:
        """Design rows: scan TRs up to the story's end (the story is the last n_trs)."""
        return self.onset_tr + self.n_trs

    @property
    def shift(self) -> float:
        """Where the audio starts relative to the story's first TR, in seconds."""
        return self.audio_onset - self.onset_tr * self.tr


@dataclasses.dataclass(frozen=True)
class Selection:
    dataset: Narratives
    stories: tuple[StoryDesign, ...]
    subjects: tuple[str, ...]
    scans: dict                          # (subject, story name) -> (Scan, Story)
    kind: str                            # "surface" | "volume"
    space: str
    hemi: str
    derivative: str
    atlas: tuple[Path, ...] | None       # lh, rh annot or label.gii; a volume's: `volume_atlas.resolve`
    model_folder: Path
    model_cfg: ModelConfig
    layers: tuple[int, ...]
    context: int
    stride: int
    notes: tuple[str, ...]
    listeners: dict = dataclasses.field(default_factory=dict)   # story name -> its subjects (sorted)
    pooled: bool = False
    pool_conditions: bool = False
    condition: str | None = None        # a fit group of one listener condition: its label (`conditions`)

    def groups(self) -> list["Selection"]:
        """The fit groups, each a Selection of its own: one per story with its listeners, or
        (pooled) one of all stories with the subjects who heard every one; either split by
        listener condition (`conditions.split`)."""
        whole = [self] if self.pooled or len(self.stories) == 1 else [self.only(s.name) for s in self.stories]
        return [part for g in whole for part in conditions.split(g)]

    def only(self, story: str) -> "Selection":
        subjects = self.listeners[story]
        return dataclasses.replace(self, stories=tuple(s for s in self.stories if s.name == story), subjects=subjects,
                                   scans={(sub, story): self.scans[(sub, story)] for sub in subjects},
                                   listeners={story: subjects})

    @property
    def story_name(self) -> str:
        """Its story, or its stories joined by '+'."""
        return "+".join(s.name for s in self.stories)

    @property
    def name(self) -> str:
        """The group's name in tables and caches: `story_name`, then "." and its listeners' condition
        when it is one condition's group ("prettymouth.affair")."""
        return self.story_name + (f".{self.condition}" if self.condition else "")


def resolve_model(path: str, hub: bool = False) -> tuple[Path, ModelConfig]:
    """The model folder and its config, checked from the files' headers (config fields,
    every tensor's name, shape and dtype, files complete) before any long work."""
    folder = resolve(path, hub)
    cfg = check_weights(folder)
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise FileNotFoundError(f"{folder}: no tokenizer files (looked for {', '.join(TOKENIZER_FILES)})")
    return folder, cfg


def resolve_layers(asked, cfg: ModelConfig, where: str) -> tuple[int, ...]:
    n = cfg.n_layers + 1
    if not asked:
        return tuple(range(n))
    bad = [l for l in asked if not -n <= l < n]
    if bad:
        raise ValueError(f"--features.layers {bad} out of range: {where} has hidden states 0..{n - 1} "
                         f"(0 = embeddings, {n - 1} = after the final norm; negative counts from the end)")
    return tuple(sorted({l % n for l in asked}))


def resolve_window(context, stride, cfg: ModelConfig) -> tuple[int, int]:
    context = context or min(1024, cfg.max_positions)
    if not 0 < context <= cfg.max_positions:
        raise ValueError(f"--features.context {context} must be in 1..{cfg.max_positions} (the model's positions)")
    stride = stride or max(context // 2, 1)
    if not 0 < stride <= context:
        raise ValueError(f"--features.stride {stride} must be in 1..{context} (the context)")
    return context, stride


# --data.atlas names and where they live: FreeSurfer annots under derivatives/freesurfer/<space>/
# label, HCP-MMP label.gii (Narratives: derivatives/afni-*/tpl-fsaverage6/) under a derivative.
ANNOT_ATLASES = ("aparc.a2009s", "synthetic")
MMP = "mmp"


def _mmp_pair(root: Path, space: str, derivative: str, is_file=Path.is_file
              ) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """(existing (lh, rh) HCP-MMP label.gii pairs, the folders looked in), the run's derivative first;
    `is_file` says what exists (the fetch plan asks the server's listing)."""
    folders = [root / "derivatives" / d / f"tpl-{space}" for d in dict.fromkeys((derivative, "afni-nosmooth",
                                                                                  "afni-smooth"))]
    pairs = [tuple(f / f"tpl-{space}_hemi-{h}_desc-MMP_dseg.label.gii" for h in "LR") for f in folders]
    return [p for p in pairs if all(is_file(x) for x in p)], folders


def _atlas(root: Path, space: str, name: str, derivative: str = "afni-nosmooth", is_file=Path.is_file
           ) -> tuple[tuple[Path, Path] | None, str | None]:
    """(lh, rh) atlas files for --data.atlas `name` ("auto": the first of aparc.a2009s,
    synthetic, mmp found; "none"), or (None, a note) when auto finds none."""
    if name == "none":
        return None, None
    label = root / "derivatives" / "freesurfer" / space / "label"
    for cand in (ANNOT_ATLASES + (MMP,) if name == "auto" else (name,)):
        if cand == MMP:
            found, folders = _mmp_pair(root, space, derivative, is_file)
            if found:
                return found[0], None
            if name != "auto":
                raise FileNotFoundError(f"--data.atlas mmp: no tpl-{space}_hemi-L/R_desc-MMP_dseg.label.gii pair in "
                                        f"{', '.join(str(f) for f in folders)}")
            continue
        pair = (label / f"lh.{cand}.annot", label / f"rh.{cand}.annot")
        if all(is_file(p) for p in pair):
            return pair, None
        if name != "auto":
            missing = next(p for p in pair if not is_file(p))
            raise FileNotFoundError(f"--data.atlas {name}: annot not found: {missing}")
    return None, f"no atlas under {label} or derivatives/*/tpl-{space}: whole-cortex scores only"


def select(cfg: ScoreConfig, root: Path, model_path: str, default_space: str) -> Selection:
    """Check the model, layers, dataset, stories, subjects and images; see module docstring."""
    folder, mcfg = resolve_model(model_path, cfg.model.hub)
    layers = resolve_layers(cfg.features.layers, mcfg, str(folder))
    context, stride = resolve_window(cfg.features.context, cfg.features.stride, mcfg)
    d = cfg.data
    ds, scans, subjects = _scans(d, root)
    space = d.space or default_space
    kind = "volume" if space == VOLUME_SPACE else "surface"
    reader = _images(d, root, scans, space, kind)
    notes = [f"skipped (no image): {m}" for m in reader.missing]
    table, more = _stories_by_subject(reader.scans)
    names = _story_names(d, table)
    designs, listeners, skipped = _listeners(ds, table, names, subjects, d.on_unsorted, d.pool_stories)
    atlas, note = (_atlas(root, space, d.atlas, d.derivative) if kind == "surface"
                   else volume_atlas.resolve(root, space, d.atlas))
    stories = tuple(designs[n] for n in names)
    notes += more + skipped + ([note] if note else []) + _check_words_outside(stories, d.max_words_outside)
    _check_delays(stories, cfg)
    every = tuple(sorted({sub for subs in listeners.values() for sub in subs}))
    return Selection(dataset=ds, stories=stories, subjects=every,
                     scans={(s, n): table[s][n] for n, subs in listeners.items() for s in subs}, kind=kind,
                     space=space, hemi=d.hemi if kind == "surface" else "both", derivative=d.derivative, atlas=atlas,
                     model_folder=folder, model_cfg=mcfg, layers=layers, context=context, stride=stride,
                     notes=tuple(notes), listeners=listeners, pooled=d.pool_stories,
                     pool_conditions=d.pool_conditions)


def _scans(d, root: Path):
    """(dataset, its scans of the asked tasks and subjects, the asked subjects)."""
    ds = load_dataset(root)
    tasks = [t for t in split_commas(d.tasks) if t != "all"]
    unknown = sorted(set(tasks) - set(ds.tasks))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown} in {root}; known: {', '.join(ds.tasks)}")
    subjects = [_subject_id(s) for s in split_commas(d.subjects)]
    unknown = sorted(set(subjects) - set(ds.subjects))
    if unknown:
        raise ValueError(f"unknown subject(s) {unknown} in {root}; known: {_short(ds.subjects)}")
    return ds, ds.scans(task=list(tasks) or None, subjects=subjects or None, include_excluded=d.include_excluded), subjects


def _images(d, root: Path, scans, space: str, kind: str):
    """The scans whose images exist (a reader; missing ones listed), or an error naming the spaces there are."""
    kw = dict(derivative=d.derivative, space=space) | (dict(hemi=d.hemi) if kind == "surface" else {})
    try:
        return read_scans(scans, kind, on_missing="warn", **kw)
    except FileNotFoundError as e:  # none left: say which spaces there are instead of listing every file
        func = root / "derivatives" / d.derivative / scans[0].subject / "func"
        have = sorted({p.name.split("_space-")[1].split("_")[0] for p in func.glob(f"{scans[0].stem}_space-*")})
        raise FileNotFoundError(f"no {d.derivative} {kind} images in space {space!r} for the {len(scans)} selected "
                                f"scans; {scans[0].stem} has spaces: {', '.join(have) or 'none'} (--data.space)") from e


def _stories_by_subject(scans) -> tuple[dict[str, dict[str, tuple[Scan, Story]]], list[str]]:
    """subject -> story name -> (its first scan holding the story, the story); notes on repeats."""
    table: dict[str, dict[str, tuple[Scan, Story]]] = {}
    notes = []
    for scan in scans:
        for st in scan.stories:
            mine = table.setdefault(scan.subject, {})
            if st.name in mine:
                notes.append(f"{scan.subject}: story {st.name!r} in several scans; using {mine[st.name][0].stem}")
                continue
            mine[st.name] = (scan, st)
    return table, notes


def _story_names(d, table) -> list[str]:
    """The selected stories' names (all stories of the selected scans when none are asked)."""
    found = {st.name: st for per in table.values() for _, st in per.values()}
    wanted = split_commas(d.stories)
    unknown = [w for w in wanted if find_story(found.values(), w) is None]
    if unknown:
        raise ValueError(f"unknown story/stories {unknown} among the selected scans; known: {', '.join(sorted(found))}")
    return sorted(s.name for s in find_stories(found.values(), *wanted)) if wanted else sorted(found)


def _listeners(ds, table, names, subjects, on_unsorted, pooled: bool):
    """(story designs, story -> its listeners, notes on the subjects left out and why).

    A listener has a usable scan of the story whose timing agrees with the story's design
    (the timing most listeners share: `_reference`). Pooled: only subjects with every story
    count, for every story. An asked-for subject who cannot be used at all is an error."""
    designs, usable, notes = {}, {n: [] for n in names}, []
    candidates = sorted(set(subjects) | {s for s, mine in table.items() if set(names) & set(mine)})
    for n in names:
        placed = [table[sub][n] for sub in candidates if n in table.get(sub, {}) and _no_onset(*table[sub][n]) is None]
        if placed:
            designs[n] = _design(ds, *_reference(n, placed), on_unsorted)
    for sub in candidates:
        problems = {}
        for n in names:
            if n not in table.get(sub, {}):
                problems[n] = "no usable scan"
                continue
            scan, st = table[sub][n]
            problem = _no_onset(scan, st) or _timing_mismatch(designs[n], scan, st)
            if problem:
                problems[n] = problem
            else:
                usable[n].append(sub)
        if pooled and problems:
            for n in names:
                if sub in usable[n]:
                    usable[n].remove(sub)
            if sub in subjects:
                raise ValueError(f"subject {sub}: " + "; ".join(f"{n}: {p}" for n, p in problems.items())
                                 + f" (stories fitted together: {', '.join(names)})")
            notes.append(f"skipped {sub} (stories are pooled): " + "; ".join(f"{n}: {p}" for n, p in problems.items()))
        elif problems and sub in subjects and len(problems) == len(names):
            raise ValueError(f"subject {sub}: " + "; ".join(f"{n}: {p}" for n, p in problems.items()))
        else:
            notes += [f"{sub} not used for {n}: {p}" for n, p in problems.items() if n in table.get(sub, {})]
    empty = [n for n in names if not usable[n]]
    if empty:
        counts = ", ".join(f"{n}: {sum(n in t for t in table.values())}" for n in names)
        how = ("no subject has a usable scan of every selected story" if pooled
               else f"no usable listener for {empty}")
        raise ValueError(f"{how} ({counts} subjects with a scan); choose stories and subjects with "
                         "--data.stories / --data.subjects")
    return designs, {n: tuple(usable[n]) for n in names}, notes


def words_outside(story: StoryDesign) -> tuple[int, int]:
    """(words before the scan starts, words after the scan's last story ends): a large share
    means times in the wrong unit or the wrong events.tsv. (Words after this story's end but
    within the scan belong to the story that follows in it, as in slumlordreach.)"""
    t = np.asarray(story.word_times)
    return int(np.sum(t < 0)), int(np.sum(t >= max(story.scan_end_tr, story.scan_trs) * story.tr))


def _check_words_outside(stories, max_share: float) -> list[str]:
    notes = []
    for s in stories:
        before, after = words_outside(s)
        n = len(s.word_times)
        if before + after > max_share * n:
            raise ValueError(
                f"story {s.name!r} ({s.transcript.source}): {before + after} of its {n} words fall outside its scan "
                f"({before} before the scan starts, {after} after its stories end at "
                f"{max(s.scan_end_tr, s.scan_trs) * s.tr:.1f} s; "
                f"word times run {np.min(s.word_times):.1f}..{np.max(s.word_times):.1f} s). Times in milliseconds, or "
                f"the wrong events.tsv? --data.max-words-outside {max_share} allows at most {max_share:.0%}")
        if before + after:
            notes.append(f"story {s.name!r}: {before + after} of {n} words outside the scan ({before} before, "
                         f"{after} after) are left out of the design")
    return notes


def _check_delays(stories, cfg: ScoreConfig) -> None:
    """Stories fitted together get as many delays each (`delays.check_stories`); the onset trim
    leaves every story more rows than its delays reach (the trim is named when it, not the
    delays, leaves too few), and the delays reach less far than a story."""
    f = cfg.features
    per_story = delays.check_stories(stories, f, cfg.data.pool_stories)
    for short in sorted(stories, key=lambda s: s.n_trs):
        rows = short.n_trs - cfg.data.trim_start
        longest = max(abs(d) for d in per_story[short.name])
        how = f" (--features.delays unset: from {delays.source(f)} at TR {short.tr:g} s)" if f.delays is None else ""
        if rows <= longest < short.n_trs:  # the trim, not the delays, leaves too few rows
            raise ValueError(f"--data.trim-start {cfg.data.trim_start} leaves story {short.name!r} ({short.n_trs} TRs) "
                             f"{max(rows, 0)} rows, too few for --features.delays up to {longest} TRs: trim at most "
                             f"{short.n_trs - longest - 1}{how}")
        if longest >= rows:
            raise ValueError(f"--features.delays up to {longest} TRs: longer than story {short.name!r} "
                             f"({rows} TRs after --data.trim-start {cfg.data.trim_start}); every design row would be "
                             f"empty{how}")


def _no_onset(scan: Scan, st: Story) -> str | None:
    """Why this scan cannot place the story's words (its events file missing, empty, without
    the story's audio or without a "story" row), or None."""
    if st.source == "event_meta" and scan.events is not None and st.audio_onset is not None:
        # an events file that times other trials but not the story is damaged or mislabelled:
        # event_meta.json's TR counts are stale for some scans (layout docstring), so do not guess
        return f"{scan.stem}: {scan.events} has no 'story' row (trial_type) to time story {st.name!r}"
    if st.audio_onset is not None:
        return None
    where = (f"{scan.events} is empty or has no row for the story's audio" if scan.events is not None
             else f"no events file {scan.sidecar.with_name(scan.stem + '_events.tsv')}")
    return f"{scan.stem}: story {st.name!r} has no audio onset to place its words: {where}"


def _design(ds: Narratives, scan: Scan, st: Story, on_unsorted: str) -> StoryDesign:
    transcript = ds.alignment(st, on_unsorted=on_unsorted)
    times, _ = transcript.times(st.audio_onset)
    return StoryDesign(st.name, transcript, times, st.audio_onset, st.onset_tr, st.n_trs, scan.tr, scan.n_trs_needed)


def _agree(tr: float, n_trs: int, shift: float, scan: Scan, st: Story) -> bool:
    # Subjects sharing one design must agree on TR, story length and, to within half a TR,
    # on where the words fall relative to the story's first TR.
    return scan.tr == tr and st.n_trs == n_trs and abs(st.audio_onset - st.onset_tr * scan.tr - shift) <= tr / 2


def _timing(scan: Scan, st: Story) -> tuple[float, int, float]:
    return scan.tr, st.n_trs, st.audio_onset - st.onset_tr * scan.tr


def _said(scan: Scan, st: Story) -> str:
    return f"TR {scan.tr} in {scan.sidecar}, {st.n_trs} TRs, audio at {st.audio_onset} s in {scan.events}"


def _reference(name: str, placed: list[tuple[Scan, Story]]) -> tuple[Scan, Story]:
    """The (scan, story) whose timing most of the story's scans share (the first such one), so
    that one odd sidecar or events file costs its own subject only; a tie between timings
    that disagree is an error naming their files."""
    votes = [sum(_agree(*_timing(*a), *b) for b in placed) for a in placed]
    best = max(votes)
    ref = placed[votes.index(best)]
    rival = next((p for p, v in zip(placed, votes) if v == best and not _agree(*_timing(*ref), *p)), None)
    if rival is not None:
        raise ValueError(f"story {name!r}: as many listeners' scans have one timing as another ({best} each), so "
                         f"none can be taken as the story's: {_said(*ref)} vs {_said(*rival)}; fix the wrong "
                         "sidecar or events file, or leave its subjects out with --data.subjects")
    return ref


def _timing_mismatch(ref: StoryDesign, scan: Scan, st: Story) -> str | None:
    if not _agree(ref.tr, ref.n_trs, ref.shift, scan, st):
        return (f"{scan.stem}: story {st.name!r} timing ({_said(scan, st)}) differs from the timing most of its "
                f"listeners share (TR {ref.tr}, {ref.n_trs} TRs, audio at {ref.audio_onset} s)")
    return None


def _short(items, n: int = 12) -> str:
    items = list(items)
    return ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "")


def model_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors", ".model", ".txt"))


def describe(sel: Selection) -> dict:
    return dict(stories=[s.name for s in sel.stories], subjects=list(sel.subjects), pooled=sel.pooled,
                listeners={n: list(subs) for n, subs in sel.listeners.items()}, kind=sel.kind, space=sel.space,
                hemi=sel.hemi, derivative=sel.derivative, atlas=[str(p) for p in sel.atlas] if sel.atlas else None,
                model=str(sel.model_folder), model_config=dataclasses.asdict(sel.model_cfg), layers=list(sel.layers),
                context=sel.context, stride=sel.stride, scans={f"{s}/{n}": sc.stem for (s, n), (sc, _) in sel.scans.items()},
                notes=list(sel.notes))


def condition_name(aug: augment.Augmentation) -> str:
    """The condition an augmentation file belongs to: provenance "condition", else <source>-<level>."""
    return str(aug.provenance.get("condition") or f"{aug.source}-{aug.level}")


def read_augmentations(files) -> list[tuple[Path, augment.Augmentation]]:
    out = []
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise FileNotFoundError(f"--augment.files: {path} not found")
        out.append((path, augment.load(path)))
    return out


def resolve_augmentations(files, stories, forbid_lookahead: bool = False) -> dict[str, augment.Augmentation]:
    """story name -> its augmentation, for one condition: exactly one file per selected story,
    each checked against the story's words (hash, length, anchors) and for lookahead (`lookahead.check`:
    a warning, an error with `forbid_lookahead`)."""
    if not files:
        return {}
    by_name = {s.name: s for s in stories}
    chosen: dict[str, tuple[Path, augment.Augmentation]] = {}
    for path, aug in read_augmentations(files):
        if aug.story not in by_name:
            raise ValueError(f"{path}: augmentation of story {aug.story!r}, which is not selected "
                             f"(selected: {', '.join(by_name)})")
        if aug.story in chosen:
            raise ValueError(f"{chosen[aug.story][0]} and {path} both augment story {aug.story!r}: one file per story "
                             "per run (several conditions need --augment.compare)")
        augment.validate(aug, list(by_name[aug.story].transcript.words), where=str(path))
        lookahead.check(aug, list(by_name[aug.story].transcript.words), str(path), forbid_lookahead)
        chosen[aug.story] = (path, aug)
    missing = [n for n in by_name if n not in chosen]
    if missing:
        raise ValueError(f"no augmentation file for selected story/stories {missing}: give one per story, or "
                         "select the augmented stories with --data.stories")
    return {n: aug for n, (_, aug) in chosen.items()}
