"""LLaMA's forward: pre-RMSNorm blocks, rotary positions on queries and keys, grouped K/V
heads, a SiLU-gated MLP, no biases."""
from __future__ import annotations

import jax

from ..common import adapter, attend, dense, rms_norm, rope
from ..config import ModelConfig


def embed(cfg: ModelConfig, params, ids_BS, positions_BS):
    return params["embed"][ids_BS]


def block(cfg: ModelConfig, p, h, positions, allowed, cache_kv=None, index=None, lora=None):
    b, s, _ = h.shape
    x = rms_norm(h, p["attn_norm"], cfg.norm_eps)
    q = rope(dense(x, p["q_w"], adapter(lora, "q")).reshape(b, s, cfg.n_heads, cfg.head_dim), positions,
             cfg.rope_theta, cfg.rope_scaling_factor)
    k = rope(dense(x, p["k_w"], adapter(lora, "k")).reshape(b, s, cfg.n_kv_heads, cfg.head_dim), positions,
             cfg.rope_theta, cfg.rope_scaling_factor)
    v = dense(x, p["v_w"], adapter(lora, "v")).reshape(b, s, cfg.n_kv_heads, cfg.head_dim)
    a, cache_kv = attend(q, k, v, allowed, cache_kv, index)
    h = h + dense(a, p["o_w"], adapter(lora, "o"))
    x = rms_norm(h, p["mlp_norm"], cfg.norm_eps)
    h = h + dense(jax.nn.silu(dense(x, p["gate_w"], adapter(lora, "gate"))) * dense(x, p["up_w"], adapter(lora, "up")),
                  p["down_w"], adapter(lora, "down"))
    return h, cache_kv


def final_norm(cfg: ModelConfig, params, h):
    return rms_norm(h, params["final_norm"], cfg.norm_eps)
