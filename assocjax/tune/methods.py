"""The tuning methods as a table: what each one trains, how, and what a run of it saves.

`METHODS[name]` is a `Method`; the training loop (`tune.train`), its checkpoints and the
cross-fit dispatch through it and never branch on a method's name, so adding a method is
one entry here plus its options field in `config.MethodOptions` (a test checks the two agree).

- lora: low-rank adapters on chosen projections (`tune.lora`); only the adapters are
  differentiated, the base weights are a separate, non-differentiated argument; the run
  exports the merged model and the adapters for PEFT.
- frozen: the chosen blocks train (`tune.freeze`), every other weight runs under
  stop_gradient (no backward through the frozen prefix); the run exports the joined model.
- full: every weight trains; the run exports it.

Each method's options (None: it has none) are a frozen dataclass in `config.MethodOptions`,
the `method` group of `TrainConfig` (finetune.py: --method.name, --method.lora.rank,
--method.frozen.layers); only the chosen method's options enter a run's identity
(checkpoints, cross-fit folds) and run.json's method record.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from ..models.config import ModelConfig
from . import freeze
from .freeze import FrozenOptions
from .lora import LoraConfig, init_adapters, lora_inputs, merge


@dataclasses.dataclass(frozen=True)
class Method:
    """One tuning method (module docstring). `opts` below is the method's options (None for
    a method without options); trees are parameter trees as `Model.param_tree` gives them."""

    name: str
    trains: str                                   # what it trains, in words (--help, docs)
    options: str | None                           # its field in MethodOptions; None: no options
    # (opts, model config) -> opts checked against the model, the architecture's defaults filled in
    for_model: Callable[[Any, ModelConfig], Any]
    # (opts, model config, float32 params, init key) -> (trainable, base, trained blocks or None)
    init: Callable[[Any, ModelConfig, dict, Any], tuple[dict, dict, tuple[int, ...] | None]]
    # (opts, trainable, base, dropout key or None) -> (parameter tree, lora) for modeling.forward
    forward_inputs: Callable[[Any, dict, dict, Any], tuple[dict, Any]]
    # (opts, trainable, base) -> the full tuned parameter tree (what OUT/model holds)
    merged: Callable[[Any, dict, dict], dict]
    # weight decay on every trainable leaf (adapters hold no biases or norm scales), else by the
    # leaf's role in the model's parameter spec (weight matrices and embeddings only)
    decay_all: bool = False
    # (folder, model config, trainable, opts, base_model_name_or_path) -> folder: the PEFT adapter
    # export of OUT/adapters; None: the method has no adapters to export
    save_adapters: Callable[..., Any] | None = None


def _lora_for_model(lora: LoraConfig, model: ModelConfig) -> LoraConfig:
    if lora.rank > model.hidden:  # a rank past the width adds nothing but memory
        raise ValueError(f"method.lora.rank={lora.rank} (--method.lora.rank) exceeds the model's hidden size "
                         f"{model.hidden}")
    return lora.for_model(model)


def _save_peft(folder, model: ModelConfig, adapters: dict, lora: LoraConfig, base_name: str):
    from .peft import save_peft  # the export's file formats load only when a run is written

    return save_peft(folder, model, adapters, lora, base_name)


def _frozen_init(opts: FrozenOptions, model: ModelConfig, params: dict, key):
    layers = freeze.parse_layers(opts.layers, model.n_layers)
    trainable, frozen = freeze.split_trainable(params, layers)
    return trainable, frozen, layers


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("lora", "low-rank adapters of the target projections; the base weights stay fixed", "lora",
           for_model=_lora_for_model,
           init=lambda lora, model, params, key: (init_adapters(model, lora, key), params, None),
           forward_inputs=lambda lora, trainable, base, key: (base, lora_inputs(base, trainable, lora, key)),
           merged=lambda lora, trainable, base: merge(base, trainable, lora),
           decay_all=True, save_adapters=_save_peft),
    Method("frozen", "the chosen blocks; embeddings, final norm, head and the other blocks stay fixed", "frozen",
           for_model=lambda opts, model: opts, init=_frozen_init,
           forward_inputs=lambda opts, trainable, base, key: (freeze.frozen_params(trainable, base), None),
           merged=lambda opts, trainable, base: freeze.join(trainable, base)),
    Method("full", "every weight", None,
           for_model=lambda opts, model: opts, init=lambda opts, model, params, key: (params, {}, None),
           forward_inputs=lambda opts, trainable, base, key: (trainable, None),
           merged=lambda opts, trainable, base: trainable),
)}

