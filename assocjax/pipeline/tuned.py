"""Tuned models as the scoring pipeline sees them: which model scores which story.

A model folder made by scripts/finetune.py is OUT/model beside OUT/run.json, whose
`train_stories` are the stories it was tuned on. Scoring it on one of them, or on a stimulus
telling the same story (`data.layout.tells_story`), would let memorised stimuli pass for
association: it is refused unless --compare.allow-overlap (then recorded in run.json).
A cross-fit folder (finetune.py --cross-fit: OUT/cross_fit.json, OUT/fold-<k>/) stands for
its K models: each scored story is scored by the model of the fold that held it out.
A model folder without such a run.json (a base model, a checkpoint made elsewhere) is used as
it is: nothing says what it was tuned on.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Mapping

from ..data.layout import Story, tells_story
from ..models.config import ModelConfig
from .inputs import Selection, resolve_model


@dataclasses.dataclass(frozen=True)
class Tuned:
    """The model(s) behind one --model.path or --compare.models entry."""

    path: Path                        # as given (a model folder or a cross-fit folder)
    folders: tuple[Path, ...]         # the model folders: one, or one per fold
    cfg: ModelConfig                  # their shared architecture
    runs: dict                        # model folder -> (its finetune run.json, record); absent: not made by finetune
    held_out: tuple[tuple[str, ...], ...] = ()  # cross-fit: the stories each fold held out

    @property
    def cross_fit(self) -> bool:
        return bool(self.held_out)

    @property
    def reference(self) -> Path:
        """The model whose config and tokenizer the selection is checked with."""
        return self.folders[0]


def finetune_run(model_folder: Path) -> tuple[Path, dict] | None:
    """(path, record) of the run.json scripts/finetune.py wrote beside `model_folder`
    (OUT/model -> OUT/run.json), or None when it was not made so."""
    from ..tune.crossfit import RUN_FILE  # the layout finetune writes (imported here: no training stack at import)

    path = Path(model_folder).parent / RUN_FILE
    if not path.is_file():
        return None
    try:
        run = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    is_tuning = isinstance(run, dict) and "trained_layers" in run and "steps" in run  # written by tune.write_outputs
    return (path, run) if is_tuning else None


def resolve(path: str, hub: bool = False) -> Tuned:
    """The model folder(s) of `path`, each checked from its files' headers (`resolve_model`)."""
    from ..tune.crossfit import PLAN_FILE, RUN_FILE

    plan_path = Path(path) / PLAN_FILE
    if not plan_path.is_file():
        folder, cfg = resolve_model(path, hub)
        run = finetune_run(folder)
        return Tuned(folder, (folder,), cfg, {folder: run} if run else {})
    plan = json.loads(plan_path.read_text())
    folders, runs, held, cfgs = [], {}, [], []
    for fold in plan["folds"]:
        folder = Path(path) / fold["folder"] / "model"
        run = finetune_run(folder)
        if run is None:
            raise FileNotFoundError(f"{plan_path}: fold {fold['fold']} is not finished ({folder.parent / RUN_FILE} "
                                    "missing); rerun the same finetune.py --cross-fit command to finish it")
        folder, cfg = resolve_model(str(folder))
        folders.append(folder)
        runs[folder] = run
        held.append(tuple(fold["held_out"]))
        cfgs.append(cfg)
    if any(c != cfgs[0] for c in cfgs):
        raise ValueError(f"{path}: the fold models differ in architecture; a cross-fit needs one")
    return Tuned(Path(path), tuple(folders), cfgs[0], runs, tuple(held))


def scored_stories(sel: Selection) -> dict[str, Story]:
    """Story name -> the dataset's Story (name, audio, alignment folder) of every selected story."""
    return {st.name: st for _, st in sel.scans.values()}


def assign(tuned: Tuned, stories: Mapping[str, Story], allow_overlap: bool = False) -> tuple[dict[str, Path], dict]:
    """(story -> the model folder that scores it, the record for run.json). Refuses a model
    tuned on a story it would score (or on one telling the same story) unless allow_overlap."""
    by_story = {}
    for name, story in stories.items():
        if not tuned.cross_fit:
            by_story[name] = tuned.reference
            continue
        fold = next((i for i, held in enumerate(tuned.held_out) if any(tells_story(story, h) for h in held)), None)
        if fold is None:
            raise ValueError(f"{tuned.path}: story {name!r} is in none of its folds (they hold "
                             f"{'; '.join(', '.join(h) for h in tuned.held_out)}); a cross-fit scores only the stories "
                             "it was made from: select them with --data.stories")
        by_story[name] = tuned.folders[fold]
    overlap, trained, unlisted = {}, {}, []
    for folder in dict.fromkeys(by_story.values()):
        run = tuned.runs.get(folder)
        if run is None:
            continue
        path, record = run
        if "train_stories" not in record:
            if not allow_overlap:
                raise ValueError(f"{path} does not list the stories {folder} was tuned on (made before finetune.py "
                                 "recorded them), so it may have seen the scored stories: tune it again, or pass "
                                 "--compare.allow-overlap")
            unlisted.append(str(path))
            continue
        trained[str(folder)] = record["train_stories"]
        mine = {n: [t for t in record["train_stories"] if tells_story(stories[n], t)]
                for n, f in by_story.items() if f == folder}
        mine = {n: ts for n, ts in mine.items() if ts}
        if mine and not allow_overlap:
            raise ValueError(f"{folder} was tuned on stories it would be scored on: {', '.join(sorted(mine))} "
                             f"({path} lists train_stories {', '.join(record['train_stories'])}); score other stories "
                             "(--data.stories), cross-fit the tuning (finetune.py --cross-fit K), or pass "
                             "--compare.allow-overlap")
        overlap |= mine
    record = dict(path=str(tuned.path), cross_fit=tuned.cross_fit, models={n: str(f) for n, f in by_story.items()},
                  train_stories=trained, overlap=overlap, unlisted=unlisted, allow_overlap=allow_overlap)
    return by_story, record
