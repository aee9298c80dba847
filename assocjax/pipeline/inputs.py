"""Resolve and check every input before any long computation.

One run scores one story set: the selected stories, and the subjects with a usable scan of
every one of them (so all subjects share one design X and one ridge solve). Each error
names the thing that is wrong (path, story, subject, layer) and what would be valid.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .. import augment, stimuli
from ..data import Narratives, Scan, Story, load_dataset, read_scans
from ..data.layout import _subject_id, find_stories, find_story, split_commas
from ..data.narratives import VOLUME_SPACE
from ..models.config import ModelConfig
from ..models.loading import _download, read_config, weight_files
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
    atlas: tuple[Path, Path] | None      # lh, rh annot
    model_folder: Path
    model_cfg: ModelConfig
    layers: tuple[int, ...]
    context: int
    stride: int
    notes: tuple[str, ...]


def resolve_model(path: str) -> tuple[Path, ModelConfig]:
    folder = Path(path)
    if not folder.exists():
        if "/" in path and not path.startswith((".", "/", "~")):
            folder = _download(path)  # a hub name; needs network
        else:
            raise FileNotFoundError(f"model folder not found: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"--model.path {folder} is not a folder")
    cfg = read_config(folder)
    weight_files(folder)  # raises, naming the folder, when there are no weights
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


def _atlas(root: Path, space: str, name: str) -> tuple[tuple[Path, Path] | None, str | None]:
    if name == "none":
        return None, None
    label = root / "derivatives" / "freesurfer" / space / "label"
    for cand in (("aparc.a2009s", "synthetic") if name == "auto" else (name,)):
        pair = (label / f"lh.{cand}.annot", label / f"rh.{cand}.annot")
        if all(p.is_file() for p in pair):
            return pair, None
        if name != "auto":
            missing = next(p for p in pair if not p.is_file())
            raise FileNotFoundError(f"--data.atlas {name}: annot not found: {missing}")
    return None, f"no atlas under {label}: whole-cortex scores only"


def select(cfg: ScoreConfig, root: Path, model_path: str, default_space: str) -> Selection:
    """Check the model, layers, dataset, stories, subjects and images; see module docstring."""
    notes: list[str] = []
    folder, mcfg = resolve_model(model_path)
    layers = resolve_layers(cfg.features.layers, mcfg, str(folder))
    context, stride = resolve_window(cfg.features.context, cfg.features.stride, mcfg)

    d = cfg.data
    ds = load_dataset(root)
    tasks = split_commas(d.tasks)
    unknown = sorted(set(tasks) - set(ds.tasks))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown} in {root}; known: {', '.join(ds.tasks)}")
    subjects = [_subject_id(s) for s in split_commas(d.subjects)]
    unknown = sorted(set(subjects) - set(ds.subjects))
    if unknown:
        raise ValueError(f"unknown subject(s) {unknown} in {root}; known: {_short(ds.subjects)}")
    scans = ds.scans(task=list(tasks) or None, subjects=subjects or None, include_excluded=d.include_excluded)

    space = d.space or default_space
    kind = "volume" if space == VOLUME_SPACE else "surface"
    kw = dict(derivative=d.derivative, space=space) | (dict(hemi=d.hemi) if kind == "surface" else {})
    try:
        reader = read_scans(scans, kind, on_missing="warn", **kw)
    except FileNotFoundError as e:  # none left: say which spaces there are instead of listing every file
        func = root / "derivatives" / d.derivative / scans[0].subject / "func"
        have = sorted({p.name.split("_space-")[1].split("_")[0] for p in func.glob(f"{scans[0].stem}_space-*")})
        raise FileNotFoundError(f"no {d.derivative} {kind} images in space {space!r} for the {len(scans)} selected "
                                f"scans; {scans[0].stem} has spaces: {', '.join(have) or 'none'} (--data.space)") from e
    notes += [f"skipped (no image): {m}" for m in reader.missing]

    table: dict[str, dict[str, tuple[Scan, Story]]] = {}
    for scan in reader.scans:
        for st in scan.stories:
            mine = table.setdefault(scan.subject, {})
            if st.name in mine:
                notes.append(f"{scan.subject}: story {st.name!r} in several scans; using {mine[st.name][0].stem}")
                continue
            mine[st.name] = (scan, st)
    found = {st.name: st for per in table.values() for _, st in per.values()}
    wanted = split_commas(d.stories)
    unknown = [w for w in wanted if find_story(found.values(), w) is None]
    if unknown:
        raise ValueError(f"unknown story/stories {unknown} among the selected scans; known: {', '.join(sorted(found))}")
    names = sorted(s.name for s in find_stories(found.values(), *wanted)) if wanted else sorted(found)

    designs, kept = {}, []
    for sub in sorted(set(subjects) | {s for s, mine in table.items() if set(names) & set(mine)}):
        missing = [n for n in names if n not in table.get(sub, {})]
        problem = f"no usable scan of {missing}" if missing else None
        for n in names if not problem else ():
            scan, st = table[sub][n]
            if n not in designs:
                designs[n] = _design(ds, scan, st, d.on_unsorted)
            problem = problem or _timing_mismatch(designs[n], scan, st)
        if problem and sub in subjects:
            raise ValueError(f"subject {sub}: {problem} (stories: {', '.join(names)})")
        if problem:
            notes.append(f"skipped {sub}: {problem}")
        else:
            kept.append(sub)
    if not kept:
        counts = ", ".join(f"{n}: {sum(n in t for t in table.values())}" for n in names)
        raise ValueError(f"no subject has a usable scan of every selected story ({counts} subjects); "
                         "choose stories heard by the same subjects with --data.stories / --data.subjects")
    atlas, note = _atlas(root, space, d.atlas) if kind == "surface" else (None, None)
    notes += [note] if note else []
    return Selection(ds, tuple(designs[n] for n in names), tuple(kept),
                     {(s, n): table[s][n] for s in kept for n in names}, kind, space,
                     d.hemi if kind == "surface" else "both", d.derivative, atlas, folder, mcfg, layers,
                     context, stride, tuple(notes))


def _design(ds: Narratives, scan: Scan, st: Story, on_unsorted: str) -> StoryDesign:
    if st.audio_onset is None:
        raise ValueError(f"{scan.stem}: story {st.name!r} has no audio onset (events.tsv) to place its words")
    transcript = ds.alignment(st, on_unsorted=on_unsorted)
    times, _ = transcript.times(st.audio_onset)
    return StoryDesign(st.name, transcript, times, st.audio_onset, st.onset_tr, st.n_trs, scan.tr)


def _timing_mismatch(ref: StoryDesign, scan: Scan, st: Story) -> str | None:
    # Subjects sharing one design must agree on TR, story length and, to within half a TR,
    # on where the words fall relative to the story's first TR.
    shift = st.audio_onset - st.onset_tr * scan.tr
    if scan.tr != ref.tr or st.n_trs != ref.n_trs or abs(shift - ref.shift) > ref.tr / 2:
        return (f"{scan.stem}: story {st.name!r} timing (TR {scan.tr}, {st.n_trs} TRs, audio at {st.audio_onset} s) "
                "differs from the other subjects'")
    return None


def _short(items, n: int = 12) -> str:
    items = list(items)
    return ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "")


def model_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors", ".model", ".txt"))


def describe(sel: Selection) -> dict:
    return dict(stories=[s.name for s in sel.stories], subjects=list(sel.subjects), kind=sel.kind, space=sel.space,
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


def resolve_augmentations(files, stories) -> dict[str, augment.Augmentation]:
    """story name -> its augmentation, for one condition: exactly one file per selected story,
    each checked against the story's words (hash, length, anchors)."""
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
        chosen[aug.story] = (path, aug)
    missing = [n for n in by_name if n not in chosen]
    if missing:
        raise ValueError(f"no augmentation file for selected story/stories {missing}: give one per story, or "
                         "select the augmented stories with --data.stories")
    return {n: aug for n, (_, aug) in chosen.items()}
