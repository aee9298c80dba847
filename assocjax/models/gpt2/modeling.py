"""GPT-2's forward: learned positions, pre-LayerNorm blocks with a fused query/key/value
projection and a tanh-GELU MLP, all with biases."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ..common import adapter, attend, dense, layer_norm
from ..config import ModelConfig


def embed(cfg: ModelConfig, params, ids_BS, positions_BS):
    return params["wte"][ids_BS] + params["wpe"][positions_BS]


def block(cfg: ModelConfig, p, h, positions, allowed, cache_kv=None, index=None, lora=None):
    b, s, _ = h.shape
    x = layer_norm(h, p["ln1_scale"], p["ln1_bias"], cfg.norm_eps)
    q, k, v = jnp.split(dense(x, p["qkv_w"], adapter(lora, "qkv")) + p["qkv_b"], 3, axis=-1)
    shape = (b, s, cfg.n_heads, cfg.head_dim)
    a, cache_kv = attend(q.reshape(shape), k.reshape(shape), v.reshape(shape), allowed, cache_kv, index)
    h = h + dense(a, p["out_w"], adapter(lora, "out")) + p["out_b"]
    x = layer_norm(h, p["ln2_scale"], p["ln2_bias"], cfg.norm_eps)
    x = jax.nn.gelu(dense(x, p["fc_w"], adapter(lora, "fc")) + p["fc_b"], approximate=True)
    h = h + dense(x, p["proj_w"], adapter(lora, "proj")) + p["proj_b"]
    return h, cache_kv


def final_norm(cfg: ModelConfig, params, h):
    return layer_norm(h, params["lnf_scale"], params["lnf_bias"], cfg.norm_eps)
