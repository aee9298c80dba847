"""GPT-2's parameters and their Hugging Face names. Its Conv1D weights are already stored
(in, out), as ours, so no rule transposes."""
from __future__ import annotations

from ..config import ModelConfig
from ..family import ROLES, ParamSpec, Rule, layernorm_block_spec


def param_spec(cfg: ModelConfig) -> dict:
    D, V = cfg.hidden, cfg.vocab_size
    _, B, S, E = ROLES  # matrix, bias, scale, embedding
    P = ParamSpec
    layers = layernorm_block_spec(cfg.n_layers, D, cfg.intermediate)
    return dict(wte=P((V, D), E), wpe=P((cfg.max_positions, D), E), layers=layers, lnf_scale=P((D,), S),
                lnf_bias=P((D,), B))


RULES = (
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
PREFIXES = ("transformer.", "")  # GPT2LMHeadModel's, GPT2Model's
IGNORED = r"\.attn\.(masked_)?bias$"  # the causal-mask buffers older checkpoints carry
