"""Training checkpoints with Orbax: save every N steps, keep the last K, resume from the latest.

Each step folder holds two items (orbax `args.Composite`):

- "state": the trainable parameters (LoRA adapters or the trained blocks), the optimizer
  state and the step, as one array tree (`args.StandardSave`);
- "meta": JSON with the run's identity (`run_identity`: base model config and its hash,
  a fingerprint of the base weights, the training records, the trained blocks, and the
  options that fix the weights, `TrainConfig.identity`: the method and its options, optim,
  schedule, data, dtype) and the loss history so far (with the learning rate each step used).

The data order is a pure function of (seed, step) (`prompts.rows_stream`), so restoring the
step restores the data order; the identity's data entries make sure it is the same data.
Resuming into a run whose identity differs raises an error naming every mismatch, e.g.
"checkpoint ... was made for hidden=64, n_layers=2; this run has hidden=32, n_layers=3" or
"optim.lr: checkpoint 0.0002, this run 0.01" (the option's path: finetune.py's --optim.lr).
A checkpoint of another format (format 1: the flat training options of assocjax before
issue 22) is refused as such. Fields the caller names `extensible` may differ alone:
the schedule's length (total_steps), where the steps already done keep their learning rates
(`tune.train._check_schedule`).
Orbax writes each step to a temporary folder and renames it when complete, so a run
killed while saving leaves the previous checkpoints intact; a step damaged afterwards is
set aside and the run resumes from the newest intact one (`Checkpoints.restore`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import warnings
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from ..fingerprint import bytes_digest, digest, sampled_weights_id
from ..models.config import ModelConfig

FORMAT_VERSION = 2  # 2: the identity's options grouped as TrainConfig (method, optim, schedule, data)
# What reading a damaged step folder raises: TensorStore's DATA_LOSS / OUT_OF_RANGE
# (ValueError), a missing item (KeyError), broken JSON (ValueError), I/O errors (OSError).
READ_ERRORS = (ValueError, KeyError, OSError)
# Sections of the identity besides the options, in the order mismatches are reported (the
# options' groups follow): "model" fields are reported one by one (hidden=64, n_layers=2),
# dicts leaf by leaf with their path ("records.n: checkpoint 12, this run 11"), the rest whole.
SECTIONS = ("model", "weights", "records", "layers")


def config_hash(cfg: ModelConfig) -> str:
    return digest(dataclasses.asdict(cfg), 16)


def data_hash(records) -> str:
    """Hash of the training records (ids and texts), in order."""
    return bytes_digest((json.dumps([r["id"], r["instruction"], r["input"], r["output"]]).encode() for r in records),
                        16)


def run_identity(cfg: ModelConfig, base_params: dict, options: dict, layers, records: dict) -> dict:
    """The JSON record a checkpoint must match to be resumed (see module docstring): the base
    model and weights, the training records ({hash, n}), the trained blocks (None: not a
    choice of blocks) and `options` (`TrainConfig.identity()`: a dict per option group)."""
    return dict(version=FORMAT_VERSION, model={**dataclasses.asdict(cfg), "config_hash": config_hash(cfg)},
                weights=sampled_weights_id(base_params), records=records,
                layers=None if layers is None else [int(i) for i in layers], **options)


def mismatches(saved: dict, current: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """Human-readable differences between two identities ([] when they match), but for the
    leaves whose paths are named in `ignore` ("schedule.total_steps")."""
    if saved.get("version") != current.get("version"):  # another layout: its fields cannot be compared one by one
        return [f"checkpoint format {saved.get('version')}, this assocjax's is {current.get('version')} (format 1: "
                "the flat training options of assocjax before the grouped --method/--optim/--schedule/--data ones); "
                "it cannot be resumed by this version"]
    out = []
    m_saved, m_now = saved.get("model", {}), current.get("model", {})
    fields = [k for k in m_now if k != "config_hash" and m_saved.get(k) != m_now.get(k)]
    if fields:
        out.append(f"was made for {_fields(m_saved, fields)}; this run has {_fields(m_now, fields)}")
    sections = [*SECTIONS[1:], *(k for k in current if k not in ("version", *SECTIONS))]
    for section in sections:
        out += [f"base weights (fingerprint): checkpoint {old!r}, this run {now!r}" if path == "weights" else
                f"{path}: checkpoint {old!r}, this run {now!r}"
                for path, old, now in _leaf_differences(section, saved.get(section), current.get(section))
                if path not in ignore]
    return out


def _leaf_differences(path: str, old, now) -> list[tuple[str, object, object]]:
    """(dotted path, old, new) of every differing leaf of two JSON values (dicts compared key
    by key, anything else whole: a dict against a non-dict is one difference)."""
    if _same(old, now):
        return []
    if isinstance(old, dict) and isinstance(now, dict):
        return [d for k in dict.fromkeys([*old, *now])
                for d in _leaf_differences(f"{path}.{k}", old.get(k), now.get(k))]
    return [(path, old, now)]


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _fields(d: dict, keys) -> str:
    return ", ".join(f"{k}={d.get(k)!r}" if isinstance(d.get(k), str) else f"{k}={d.get(k)}" for k in keys)


def _quiet_closed_loop_callbacks() -> None:
    """When a read of a damaged step fails, Orbax's restore ends and closes its event loop
    while other TensorStore reads are still in flight; each of them then reports a
    RuntimeError("Event loop is closed") through sys.unraisablehook, a traceback per read
    on stderr although nothing is lost. Drop exactly those reports (installed once)."""
    previous = sys.unraisablehook
    if getattr(previous, "_drops_closed_loop", False):
        return

    def hook(report):
        if not (isinstance(report.exc_value, RuntimeError) and str(report.exc_value) == "Event loop is closed"):
            previous(report)

    hook._drops_closed_loop = True
    sys.unraisablehook = hook


class Checkpoints:
    """A CheckpointManager for one run: `latest_step`, `restore(template)`, `save(step, ...)`.

    directory: the run's checkpoint folder; identity: `run_identity(...)` of this run;
    keep: how many step folders to keep (the oldest are deleted); extensible: identity
    fields ("schedule.total_steps") in which a checkpoint may differ when nothing else does:
    the caller checks them on the restored meta (their differences are listed only beside
    another mismatch).
    """

    def __init__(self, directory, identity: dict, keep: int = 3, extensible: tuple[str, ...] = ()):
        if keep < 1:
            raise ValueError(f"keep={keep}: keep at least one checkpoint")
        self.directory = Path(directory).absolute()
        self.identity = identity
        self.extensible = extensible
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, template: dict) -> tuple[dict, dict]:
        """(state, meta) of the newest intact step, after checking the identity; `template`
        is a state tree of the right structure (its values are not used).

        A step whose files cannot be read (truncated, overwritten, half deleted) is moved
        aside to "<step>.corrupt" (so later saves do not collide with it) with a warning
        naming it, and the next older step is tried; when none is intact, a ValueError
        names the folder. A readable step of another run is an error, never skipped."""
        steps = sorted(self.manager.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        _quiet_closed_loop_callbacks()
        bad = []
        for step in steps:
            try:
                meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
            except READ_ERRORS as e:
                bad.append(self._set_aside(step, e))
                continue
            self._check_identity(step, meta)
            try:
                state = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
            except READ_ERRORS as e:
                bad.append(self._set_aside(step, e))
                continue
            return state.state, meta
        raise ValueError(f"{self.directory}: no intact checkpoint (moved aside as unreadable: {', '.join(bad)}); "
                         "delete the folder or give another one to start afresh")

    def _check_identity(self, step: int, meta: dict) -> None:
        saved = meta.get("identity", {}) if isinstance(meta, dict) else {}
        if mismatches(saved, self.identity, ignore=self.extensible):
            problems = mismatches(saved, self.identity)
            raise ValueError(f"checkpoint {self.directory / str(step)} does not fit this run: "
                             + "; ".join(problems) + ". Rerun with the checkpoint's options to resume it, or train "
                             "afresh in another checkpoint folder (finetune.py: a new --out or --checkpoint-dir)")

    def _set_aside(self, step: int, error: BaseException) -> str:
        """Rename an unreadable step folder to <step>.corrupt[-k] and warn; returns the new name."""
        folder = self.directory / str(step)
        target, k = folder.with_name(f"{step}.corrupt"), 1
        while target.exists():
            target, k = folder.with_name(f"{step}.corrupt-{k}"), k + 1
        os.replace(folder, target)
        self.manager.reload()
        reason = " ".join(str(error).split())[:300]
        warnings.warn(f"checkpoint {folder} cannot be read ({type(error).__name__}: {reason}); moved it to "
                      f"{target.name} and trying the next older step", stacklevel=3)
        return target.name

    def save(self, step: int, state: dict, extra: dict) -> None:
        meta = {"identity": self.identity, **extra}
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        meta=ocp.args.JsonSave(meta)), force=True)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
