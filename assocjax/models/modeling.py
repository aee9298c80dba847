"""GPT-2 and LLaMA decoders in Flax NNX with layers stacked and run by `lax.scan`.

The modules hold parameters (nnx.Param, per-layer weights stacked on a leading axis; the
declarative spec is `params.param_spec`); the maths is in pure functions of (config,
parameter tree, arrays) so that feature extraction, generation and fine-tuning can jit,
vmap and differentiate them directly. `forward` (embed -> blocks -> final norm) is the one
decoder pass: `forward_hidden`, `forward_logits`, `forward_cached` (generation) and the
fine-tuning step (`tune.train`) only choose its inputs and read its outputs. LoRA adapters
are an explicit `lora=` argument (`LoraInputs`), never leaves of the parameter tree.

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
from .params import param_spec

NEG_INF = -1e30  # finite, so a fully masked row (a left-pad query) gives zeros, not NaN
# XLA's CPU backend computes bfloat16 products in float32, and its loop-invariant code
# motion then hoists the conversion of the scanned (stacked) weights out of the layer loop:
# a float32 copy of every layer's weights (26 GB for a bfloat16 7B model) alive for the
# whole forward. Without that pass each layer's weights are converted in their own
# iteration (and it was faster in a CPU check); what it would otherwise hoist here (RoPE
# tables, masks) is tiny. JAX accepts compiler options only on a jit called with concrete
# arrays, so they go on separate `top_level` variants used by the host-facing entry points
# (feature extraction, `generate`, the fine-tuning step); the plain jitted functions still
# compose inside other jits and transformations.
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


class LoraInputs(NamedTuple):
    """LoRA inputs of a forward, as PEFT's LoRA Linear: x @ W + scale * (dropout(x) @ A) @ B.

    Every field is stacked over the L layers: a, b: target name ("q", "qkv", ...) -> A
    (L, in, r) and B (L, r, out); scale: (L,) alpha / r; dropout: (L,) rate and key: (L,)
    keys, both None without dropout (evaluation). Inside a block the same tuple holds one
    layer's slices. Made from an adapter tree by `assocjax.tune.lora.lora_inputs`.
    """

    a: dict
    b: dict
    scale: jax.Array
    dropout: jax.Array | None = None
    key: jax.Array | None = None


class Adapter(NamedTuple):
    """One weight's LoRA branch in one block: A (in, r), B (r, out), scale, dropout rate and
    key (None: no dropout)."""

    a: jax.Array
    b: jax.Array
    scale: jax.Array
    dropout: jax.Array | None
    key: jax.Array | None


def adapter(lora: LoraInputs | None, name: str) -> Adapter | None:
    """The block's adapter of weight `name`, or None when it has none."""
    if lora is None or name not in lora.a:
        return None
    # each target draws its own dropout mask, as PEFT's per-module nn.Dropout
    key = None if lora.key is None else jax.random.fold_in(lora.key, zlib.crc32(name.encode()))
    return Adapter(lora.a[name], lora.b[name], lora.scale, lora.dropout, key)


def dense(x, w, lora: Adapter | None = None):
    """x @ w (one block's weight product), plus the LoRA branch when an adapter is given.
    Without one the ops are exactly x @ w."""
    y = x @ w
    if lora is None:
        return y
    return y + lora_branch(x, lora)


def lora_branch(x, ad: Adapter):
    """scale * (dropout(x) @ A) @ B, as PEFT's LoRA Linear. Adapters are cast to the
    compute dtype (float32 master adapters, bfloat16 compute)."""
    if ad.key is not None:
        keep = 1.0 - ad.dropout
        x = jnp.where(jax.random.bernoulli(ad.key, keep, x.shape), x / keep.astype(x.dtype), jnp.zeros((), x.dtype))
    # 2-D products: the backward then contracts one token axis, which XLA's CPU dots take
    # without transposing the large (tokens, out) gradients (several times faster there).
    x2 = x.reshape(-1, x.shape[-1])
    xa = (x2 @ ad.a.astype(x.dtype)) * ad.scale.astype(x.dtype)
    return (xa @ ad.b.astype(x.dtype)).reshape(*x.shape[:-1], -1)


def gpt2_block(cfg: ModelConfig, p, h, positions, allowed, cache_kv=None, index=None, lora=None):
    b, s, _ = h.shape
    x = layer_norm(h, p["ln1_scale"], p["ln1_bias"], cfg.norm_eps)
    q, k, v = jnp.split(dense(x, p["qkv_w"], adapter(lora, "qkv")) + p["qkv_b"], 3, axis=-1)
    shape = (b, s, cfg.n_heads, cfg.head_dim)
    a, cache_kv = _attend(cfg, q.reshape(shape), k.reshape(shape), v.reshape(shape), allowed, cache_kv, index)
    h = h + dense(a, p["out_w"], adapter(lora, "out")) + p["out_b"]
    x = layer_norm(h, p["ln2_scale"], p["ln2_bias"], cfg.norm_eps)
    x = jax.nn.gelu(dense(x, p["fc_w"], adapter(lora, "fc")) + p["fc_b"], approximate=True)
    h = h + dense(x, p["proj_w"], adapter(lora, "proj")) + p["proj_b"]
    return h, cache_kv


def llama_block(cfg: ModelConfig, p, h, positions, allowed, cache_kv=None, index=None, lora=None):
    b, s, _ = h.shape
    x = rms_norm(h, p["attn_norm"], cfg.norm_eps)
    q = rope(dense(x, p["q_w"], adapter(lora, "q")).reshape(b, s, cfg.n_heads, cfg.head_dim), positions,
             cfg.rope_theta, cfg.rope_scaling_factor)
    k = rope(dense(x, p["k_w"], adapter(lora, "k")).reshape(b, s, cfg.n_kv_heads, cfg.head_dim), positions,
             cfg.rope_theta, cfg.rope_scaling_factor)
    v = dense(x, p["v_w"], adapter(lora, "v")).reshape(b, s, cfg.n_kv_heads, cfg.head_dim)
    a, cache_kv = _attend(cfg, q, k, v, allowed, cache_kv, index)
    h = h + dense(a, p["o_w"], adapter(lora, "o"))
    x = rms_norm(h, p["mlp_norm"], cfg.norm_eps)
    h = h + dense(jax.nn.silu(dense(x, p["gate_w"], adapter(lora, "gate"))) * dense(x, p["up_w"], adapter(lora, "up")),
                  p["down_w"], adapter(lora, "down"))
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
    """float32 logits of final-normed hidden states."""
    head = params.get("lm_head", params["wte" if cfg.arch == "gpt2" else "embed"])
    return (h @ head.T).astype(jnp.float32)


def positions_and_mask(ids_BS, attention_mask_BS):
    """Positions count real tokens only (so left padding does not shift them, as in
    transformers' generate); a query sees earlier slots that hold real tokens."""
    b, s = ids_BS.shape
    mask = jnp.ones((b, s), bool) if attention_mask_BS is None else attention_mask_BS.astype(bool)
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    causal = jnp.tril(jnp.ones((s, s), bool))
    return positions, causal[None] & mask[:, None, :]


class Forward(NamedTuple):
    h: jax.Array                  # (B, S, D) the last block's output after the final norm
    inputs: jax.Array | None      # (L, B, S, D) every block's input (collect=True)
    cache: KVCache | None         # the updated cache (when one was given)


def forward(cfg: ModelConfig, params, ids_BS, positions_BS, allowed_BSK, *, lora: LoraInputs | None = None,
            cache: KVCache | None = None, collect: bool = False) -> Forward:
    """The decoder: embed -> blocks (one `lax.scan` over the stacked layers) -> final norm.

    positions_BS: each token's position; allowed_BSK: which key slots each query reads
    (K = S without a cache). params["layers"] is one stacked tree, or a list of stacked
    trees (consecutive runs of blocks, in order, each its own scan: frozen tuning). lora:
    adapters for the blocks (single stacked tree only). cache: run the S new tokens
    against a KV cache (written at cache.index ..). collect: also return every block's input.
    """
    h = embed(cfg, params, ids_BS, positions_BS)
    layers = params["layers"]
    if isinstance(layers, (list, tuple)):
        if lora is not None or cache is not None or collect:
            raise ValueError("layer runs (a list of stacked trees) take no lora, cache or collect")
        for run in layers:
            h, inputs, _ = _scan_blocks(cfg, run, h, positions_BS, allowed_BSK, None, None, False)
    else:
        h, inputs, cache = _scan_blocks(cfg, layers, h, positions_BS, allowed_BSK, lora, cache, collect)
    return Forward(final_norm(cfg, params, h), inputs, cache)


def _scan_blocks(cfg: ModelConfig, layers, h, positions, allowed, lora, cache, collect):
    """(h, block inputs or None, cache or None) after every block of one stacked tree."""
    block = BLOCKS[cfg.arch]
    # the LoRA inputs are scanned with the weights: each step gets its layer's slices
    if cache is None:
        def step(h, xs):
            p, lx = xs
            out, _ = block(cfg, p, h, positions, allowed, lora=lx)
            return out, (h if collect else None)

        h, inputs = jax.lax.scan(step, h, (layers, lora))
        return h, inputs, None

    def cached_step(h, xs):
        p, lx, ck, cv = xs
        out, (nk, nv) = block(cfg, p, h, positions, allowed, (ck, cv), cache.index, lora=lx)
        return out, (nk, nv)

    h, (k, v) = jax.lax.scan(cached_step, h, (layers, lora, cache.k, cache.v))
    return h, None, KVCache(k, v, cache.index + h.shape[1])


@partial(jax.jit, static_argnames=("cfg",))
def forward_hidden(cfg: ModelConfig, params, ids_BS, attention_mask_BS=None, lora: LoraInputs | None = None):
    """(L + 1, B, S, D) hidden states in the transformers convention (module docstring)."""
    positions, allowed = positions_and_mask(ids_BS, attention_mask_BS)
    out = forward(cfg, params, ids_BS, positions, allowed, lora=lora, collect=True)
    return jnp.concatenate([out.inputs, out.h[None]], axis=0)


@partial(jax.jit, static_argnames=("cfg",))
def forward_logits(cfg: ModelConfig, params, ids_BS, attention_mask_BS=None, lora: LoraInputs | None = None):
    """float32 logits (B, S, V)."""
    positions, allowed = positions_and_mask(ids_BS, attention_mask_BS)
    return unembed(cfg, params, forward(cfg, params, ids_BS, positions, allowed, lora=lora).h)


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
    out = forward(cfg, params, ids_BS, positions_BS, allowed, cache=cache)
    return unembed(cfg, params, out.h), out.cache


def init_cache(cfg: ModelConfig, batch: int, slots: int, dtype) -> KVCache:
    shape = (cfg.n_layers, batch, slots, cfg.n_kv_heads, cfg.head_dim)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((), jnp.int32))


# -- NNX modules -------------------------------------------------------------------------
def _init_value(role: str, shape, key, dtype):
    if role == "scale":
        return jnp.ones(shape, dtype)
    if role == "bias":
        return jnp.zeros(shape, dtype)
    return (0.02 * jax.random.normal(key, shape)).astype(dtype)  # matrices and embeddings


class _Params(nnx.Module):
    """A node of the parameter tree: one nnx.Param per leaf, sub-nodes for dicts."""

    def __init__(self, spec: dict, rngs: nnx.Rngs, dtype):
        for name, p in spec.items():
            if isinstance(p, dict):
                setattr(self, name, _Params(p, rngs, dtype))
            else:
                setattr(self, name, nnx.Param(_init_value(p.role, p.shape, rngs.params(), dtype)))


class CausalLM(nnx.Module):
    """A decoder-only LM (GPT-2 or LLaMA family, by `cfg.arch`).

    `model(ids, attention_mask)` -> float32 logits (B, S, V);
    `model.hidden_states(ids, attention_mask)` -> (n_layers + 1, B, S, D), see module doc.
    attention_mask (B, S) marks real tokens (1) and padding (0), left or right.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.cfg = cfg
        self.dtype = dtype
        self.params = _Params(param_spec(cfg), rngs, dtype)

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
