"""GPT-NeoX parameters: our tree and the Hugging Face names (nn.Linear weights, (out, in),
transposed to our (in, out)). The fused query_key_value keeps its Hugging Face column order
(head by head, [q_h, k_h, v_h]); the block reads it in that order, so a PEFT adapter of
query_key_value maps onto ours without any permutation."""
from __future__ import annotations

from ..family import ROLES, ParamSpec, Rule, layernorm_block_spec
from .config import NeoXConfig


def param_spec(cfg: NeoXConfig) -> dict:
    D, V = cfg.hidden, cfg.vocab_size
    _, B, S, E = ROLES  # matrix, bias, scale, embedding
    P = ParamSpec
    layers = layernorm_block_spec(cfg.n_layers, D, cfg.intermediate)  # GPT-2's block parameters, used in parallel
    return dict(embed=P((V, D), E), layers=layers, lnf_scale=P((D,), S), lnf_bias=P((D,), B))


RULES = (
    Rule("embed_in.weight", "embed"),
    Rule("layers.{i}.input_layernorm.weight", "layers/ln1_scale"),
    Rule("layers.{i}.input_layernorm.bias", "layers/ln1_bias"),
    Rule("layers.{i}.attention.query_key_value.weight", "layers/qkv_w", "transpose"),
    Rule("layers.{i}.attention.query_key_value.bias", "layers/qkv_b"),
    Rule("layers.{i}.attention.dense.weight", "layers/out_w", "transpose"),
    Rule("layers.{i}.attention.dense.bias", "layers/out_b"),
    Rule("layers.{i}.post_attention_layernorm.weight", "layers/ln2_scale"),
    Rule("layers.{i}.post_attention_layernorm.bias", "layers/ln2_bias"),
    Rule("layers.{i}.mlp.dense_h_to_4h.weight", "layers/fc_w", "transpose"),
    Rule("layers.{i}.mlp.dense_h_to_4h.bias", "layers/fc_b"),
    Rule("layers.{i}.mlp.dense_4h_to_h.weight", "layers/proj_w", "transpose"),
    Rule("layers.{i}.mlp.dense_4h_to_h.bias", "layers/proj_b"),
    Rule("final_layer_norm.weight", "lnf_scale"),
    Rule("final_layer_norm.bias", "lnf_bias"),
)
PREFIXES = ("gpt_neox.", "")
HEAD = Rule("embed_out.weight", "lm_head")  # Pythia's untied output head
# buffers of older checkpoints: the causal mask, its fill value, the RoPE frequencies
IGNORED = r"(\.attention\.(masked_)?bias$|rotary_emb\.inv_freq$)"
