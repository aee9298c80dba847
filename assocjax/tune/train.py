"""Instruction tuning of an assocjax LM: LoRA, frozen-layer or full fine-tuning.

`train(cfg, model_folder, train_records, val_records)` tokenises the records
(`prompts.encode_all`), builds the trainable tree and runs jit-compiled AdamW steps:

- loss: token cross-entropy over the loss-mask tokens (output + eos), the mean over every
  such token of the optimizer step (all accumulated micro-batches together, so k
  micro-batches of b rows give the same step as one batch of k * b rows);
- method (`methods.METHODS`, chosen by `TrainConfig.method.name`): what is differentiated and
  what is fixed. lora: only the adapters (`jax.grad` w.r.t. the adapter tree; the base
  weights are a separate, non-differentiated argument); frozen: only the trainable blocks of
  `freeze.split_trainable` (frozen runs under stop_gradient, no backward through the frozen
  prefix); full: every weight;
- optimizer: global-norm clipping, Adam, decoupled weight decay on weight matrices only
  (not on norms or biases, as Hugging Face's Trainer), learning rate from a linear warmup
  + cosine decay schedule (`optax.warmup_cosine_decay_schedule`, evaluated at the number of
  updates done, passed to the step as a number so one compiled step serves any schedule);
- compute dtype: parameters stay float32; with "bfloat16" the base weights are cast once
  and the trainable ones inside the step, logits and the loss are float32 (the step is
  compiled with `modeling.LAYER_LOOP_OPTIONS`, so no float32 copy of every layer's
  bfloat16 weights is hoisted out of the layer loops);
- determinism: the rows of step t are a pure function of (seed, t) (`prompts.rows_stream`)
  and dropout keys are fold_in(seed, t, micro-batch), so a run resumed from a checkpoint
  (`checkpoint.Checkpoints`, every `save_every` steps) continues exactly as an
  uninterrupted one;
- guards: every numeric option is checked before the model is read (`TrainConfig.check`,
  `config`); a checkpoint resumes only under the options it was trained with
  (`TrainConfig.identity`; schedule.total_steps may change where the steps done keep their
  learning rates: `_check_schedule`); a step whose loss,
  gradient or updated weights are not finite stops the run before anything is saved
  (`_check_finite`).

Afterwards `tuned_params(result)` gives the full tuned tree (the method's `merged`: LoRA
merged with `lora.merge`, trained blocks joined), `save_hf_model` writes it as a Hugging Face
folder that `load_pretrained` and the scoring pipeline read, and `save_peft_adapters` exports
the adapters of a method that has them (LoRA) for PEFT.
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..io import atomic_write_bytes, atomic_write_text
from ..models.config import ModelConfig
from ..models.loading import load_pretrained
from ..models.modeling import forward, top_level, unembed
from ..models.params import WEIGHT_ROLES, param_roles, params_to_hf
from . import freeze
from .checkpoint import Checkpoints, data_hash, run_identity
from .config import DTYPES, TrainConfig
from .methods import METHODS
from .prompts import Batch, Encoded, batches, encode_all, make_batch, rows_stream

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja", "generation_config.json")


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """The static part of a compiled step (hashable); equal specs share compiled code."""

    model: ModelConfig
    method: str       # a key of METHODS
    options: Any      # the method's options for this model (hashable; None: it has none)
    dtype: str
    clip_norm: float
    weight_decay: float
    adam: tuple[float, float, float]

    @classmethod
    def of(cls, cfg: TrainConfig, model: ModelConfig) -> "StepSpec":
        o = cfg.optim
        return cls(model, cfg.method.name, cfg.method.for_model(model).chosen, cfg.dtype, float(o.clip_norm),
                   float(o.weight_decay), (o.adam_b1, o.adam_b2, o.adam_eps))


@dataclasses.dataclass
class TrainResult:
    config: TrainConfig
    model_cfg: ModelConfig
    history: list[dict]       # per step: step, loss, val_loss (None between evaluations), lr, tokens
    trainable: dict           # what the method trains (LoRA adapters / trained blocks / all weights), float32
    base: dict                # what it holds fixed (the base weights / the frozen part / nothing), as loaded
    layers: tuple[int, ...] | None
    n_truncated: int          # training records whose input was cut to fit max_len
    n_val_truncated: int
    resumed_from: int | None  # the checkpoint step this run continued from
    model_folder: Path
    extended_from: int | None = None  # the total_steps of the resumed checkpoint's run, where this run changed it


# -- the compiled core ------------------------------------------------------------------------
def segment_attention(segment_BS):
    """(B, S, S) bool: a query reads keys at or before it in the same record (segment
    ids equal and > 0): causal within each packed record, nothing across records."""
    s = segment_BS.shape[1]
    causal = jnp.tril(jnp.ones((s, s), bool))
    same = (segment_BS[:, :, None] == segment_BS[:, None, :]) & (segment_BS[:, None, :] > 0)
    return causal[None] & same


def _cast(tree, dtype):
    """Floating leaves in `dtype` (leaves already in it are kept, not copied)."""
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) and a.dtype != dtype
                        else a, tree)


def logits_fn(spec: StepSpec, trainable, base, ids_BS, segment_BS, position_BS, dropout_key=None):
    """float32 logits (B, S, V) of the tuned model on packed/padded rows."""
    trainable = _cast(trainable, DTYPES[spec.dtype])
    allowed = segment_attention(segment_BS)
    params, lora = forward_inputs(spec, trainable, base, dropout_key)
    return unembed(spec.model, params, forward(spec.model, params, ids_BS, position_BS, allowed, lora=lora).h)


def forward_inputs(spec: StepSpec, trainable, base, dropout_key=None):
    """(parameter tree, lora) for `modeling.forward`, as the method builds them: the frozen
    weights with the trained blocks as runs (frozen), the base weights and the adapters
    (lora), or all weights (full)."""
    return METHODS[spec.method].forward_inputs(spec.options, trainable, base, dropout_key)


def loss_sums(spec: StepSpec, trainable, base, batch: Batch, dropout_key=None):
    """(sum of the target tokens' negative log-likelihoods, number of target tokens)."""
    logits = logits_fn(spec, trainable, base, batch.ids, batch.segment, batch.position, dropout_key)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], batch.ids[:, 1:])
    weight = batch.loss[:, 1:].astype(jnp.float32)
    return jnp.sum(nll * weight), jnp.sum(weight)


def decay_mask(spec: StepSpec, tree) -> dict:
    """True on the leaves weight decay acts on: every leaf of a method that decays all
    (LoRA's adapters), else the weight matrices and embeddings by their role in the model's
    parameter spec (not biases or norm scales, as Hugging Face's Trainer)."""
    roles = param_roles(spec.model)
    decay_all = METHODS[spec.method].decay_all
    return jax.tree_util.tree_map_with_path(lambda path, _: decay_all or roles[path[-1].key] in WEIGHT_ROLES, tree)


def optimizer(spec: StepSpec) -> optax.GradientTransformation:
    """Clip, Adam, decoupled weight decay; the learning rate is applied by the step."""
    b1, b2, eps = spec.adam
    parts = [optax.clip_by_global_norm(spec.clip_norm)] if spec.clip_norm > 0 else []
    parts += [optax.scale_by_adam(b1, b2, eps)]
    if spec.weight_decay:
        parts.append(optax.add_decayed_weights(spec.weight_decay, mask=partial(decay_mask, spec)))
    return optax.chain(*parts)


def step_grads(spec: StepSpec, trainable, base, batch: Batch, step, key):
    """(grads, mean loss, target tokens) of one optimizer step over k micro-batches (batch
    arrays (k, B, S)): gradients of the summed token losses w.r.t. `trainable` only,
    accumulated over the micro-batches one at a time (`lax.scan`, so only one
    micro-batch's activations are alive) and divided by the step's target-token count."""
    def micro(carry, xs):
        grads, total, count = carry
        b, i = xs
        k_i = jax.random.fold_in(jax.random.fold_in(key, step), i)  # dropout: a function of (seed, step, i)
        g, (s, n) = jax.grad(lambda t: _with_aux(loss_sums(spec, t, base, b, k_i)), has_aux=True)(trainable)
        return (jax.tree.map(jnp.add, grads, g), total + s, count + n), None

    zeros = jax.tree.map(jnp.zeros_like, trainable)
    k = batch.ids.shape[0]
    (grads, total, count), _ = jax.lax.scan(micro, (zeros, jnp.float32(0), jnp.float32(0)), (batch, jnp.arange(k)))
    count = jnp.maximum(count, 1.0)
    return jax.tree.map(lambda g: g / count, grads), total / count, count


def _with_aux(sums):
    return sums[0], sums


def _train_step(spec: StepSpec, trainable, opt_state, base, batch: Batch, step, lr, key):
    """One optimizer step (`step_grads`, then clip / Adam / weight decay, then - lr * update);
    `key` is the run's dropout key (LoRA dropout). Returns (trainable, opt_state, mean loss,
    target tokens, finite): finite maps "loss", "gradient" (its global norm) and "weights"
    (the updated trainable ones) to whether they are finite, so a diverging step is caught
    before anything is saved (`_check_finite`)."""
    grads, loss, count = step_grads(spec, trainable, base, batch, step, key)
    updates, opt_state = optimizer(spec).update(grads, opt_state, trainable)
    trainable = jax.tree.map(lambda p, u: p - lr * u, trainable, updates)
    finite = dict(loss=jnp.isfinite(loss), gradient=jnp.isfinite(optax.tree.norm(grads)),
                  weights=jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(trainable)])))
    return trainable, opt_state, loss, count, finite


def _eval_sums(spec: StepSpec, trainable, base, batch: Batch):
    return loss_sums(spec, trainable, base, batch)


# The step and the validation loss are called on concrete arrays: compiled as top-level jits
# with modeling.LAYER_LOOP_OPTIONS (bfloat16 weights converted layer by layer in the loops).
train_step = top_level(_train_step, static_argnames=("spec",), donate_argnames=("trainable", "opt_state"))
eval_sums = top_level(_eval_sums, static_argnames=("spec",))


# -- the loop -----------------------------------------------------------------------------------
def schedule(cfg: TrainConfig):
    """The learning rate of each step (0-based: the number of updates done before it)."""
    s = followed_schedule(cfg)
    return optax.warmup_cosine_decay_schedule(0.0, s["peak_lr"], s["warmup_steps"], s["decay_end_step"], s["end_lr"])


def followed_schedule(cfg: TrainConfig) -> dict:
    """The learning-rate schedule every step of a run used, for run.json (a resume checks
    that the steps done before it used the same: `_check_schedule`)."""
    lr, s = cfg.optim.lr, cfg.schedule
    return dict(kind="linear warmup from 0, then cosine decay", peak_lr=lr, warmup_steps=s.warmup_steps,
                decay_end_step=max(s.total_steps, s.warmup_steps + 1), end_lr=lr * s.end_lr_fraction)


def initial_trainable(cfg: TrainConfig, model_cfg: ModelConfig, params: dict):
    """(trainable, base, layers): what the method optimizes, what it holds fixed, the blocks it
    trains (None: not a choice of blocks). `cfg` is `for_model`'s (the method's defaults filled in)."""
    return cfg.method.entry.init(cfg.method.chosen, model_cfg, params, _keys(cfg.data.seed)[0])


def _keys(seed: int):
    """(adapter init key, dropout key): separate streams of one seed."""
    return jax.random.split(jax.random.key(seed))


def evaluate(spec: StepSpec, trainable, base, enc: Encoded, batch_size: int, pad_id: int, max_len: int,
             pack: bool, fixed: bool = False) -> float:
    """Mean token loss over all target tokens of the encoded records."""
    total, count = 0.0, 0.0
    for b in batches(enc, batch_size, pad_id, max_len, pack, fixed=fixed):
        s, n = eval_sums(spec, trainable, base, _device(b))
        total, count = total + float(s), count + float(n)
    return total / max(count, 1.0)


def _device(b: Batch) -> Batch:
    return Batch(*(jnp.asarray(x) for x in b))


def _step_batch(rows: list, enc: Encoded, k: int, b: int, pad_id: int, max_len: int, fixed: bool) -> Batch:
    """(k, b, S) arrays with one padded length for the whole step (max_len when fixed)."""
    micro = [make_batch(rows[j * b: (j + 1) * b], enc, pad_id, max_len) for j in range(k)]
    s = max_len if fixed else max(m.ids.shape[1] for m in micro)
    return Batch(*(np.stack([np.pad(getattr(m, f), ((0, 0), (0, s - m.ids.shape[1])),
                                    constant_values=pad_id if f == "ids" else 0) for m in micro])
                   for f in Batch._fields))


def train(cfg: TrainConfig, model_folder, train_records: Sequence[dict], val_records: Sequence[dict] = (),
          *, stop_after: int | None = None) -> TrainResult:
    """Fine-tune the model in `model_folder` (module docstring). With `cfg.checkpoint_dir`
    holding checkpoints of the same run, training resumes from the latest one.
    `stop_after` ends the run after that step (as if killed there; the schedule still
    runs to `cfg.schedule.total_steps`)."""
    cfg.check()  # the options alone, before the model is loaded
    cfg.data.check_records(len(train_records))
    model_cfg, params, tok = _load_base(model_folder, train_records)
    cfg = cfg.for_model(model_cfg)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    enc, val_enc = _encode(cfg, tok, model_cfg, train_records, val_records)
    trainable, base, layers = initial_trainable(cfg, model_cfg, params)
    if layers is not None and (note := freeze.unchanged_layers_warning(layers, model_cfg.n_layers)):
        warnings.warn(note, stacklevel=2)
    spec = StepSpec.of(cfg, model_cfg)
    state, resumed_from, resumed_total = _fresh_state(spec, trainable), None, None
    ckpt = None
    if cfg.checkpoint_dir is not None:
        # total_steps alone may differ where the steps done keep their learning rates (_check_schedule)
        ckpt = Checkpoints(cfg.checkpoint_dir, run_identity(model_cfg, params, cfg.identity(), layers,
                                                            dict(hash=data_hash(train_records), n=len(train_records))),
                           cfg.keep, extensible=("schedule.total_steps",))
    try:
        if ckpt is not None and ckpt.latest_step() is not None:
            state, resumed_total = _resume(ckpt, state, cfg)
            resumed_from = state.step
        total = cfg.schedule.total_steps
        end = total if stop_after is None else min(total, stop_after)
        _run_steps(cfg, spec, state, base, enc, val_enc, pad_id, end, ckpt)
    finally:
        if ckpt is not None:
            ckpt.close()
    extended = resumed_total if resumed_total not in (None, cfg.schedule.total_steps) else None
    return TrainResult(cfg, model_cfg, state.history, state.trainable, base, layers, enc.n_truncated,
                       0 if val_enc is None else val_enc.n_truncated, resumed_from, Path(model_folder), extended)


@dataclasses.dataclass
class _State:
    """What the steps change and a checkpoint holds."""

    trainable: dict
    opt_state: optax.OptState
    step: int = 0  # optimizer steps done
    history: list = dataclasses.field(default_factory=list)

    def arrays(self) -> dict:
        return {"trainable": self.trainable, "opt_state": self.opt_state, "step": jnp.asarray(self.step, jnp.int32)}


def _load_base(model_folder, train_records) -> tuple[ModelConfig, dict, object]:
    """(model config, float32 parameter tree, tokenizer)."""
    model, tok = load_pretrained(model_folder, dtype=jnp.float32)
    if not train_records:
        raise ValueError("no training records")
    return model.cfg, model.param_tree(), tok


def _encode(cfg: TrainConfig, tok, model_cfg: ModelConfig, train_records, val_records):
    """(training, validation or None) records encoded; warns about records cut to max_len."""
    d = cfg.data
    enc = encode_all(train_records, tok, d.fmt, d.max_len, d.system)
    val_enc = encode_all(val_records, tok, d.fmt, d.max_len, d.system) if val_records else None
    _check_vocab(enc, model_cfg, tok)
    for name, e, n in (("training", enc, len(train_records)), ("validation", val_enc, len(val_records))):
        if e is not None and e.n_truncated:
            warnings.warn(f"{e.n_truncated} of {n} {name} records were longer than data.max_len={d.max_len} tokens: "
                          f"the oldest words of their input were dropped (outputs are kept whole)", stacklevel=3)
    return enc, val_enc


def _fresh_state(spec: StepSpec, trainable) -> _State:
    opt_state = optimizer(spec).init(trainable)
    # Committed like the arrays Orbax restores, so a resumed run reuses the compiled step.
    trainable, opt_state = jax.tree.map(lambda x: jax.device_put(x, x.sharding), (trainable, opt_state))
    return _State(trainable, opt_state)


def _resume(ckpt: Checkpoints, fresh: _State, cfg: TrainConfig) -> tuple[_State, int | None]:
    """(the state of the checkpoint folder's newest intact step, the total_steps its run
    asked for) (`fresh` gives the tree structure); a checkpoint past schedule.total_steps is
    refused (its model is trained longer), and so is one whose steps followed another schedule."""
    arrays, meta = ckpt.restore(fresh.arrays())
    state = _State(arrays["trainable"], arrays["opt_state"], int(arrays["step"]), meta["history"])
    total = cfg.schedule.total_steps
    if state.step > total:
        raise ValueError(f"checkpoint folder {ckpt.directory} holds a run trained for {state.step} steps, more than "
                         f"schedule.total_steps={total} asks for; raise --schedule.total-steps to at least "
                         f"{state.step}, or use another checkpoint folder to start afresh")
    saved_total = meta["identity"]["schedule"]["total_steps"]  # the identity check passed: it has a schedule
    _check_schedule(ckpt, state.history, saved_total, cfg)
    return state, saved_total


def _check_schedule(ckpt: Checkpoints, history: list, saved_total: int, cfg: TrainConfig) -> None:
    """The steps a checkpoint has done must have used the learning rates this run's schedule
    gives them, so that the resumed run is exactly an uninterrupted run of this config and
    run.json's schedule is the one followed. The identity already holds lr, warmup and the
    end fraction, so only schedule.total_steps can differ here: raising it (or lowering it)
    keeps the steps done only while they are in the warmup, or with a constant schedule
    (end_lr_fraction 1): then the run is extended, and run.json records it."""
    lr_at = schedule(cfg)
    total = cfg.schedule.total_steps
    step = next((h["step"] for h in history if h["lr"] != float(lr_at(h["step"] - 1))), None)
    if step is not None:
        raise ValueError(f"checkpoint folder {ckpt.directory} was trained with schedule.total_steps={saved_total}, "
                         f"this run has schedule.total_steps={total}: its step {step} used lr "
                         f"{history[step - 1]['lr']:.4g} where this schedule gives {float(lr_at(step - 1)):.4g}. Rerun "
                         f"with --schedule.total-steps {saved_total} to resume it, or train afresh in another "
                         "checkpoint folder (finetune.py: a new --out or --checkpoint-dir); only a schedule constant after warmup "
                         "(--schedule.end-lr-fraction 1) can be extended by changing --schedule.total-steps")
    if saved_total != total:
        warnings.warn(f"checkpoint folder {ckpt.directory}: resuming a run of schedule.total_steps={saved_total} "
                      f"as one of {total}; its {len(history)} steps done used this schedule's learning rates, so the "
                      "result is that of an uninterrupted run (run.json records extended_from_total_steps)",
                      stacklevel=4)


def _run_steps(cfg: TrainConfig, spec: StepSpec, state: _State, base, enc: Encoded, val_enc: Encoded | None,
               pad_id: int, end: int, ckpt: Checkpoints | None) -> None:
    """Steps state.step + 1 .. end, updating `state`: train, then validate and checkpoint when due."""
    d, total = cfg.data, cfg.schedule.total_steps
    base_c = _cast(base, DTYPES[cfg.dtype])  # one compute-dtype copy of the fixed weights
    dropout_key = _keys(d.seed)[1]
    lr_at = schedule(cfg)
    rows = _rows_from(d, enc, state.step)
    fixed = d.padding == "max_len"
    bar = _progress(cfg, state.step)
    try:
        for step in range(state.step, end):
            batch = _step_batch([next(rows) for _ in range(d.batch_size * d.accum)], enc, d.accum, d.batch_size,
                                pad_id, d.max_len, fixed)
            lr = float(lr_at(step))
            state.trainable, state.opt_state, loss, tokens, finite = train_step(
                spec, state.trainable, state.opt_state, base_c, _device(batch), jnp.asarray(step, jnp.int32),
                jnp.float32(lr), dropout_key)
            _check_finite(finite, step + 1, lr, ckpt)
            state.step = step + 1
            row = dict(step=state.step, loss=float(loss), val_loss=None, lr=lr, tokens=int(tokens))
            if val_enc is not None and _due(d.eval_every, state.step, total):
                # a batch past the records would only be padding: the same loss from a smaller array
                row["val_loss"] = evaluate(spec, state.trainable, base_c, val_enc,
                                           min(d.eval_batch_size, len(val_enc.ids)), pad_id, d.max_len, d.pack, fixed)
            state.history.append(row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}", **({} if row["val_loss"] is None else
                                                             {"val": f"{row['val_loss']:.4f}"}))
            if ckpt is not None and _due(cfg.save_every, state.step, total):
                ckpt.save(state.step, state.arrays(), {"history": state.history})
    finally:
        bar.close()


def _check_finite(finite: dict, step: int, lr: float, ckpt: Checkpoints | None) -> None:
    """Stop a diverged run at `step`, before its weights are checkpointed or written: the
    last checkpoint stays the newest, and no model with non-finite weights is saved."""
    bad = [f"the {name}" for name in ("loss", "gradient", "weights") if not bool(finite[name])]
    if not bad:
        return
    kept = ckpt.latest_step() if ckpt is not None else None
    where = f"the newest checkpoint, step {kept} in {ckpt.directory}, is kept" if kept is not None else "no checkpoint"
    what = ", ".join(bad[:-1]) + " and " + bad[-1] if len(bad) > 1 else bad[0]
    raise ValueError(f"step {step}: {what} became non-finite (lr {lr:.3g}); training stopped, no model was written "
                     f"({where}). Lower --optim.lr, clip gradients (--optim.clip-norm > 0), or check the base model's "
                     "weights")


def _rows_from(d, enc: Encoded, start: int):
    """The rows of steps start + 1, ... of data options `d`: the data order is a pure function
    of (seed, step)."""
    rows = rows_stream([len(i) for i in enc.ids], d.seed, d.max_len, d.pack)
    for _ in range(start * d.batch_size * d.accum):  # the rows already consumed: cheap, host-side lengths only
        next(rows)
    return rows


def _due(every: int, done: int, total: int) -> bool:
    """Whether an every-N-steps action (0: only at the end) is due after step `done`."""
    return bool(every and done % every == 0) or done == total


def _check_vocab(enc: Encoded, model_cfg: ModelConfig, tok) -> None:
    top = max(int(i.max()) for i in enc.ids)
    if top >= model_cfg.vocab_size:
        raise ValueError(f"the tokenizer produced id {top}, but the model has only {model_cfg.vocab_size} "
                         f"embeddings ({len(tok)} tokens in the tokenizer): wrong tokenizer for this model?")


def _progress(cfg: TrainConfig, start: int):
    from tqdm.auto import tqdm

    return tqdm(total=cfg.schedule.total_steps, initial=start, disable=not cfg.progress,
                desc=f"{cfg.method.name} tuning", unit="step")


# -- outputs ------------------------------------------------------------------------------------
def tuned_params(result: TrainResult) -> dict:
    """The full tuned parameter tree (float32), as the method merges it: LoRA merged into the
    base weights, trained blocks joined with the frozen ones, or the fully tuned weights."""
    m = result.config.method
    return m.entry.merged(m.chosen, result.trainable, result.base)


def save_hf_model(folder, model_cfg: ModelConfig, params: dict, source_folder) -> Path:
    """A Hugging Face folder (config.json, model.safetensors in float32, the tokenizer files
    of `source_folder`) that `load_pretrained` and transformers load."""
    from safetensors.numpy import save as st_save

    folder, source = Path(folder), Path(source_folder)
    hf_cfg = json.loads((source / "config.json").read_text())
    hf_cfg.pop("torch_dtype", None)
    hf_cfg["dtype"] = "float32"
    tensors = {k: np.ascontiguousarray(v, np.float32) for k, v in params_to_hf(model_cfg, params).items()}
    atomic_write_bytes(folder / "model.safetensors", st_save(tensors, metadata={"format": "pt"}))
    atomic_write_text(folder / "config.json", json.dumps(hf_cfg, indent=2) + "\n")
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            atomic_write_bytes(folder / name, (source / name).read_bytes())
    return folder


def save_peft_adapters(folder, result: TrainResult, base_model_name_or_path: str | None = None) -> Path:
    """PEFT adapter_config.json + adapter_model.safetensors of a run whose method trains
    adapters (LoRA)."""
    m = result.config.method
    if m.entry.save_adapters is None:
        have = [name for name, method in METHODS.items() if method.save_adapters is not None]
        raise ValueError(f"PEFT export needs a run of a method with adapters ({', '.join(have)}); this run used "
                         f"method.name={m.name!r}")
    return m.entry.save_adapters(folder, result.model_cfg, result.trainable, m.chosen,
                                  base_model_name_or_path or str(result.model_folder))


def write_outputs(result: TrainResult, out, base_model_name_or_path: str | None = None,
                  extra: dict | None = None) -> dict:
    """Everything a run leaves in `out`: model/ (the merged Hugging Face model the scoring
    pipeline loads), adapters/ (PEFT, methods with adapters: LoRA), history.csv / history.json
    and run.json (the grouped config, the seed, counts, versions). Returns {name: path}."""
    import platform

    from ..io import write_csv, write_json

    out = Path(out)
    paths = {"model": save_hf_model(out / "model", result.model_cfg, tuned_params(result), result.model_folder)}
    if result.config.method.entry.save_adapters is not None:
        paths["adapters"] = save_peft_adapters(out / "adapters", result, base_model_name_or_path)
    if result.history:
        paths["history_csv"] = write_csv(out / "history.csv", result.history)
    paths["history_json"] = write_json(out / "history.json", result.history)
    last = result.history[-1] if result.history else {}
    run = dict(config=dataclasses.asdict(result.config), seed=result.config.data.seed,
               model_folder=str(result.model_folder),
               model_config=dataclasses.asdict(result.model_cfg), trained_layers=result.layers,
               steps=len(result.history), final_loss=last.get("loss"), final_val_loss=last.get("val_loss"),
               n_truncated=result.n_truncated, n_val_truncated=result.n_val_truncated,
               resumed_from=result.resumed_from, schedule=followed_schedule(result.config),
               extended_from_total_steps=result.extended_from,
               versions=dict(python=platform.python_version(), jax=jax.__version__, optax=optax.__version__),
               **(extra or {}))
    paths["run"] = write_json(out / "run.json", run)
    return paths
