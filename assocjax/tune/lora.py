"""LoRA adapters for the stacked decoder blocks, matching Hugging Face PEFT's LoRA.

Adapters live in their own tree, {"layers": {f"{t}_lora_a": (L, in, r), f"{t}_lora_b":
(L, r, out)}}, stored (in, out) like our weights (x @ W); PEFT's lora_A.weight is the
transpose of one layer's A, lora_B.weight of one layer's B. `lora_inputs` turns them (with
the scale and dropout) into the `lora=` argument of the forwards of
`assocjax.models.modeling`, whose blocks compute x @ W + scale * (dropout(x) @ A) @ B; the
base parameter tree is left as it is, and a loss differentiated with respect to the
adapters alone never forms a gradient for W.

Targets are named by each architecture's folder (`Family.lora_targets`, target t adapts
the weight layers/{t}_w; `Family.peft_modules` gives the Hugging Face module): LLaMA q, k,
v, o (self_attn.{q,k,v,o}_proj), gate, up, down (mlp.{gate,up,down}_proj); GPT-2 qkv
(attn.c_attn, fused), out (attn.c_proj), fc (mlp.c_fc), proj (mlp.c_proj).

Default targets (`LoraConfig()` leaves them empty; `LoraConfig.for_model` fills them in
from `Family.lora_defaults`): the attention's query and value projections, the paper's
LoRA setting and PEFT's own default per architecture: LLaMA q, v; GPT-2 qkv, its fused
query/key/value projection (attn.c_attn) adapted as one matrix, so the key columns are
adapted too (one low-rank update of the fused matrix, exactly what PEFT does with
target_modules=["c_attn"]).
"""
from __future__ import annotations

import dataclasses
import math
from functools import partial

import jax
import jax.numpy as jnp

from assocjax.models.common import LoraInputs
from assocjax.models.config import ModelConfig
from assocjax.models.params import param_shapes
from assocjax.models.registry import FAMILIES, family

# views of the registry, by architecture: every target, and the defaults (module docstring)
TARGETS = {f.name: f.lora_targets for f in FAMILIES}
DEFAULT_TARGETS = {f.name: f.lora_defaults for f in FAMILIES}


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """rank r, alpha (scaling = alpha / rank, PEFT's default, not rsLoRA), dropout on the
    LoRA branch's input only, and the target modules (names in TARGETS; empty: the
    architecture's DEFAULT_TARGETS, filled in by `for_model`)."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    # modules to adapt (TARGETS: LLaMA q k v o gate up down, GPT-2 qkv out fc proj); empty: the attention
    # query/value projections, the paper's setting and PEFT's default: LLaMA q v, GPT-2 qkv (fused, adapted whole)
    targets: tuple[str, ...] = ()

    def __post_init__(self):
        if not (isinstance(self.rank, int) and self.rank > 0):
            raise ValueError(f"LoraConfig.rank must be a positive integer; got {self.rank!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoraConfig.dropout must be in [0, 1); got {self.dropout!r}")
        if isinstance(self.targets, str):  # ("q") is a str, not a tuple: accept it as one target
            object.__setattr__(self, "targets", (self.targets,))
        if len(set(self.targets)) != len(self.targets):
            raise ValueError(f"LoraConfig.targets has duplicates: {self.targets}")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def for_model(self, cfg: ModelConfig) -> "LoraConfig":
        """This config with the architecture's DEFAULT_TARGETS when no targets are given."""
        if self.targets:
            return self
        return dataclasses.replace(self, targets=family(cfg).lora_defaults)


def target_shapes(cfg: ModelConfig, lora: LoraConfig) -> dict[str, tuple[int, int]]:
    """target -> (in, out) of its weight; ValueError listing the valid names when a
    target matches no module of this architecture. No targets: the architecture's defaults."""
    lora = lora.for_model(cfg)
    names = family(cfg).lora_targets
    bad = [t for t in lora.targets if t not in names]
    if bad:
        raise ValueError(f"LoRA targets {bad} match no module of a {cfg.arch} model; "
                         f"the modules that exist are: {', '.join(names)}")
    layers = param_shapes(cfg)["layers"]
    return {t: layers[f"{t}_w"][1:] for t in lora.targets}


@partial(jax.jit, static_argnames=("cfg", "lora", "dtype"))
def init_adapters(cfg: ModelConfig, lora: LoraConfig, key, dtype=jnp.float32) -> dict:
    """Fresh adapters: A as PEFT's lora_A (nn.Linear's default kaiming_uniform(a=sqrt(5)),
    i.e. U(-1/sqrt(in), 1/sqrt(in))), B = 0, so the adapted model starts equal to the base."""
    shapes = target_shapes(cfg, lora)
    keys = jax.random.split(key, len(shapes))
    layers = {}
    for k, (t, (d_in, d_out)) in zip(keys, shapes.items()):
        bound = 1.0 / math.sqrt(d_in)  # gain sqrt(2 / (1 + 5)) * sqrt(3 / fan_in)
        layers[f"{t}_lora_a"] = jax.random.uniform(k, (cfg.n_layers, d_in, lora.rank), dtype, -bound, bound)
        layers[f"{t}_lora_b"] = jnp.zeros((cfg.n_layers, lora.rank, d_out), dtype)
    return {"layers": layers}


def adapter_targets(adapters: dict) -> tuple[str, ...]:
    """The target names an adapter tree holds (in tree order)."""
    return tuple(n[: -len("_lora_a")] for n in adapters["layers"] if n.endswith("_lora_a"))


def _check(params: dict, adapters: dict, lora: LoraConfig) -> int:
    if not lora.targets:  # the base tree does not say its architecture: defaults are filled in earlier
        raise ValueError("LoraConfig.targets is empty here: fill in the model's defaults with lora.for_model(cfg) "
                         f"(the adapters hold {list(adapter_targets(adapters))})")
    layers = params["layers"]
    n_layers = next(iter(layers.values())).shape[0]
    for t in lora.targets:
        for end, axis in (("a", 1), ("b", 2)):
            name = f"{t}_lora_{end}"
            if name not in adapters.get("layers", {}):
                raise ValueError(f"adapters have no {name!r} for target {t!r}; they hold "
                                 f"{sorted(adapters.get('layers', {}))}")
            w, x = layers[f"{t}_w"], adapters["layers"][name]
            want = (n_layers, w.shape[1], lora.rank) if end == "a" else (n_layers, lora.rank, w.shape[2])
            if tuple(x.shape) != want:
                raise ValueError(f"adapter {name} has shape {tuple(x.shape)}; expected {want} "
                                 f"(layers, in, rank) / (layers, rank, out) for rank {lora.rank}")
    return n_layers


def lora_inputs(params: dict, adapters: dict, lora: LoraConfig, dropout_key=None) -> LoraInputs:
    """The `lora=` argument of the forwards for these adapters (checked against the base
    tree `params`): the scale and, when dropout_key is given and lora.dropout > 0, the
    dropout rate and keys. Pass a fresh dropout_key each training step; for
    evaluation leave it out (no dropout, as PEFT in eval mode)."""
    n_layers = _check(params, adapters, lora)
    layers = adapters["layers"]
    dropout = key = None
    if dropout_key is not None and lora.dropout > 0:
        dropout = jnp.full((n_layers,), lora.dropout, jnp.float32)
        key = jax.random.split(dropout_key, n_layers)
    return LoraInputs(a={t: layers[f"{t}_lora_a"] for t in lora.targets},
                      b={t: layers[f"{t}_lora_b"] for t in lora.targets},
                      scale=jnp.full((n_layers,), lora.scaling, jnp.float32), dropout=dropout, key=key)


@partial(jax.jit, static_argnames=("lora",))
def merge(params: dict, adapters: dict, lora: LoraConfig) -> dict:
    """A plain tree (no LoRA leaves) with W + scale * A @ B in each target, in W's dtype
    (the product is formed in float32)."""
    _check(params, adapters, lora)
    layers = dict(params["layers"])
    for t in lora.targets:
        w = layers[f"{t}_w"]
        a = adapters["layers"][f"{t}_lora_a"].astype(jnp.float32)
        b = adapters["layers"][f"{t}_lora_b"].astype(jnp.float32)
        delta = jnp.einsum("lir,lro->lio", a, b, precision=jax.lax.Precision.HIGHEST)
        layers[f"{t}_w"] = (w.astype(jnp.float32) + lora.scaling * delta).astype(w.dtype)
    return {**params, "layers": layers}
