"""GPT-2's config.json -> `ModelConfig`."""
from __future__ import annotations

from ..config import Fields, ModelConfig


def config(c: Fields) -> ModelConfig:
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
