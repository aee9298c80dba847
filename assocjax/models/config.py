"""One frozen, hashable config for every supported decoder, read from Hugging Face's
config.json (hashable so it can be a static argument of jitted functions)."""
from __future__ import annotations

import dataclasses

SUPPORTED = ("gpt2", "llama")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    arch: str
    vocab_size: int
    hidden: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate: int
    max_positions: int
    norm_eps: float
    tie_embeddings: bool
    rope_theta: float = 10000.0
    rope_scaling_factor: float = 1.0  # "linear" RoPE scaling; 1 = none

    @property
    def group(self) -> int:
        return self.n_heads // self.n_kv_heads


def from_hf(cfg: dict, source: str = "config.json") -> ModelConfig:
    """Translate a Hugging Face config dict; `source` names it in error messages."""
    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED:
        raise ValueError(f"{source}: unsupported model_type {model_type!r}; supported: {', '.join(SUPPORTED)}")
    try:
        return _gpt2(cfg) if model_type == "gpt2" else _llama(cfg, source)
    except KeyError as e:
        raise ValueError(f"{source}: missing field {e.args[0]!r} for model_type {model_type!r}") from None


def _gpt2(c: dict) -> ModelConfig:
    d = c["n_embd"]
    act = c.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"config.json: GPT-2 activation_function {act!r} is not supported (gelu_new only)")
    return ModelConfig(
        arch="gpt2", vocab_size=c["vocab_size"], hidden=d, n_layers=c["n_layer"], n_heads=c["n_head"],
        n_kv_heads=c["n_head"], head_dim=d // c["n_head"], intermediate=c.get("n_inner") or 4 * d,
        max_positions=c["n_positions"], norm_eps=c.get("layer_norm_epsilon", 1e-5),
        tie_embeddings=c.get("tie_word_embeddings", True),
    )


def _llama(c: dict, source: str) -> ModelConfig:
    for flag in ("attention_bias", "mlp_bias"):
        if c.get(flag):
            raise ValueError(f"{source}: {flag}=true is not supported (LLaMA-2-style models have no biases)")
    if c.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{source}: hidden_act {c['hidden_act']!r} is not supported (silu only)")
    rope = dict(c.get("rope_parameters") or {})
    scaling = c.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
    if rope_type not in ("default", "linear"):
        raise ValueError(f"{source}: rope_type {rope_type!r} is not supported (default, linear)")
    factor = float(rope.get("factor", scaling.get("factor", 1.0))) if rope_type == "linear" else 1.0
    theta = rope.get("rope_theta", c.get("rope_theta", 10000.0))
    heads = c["num_attention_heads"]
    kv = c.get("num_key_value_heads") or heads
    if heads % kv:
        raise ValueError(f"{source}: num_attention_heads={heads} is not a multiple of num_key_value_heads={kv}")
    return ModelConfig(
        arch="llama", vocab_size=c["vocab_size"], hidden=c["hidden_size"], n_layers=c["num_hidden_layers"],
        n_heads=heads, n_kv_heads=kv, head_dim=c.get("head_dim") or c["hidden_size"] // heads,
        intermediate=c["intermediate_size"], max_positions=c.get("max_position_embeddings", 4096),
        norm_eps=c.get("rms_norm_eps", 1e-6), tie_embeddings=c.get("tie_word_embeddings", False),
        rope_theta=float(theta), rope_scaling_factor=factor,
    )
