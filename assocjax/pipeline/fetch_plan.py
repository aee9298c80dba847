"""Which files a score run reads, planned from the dataset's metadata before any image exists.

The plan runs the run's own selection (`inputs._scans`, `read_scans`, `inputs._listeners`,
`inputs._atlas`) on the metadata, with "does this image exist" answered by the source's
listing instead of the disk, so the plan and `score.py` cannot disagree on a file name or on
who listens to a story. It holds, for the selected stories' listeners only:
- dataset_description.json, participants.tsv, code/scan_exclude.json, code/event_meta.json;
- each listener scan's `_bold.json` sidecar and `_events.tsv`;
- its BOLD image(s): a func.gii per hemisphere (surfaces), or the NIfTI and its brain mask;
- each story's `stimuli/gentle/<story>/align.csv` (or align.json) and transcript.txt;
- the surface atlas --data.atlas picks (annots under derivatives/freesurfer/<space>/label, or
  the HCP-MMP label.gii pair); a volume run's Harvard-Oxford image where the dataset holds one
  under derivatives/atlases (Narratives does not: a note says where score.py finds it).

The metadata comes from a local folder holding the dataset's plain-text files (`--metadata`),
or is staged from the source into a temporary folder first (`stage_metadata`: the top-level
files, the candidate subjects' sidecars and events, every story's alignment).
"""
from __future__ import annotations

import dataclasses
import fnmatch
import re
import tempfile
import warnings
from pathlib import Path
from typing import Literal

from ..data import read_scans, surface_paths, volume_paths
from ..data.fetch import DEFAULT_BASE_URL, Remote, Source, datalad_get, fetch_all, human, remaining
from ..data.layout import _read_participants, _subject_id, split_commas
from ..data.narratives import VOLUME_SPACE
from ..options import at_least
from . import inputs, volume_atlas
from .config import DataOptions

METADATA = ("dataset_description.json", "participants.tsv", "code/scan_exclude.json", "code/event_meta.json")
DEFAULT_SPACE = "fsaverage6"  # what run.py scores a real dataset in when --data.space is unset
ALIGNMENT_FILES = ("align.csv", "align.json", "transcript.txt")
_SCAN_TEXT = re.compile(r"^(_run-\d+)?_(bold\.json|events\.tsv)$")  # after sub-X/func/sub-X_task-T


@dataclasses.dataclass(frozen=True)
class Plan:
    files: tuple[Remote, ...]  # sorted by path
    notes: tuple[str, ...]
    listeners: dict  # story -> its subjects

    @property
    def total(self) -> int:
        return sum(f.size for f in self.files)


def plan(d: DataOptions, meta_root: Path, source: Source, jobs: int = 8) -> Plan:
    """The files a score run with data options `d` reads (module docstring), with their sizes
    from `source`; `meta_root` holds the metadata. Errors are the run's own (unknown task,
    subject, story; no image in the space; an atlas asked for and not there)."""
    meta_root = Path(meta_root)
    ds, scans, subjects = inputs._scans(d, meta_root)
    space = d.space or DEFAULT_SPACE
    kind = "volume" if space == VOLUME_SPACE else "surface"
    folders = {f"derivatives/{der}/{s.subject}/func/{s.stem}_space-{space}_" for s in scans
               for der in (d.derivative,) + (("fmriprep",) if kind == "volume" else ())}
    source.prefetch(sorted(folders), jobs)

    def on_server(path: Path) -> bool:
        return source.stat(_rel(path, meta_root)) is not None

    kw = dict(derivative=d.derivative, space=space) | (dict(hemi=d.hemi) if kind == "surface" else {})
    with warnings.catch_warnings():  # the scans without an image become notes, as in the run
        warnings.simplefilter("ignore")
        try:
            reader = read_scans(scans, kind, on_missing="warn", is_file=on_server, **kw)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{source.base_url} has no {d.derivative} {kind} images in space {space!r} for "
                                    f"the {len(scans)} selected scans (--data.space, --data.derivative): {e}") from None
    table, more = inputs._stories_by_subject(reader.scans)
    names = inputs._story_names(d, table)
    _, listeners, skipped = inputs._listeners(ds, table, names, subjects, d.on_unsorted, d.pool_stories)
    used = {table[sub][n][0].stem: table[sub][n][0] for n, subs in listeners.items() for sub in subs}
    stories = {table[sub][n][1].gentle for n, subs in listeners.items() for sub in subs}
    source.prefetch([f"stimuli/gentle/{g}/" for g in sorted(stories)], jobs)

    wanted = [p for p in METADATA if source.stat(p) is not None]
    for scan in used.values():
        wanted += [_rel(scan.sidecar, meta_root)] + ([_rel(scan.events, meta_root)] if scan.events else [])
        if kind == "surface":
            wanted += [_rel(p, meta_root) for p in surface_paths(scan, **kw)]
        else:
            bold, masks = volume_paths(scan, d.derivative, space)
            wanted += [_rel(bold, meta_root), _rel(next(m for m in masks if on_server(m)), meta_root)]
    for g in sorted(stories):
        have = [f for f in ALIGNMENT_FILES if source.stat(f"stimuli/gentle/{g}/{f}") is not None]
        wanted += [f"stimuli/gentle/{g}/{f}" for f in have if not (f == "align.json" and "align.csv" in have)]
    notes = [f"skipped (no image on the server): {m.scan.stem}" for m in reader.missing] + more + skipped
    if kind == "surface":
        atlas, note = inputs._atlas(meta_root, space, d.atlas, d.derivative, is_file=on_server)
        wanted += [_rel(p, meta_root) for p in atlas or ()]
        notes += [note.replace(str(meta_root), source.base_url)] if note else []
    elif d.atlas in ("auto", "harvard_oxford"):
        own = _dataset_volume_atlas(source, space)
        wanted += own
        if not own:
            notes.append("the Harvard-Oxford atlas of a volume run is not part of Narratives: score.py finds it under "
                         "$FSLDIR or nilearn's data folder, or downloads it with nilearn (docs/data.md)")
    missing = [p for p in wanted if source.stat(p) is None]
    if missing:
        raise FileNotFoundError(f"{source.base_url} lacks {len(missing)} file(s) the run reads: {', '.join(missing[:5])}")
    files = tuple(sorted({source.stat(p) for p in wanted}, key=lambda r: r.path))
    return Plan(files, tuple(notes), {n: list(subs) for n, subs in listeners.items()})


def _dataset_volume_atlas(source: Source, space: str) -> list[str]:
    """A Harvard-Oxford label image the dataset itself holds (`volume_atlas.DATASET_ATLAS`, the
    first in name order as the run takes it) and the names file the run reads beside it
    (`volume_atlas.files_of`: .tsv, else .txt); [] when there is none."""
    listed = source.list("derivatives/atlases/")
    own = sorted(p for p in listed if fnmatch.fnmatch(p, volume_atlas.DATASET_ATLAS.format(space=space)))
    if not own:
        return []
    stem = own[0][: -len(".nii.gz")]
    return [own[0]] + [stem + ext for ext in (".tsv", ".txt") if stem + ext in listed][:1]


def _rel(path: Path, root: Path) -> str:
    return Path(path).relative_to(root).as_posix()


def metadata_files(d: DataOptions, source: Source, participants: Path, jobs: int = 8) -> list[Remote]:
    """The plain-text files planning reads, from the source: the candidate subjects' (participants.tsv
    lists them with the task) sidecars and events of the selected tasks, and every story's alignment."""
    asked = {_subject_id(s) for s in split_commas(d.subjects)}
    tasks = {t for t in split_commas(d.tasks) if t != "all"}
    pairs = [(sub, t) for sub, per in _read_participants(participants).items() if not asked or sub in asked
             for t in per if not tasks or t in tasks]
    prefixes = [f"{sub}/func/{sub}_task-{t}" for sub, t in pairs] + ["stimuli/gentle/"]
    source.prefetch(prefixes, jobs)
    found = []
    for (sub, t), prefix in zip(pairs, prefixes):
        for path, remote in source.list(prefix).items():
            if _SCAN_TEXT.match(path[len(prefix):]):  # not another task whose name begins alike (piemanpni)
                found.append(remote)
    found += [r for p, r in source.list("stimuli/gentle/").items() if p.endswith(("/align.csv", "/align.json"))]
    return found


def stage_metadata(d: DataOptions, source: Source, folder: Path, jobs: int = 8) -> Path:
    """Download the metadata planning needs into `folder` (module docstring); returns it."""
    folder = Path(folder)
    top = [r for p in METADATA if (r := source.stat(p)) is not None]
    _fetch_or_fail(source, top, folder, jobs)
    if not (folder / "participants.tsv").is_file():
        raise FileNotFoundError(f"{source.base_url} has no participants.tsv: is --base-url the dataset's root?")
    _fetch_or_fail(source, metadata_files(d, source, folder / "participants.tsv", jobs), folder, jobs)
    return folder


def _fetch_or_fail(source: Source, files, folder: Path, jobs: int) -> None:
    result = fetch_all(source, files, folder, jobs=jobs, progress=False)
    if result.failed:
        raise FileNotFoundError("cannot fetch the metadata: " + "; ".join(result.failed.values()))


@dataclasses.dataclass
class FetchConfig:
    """Fetch exactly the Narratives files a score run with the same --data options reads."""

    data: DataOptions = dataclasses.field(default_factory=DataOptions)
    """the selection, as score.py takes it; --data.root is the folder the files go to"""
    dry_run: bool = False
    """list the files with their sizes and the total, download nothing"""
    via: Literal["https", "datalad"] = "https"
    """https: from --base-url; datalad: `datalad get` of the planned paths in the DataLad dataset at --data.root"""
    base_url: str = DEFAULT_BASE_URL
    """where the dataset's files are: an S3 bucket path (OpenNeuro's by default) or file:///a/local/copy"""
    jobs: int = 8
    """parallel downloads (and listing requests)"""
    metadata: Path | None = None
    """a local folder with the dataset's plain-text files to plan from; unset: fetched from --base-url"""
    retries: int = 2
    """times a download resumes after a dropped connection before it counts as failed"""
    progress: bool = True
    """progress bar (bytes, files)"""


def fetch(cfg: FetchConfig, out=print) -> int:
    """Plan, print, and (unless --dry-run) download; the exit code: 0, or 1 when a file failed."""
    if cfg.data.root is None:
        raise ValueError("--data.root: give the folder to fetch the dataset into")
    at_least({"--jobs": cfg.jobs}, 1)
    at_least({"--retries": cfg.retries}, 0)
    root = Path(cfg.data.root)
    source = Source.local(root, annex=True) if cfg.via == "datalad" else Source(cfg.base_url)
    with tempfile.TemporaryDirectory(prefix="assocjax-metadata-") as tmp:
        meta = cfg.metadata or (root if cfg.via == "datalad" else stage_metadata(cfg.data, source, Path(tmp), cfg.jobs))
        p = plan(cfg.data, Path(meta), source, cfg.jobs)
    for note in p.notes:
        out(f"note: {note}")
    for story, subs in p.listeners.items():
        out(f"{story}: {len(subs)} listeners")
    need = sum(remaining(root / f.path, f) for f in p.files)
    if cfg.dry_run:
        for f in p.files:
            out(f"{f.size:>14,d}  {f.path}")
    out(f"{len(p.files)} files, {human(p.total)} ({p.total:,d} bytes) from {source.base_url}; "
        f"{human(need)} not yet in {root}")
    if cfg.dry_run:
        return 0
    if cfg.via == "datalad":
        return datalad_get(root, [f.path for f in p.files if not (root / f.path).is_file()], cfg.jobs)
    result = fetch_all(source, p.files, root, jobs=cfg.jobs, retries=cfg.retries, progress=cfg.progress)
    out(f"fetched {len(result.fetched)}, already complete {len(result.skipped)}, failed {len(result.failed)}")
    for why in result.failed.values():
        out(f"failed: {why}")
    return 1 if result.failed else 0
