"""LLaMA's config.json (LLaMA 1-3 and LLaMA-2-style models: no biases, SiLU MLP, default or
linear RoPE scaling) -> `ModelConfig`."""
from __future__ import annotations

from ..config import Fields, ModelConfig


def config(c: Fields) -> ModelConfig:
    for flag in ("attention_bias", "mlp_bias"):
        if c.cfg.get(flag):
            raise ValueError(f"{c.source}: {flag}=true is not supported (LLaMA-2-style models have no biases)")
    if c.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{c.source}: hidden_act {c.cfg['hidden_act']!r} is not supported (silu only)")
    rope = c.dict("rope_parameters")
    scaling = c.dict("rope_scaling")
    rope_type = rope.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
    if rope_type not in ("default", "linear"):
        raise ValueError(f"{c.source}: rope_type {rope_type!r} is not supported (default, linear)")
    where = "rope_parameters" if "factor" in rope else "rope_scaling"
    factor = Fields({"factor": rope.get("factor", scaling.get("factor"))}, f"{c.source} {where}", "llama").float(
        "factor", 1.0) if rope_type == "linear" else 1.0
    theta = Fields({"rope_theta": rope.get("rope_theta")}, f"{c.source} rope_parameters", "llama").float(
        "rope_theta", c.float("rope_theta", 10000.0))
    hidden, heads = c.int("hidden_size"), c.int("num_attention_heads")
    kv = c.int("num_key_value_heads", heads)
    if heads % kv:
        raise ValueError(f"{c.source}: num_attention_heads={heads} is not a multiple of num_key_value_heads={kv}")
    if c.cfg.get("head_dim") is None:
        c.divides("hidden_size", hidden, "num_attention_heads", heads)
    return ModelConfig(
        arch="llama", vocab_size=c.int("vocab_size"), hidden=hidden, n_layers=c.int("num_hidden_layers"),
        n_heads=heads, n_kv_heads=kv, head_dim=c.int("head_dim", hidden // heads),
        intermediate=c.int("intermediate_size"), max_positions=c.int("max_position_embeddings", 4096),
        norm_eps=c.float("rms_norm_eps", 1e-6), tie_embeddings=c.bool("tie_word_embeddings", False),
        rope_theta=theta, rope_scaling_factor=factor,
    )
