"""LLaMA's parameters and their Hugging Face names. Its nn.Linear weights are (out, in)
and are transposed to our (in, out)."""
from __future__ import annotations

from ..config import ModelConfig
from ..family import ROLES, ParamSpec, Rule


def param_spec(cfg: ModelConfig) -> dict:
    L, D, F, V = cfg.n_layers, cfg.hidden, cfg.intermediate, cfg.vocab_size
    M, _, S, E = ROLES  # matrix, (no biases), scale, embedding
    P = ParamSpec
    qd, kvd = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    layers = dict(attn_norm=P((L, D), S), q_w=P((L, D, qd), M), k_w=P((L, D, kvd), M), v_w=P((L, D, kvd), M),
                  o_w=P((L, qd, D), M), mlp_norm=P((L, D), S), gate_w=P((L, D, F), M), up_w=P((L, D, F), M),
                  down_w=P((L, F, D), M))
    return dict(embed=P((V, D), E), layers=layers, final_norm=P((D,), S))


RULES = (
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
PREFIXES = ("model.", "")  # LlamaForCausalLM's, LlamaModel's
