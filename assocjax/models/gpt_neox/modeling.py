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
    rotated = rope(x_BSHd[..., :rotary_dim], positions_BS, theta, factor)
    return jnp.concatenate([rotated, x_BSHd[..., rotary_dim:]], axis=-1)


def block(cfg: NeoXConfig, p, h_BSD, positions_BS, allowed_BSK, cache_kv=None, index=None, lora=None):
    b, s, _ = h_BSD.shape
    x = layer_norm(h_BSD, p["ln1_scale"], p["ln1_bias"], cfg.norm_eps)
    qkv_BSH3d = (dense(x, p["qkv_w"], adapter(lora, "qkv")) + p["qkv_b"]).reshape(b, s, cfg.n_heads, 3, cfg.head_dim)
    q, k, v = (qkv_BSH3d[:, :, :, j] for j in range(3))
    q = partial_rope(q, positions_BS, cfg.rotary_dim, cfg.rope_theta, cfg.rope_scaling_factor)
    k = partial_rope(k, positions_BS, cfg.rotary_dim, cfg.rope_theta, cfg.rope_scaling_factor)
    a, cache_kv = attend(q, k, v, allowed_BSK, cache_kv, index)
    after_attn = h_BSD + dense(a, p["out_w"], adapter(lora, "out")) + p["out_b"]
    # the MLP reads the block's input (parallel) or the attention's output (sequential);
    # either way its output is added to input + attention
    x = layer_norm(h_BSD if cfg.parallel_residual else after_attn, p["ln2_scale"], p["ln2_bias"], cfg.norm_eps)
    x = jax.nn.gelu(dense(x, p["fc_w"], adapter(lora, "fc")) + p["fc_b"], approximate=False)
    return after_attn + dense(x, p["proj_w"], adapter(lora, "proj")) + p["proj_b"], cache_kv


def embed(cfg: NeoXConfig, params, ids_BS, positions_BS):
    return params["embed"][ids_BS]  # positions enter through the rotary embedding only


def final_norm(cfg: NeoXConfig, params, h_BSD):
    return layer_norm(h_BSD, params["lnf_scale"], params["lnf_bias"], cfg.norm_eps)
