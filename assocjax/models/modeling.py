"""Decoders of every registered family in Flax NNX, layers stacked and run by `lax.scan`.

The modules hold parameters (nnx.Param, per-layer weights stacked on a leading axis; the
declarative spec is `params.param_spec`); the maths is in pure functions of (config,
parameter tree, arrays) so that feature extraction, generation and fine-tuning can jit,
vmap and differentiate them directly: each family's embedding, block and final norm in its
folder (`registry.family(cfg)`, built from `common`), the decoder they plug into here.
`forward` (embed -> blocks -> final norm) is the one decoder pass: `forward_hidden`,
`forward_logits`, `forward_cached` (generation) and the fine-tuning step (`tune.train`)
only choose its inputs and read its outputs. LoRA adapters are an explicit `lora=`
argument (`LoraInputs`), never leaves of the parameter tree.

Hidden-state convention (identical to transformers' `output_hidden_states`): entry 0 is
the embedding output (GPT-2: token + position embeddings), entry i (1 <= i < L) the
output of block i - 1 (= input of block i), and entry L the output of the last block
*after* the final norm; the last block's raw output is not returned.

Shapes: B batch, S query tokens, K key slots, D hidden, H heads, G = H / KV groups.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from .common import KVCache, LoraInputs
from .config import ModelConfig
from .params import param_spec
from .registry import family

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


def unembed(cfg: ModelConfig, params, h):
    """float32 logits of final-normed hidden states."""
    head = params.get("lm_head", params[family(cfg).embedding])
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
    fam = family(cfg)
    h = fam.embed(cfg, params, ids_BS, positions_BS)
    layers = params["layers"]
    if isinstance(layers, (list, tuple)):
        if lora is not None or cache is not None or collect:
            raise ValueError("layer runs (a list of stacked trees) take no lora, cache or collect")
        for run in layers:
            h, inputs, _ = _scan_blocks(cfg, run, h, positions_BS, allowed_BSK, None, None, False)
    else:
        h, inputs, cache = _scan_blocks(cfg, layers, h, positions_BS, allowed_BSK, lora, cache, collect)
    return Forward(fam.final_norm(cfg, params, h), inputs, cache)


def _scan_blocks(cfg: ModelConfig, layers, h, positions, allowed, lora, cache, collect):
    """(h, block inputs or None, cache or None) after every block of one stacked tree."""
    block = family(cfg).block
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
    """A decoder-only LM of any registered family (`cfg.arch`).

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
