"""The options of a fine-tuning run, grouped: `TrainConfig` = method, optim, schedule, data
and the run-level fields (compute dtype, checkpointing, progress).

scripts/finetune.py spells each option by its path: --method.name, --method.lora.rank,
--optim.lr, --schedule.warmup-steps, --data.batch-size, --dtype, --checkpoint-dir. Every
error names the option so (`check_number`). `TrainConfig.check` is the one validation of
the options alone (each group checks its own fields); `TrainConfig.for_model` adds the
checks against the model and fills in the chosen method's defaults; `TrainConfig.identity`
is what fixes the tuned weights (checkpoints resume and cross-fit folds are kept only where
it matches).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Literal

import jax.numpy as jnp

from ..models.config import ModelConfig
from .freeze import FrozenOptions
from .lora import LoraConfig
from .methods import METHODS, Method
from .prompts import DEFAULT_SYSTEM, FORMATS

MAX_LR = 10.0
MAX_STEPS = 10_000_000
MAX_LORA_SCALING = 1000
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}  # --dtype -> the compute dtype
PADDINGS = ("bucket", "max_len")
# fields (paths) that do not change the tuned weights: where and how often to report or save
NOT_IDENTITY = ("data.eval_every", "data.eval_batch_size", "save_every", "keep", "checkpoint_dir", "progress")


def check_number(name: str, value, valid: str, ok) -> None:
    """ValueError naming the option (its TrainConfig path and finetune.py flag) unless `value`
    is a finite number for which ok(value) holds (NaN fails every comparison, so it is named too)."""
    finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not (finite and ok(value)):
        raise ValueError(f"{name}={value} ({flag(name)}) must be {valid}")


def flag(name: str) -> str:
    """The finetune.py flag of a TrainConfig path: optim.lr -> --optim.lr, data.max_len -> --data.max-len."""
    return "--" + name.replace("_", "-")


def _one_of(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} ({flag(name)}) is not one of {', '.join(choices)}")


@dataclasses.dataclass(frozen=True)
class MethodOptions:
    """Which tuning method (`tune.methods.METHODS`) and the options of each method that has
    some (only the chosen method's are used and recorded)."""

    name: Literal["lora", "frozen", "full"] = "lora"  # lora: adapters; frozen: chosen blocks; full: every weight
    lora: LoraConfig = LoraConfig()  # rank, alpha (scaling alpha / rank), dropout, targets (default: LLaMA q v, GPT-2 qkv)
    frozen: FrozenOptions = FrozenOptions()  # the blocks to train

    @property
    def entry(self) -> Method:
        """The chosen method's entry of METHODS."""
        return METHODS[self.name]

    @property
    def chosen(self):
        """The chosen method's options (None when it has none)."""
        return None if self.entry.options is None else getattr(self, self.entry.options)

    def check(self) -> None:
        _one_of("method.name", self.name, METHODS)
        # the adapter's output is scaled by alpha / rank (PEFT's usual 1-4): past MAX_LORA_SCALING
        # it swamps the block's own output and the gradients overflow
        check_number("method.lora.alpha", self.lora.alpha, f"a finite number in (0, {MAX_LORA_SCALING} * "
                     f"--method.lora.rank {self.lora.rank}]", lambda v: 0 < v <= MAX_LORA_SCALING * self.lora.rank)

    def for_model(self, model: ModelConfig) -> "MethodOptions":
        """These options with the chosen method's checked against the model, its defaults filled in."""
        field = self.entry.options
        return self if field is None else dataclasses.replace(self, **{field: self.entry.for_model(self.chosen, model)})

    def identity(self) -> dict:
        """What fixes the method's part of the weights: its name and the chosen method's options."""
        field = self.entry.options
        return dict(name=self.name, **({} if field is None else {field: dataclasses.asdict(self.chosen)}))


@dataclasses.dataclass(frozen=True)
class OptimOptions:
    """AdamW: global-norm clipping, Adam, decoupled weight decay on weight matrices only."""

    lr: float = 2e-4                  # peak learning rate (the schedule's)
    weight_decay: float = 0.0         # decoupled (AdamW), weight matrices only
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    clip_norm: float = 1.0            # global gradient norm; 0 = no clipping

    def check(self) -> None:
        # Adam's steps are about lr in size: past MAX_LR the first step destroys the weights
        check_number("optim.lr", self.lr, f"a finite number in (0, {MAX_LR}]", lambda v: 0 < v <= MAX_LR)
        check_number("optim.clip_norm", self.clip_norm, "a finite number >= 0 (0: off)", lambda v: v >= 0)
        # each step multiplies the weights by 1 - lr * weight_decay: at lr * weight_decay >= 1 they
        # vanish or flip sign and grow (lr is checked first, so the product is of finite numbers)
        check_number("optim.weight_decay", self.weight_decay, f"a finite number >= 0 (0: off) and below 1 / "
                     f"--optim.lr = {1 / self.lr:.3g}", lambda v: 0 <= v and v * self.lr < 1)
        for name in ("adam_b1", "adam_b2"):
            check_number(f"optim.{name}", getattr(self, name), "in [0, 1)", lambda v: 0 <= v < 1)
        # eps is added to the gradients' RMS (~1e-3 and below): eps >= 1 shrinks every step to
        # nearly nothing, a run that silently does not train
        check_number("optim.adam_eps", self.adam_eps, "a finite number in (0, 1)", lambda v: 0 < v < 1)


@dataclasses.dataclass(frozen=True)
class ScheduleOptions:
    """The learning rate: linear warmup from 0 to --optim.lr, then cosine decay."""

    warmup_steps: int = 10            # linear warmup from 0
    total_steps: int = 200            # optimizer steps; the cosine decays to end_lr_fraction * lr here
    end_lr_fraction: float = 0.0

    def check(self) -> None:
        # a bound well past any real run (the cosine schedule needs an end): 1e9 is a typo that would run for ever
        check_number("schedule.total_steps", self.total_steps, f"an integer in 1..{MAX_STEPS:_}",
                     lambda v: 1 <= v <= MAX_STEPS)
        check_number("schedule.warmup_steps", self.warmup_steps, "an integer >= 0", lambda v: v >= 0)
        check_number("schedule.end_lr_fraction", self.end_lr_fraction, "a share of lr: 0..1", lambda v: 0 <= v <= 1)


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """The rows of each step and of validation."""

    batch_size: int = 4               # rows per micro-batch
    accum: int = 1                    # micro-batches per optimizer step (gradient accumulation)
    max_len: int = 512                # tokens per row (<= the model's positions)
    fmt: Literal["plain", "llama2"] = "plain"  # prompt format (assocjax.tune.prompts)
    system: str = DEFAULT_SYSTEM      # llama2 system prompt
    pack: bool = False                # several records per row (block-diagonal attention)
    padding: Literal["bucket", "max_len"] = "bucket"  # bucket: quarter octaves; max_len: one shape, one compile
    seed: int = 0                     # data order, adapter init, dropout
    eval_every: int = 50              # validation loss every N steps (and at the end); 0 = end only
    eval_batch_size: int = 8

    def check(self) -> None:
        _one_of("data.fmt", self.fmt, FORMATS)
        _one_of("data.padding", self.padding, PADDINGS)
        for name in ("batch_size", "accum", "max_len", "eval_batch_size"):
            check_number(f"data.{name}", getattr(self, name), "an integer >= 1", lambda v: v >= 1)
        for name in ("eval_every", "seed"):
            check_number(f"data.{name}", getattr(self, name), "an integer >= 0", lambda v: v >= 0)

    def check_records(self, n: int) -> None:
        """A micro-batch, and the micro-batches of a step, each past the n training records would
        only repeat them (one step, many epochs) in memory that grows with the option: a typo, refused."""
        if n:  # no records: the training names the empty set
            for name in ("batch_size", "accum"):
                check_number(f"data.{name}", getattr(self, name), f"at most the {n} training records",
                             lambda v: v <= n)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a fine-tuning run (saved with its outputs)."""

    method: MethodOptions = MethodOptions()
    optim: OptimOptions = OptimOptions()
    schedule: ScheduleOptions = ScheduleOptions()
    data: DataOptions = DataOptions()
    dtype: Literal["float32", "bfloat16"] = "float32"  # compute dtype (parameters stay float32)
    save_every: int = 50              # checkpoint every N steps (and at the end); 0 = only at the end
    keep: int = 3                     # checkpoints kept
    checkpoint_dir: Path | None = None  # None: no checkpoints (no resume)
    progress: bool = True             # tqdm progress bar with the loss

    def check(self) -> None:
        """The options alone, before any file is read: each error names the option (as
        finetune.py spells it) and what would be valid."""
        for group in (self.method, self.optim, self.schedule, self.data):
            group.check()
        _one_of("dtype", self.dtype, DTYPES)
        check_number("keep", self.keep, "an integer >= 1", lambda v: v >= 1)
        check_number("save_every", self.save_every, "an integer >= 0", lambda v: v >= 0)

    def for_model(self, model: ModelConfig) -> "TrainConfig":
        """This config checked against the model, with the chosen method's defaults for its
        architecture filled in (what the run records and its checkpoints are keyed on)."""
        self.check()
        if self.data.max_len > model.max_positions:
            raise ValueError(f"data.max_len={self.data.max_len} ({flag('data.max_len')}) exceeds the model's "
                             f"{model.max_positions} positions")
        return dataclasses.replace(self, method=self.method.for_model(model))

    def identity(self) -> dict:
        """The options that fix the tuned weights, as nested dicts: every group but the fields of
        NOT_IDENTITY, and of the method only the chosen one's options."""
        tree = {**dataclasses.asdict(self), "method": self.method.identity()}
        for path in NOT_IDENTITY:
            *groups, name = path.split(".")
            node = tree
            for g in groups:
                node = node[g]
            del node[name]
        return tree
