"""Sweeps: models x stories x layers x augmentation conditions as a list of jobs, run in one
process or handed to a scheduler through submitit (a SLURM job array, or its local executor),
then aggregated from the shared results cache.

Every job is an ordinary `score` run of one model, one story (its listeners), some layers and
one condition; it fills the results cache (`--cache-dir`, shared by all jobs), which is keyed
by everything that sets the numbers, so a job that was killed or re-submitted resumes, and
the final step (`score.py --aggregate`) builds each
model's and condition's tables from the cache without fitting anything.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Literal

from ..io import write_json
from ..options import at_least, between
from ..data.layout import split_commas
from .config import ScoreConfig, check_options
from .inputs import condition_name, read_augmentations
from .run import ScoreResult, score

PLAIN = "plain"


@dataclasses.dataclass
class SweepConfig:
    """A sweep of score runs (module docstring); `base` holds every other option of score.py."""

    base: ScoreConfig = dataclasses.field(default_factory=ScoreConfig)
    models: tuple[str, ...] = ()
    """model folders; empty: --base.model.path (or the built-in model)"""
    stories: tuple[str, ...] = ()
    """stories, one job each (comma lists allowed); required"""
    layers_per_job: int | None = None
    """split --base.features.layers into jobs of this many layers; unset: all layers in each job"""
    augment_files: tuple[Path, ...] = ()
    """augmentation files; each condition (provenance "condition", else <source>-<level>) is a sweep axis
    beside the plain stories"""
    executor: Literal["inline", "local", "slurm"] = "inline"
    """inline: one after another in this process; local: submitit's local executor (separate processes);
    slurm: a SLURM job array through submitit"""
    folder: Path = Path("sweeps/run")
    """job logs (submitit), job outputs and the aggregated tables (<folder>/<model>/<condition>)"""
    timeout_min: int = 240
    """per job (scheduler executors)"""
    cpus_per_task: int = 8
    mem_gb: float = 32.0
    gpus_per_node: int = 0
    slurm_partition: str | None = None
    array_parallelism: int = 64
    """most jobs running at once (SLURM)"""


@dataclasses.dataclass(frozen=True)
class Job:
    model: str | None
    story: str
    layers: tuple[int, ...]
    condition: str
    config: ScoreConfig

    @property
    def name(self) -> str:
        layers = "all" if not self.layers else f"{self.layers[0]}-{self.layers[-1]}"
        return f"{_label(self.model)}_{self.condition}_{self.story}_layers-{layers}"


def _label(model: str | None) -> str:
    return "builtin" if model is None else "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(model).name)


def conditions(cfg: SweepConfig) -> dict[str, tuple[Path, ...]]:
    """condition -> its augmentation files (the plain stories first)."""
    out: dict[str, tuple[Path, ...]] = {PLAIN: ()}
    for path, aug in read_augmentations(cfg.augment_files):
        name = condition_name(aug)
        if name == PLAIN:
            raise ValueError(f"{path}: condition name {PLAIN!r} is the plain stories'; give the augmentation another one")
        out[name] = out.get(name, ()) + (path,)
    return out


def _config(cfg: SweepConfig, model: str | None, stories, layers, files, output: Path,
            aggregate: bool = False) -> ScoreConfig:
    b = cfg.base
    aug = dataclasses.replace(b.augment, files=tuple(files), compare=False)
    return dataclasses.replace(
        b, output=output, aggregate=aggregate, model=dataclasses.replace(b.model, path=model if model is not None else b.model.path),
        data=dataclasses.replace(b.data, stories=tuple(stories)), features=dataclasses.replace(b.features, layers=layers),
        augment=aug, progress=False)


def jobs(cfg: SweepConfig) -> list[Job]:
    """One job per model x story x layer block x condition."""
    stories = split_commas(cfg.stories)
    if not stories:
        raise ValueError("--stories: name the stories to sweep (one job each)")
    models = cfg.models or (cfg.base.model.path,)
    layers = tuple(cfg.base.features.layers)
    if cfg.layers_per_job is not None:  # its range: check_sweep
        if not layers:
            raise ValueError("--layers-per-job needs --base.features.layers (the layers to split)")
        blocks = [layers[i:i + cfg.layers_per_job] for i in range(0, len(layers), cfg.layers_per_job)]
    else:
        blocks = [layers]
    story_of = {path: aug.story for path, aug in read_augmentations(cfg.augment_files)}
    out = []
    for model in models:
        for cond, files in conditions(cfg).items():
            for story in stories:
                mine = [f for f in files if story_of[f] == story]
                for block in blocks:
                    job = Job(model, story, block, cond, cfg.base)
                    out.append(dataclasses.replace(job, config=_config(cfg, model, [story], block, mine,
                                                                       cfg.folder / "jobs" / job.name)))
    return out


def run_job(config: ScoreConfig) -> Path:
    """A job's work: an ordinary score run (its results land in the shared cache)."""
    return score(config).output


class JobFailed(RuntimeError):
    """A job of a scheduler executor failed; the message names it, its error and its log
    (scripts/sweep.py prints it as one line)."""


def _last_error(e: BaseException) -> str:
    """The job's own error ("ValueError: ...") out of submitit's message, which holds the job's
    traceback between two dashed lines; else the message's first line."""
    parts = str(e).split("-" * 22)
    lines = [line.strip() for line in (parts[1] if len(parts) > 2 else str(e)).splitlines() if line.strip()]
    return (lines[-1] if len(parts) > 2 else lines[0]) if lines else type(e).__name__


def check_sweep(cfg: SweepConfig) -> None:
    """The sweep's own options and every score option (`check_options`), before a job starts."""
    check_options(cfg.base)
    at_least({"--layers-per-job": cfg.layers_per_job, "--timeout-min": cfg.timeout_min,
              "--cpus-per-task": cfg.cpus_per_task, "--array-parallelism": cfg.array_parallelism}, 1)
    at_least({"--gpus-per-node": cfg.gpus_per_node}, 0)
    between("--mem-gb", cfg.mem_gb, 0, math.inf, lo_open=True, hi_open=True)


def run(cfg: SweepConfig) -> dict[tuple[str, str], ScoreResult]:
    """Run every job (inline or through submitit), then aggregate each model x condition over
    the swept stories and layers from the cache -> {(model label, condition): result}."""
    check_sweep(cfg)
    todo = jobs(cfg)
    if cfg.executor == "inline":
        for job in todo:
            run_job(job.config)
    else:
        import submitit

        executor = submitit.AutoExecutor(folder=cfg.folder / "logs", cluster="local" if cfg.executor == "local" else "slurm")
        executor.update_parameters(timeout_min=cfg.timeout_min, cpus_per_task=cfg.cpus_per_task, mem_gb=cfg.mem_gb,
                                   gpus_per_node=cfg.gpus_per_node, name="assocjax-sweep",
                                   slurm_array_parallelism=cfg.array_parallelism,
                                   **({"slurm_partition": cfg.slurm_partition} if cfg.slurm_partition else {}))
        submitted = executor.map_array(run_job, [job.config for job in todo])
        for job, sub in zip(todo, submitted):
            try:
                sub.result()
            except Exception as e:  # submitit re-raises the job's error with its whole traceback as text
                raise JobFailed(f"sweep job {job.name} failed: {_last_error(e)} (log: {sub.paths.stderr})") from None
    write_json(cfg.folder / "jobs.json", [dict(name=j.name, model=j.model, story=j.story, layers=list(j.layers),
                                                condition=j.condition, output=j.config.output) for j in todo])
    return aggregate(cfg)


def aggregate(cfg: SweepConfig) -> dict[tuple[str, str], ScoreResult]:
    """Each model x condition's tables over every swept story and layer, from the cache only."""
    out = {}
    stories = split_commas(cfg.stories)
    for model in cfg.models or (cfg.base.model.path,):
        for cond, files in conditions(cfg).items():
            config = _config(cfg, model, stories, tuple(cfg.base.features.layers), files,
                             cfg.folder / _label(model) / cond, aggregate=True)
            out[(_label(model), cond)] = score(config)
    return out


__all__ = ["SweepConfig", "Job", "JobFailed", "check_sweep", "jobs", "run", "run_job", "aggregate", "conditions"]
