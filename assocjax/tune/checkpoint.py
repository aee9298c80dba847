"""Training checkpoints with Orbax: save every N steps, keep the last K, resume from the latest.

Each step folder holds two items (orbax `args.Composite`):

- "state": the trainable parameters (LoRA adapters or the trained blocks), the optimizer
  state and the step, as one array tree (`args.StandardSave`);
- "meta": JSON with the run's identity (`run_identity`: base model config and its hash,
  a fingerprint of the base weights, method, LoRA config, trained layers, data and batch
  settings) and the loss history so far.

The data order is a pure function of (seed, step) (`prompts.rows_stream`), so restoring the
step restores the data order; the identity's data entries make sure it is the same data.
Resuming into a run whose identity differs raises an error naming every mismatch, e.g.
"checkpoint ... was made for hidden=64, n_layers=2; this run has hidden=32, n_layers=3".
Orbax writes each step to a temporary folder and renames it when complete, so a run
killed while saving leaves the previous checkpoints intact.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from ..fingerprint import digest, sampled_weights_id
from ..models.config import ModelConfig

FORMAT_VERSION = 1
# Sections of the identity, in the order mismatches are reported; "model" fields are
# reported one by one (hidden=64, n_layers=2), the others as a whole.
SECTIONS = ("model", "weights", "method", "lora", "layers", "data", "run")


def config_hash(cfg: ModelConfig) -> str:
    return digest(dataclasses.asdict(cfg), 16)


def data_hash(records) -> str:
    """Hash of the training records (ids and texts), in order."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps([r["id"], r["instruction"], r["input"], r["output"]]).encode())
    return h.hexdigest()[:16]


def run_identity(cfg: ModelConfig, base_params: dict, method: str, lora: dict | None, layers, data: dict,
                 run: dict) -> dict:
    """The JSON record a checkpoint must match to be resumed (see module docstring)."""
    return dict(version=FORMAT_VERSION, model={**dataclasses.asdict(cfg), "config_hash": config_hash(cfg)},
                weights=sampled_weights_id(base_params), method=method, lora=lora,
                layers=None if layers is None else [int(i) for i in layers], data=data, run=run)


def mismatches(saved: dict, current: dict) -> list[str]:
    """Human-readable differences between two identities ([] when they match)."""
    out = []
    if saved.get("version") != current.get("version"):
        out.append(f"checkpoint format version {saved.get('version')} vs {current.get('version')}")
    m_saved, m_now = saved.get("model", {}), current.get("model", {})
    fields = [k for k in m_now if k != "config_hash" and m_saved.get(k) != m_now.get(k)]
    if fields:
        out.append(f"was made for {_fields(m_saved, fields)}; this run has {_fields(m_now, fields)}")
    for section in SECTIONS[1:]:
        if json.dumps(saved.get(section), sort_keys=True) != json.dumps(current.get(section), sort_keys=True):
            what = "base weights (fingerprint)" if section == "weights" else section
            out.append(f"{what}: checkpoint {saved.get(section)!r}, this run {current.get(section)!r}")
    return out


def _fields(d: dict, keys) -> str:
    return ", ".join(f"{k}={d.get(k)!r}" if isinstance(d.get(k), str) else f"{k}={d.get(k)}" for k in keys)


class Checkpoints:
    """A CheckpointManager for one run: `latest_step`, `restore(template)`, `save(step, ...)`.

    directory: the run's checkpoint folder; identity: `run_identity(...)` of this run;
    keep: how many step folders to keep (the oldest are deleted).
    """

    def __init__(self, directory, identity: dict, keep: int = 3):
        if keep < 1:
            raise ValueError(f"keep={keep}: keep at least one checkpoint")
        self.directory = Path(directory).absolute()
        self.identity = identity
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, template: dict) -> tuple[dict, dict]:
        """(state, meta) of the latest step, after checking the identity; `template` is a
        state tree of the right structure (its values are not used)."""
        step = self.latest_step()
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        problems = mismatches(meta.get("identity", {}), self.identity)
        if problems:
            raise ValueError(f"checkpoint {self.directory / str(step)} does not fit this run: " + "; ".join(problems)
                             + ". Use another checkpoint folder to start afresh.")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        state = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))).state
        return state, meta

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
