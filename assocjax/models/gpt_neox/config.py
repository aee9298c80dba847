"""GPT-NeoX config.json -> `NeoXConfig`.

Pythia checkpoints name the rotary settings `rotary_pct` and `rotary_emb_base`;
transformers >= 5 writes them as `rope_parameters` {"partial_rotary_factor",
"rope_theta"}. Both are read, the latter first, with transformers' defaults (0.25, 10000).
"""
from __future__ import annotations

import dataclasses

from ..config import Fields, ModelConfig


@dataclasses.dataclass(frozen=True)
class NeoXConfig(ModelConfig):
    rotary_dim: int = 0  # channels of each head that are rotated (the first ones)
    parallel_residual: bool = True  # h + attn(ln1(h)) + mlp(ln2(h)); False: GPT-2's sequential form


def config(c: Fields) -> NeoXConfig:
    if c.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"{c.source}: hidden_act {c.cfg['hidden_act']!r} is not supported (gelu only)")
    if not c.bool("attention_bias", True):
        raise ValueError(f"{c.source}: attention_bias=false is not supported (GPT-NeoX and Pythia have biases)")
    rope = c.dict("rope_parameters") or c.dict("rope_scaling")
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ValueError(f"{c.source}: rope_type {rope.get('rope_type', rope.get('type'))!r} is not supported (default)")
    rope_fields = Fields(rope, f"{c.source} rope_parameters", "gpt_neox")
    theta = rope_fields.float("rope_theta", c.float("rotary_emb_base", 10000.0))
    fraction = rope_fields.float("partial_rotary_factor", c.float("rotary_pct", 0.25))
    hidden, heads = c.int("hidden_size"), c.int("num_attention_heads")
    c.divides("hidden_size", hidden, "num_attention_heads", heads)
    head_dim = hidden // heads
    rotary_dim = int(head_dim * fraction)  # transformers' rounding (down)
    if fraction > 1 or rotary_dim < 2 or rotary_dim % 2:
        raise ValueError(f"{c.source}: the rotary fraction {fraction} of the {head_dim} channels of a head gives "
                         f"{rotary_dim} rotated channels; it must be an even number from 2 to {head_dim}")
    return NeoXConfig(
        arch="gpt_neox", vocab_size=c.int("vocab_size"), hidden=hidden, n_layers=c.int("num_hidden_layers"),
        n_heads=heads, n_kv_heads=heads, head_dim=head_dim, intermediate=c.int("intermediate_size"),
        max_positions=c.int("max_position_embeddings", 2048), norm_eps=c.float("layer_norm_eps", 1e-5),
        tie_embeddings=c.bool("tie_word_embeddings", False), rope_theta=theta, rotary_dim=rotary_dim,
        parallel_residual=c.bool("use_parallel_residual", True),
    )
