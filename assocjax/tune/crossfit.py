"""Cross-fitting by story: K tuned models, none of which is scored on a story it was tuned on.

The stories of the records are split into K folds (`story_folds`: seeded; stimuli that tell one
story, `data.layout.same_story`, share a fold). Model k is tuned on the records of the other
folds' stories only, and its validation loss is taken on its own fold's records (stories it
never trains on; nothing is selected by it). `scripts/score.py` then scores each story with the
model of its fold (`assocjax.pipeline.tuned`), so M = (R(tuned) - R(base)) / R(base) cannot
come from memorised stimuli. Control sets built with the same seed from the same stories
(make_association --task continue / summarise) get the same folds. Layout of OUT:

    OUT/cross_fit.json   the plan: K, fold seed, each fold's held-out stories, the data hash
    OUT/fold-<k>/        model/, adapters/, history.*, checkpoints/, run.json (written last)

A rerun of the same command resumes: a fold whose run.json records the same identity (the
options that fix the weights, `TrainConfig.identity`; base model files, training data,
held-out stories) is kept as it is, the others train on from their checkpoints. A folder
holding another plan, or a finished fold of another run, is an error; so is a fold finished
by an assocjax of the flat training options (before the grouped --method/--optim/...), whose
identity cannot be compared: it is refused, naming the folder to delete.
"""
from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..data.layout import same_story
from ..fingerprint import digest, file_stats
from ..io import write_json
from .checkpoint import data_hash
from .config import TrainConfig
from .train import train, write_outputs

PLAN_FILE = "cross_fit.json"
PLAN_FORMAT = 1
RUN_FILE = "run.json"


def fold_folder(out: Path, fold: int) -> Path:
    return Path(out) / f"fold-{fold}"


def story_folds(stories: Iterable[str], k: int, seed: int = 0) -> list[list[str]]:
    """The stories in `k` folds: units of stories telling one story (`same_story`) are shuffled
    by `seed`, then each goes to the fold holding the fewest stories so far (the first such).
    Each fold sorted; the same stories, k and seed always give the same folds."""
    names = sorted(set(stories))
    units = sorted({tuple(sorted(same_story(n) & set(names))) for n in names})
    if k < 2:
        raise ValueError(f"--cross-fit {k}: cross-fitting needs at least 2 folds")
    if k > len(units):
        raise ValueError(f"--cross-fit {k}: the records come from {len(names)} stories ({len(units)} once stories "
                         f"telling the same story are joined: {', '.join('+'.join(u) for u in units)}); "
                         f"at most {len(units)} folds")
    folds: list[list[str]] = [[] for _ in range(k)]
    for i in np.random.default_rng(seed).permutation(len(units)):
        min(folds, key=len).extend(units[i])
    return [sorted(f) for f in folds]


def split_fold(records: Sequence[dict], held_out: Iterable[str]) -> tuple[list[dict], list[dict]]:
    """(training records: the other folds' stories, validation records: the held-out stories')."""
    held = set(held_out)
    return [r for r in records if r["story"] not in held], [r for r in records if r["story"] in held]


def provenance(train_records: Sequence[dict], val_records: Sequence[dict] = ()) -> dict:
    """What a tuned model's run.json says about its data: the stories it was trained on (the
    scoring pipeline refuses to score those), those it was validated on, counts and a hash."""
    return dict(train_stories=sorted({r["story"] for r in train_records}),
                val_stories=sorted({r["story"] for r in val_records}), n_train=len(train_records),
                n_val=len(val_records), train_data_hash=data_hash(train_records))


def fold_identity(cfg: TrainConfig, model_folder: Path, train_records: Sequence[dict], held_out) -> str:
    """What a finished fold model must match to be reused: the weight-changing options
    (`TrainConfig.identity`), the base model's files (size, mtime), the training data and the
    held-out stories."""
    config = cfg.identity()
    files = sorted(p for p in Path(model_folder).iterdir() if p.is_file())
    return digest(dict(config=config, model=[s[1:] + [Path(s[0]).name] for s in file_stats(files)],
                       data=data_hash(train_records), held_out=sorted(held_out)), 16)


def _check_plan(path: Path, plan: dict) -> None:
    """An existing plan must be this one (same folds of the same data), else the folder holds another run."""
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    keys = ("format", "k", "seed", "folds", "data_hash")
    diff = [k for k in keys if old.get(k) != plan[k]]
    if diff:
        what = ", ".join(f"{k}: {old.get(k)!r} vs now {plan[k]!r}" for k in diff[:2]) + (", ..." if len(diff) > 2 else "")
        raise ValueError(f"{path} holds another cross-fit ({what}); use another --out, or delete that folder to start "
                         "afresh")


def finished(folder: Path, identity: str) -> bool:
    """Whether `folder` holds a finished fold model of this identity (run.json is written last);
    a finished model of another identity is an error, not silently replaced."""
    run = folder / RUN_FILE
    if not run.is_file():
        return False
    record = json.loads(run.read_text())
    if "optim" not in (record.get("config") or {}):
        raise ValueError(f"{run}: a fold model finished by an older assocjax (flat training options, before "
                         f"--method/--optim/--schedule/--data); its identity cannot be checked against this run: "
                         f"delete {folder} to train it again, or use another --out")
    got = record.get("cross_fit", {}).get("identity")
    if got != identity:
        raise ValueError(f"{run}: a finished fold model of another run (other config, base model or data; identity "
                         f"{got} vs now {identity}); use another --out, or delete {folder} to train it again")
    return True


def cross_fit(cfg: TrainConfig, model_folder, records: Sequence[dict], out, k: int, seed: int = 0,
              base_name: str | None = None, extra: dict | None = None) -> list[dict]:
    """Train the K fold models of `records` into `out` (module docstring). Returns per fold:
    fold, held_out, folder, status ("trained" or "kept"), steps, final_loss, final_val_loss."""
    out, model_folder = Path(out), Path(model_folder)
    twice = sorted(i for i, n in Counter(r["id"] for r in records).items() if n > 1)
    if twice:
        raise ValueError(f"record id(s) {twice[:3]} occur twice among the records to cross-fit (--train and --val "
                         "files are pooled: give files of one dataset)")
    folds = story_folds({r["story"] for r in records}, k, seed)
    plan = dict(format=PLAN_FORMAT, k=k, seed=seed, data_hash=data_hash(records), n_records=len(records),
                folds=[dict(fold=i, held_out=f, folder=fold_folder(out, i).name) for i, f in enumerate(folds)],
                model_folder=str(model_folder), method=cfg.method.name, **(extra or {}))
    _check_plan(out / PLAN_FILE, plan)
    write_json(out / PLAN_FILE, plan)
    done = []
    for i, held in enumerate(folds):
        folder = fold_folder(out, i)
        train_recs, val_recs = split_fold(records, held)
        identity = fold_identity(cfg, model_folder, train_recs, held)
        status = "kept" if finished(folder, identity) else "trained"
        if status == "trained":
            ckpt = cfg.checkpoint_dir / folder.name if cfg.checkpoint_dir is not None else folder / "checkpoints"
            result = train(dataclasses.replace(cfg, checkpoint_dir=ckpt), model_folder, train_recs, val_recs)
            write_outputs(result, folder, base_name or str(model_folder),
                          extra=dict(extra or {}, **provenance(train_recs, val_recs),
                                     cross_fit=dict(fold=i, k=k, seed=seed, held_out_stories=held, identity=identity,
                                                    plan=str(out / PLAN_FILE))))
        run = json.loads((folder / RUN_FILE).read_text())
        done.append(dict(fold=i, held_out=held, folder=folder, status=status, steps=run.get("steps"),
                         final_loss=run.get("final_loss"), final_val_loss=run.get("final_val_loss")))
    return done
