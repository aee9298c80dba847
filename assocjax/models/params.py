"""Declarative parameter spec of each architecture, and the map from Hugging Face weight
names to it.

`param_spec(cfg)` is the tree of every parameter's shape and role (matrix, bias, scale,
embedding); initialisation, weight decay and any rule that treats kinds of weights
differently read the role from here, never from the name.

Each rule is (Hugging Face name after the model prefix, our path, transform). `{i}` marks
a per-layer weight: those are stacked along a new leading axis (layers are scanned).
GPT-2's Conv1D weights are already (in, out); LLaMA's nn.Linear weights are (out, in)
and are transposed to (in, out).
"""
from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np

from .config import ModelConfig


ROLES = ("matrix", "bias", "scale", "embedding")  # scale: a norm's weight
WEIGHT_ROLES = ("matrix", "embedding")  # what weight decay and initial scales act on (not biases or norms)


class ParamSpec(NamedTuple):
    shape: tuple[int, ...]
    role: str  # one of ROLES


def param_spec(cfg: ModelConfig) -> dict:
    """Our parameter tree: {name: ParamSpec, "layers": {name: ParamSpec}}; per-layer
    weights lead with n_layers (layers are scanned)."""
    L, D, F, V = cfg.n_layers, cfg.hidden, cfg.intermediate, cfg.vocab_size
    M, B, S, E = ROLES  # matrix, bias, scale, embedding
    P = ParamSpec
    if cfg.arch == "gpt2":
        layers = dict(ln1_scale=P((L, D), S), ln1_bias=P((L, D), B), qkv_w=P((L, D, 3 * D), M), qkv_b=P((L, 3 * D), B),
                      out_w=P((L, D, D), M), out_b=P((L, D), B), ln2_scale=P((L, D), S), ln2_bias=P((L, D), B),
                      fc_w=P((L, D, F), M), fc_b=P((L, F), B), proj_w=P((L, F, D), M), proj_b=P((L, D), B))
        tree = dict(wte=P((V, D), E), wpe=P((cfg.max_positions, D), E), layers=layers, lnf_scale=P((D,), S),
                    lnf_bias=P((D,), B))
    else:
        qd, kvd = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        layers = dict(attn_norm=P((L, D), S), q_w=P((L, D, qd), M), k_w=P((L, D, kvd), M), v_w=P((L, D, kvd), M),
                      o_w=P((L, qd, D), M), mlp_norm=P((L, D), S), gate_w=P((L, D, F), M), up_w=P((L, D, F), M),
                      down_w=P((L, F, D), M))
        tree = dict(embed=P((V, D), E), layers=layers, final_norm=P((D,), S))
    if not cfg.tie_embeddings:
        tree["lm_head"] = P((V, D), M)
    return tree


def param_shapes(cfg: ModelConfig) -> dict:
    """The spec's shapes, same tree."""
    return _map(lambda p: p.shape, param_spec(cfg))


def param_roles(cfg: ModelConfig) -> dict[str, str]:
    """Leaf name -> role ("qkv_w" -> "matrix"); leaf names are unique within a model, so
    trees that regroup the leaves (the runs of frozen tuning) look their roles up by name."""
    out = {}
    for name, p in param_spec(cfg).items():
        out.update({n: q.role for n, q in p.items()} if isinstance(p, dict) else {name: p.role})
    return out


def _map(fn, tree: dict) -> dict:
    return {k: _map(fn, v) if isinstance(v, dict) else fn(v) for k, v in tree.items()}


class Rule(NamedTuple):
    hf: str
    ours: str
    transform: str = "none"  # "none" | "transpose"


GPT2_RULES = (
    Rule("wte.weight", "wte"),
    Rule("wpe.weight", "wpe"),
    Rule("h.{i}.ln_1.weight", "layers/ln1_scale"),
    Rule("h.{i}.ln_1.bias", "layers/ln1_bias"),
    Rule("h.{i}.attn.c_attn.weight", "layers/qkv_w"),
    Rule("h.{i}.attn.c_attn.bias", "layers/qkv_b"),
    Rule("h.{i}.attn.c_proj.weight", "layers/out_w"),
    Rule("h.{i}.attn.c_proj.bias", "layers/out_b"),
    Rule("h.{i}.ln_2.weight", "layers/ln2_scale"),
    Rule("h.{i}.ln_2.bias", "layers/ln2_bias"),
    Rule("h.{i}.mlp.c_fc.weight", "layers/fc_w"),
    Rule("h.{i}.mlp.c_fc.bias", "layers/fc_b"),
    Rule("h.{i}.mlp.c_proj.weight", "layers/proj_w"),
    Rule("h.{i}.mlp.c_proj.bias", "layers/proj_b"),
    Rule("ln_f.weight", "lnf_scale"),
    Rule("ln_f.bias", "lnf_bias"),
)

LLAMA_RULES = (
    Rule("embed_tokens.weight", "embed"),
    Rule("layers.{i}.input_layernorm.weight", "layers/attn_norm"),
    Rule("layers.{i}.self_attn.q_proj.weight", "layers/q_w", "transpose"),
    Rule("layers.{i}.self_attn.k_proj.weight", "layers/k_w", "transpose"),
    Rule("layers.{i}.self_attn.v_proj.weight", "layers/v_w", "transpose"),
    Rule("layers.{i}.self_attn.o_proj.weight", "layers/o_w", "transpose"),
    Rule("layers.{i}.post_attention_layernorm.weight", "layers/mlp_norm"),
    Rule("layers.{i}.mlp.gate_proj.weight", "layers/gate_w", "transpose"),
    Rule("layers.{i}.mlp.up_proj.weight", "layers/up_w", "transpose"),
    Rule("layers.{i}.mlp.down_proj.weight", "layers/down_w", "transpose"),
    Rule("norm.weight", "final_norm"),
)

RULES = {"gpt2": GPT2_RULES, "llama": LLAMA_RULES}
PREFIXES = {"gpt2": ("transformer.", ""), "llama": ("model.", "")}
HEAD = Rule("lm_head.weight", "lm_head")  # untied heads only; never under the model prefix
# Buffers that checkpoints may carry but that are not weights (causal masks, RoPE tables).
IGNORED = re.compile(r"(\.attn\.(masked_)?bias$|rotary_emb\.inv_freq$)")


def _transform(a: np.ndarray, how: str) -> np.ndarray:
    return np.swapaxes(a, -1, -2) if how == "transpose" else a


def _prefix(cfg: ModelConfig, names: set[str]) -> str:
    for p in PREFIXES[cfg.arch]:
        if p and any(n.startswith(p) for n in names):
            return p
    return ""


def expected_names(cfg: ModelConfig, names: set[str]) -> dict[str, tuple[Rule, int | None]]:
    """Every Hugging Face name this config needs -> (rule, layer index or None)."""
    prefix = _prefix(cfg, names)
    out = {}
    for rule in RULES[cfg.arch]:
        if "{i}" in rule.hf:
            for i in range(cfg.n_layers):
                out[prefix + rule.hf.format(i=i)] = (rule, i)
        else:
            out[prefix + rule.hf] = (rule, None)
    if not cfg.tie_embeddings:
        out[HEAD.hf] = (HEAD, None)
    return out


class Leaf(NamedTuple):
    """Where one leaf of our tree comes from: one Hugging Face tensor, or one per layer
    (`stacked`: stacked along a new leading axis), each transformed by `transform`."""

    names: tuple[str, ...]
    stacked: bool
    transform: str


def weight_plan(cfg: ModelConfig, names: set[str], source: str) -> dict[str, Leaf]:
    """Our leaf path ("layers/q_w") -> its `Leaf`, for the tensors `names` of a checkpoint.

    Missing or unexpected names raise one error listing them (known buffers and a tied
    head's redundant copy are ignored). The loader builds leaves one at a time from this
    plan, so no second copy of the whole model is ever needed.
    """
    expected = expected_names(cfg, names)
    ignorable = {n for n in names if IGNORED.search(n)}
    if cfg.tie_embeddings:
        ignorable.add(HEAD.hf)
    missing = sorted(set(expected) - names)
    unexpected = sorted(names - set(expected) - ignorable)
    if missing or unexpected:
        raise ValueError(f"{source}: weights do not match the {cfg.arch} config "
                         f"({cfg.n_layers} layers): missing {missing[:20]}{' ...' if len(missing) > 20 else ''}; "
                         f"unexpected {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}")
    per_leaf: dict[str, list] = {}
    rules: dict[str, Rule] = {}
    for name, (rule, layer) in expected.items():
        slots = per_leaf.setdefault(rule.ours, [None] * (cfg.n_layers if layer is not None else 1))
        slots[layer or 0] = name
        rules[rule.ours] = rule
    return {path: Leaf(tuple(slots), "{i}" in rules[path].hf, rules[path].transform) for path, slots in per_leaf.items()}


def nest(flat: dict[str, object]) -> dict:
    """{"layers/q_w": x, ...} -> {"layers": {"q_w": x}, ...}."""
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def params_to_hf(cfg: ModelConfig, params: dict, prefix: str | None = None) -> dict[str, np.ndarray]:
    """Inverse map (our tree -> Hugging Face names), for exports such as merged weights."""
    prefix = PREFIXES[cfg.arch][0] if prefix is None else prefix
    rules = RULES[cfg.arch] + (() if cfg.tie_embeddings else (HEAD,))
    out = {}
    for rule in rules:
        node = params
        for p in rule.ours.split("/"):
            node = node[p]
        a = np.asarray(node)
        name = rule.hf if rule is HEAD else prefix + rule.hf
        if "{i}" in rule.hf:
            for i in range(cfg.n_layers):
                out[name.format(i=i)] = _transform(a[i], rule.transform)
        else:
            out[name] = _transform(a, rule.transform)
    return out
