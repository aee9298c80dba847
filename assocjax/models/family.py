"""What one architecture folder provides: the `Family` interface, and the types a folder
builds its parameter spec and weight names from.

A family is a folder `assocjax/models/<name>/` (as jax-ml/bonsai lays out its models):

- `config.py`: `config(fields: Fields) -> ModelConfig`, config.json -> our config. `Fields`
  (in `models.config`) reads typed fields and names the file and field in its errors. A
  family that needs settings the shared `ModelConfig` lacks subclasses it in its folder (a
  frozen dataclass; every new field with a default), and its functions read them.
- `params.py`: `param_spec(cfg) -> {name: ParamSpec, "layers": {name: ParamSpec}}` (per-layer
  weights lead with n_layers; leaf names unique in the model; LoRA target `t` adapts the
  matrix leaf `layers/{t}_w`, stored (in, out) so a block computes x @ W); `RULES`: the
  Hugging Face names (after the model prefix, `{i}` per layer) -> our paths, transposed or
  not; `PREFIXES`, the model prefixes checkpoints use (the first one is written on export).
  The untied output head is our leaf `lm_head` (V, D), added by `models.params` itself.
- `modeling.py`: pure functions of (config, parameters, arrays), composed from the shared
  pieces in `models.common` (layer_norm, rms_norm, rope, attention through `attend`, `dense`
  with its LoRA `adapter`): `embed(cfg, params, ids_BS, positions_BS) -> h_BSD`;
  `block(cfg, p, h_BSD, positions_BS, allowed_BSK, cache_kv=None, index=None, lora=None) ->
  (h_BSD, cache_kv)`, one layer (p: that layer's slices of params["layers"]; lora: that
  layer's `LoraInputs` or None); `final_norm(cfg, params, h_BSD) -> h_BSD`.
- `__init__.py`: `FAMILY = Family(...)`, those pieces plus the LoRA and PEFT names.

`models.registry` lists the folders (one line per family) and is the only place that maps
a config's `arch` or a config.json's `model_type` to its family: config, params, modeling,
tune.lora and tune.peft ask it instead of branching on the architecture.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, NamedTuple

ROLES = ("matrix", "bias", "scale", "embedding")  # scale: a norm's weight
WEIGHT_ROLES = ("matrix", "embedding")  # what weight decay and initial scales act on (not biases or norms)


class ParamSpec(NamedTuple):
    shape: tuple[int, ...]
    role: str  # one of ROLES


def layernorm_block_spec(n_layers: int, hidden: int, intermediate: int) -> dict:
    """The stacked parameters of a block with biased LayerNorms, a fused QKV projection, an
    output projection and a two-matrix MLP, every projection with a bias: GPT-2's and
    GPT-NeoX's blocks hold exactly these (they differ in how they use them)."""
    L, D, F = n_layers, hidden, intermediate
    M, B, S, _ = ROLES  # matrix, bias, scale, embedding
    P = ParamSpec
    return dict(ln1_scale=P((L, D), S), ln1_bias=P((L, D), B), qkv_w=P((L, D, 3 * D), M), qkv_b=P((L, 3 * D), B),
                out_w=P((L, D, D), M), out_b=P((L, D), B), ln2_scale=P((L, D), S), ln2_bias=P((L, D), B),
                fc_w=P((L, D, F), M), fc_b=P((L, F), B), proj_w=P((L, F, D), M), proj_b=P((L, D), B))


class Rule(NamedTuple):
    """One Hugging Face tensor name (after the model prefix; `{i}` marks a per-layer weight,
    stacked along a new leading axis) -> our leaf path ("layers/q_w"), and how to transform
    it: "none" or "transpose" (nn.Linear's (out, in) -> our (in, out))."""

    hf: str
    ours: str
    transform: str = "none"  # "none" | "transpose"


@dataclasses.dataclass(frozen=True)
class Family:
    """One decoder architecture: everything the library needs to know about it.

    name: its configs' `ModelConfig.arch` ("gpt2"); model_types: the config.json
    `model_type` values it reads. config, param_spec, rules, prefixes, embed, block,
    final_norm: as the module docstring lists them. embedding: our leaf of the input
    embedding, also the output head when the embeddings are tied. head: the untied head's
    rule (its name is never under the model prefix). ignored: regex of checkpoint buffers
    that are not weights (causal masks, RoPE tables). lora_targets: our LoRA target names
    (target t adapts layers/{t}_w); lora_defaults: the targets `LoraConfig()` adapts (the
    attention's query and value, PEFT's default for the architecture). peft_modules: target
    -> its module path inside one Hugging Face block ("attn.c_attn"); peft_blocks: the
    blocks' module list in the Hugging Face model ("transformer.h"); fan_in_fan_out: the
    Hugging Face weights are stored (in, out) (GPT-2's Conv1D), as PEFT's flag says.
    """

    name: str
    model_types: tuple[str, ...]
    config: Callable  # (Fields) -> ModelConfig
    param_spec: Callable  # (ModelConfig) -> {name: ParamSpec, "layers": {...}}
    rules: tuple[Rule, ...]
    prefixes: tuple[str, ...]
    embed: Callable  # (cfg, params, ids_BS, positions_BS) -> h_BSD
    block: Callable  # (cfg, p, h_BSD, positions_BS, allowed_BSK, cache_kv, index, lora) -> (h_BSD, cache_kv)
    final_norm: Callable  # (cfg, params, h_BSD) -> h_BSD
    embedding: str
    lora_targets: tuple[str, ...]
    lora_defaults: tuple[str, ...]
    peft_modules: Mapping[str, str]
    peft_blocks: str
    fan_in_fan_out: bool = False
    head: Rule = Rule("lm_head.weight", "lm_head")
    ignored: str = r"rotary_emb\.inv_freq$"
