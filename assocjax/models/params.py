"""Declarative parameter spec of each architecture, and the map from Hugging Face weight
names to it; each family's folder holds its own spec and names (`registry.family(cfg)`).

`param_spec(cfg)` is the tree of every parameter's shape and role (matrix, bias, scale,
embedding); initialisation, weight decay and any rule that treats kinds of weights
differently read the role from here, never from the name.

Each rule (`family.Rule`) is (Hugging Face name after the model prefix, our path,
transform). `{i}` marks a per-layer weight: those are stacked along a new leading axis
(layers are scanned).
"""
from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np

from .config import ModelConfig
from .family import ROLES, WEIGHT_ROLES, ParamSpec, Rule
from .registry import family

__all__ = ["ROLES", "WEIGHT_ROLES", "ParamSpec", "Rule", "param_spec", "param_shapes", "param_roles",
           "expected_names", "weight_plan", "nest", "params_to_hf"]


def param_spec(cfg: ModelConfig) -> dict:
    """Our parameter tree: {name: ParamSpec, "layers": {name: ParamSpec}}; per-layer
    weights lead with n_layers (layers are scanned)."""
    tree = dict(family(cfg).param_spec(cfg))
    if not cfg.tie_embeddings:
        tree["lm_head"] = ParamSpec((cfg.vocab_size, cfg.hidden), "matrix")
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


def _transform(a: np.ndarray, how: str) -> np.ndarray:
    return np.swapaxes(a, -1, -2) if how == "transpose" else a


def _prefix(cfg: ModelConfig, names: set[str]) -> str:
    for p in family(cfg).prefixes:
        if p and any(n.startswith(p) for n in names):
            return p
    return ""


def expected_names(cfg: ModelConfig, names: set[str]) -> dict[str, tuple[Rule, int | None]]:
    """Every Hugging Face name this config needs -> (rule, layer index or None)."""
    fam = family(cfg)
    prefix = _prefix(cfg, names)
    out = {}
    for rule in fam.rules:
        if "{i}" in rule.hf:
            for i in range(cfg.n_layers):
                out[prefix + rule.hf.format(i=i)] = (rule, i)
        else:
            out[prefix + rule.hf] = (rule, None)
    if not cfg.tie_embeddings:
        out[fam.head.hf] = (fam.head, None)
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
    fam = family(cfg)
    expected = expected_names(cfg, names)
    ignorable = {n for n in names if re.search(fam.ignored, n)}
    if cfg.tie_embeddings:
        ignorable.add(fam.head.hf)
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
    fam = family(cfg)
    prefix = fam.prefixes[0] if prefix is None else prefix
    rules = fam.rules + (() if cfg.tie_embeddings else (fam.head,))
    out = {}
    for rule in rules:
        node = params
        for p in rule.ours.split("/"):
            node = node[p]
        a = np.asarray(node)
        name = rule.hf if rule is fam.head else prefix + rule.hf
        if "{i}" in rule.hf:
            for i in range(cfg.n_layers):
                out[name.format(i=i)] = _transform(a[i], rule.transform)
        else:
            out[name] = _transform(a, rule.transform)
    return out
