"""GPT-NeoX block (the Pythia suite), as transformers' GPTNeoXLayer.

Differences from GPT-2: rotary position embedding (no learned positions) on the first
`rotary_dim` channels of each head only; the fused query_key_value projection lays its
output out head by head ([q_h, k_h, v_h] for each head h, not [Q | K | V]); exact (erf)
GELU; and, with `parallel_residual` (every Pythia model), attention and MLP read the same
input: h + attn(ln1(h)) + mlp(ln2(h)) instead of GPT-2's sequential form.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ..common import adapter, attend, dense, layer_norm, rope
from .config import NeoXConfig


def partial_rope(x_BSHd, positions_BS, rotary_dim: int, theta: float, factor: float):
    """Rotary embedding on the first rotary_dim channels of each head; the rest pass."""
    if rotary_dim == x_BSHd.shape[-1]:
        return rope(x_BSHd, positions_BS, theta, factor)
    rotated = rope(x_BSHd[..., :rotary_dim], positions_BS, theta, factor)
    return jnp.concatenate([rotated, x_BSHd[..., rotary_dim:]], axis=-1)


def block(cfg: NeoXConfig, p, h_in, positions, allowed, cache_kv=None, index=None, lora=None):
    b, s, _ = h_in.shape
    x = layer_norm(h_in, p["ln1_scale"], p["ln1_bias"], cfg.norm_eps)
    qkv = (dense(x, p["qkv_w"], adapter(lora, "qkv")) + p["qkv_b"]).reshape(b, s, cfg.n_heads, 3, cfg.head_dim)
    q, k, v = (qkv[:, :, :, j] for j in range(3))
    q = partial_rope(q, positions, cfg.rotary_dim, cfg.rope_theta, cfg.rope_scaling_factor)
    k = partial_rope(k, positions, cfg.rotary_dim, cfg.rope_theta, cfg.rope_scaling_factor)
    a, cache_kv = attend(q, k, v, allowed, cache_kv, index)
    h = h_in + dense(a, p["out_w"], adapter(lora, "out")) + p["out_b"]
    # the MLP reads the block's input (parallel) or the attention's output (sequential);
    # either way its output is added to h + attention
    x = layer_norm(h_in if cfg.parallel_residual else h, p["ln2_scale"], p["ln2_bias"], cfg.norm_eps)
    x = jax.nn.gelu(dense(x, p["fc_w"], adapter(lora, "fc")) + p["fc_b"], approximate=False)
    return h + dense(x, p["proj_w"], adapter(lora, "proj")) + p["proj_b"], cache_kv


def embed(cfg: NeoXConfig, params, ids_BS, positions_BS):
    return params["embed"][ids_BS]  # positions enter through the rotary embedding only


def final_norm(cfg: NeoXConfig, params, h):
    return layer_norm(h, params["lnf_scale"], params["lnf_bias"], cfg.norm_eps)
