"""GPT-2 and LLaMA decoders in Flax NNX with layers stacked and run by `lax.scan`.

The modules hold parameters (nnx.Param, per-layer weights stacked on a leading axis);
the maths is in pure functions of (config, parameter tree, arrays) so that feature
extraction, generation and fine-tuning can jit, vmap and differentiate them directly.

Hidden-state convention (identical to transformers' `output_hidden_states`): entry 0 is
the embedding output (GPT-2: token + position embeddings), entry i (1 <= i < L) the
output of block i - 1 (= input of block i), and entry L the output of the last block
*after* the final norm; the last block's raw output is not returned.

Shapes: B batch, S query tokens, K key slots, D hidden, H heads, G = H / KV groups.
"""
from __future__ import annotations

import zlib
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .config import ModelConfig

NEG_INF = -1e30  # finite, so a fully masked row (a left-pad query) gives zeros, not NaN
# XLA's CPU backend computes bfloat16 products in float32, and its loop-invariant code
# motion then hoists the conversion of the scanned (stacked) weights out of the layer loop:
# a float32 copy of every layer's weights (26 GB for a bfloat16 7B model) alive for the
# whole forward. Without that pass each layer's weights are converted in their own
# iteration (and it was faster in a CPU check); what it would otherwise hoist here (RoPE
# tables, masks) is tiny. JAX accepts compiler options only on a jit called with concrete
# arrays, so they go on separate `top_level` variants used by the host-facing entry points
# (feature extraction, `generate`); the plain jitted functions still compose inside other
# jits and transformations (fine-tuning steps use their own options).
LAYER_LOOP_OPTIONS = {"xla_disable_hlo_passes": "while-loop-invariant-code-motion"}


def top_level(fn, **jit_kwargs):
    """A jit of `fn` (the function a `jax.jit` wraps) with LAYER_LOOP_OPTIONS; call it on
    concrete arrays only, never from inside another jit or transformation."""
    return jax.jit(getattr(fn, "__wrapped__", fn), compiler_options=LAYER_LOOP_OPTIONS, **jit_kwargs)


# -- building blocks ---------------------------------------------------------------------
def layer_norm(x, scale, bias, eps):
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + eps) * scale + bias).astype(x.dtype)


def rms_norm(x, scale, eps):
    # As transformers: normalise in float32, cast back, then scale in the input dtype.
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, -1, keepdims=True) + eps)
    return scale * normed.astype(x.dtype)


def rope(x_BSHd, positions_BS, theta, factor):
    """Rotary embedding in Hugging Face's rotate-half layout (first half / second half)."""
    hd = x_BSHd.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / hd))
    freqs = (positions_BS.astype(jnp.float32) / factor)[..., None] * inv_freq
    emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(emb).astype(x_BSHd.dtype), jnp.sin(emb).astype(x_BSHd.dtype)
    x1, x2 = jnp.split(x_BSHd, 2, axis=-1)
    return x_BSHd * cos + jnp.concatenate([-x2, x1], axis=-1) * sin


def attention(q_BSHd, k_BKNd, v_BKNd, allowed_BSK):
    """Softmax attention with grouped K/V heads (N = KV heads), softmax in float32.

    The normalisation is applied after the value product ((S, d) values instead of an
    (S, K) pass), and q is scaled before the score product for the same reason.
    """
    b, s, h, d = q_BSHd.shape
    n = k_BKNd.shape[2]
    q = (q_BSHd * np.asarray(1 / np.sqrt(d), q_BSHd.dtype)).reshape(b, s, n, h // n, d)
    scores = jnp.einsum("bsngd,bknd->bngsk", q, k_BKNd).astype(jnp.float32)
    scores = jnp.where(allowed_BSK[:, None, None], scores, NEG_INF)
    probs = jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True))
    out = jnp.einsum("bngsk,bknd->bsngd", probs.astype(v_BKNd.dtype), v_BKNd)
    norm = jnp.transpose(jnp.sum(probs, axis=-1), (0, 3, 1, 2))[..., None]
    return (out / norm.astype(out.dtype)).reshape(b, s, h * d)


def causal_attention(q_BSHd, k_BSNd, v_BSNd, allowed_BSS, block: int = 256):
    """`attention` for a causal mask over the same tokens, by query blocks: block i only
    reads keys up to its own end, skipping the masked upper triangle (about half the
    score work for long sequences)."""
    s = q_BSHd.shape[1]
    if s <= block:
        return attention(q_BSHd, k_BSNd, v_BSNd, allowed_BSS)
    outs = []
    for start in range(0, s, block):
        end = min(start + block, s)
        outs.append(attention(q_BSHd[:, start:end], k_BSNd[:, :end], v_BSNd[:, :end], allowed_BSS[:, start:end, :end]))
    return jnp.concatenate(outs, axis=1)


class KVCache(NamedTuple):
    """Per-layer key/value slots (L, B, K, KV, hd) and the next slot to write."""

    k: jnp.ndarray
    v: jnp.ndarray
    index: jnp.ndarray


def _attend(cfg, q, k, v, allowed, cache_kv, index):
    if cache_kv is None:
        return causal_attention(q, k, v, allowed), None
    ck, cv = cache_kv
    k = jax.lax.dynamic_update_slice_in_dim(ck, k.astype(ck.dtype), index, axis=1)
    v = jax.lax.dynamic_update_slice_in_dim(cv, v.astype(cv.dtype), index, axis=1)
    return attention(q, k, v, allowed), (k, v)


def dense(x, p, name: str):
    """x @ p[f"{name}_w"] (one block's weight product), plus a LoRA branch when the layer
    tree holds f"{name}_lora_a" (in, r) / f"{name}_lora_b" (r, out) leaves (added by
    assocjax.tune.lora.lora_params). Without them the ops are exactly x @ W."""
    y = x @ p[f"{name}_w"]
    if f"{name}_lora_a" not in p:
        return y
    return y + lora_branch(x, p, name)


def lora_branch(x, p, name: str):
    """scale * (dropout(x) @ A) @ B, as PEFT's LoRA Linear. The scale ("lora_scale"), the
    dropout rate ("lora_dropout") and this layer's dropout key ("lora_dropout_key") are
    leaves of the layer tree, so blocks stay pure functions that `lax.scan` can carry.
    Adapters are cast to the compute dtype (float32 master adapters, bfloat16 compute)."""
    if "lora_dropout_key" in p:  # each target draws its own mask, as PEFT's per-module nn.Dropout
        keep = 1.0 - p["lora_dropout"]
        key = jax.random.fold_in(p["lora_dropout_key"], zlib.crc32(name.encode()))
        x = jnp.where(jax.random.bernoulli(key, keep, x.shape), x / keep.astype(x.dtype), jnp.zeros((), x.dtype))
    # 2-D products: the backward then contracts one token axis, which XLA's CPU dots take
    # without transposing the large (tokens, out) gradients (several times faster there).
    x2 = x.reshape(-1, x.shape[-1])
    xa = (x2 @ p[f"{name}_lora_a"].astype(x.dtype)) * p["lora_scale"].astype(x.dtype)
    return (xa @ p[f"{name}_lora_b"].astype(x.dtype)).reshape(*x.shape[:-1], -1)


def gpt2_block(cfg: ModelConfig, p, h, positions, allowed, cache_kv=None, index=None):
    b, s, _ = h.shape
    x = layer_norm(h, p["ln1_scale"], p["ln1_bias"], cfg.norm_eps)
    q, k, v = jnp.split(dense(x, p, "qkv") + p["qkv_b"], 3, axis=-1)
    shape = (b, s, cfg.n_heads, cfg.head_dim)
    a, cache_kv = _attend(cfg, q.reshape(shape), k.reshape(shape), v.reshape(shape), allowed, cache_kv, index)
    h = h + dense(a, p, "out") + p["out_b"]
    x = layer_norm(h, p["ln2_scale"], p["ln2_bias"], cfg.norm_eps)
    h = h + dense(jax.nn.gelu(dense(x, p, "fc") + p["fc_b"], approximate=True), p, "proj") + p["proj_b"]
    return h, cache_kv


def llama_block(cfg: ModelConfig, p, h, positions, allowed, cache_kv=None, index=None):
    b, s, _ = h.shape
    x = rms_norm(h, p["attn_norm"], cfg.norm_eps)
    q = rope(dense(x, p, "q").reshape(b, s, cfg.n_heads, cfg.head_dim), positions, cfg.rope_theta, cfg.rope_scaling_factor)
    k = rope(dense(x, p, "k").reshape(b, s, cfg.n_kv_heads, cfg.head_dim), positions, cfg.rope_theta, cfg.rope_scaling_factor)
    v = dense(x, p, "v").reshape(b, s, cfg.n_kv_heads, cfg.head_dim)
    a, cache_kv = _attend(cfg, q, k, v, allowed, cache_kv, index)
    h = h + dense(a, p, "o")
    x = rms_norm(h, p["mlp_norm"], cfg.norm_eps)
    h = h + dense(jax.nn.silu(dense(x, p, "gate")) * dense(x, p, "up"), p, "down")
    return h, cache_kv


BLOCKS = {"gpt2": gpt2_block, "llama": llama_block}


def embed(cfg: ModelConfig, params, ids_BS, positions_BS):
    if cfg.arch == "gpt2":
        return params["wte"][ids_BS] + params["wpe"][positions_BS]
    return params["embed"][ids_BS]


def final_norm(cfg: ModelConfig, params, h):
    if cfg.arch == "gpt2":
        return layer_norm(h, params["lnf_scale"], params["lnf_bias"], cfg.norm_eps)
    return rms_norm(h, params["final_norm"], cfg.norm_eps)


def unembed(cfg: ModelConfig, params, h):
    head = params.get("lm_head", params["wte" if cfg.arch == "gpt2" else "embed"])
    return h @ head.T


def positions_and_mask(ids_BS, attention_mask_BS):
    """Positions count real tokens only (so left padding does not shift them, as in
    transformers' generate); a query sees earlier slots that hold real tokens."""
    b, s = ids_BS.shape
    mask = jnp.ones((b, s), bool) if attention_mask_BS is None else attention_mask_BS.astype(bool)
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    causal = jnp.tril(jnp.ones((s, s), bool))
    return positions, causal[None] & mask[:, None, :]


def run_layers(cfg: ModelConfig, params, h, positions, allowed, collect: bool):
    """Scan the stacked blocks; with collect=True also return every block's input (L, B, S, D)."""
    block = BLOCKS[cfg.arch]

    def step(h, p):
        out, _ = block(cfg, p, h, positions, allowed)
        return out, (h if collect else None)

    return jax.lax.scan(step, h, params["layers"])


@partial(jax.jit, static_argnames=("cfg",))
def forward_hidden(cfg: ModelConfig, params, ids_BS, attention_mask_BS=None):
    """(L + 1, B, S, D) hidden states in the transformers convention (module docstring)."""
    positions, allowed = positions_and_mask(ids_BS, attention_mask_BS)
    h = embed(cfg, params, ids_BS, positions)
    h, inputs = run_layers(cfg, params, h, positions, allowed, collect=True)
    return jnp.concatenate([inputs, final_norm(cfg, params, h)[None]], axis=0)


@partial(jax.jit, static_argnames=("cfg",))
def forward_logits(cfg: ModelConfig, params, ids_BS, attention_mask_BS=None):
    positions, allowed = positions_and_mask(ids_BS, attention_mask_BS)
    h, _ = run_layers(cfg, params, embed(cfg, params, ids_BS, positions), positions, allowed, collect=False)
    return unembed(cfg, params, final_norm(cfg, params, h)).astype(jnp.float32)


forward_hidden_top = top_level(forward_hidden, static_argnames=("cfg",))  # for concrete calls (features)


def forward_cached(cfg: ModelConfig, params, ids_BS, positions_BS, slot_mask_BK, cache: KVCache):
    """Run S new tokens against a KV cache; returns (logits of the new tokens, new cache).

    slot_mask_BK marks cache slots holding real tokens (including the new ones, written at
    cache.index ..). A query at slot index+i sees real slots <= index+i.
    """
    s = ids_BS.shape[1]
    k_slots = cache.k.shape[2]
    q_slot = cache.index + jnp.arange(s)
    allowed = (jnp.arange(k_slots)[None, :] <= q_slot[:, None])[None] & slot_mask_BK[:, None, :].astype(bool)
    block = BLOCKS[cfg.arch]

    def step(h, layer):
        p, ck, cv = layer
        out, (nk, nv) = block(cfg, p, h, positions_BS, allowed, (ck, cv), cache.index)
        return out, (nk, nv)

    h = embed(cfg, params, ids_BS, positions_BS)
    h, (k, v) = jax.lax.scan(step, h, (params["layers"], cache.k, cache.v))
    logits = unembed(cfg, params, final_norm(cfg, params, h)).astype(jnp.float32)
    return logits, KVCache(k, v, cache.index + s)


def init_cache(cfg: ModelConfig, batch: int, slots: int, dtype) -> KVCache:
    shape = (cfg.n_layers, batch, slots, cfg.n_kv_heads, cfg.head_dim)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((), jnp.int32))


# -- parameter shapes and NNX modules ---------------------------------------------------
def param_shapes(cfg: ModelConfig) -> dict:
    """Our parameter tree's shapes (per-layer weights lead with n_layers)."""
    L, D, F, V = cfg.n_layers, cfg.hidden, cfg.intermediate, cfg.vocab_size
    if cfg.arch == "gpt2":
        layers = dict(ln1_scale=(L, D), ln1_bias=(L, D), qkv_w=(L, D, 3 * D), qkv_b=(L, 3 * D), out_w=(L, D, D),
                      out_b=(L, D), ln2_scale=(L, D), ln2_bias=(L, D), fc_w=(L, D, F), fc_b=(L, F),
                      proj_w=(L, F, D), proj_b=(L, D))
        tree = dict(wte=(V, D), wpe=(cfg.max_positions, D), layers=layers, lnf_scale=(D,), lnf_bias=(D,))
    else:
        qd, kvd = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        layers = dict(attn_norm=(L, D), q_w=(L, D, qd), k_w=(L, D, kvd), v_w=(L, D, kvd), o_w=(L, qd, D),
                      mlp_norm=(L, D), gate_w=(L, D, F), up_w=(L, D, F), down_w=(L, F, D))
        tree = dict(embed=(V, D), layers=layers, final_norm=(D,))
    if not cfg.tie_embeddings:
        tree["lm_head"] = (V, D)
    return tree


def _init_value(name: str, shape, key, dtype):
    if name.endswith(("scale", "norm")):
        return jnp.ones(shape, dtype)
    if name.endswith(("_b", "bias")):
        return jnp.zeros(shape, dtype)
    return (0.02 * jax.random.normal(key, shape)).astype(dtype)


class _Params(nnx.Module):
    """A node of the parameter tree: one nnx.Param per leaf, sub-nodes for dicts."""

    def __init__(self, shapes: dict, rngs: nnx.Rngs, dtype):
        for name, shape in shapes.items():
            if isinstance(shape, dict):
                setattr(self, name, _Params(shape, rngs, dtype))
            else:
                setattr(self, name, nnx.Param(_init_value(name, shape, rngs.params(), dtype)))


class CausalLM(nnx.Module):
    """A decoder-only LM (GPT-2 or LLaMA family, by `cfg.arch`).

    `model(ids, attention_mask)` -> float32 logits (B, S, V);
    `model.hidden_states(ids, attention_mask)` -> (n_layers + 1, B, S, D), see module doc.
    attention_mask (B, S) marks real tokens (1) and padding (0), left or right.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.cfg = cfg
        self.dtype = dtype
        self.params = _Params(param_shapes(cfg), rngs, dtype)

    def param_tree(self) -> dict:
        return nnx.to_pure_dict(nnx.state(self.params, nnx.Param))

    def _check(self, ids):
        ids = jnp.asarray(ids)
        if ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, seq); got shape {ids.shape}")
        if ids.shape[1] > self.cfg.max_positions:
            raise ValueError(f"sequence of {ids.shape[1]} tokens exceeds the model's {self.cfg.max_positions} "
                             "positions; cut long texts into windows")
        return ids

    def __call__(self, input_ids, attention_mask=None):
        return forward_logits(self.cfg, self.param_tree(), self._check(input_ids), attention_mask)

    def hidden_states(self, input_ids, attention_mask=None):
        return forward_hidden(self.cfg, self.param_tree(), self._check(input_ids), attention_mask)
