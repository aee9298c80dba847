"""One frozen, hashable config for every supported decoder, read from Hugging Face's
config.json (hashable so it can be a static argument of jitted functions)."""
from __future__ import annotations

import dataclasses
import math

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
    """Translate a Hugging Face config dict; `source` names it in error messages, which name
    the offending field (missing, of the wrong type, or out of range)."""
    if not isinstance(cfg, dict):
        raise ValueError(f"{source}: expected a JSON object, found a {type(cfg).__name__}")
    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED:
        raise ValueError(f"{source}: unsupported model_type {model_type!r}; supported: {', '.join(SUPPORTED)}")
    fields = _Fields(cfg, source, model_type)
    return _gpt2(fields) if model_type == "gpt2" else _llama(fields)


_REQUIRED = object()


class _Fields:
    """Typed reads of config.json fields; a missing (or null) field takes the default, a
    bad one is a ValueError naming the file and the field."""

    def __init__(self, cfg: dict, source: str, model_type: str):
        self.cfg, self.source, self.model_type = cfg, source, model_type

    def get(self, key: str, default=_REQUIRED):
        value = self.cfg.get(key)
        if value is None:
            if default is _REQUIRED:
                raise ValueError(f"{self.source}: missing field {key!r} for model_type {self.model_type!r}")
            return default
        return value

    def error(self, key: str, what: str) -> ValueError:
        return ValueError(f"{self.source}: field {key!r} {what}; got {self.cfg.get(key)!r}")

    def int(self, key: str, default=_REQUIRED) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.error(key, "must be a positive integer")
        return value

    def float(self, key: str, default=_REQUIRED) -> float:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise self.error(key, "must be a positive number")
        return float(value)

    def bool(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, "must be true or false")
        return value

    def dict(self, key: str) -> dict:
        value = self.get(key, {})
        if not isinstance(value, dict):
            raise self.error(key, "must be an object")
        return value

    def divides(self, key: str, value: int, by_key: str, by: int) -> None:
        if value % by:
            raise ValueError(f"{self.source}: {key}={value} is not a multiple of {by_key}={by}")


def _gpt2(c: _Fields) -> ModelConfig:
    d, heads = c.int("n_embd"), c.int("n_head")
    c.divides("n_embd", d, "n_head", heads)
    act = c.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"{c.source}: GPT-2 activation_function {act!r} is not supported (gelu_new only)")
    return ModelConfig(
        arch="gpt2", vocab_size=c.int("vocab_size"), hidden=d, n_layers=c.int("n_layer"), n_heads=heads,
        n_kv_heads=heads, head_dim=d // heads, intermediate=c.int("n_inner", 4 * d),
        max_positions=c.int("n_positions"), norm_eps=c.float("layer_norm_epsilon", 1e-5),
        tie_embeddings=c.bool("tie_word_embeddings", True),
    )


def _llama(c: _Fields) -> ModelConfig:
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
    factor = _Fields({"factor": rope.get("factor", scaling.get("factor"))}, f"{c.source} {where}", "llama").float(
        "factor", 1.0) if rope_type == "linear" else 1.0
    theta = _Fields({"rope_theta": rope.get("rope_theta")}, f"{c.source} rope_parameters", "llama").float(
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
