"""The maths every family's block is built from: norms, rotary embedding, attention (with
its KV cache), and the weight product with its LoRA branch (as PEFT's LoRA Linear).

Shapes: B batch, S query tokens, K key slots, D hidden, H heads, N KV heads, d head size.
"""
from __future__ import annotations

import zlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

NEG_INF = -1e30  # finite, so a fully masked row (a left-pad query) gives zeros, not NaN


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


def attend(q_BSHd, k_BSNd, v_BSNd, allowed_BSK, cache_kv=None, index=None):
    """Attention of S new tokens: causal over themselves without a cache; with one (k, v of
    (B, K, N, d)), their keys and values are written at slot `index` first. Returns (output,
    the updated (k, v) or None)."""
    if cache_kv is None:
        return causal_attention(q_BSHd, k_BSNd, v_BSNd, allowed_BSK), None
    ck, cv = cache_kv
    k = jax.lax.dynamic_update_slice_in_dim(ck, k_BSNd.astype(ck.dtype), index, axis=1)
    v = jax.lax.dynamic_update_slice_in_dim(cv, v_BSNd.astype(cv.dtype), index, axis=1)
    return attention(q_BSHd, k, v, allowed_BSK), (k, v)


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
