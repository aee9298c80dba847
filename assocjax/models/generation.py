"""Autoregressive generation with a KV cache: greedy, or temperature + nucleus (top-p) sampling.

Prompts are batched with LEFT padding (attention_mask marks real tokens), so every row's
last prompt token sits in the same slot and one prefill forward yields every row's first
next-token logits. Decoding then runs one token per step inside a single jitted
`lax.while_loop` over a cache of prompt_len + max_new_tokens slots; the loop ends as soon
as every row has emitted a stop token.

Randomness: the key is `jax.random.key(seed)`; step t samples with `fold_in(key, t)`, so
a (seed, prompt batch, settings) triple always gives the same tokens.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .modeling import forward_cached, init_cache, positions_and_mask, top_level


class Generation(NamedTuple):
    tokens: np.ndarray  # (B, N) new tokens only; after a row's stop token: pad_token_id
    lengths: np.ndarray  # (B,) real tokens per row, its stop token included
    stopped: np.ndarray  # (B,) whether the row emitted a stop token
    scores: np.ndarray | None = None  # (B, N, V) float32 logits each token was picked from

    def mask(self) -> np.ndarray:
        """(B, N) True where tokens are generated, False on the padding after a stop."""
        return np.arange(self.tokens.shape[1])[None] < self.lengths[:, None]


def sample_logits(logits_BV, key, temperature, top_p):
    """One token per row from softmax(logits / temperature) restricted to the nucleus: the
    most probable tokens whose cumulative probability first reaches top_p (the rule of
    transformers' TemperatureLogitsWarper + TopPLogitsWarper; the top token always stays)."""
    order = jnp.argsort(-logits_BV, axis=-1)
    sorted_logits = jnp.take_along_axis(logits_BV, order, axis=-1) / temperature
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    # top_p = 1 must keep all tokens even where the float cumsum reaches 1 before the tail.
    keep = (mass_before < top_p) | (top_p >= 1.0)
    choice = jax.random.categorical(key, jnp.where(keep, sorted_logits, -jnp.inf), axis=-1)
    return jnp.take_along_axis(order, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)


@partial(jax.jit, static_argnames=("cfg", "max_new_tokens", "greedy", "return_scores"))
def generate_tokens(cfg, params, ids_BP, mask_BP, key, temperature=1.0, top_p=1.0, stop_tokens=None, pad_token_id=0,
                    *, max_new_tokens: int, greedy: bool, return_scores: bool = False):
    """Pure core of `generate` (inputs already validated; mask left-padded, bool).

    Returns (tokens (B, N) int32, lengths (B,), stopped (B,), scores (B, N, V) or None).
    temperature, top_p, stop_tokens (an int array) and pad_token_id are traced, so changing
    them does not recompile (a different number of stop tokens does); greedy is static.
    """
    b, p = ids_BP.shape
    n = max_new_tokens
    positions, _ = positions_and_mask(ids_BP, mask_BP)
    # Generated slots are marked real up front: causality already hides the unwritten ones.
    slot_mask = jnp.concatenate([mask_BP, jnp.ones((b, n), bool)], axis=1)
    cache = init_cache(cfg, b, p + n, jax.tree.leaves(params)[0].dtype)
    logits, cache = forward_cached(cfg, params, ids_BP, positions, slot_mask, cache)
    first_pos = positions[:, -1] + 1  # left padding: the last slot is every row's last real token
    stops = jnp.zeros((0,), jnp.int32) if stop_tokens is None else jnp.asarray(stop_tokens, jnp.int32)

    def emit(step, logits_BV, tokens, scores, done):
        if greedy:
            tok = jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
        else:
            tok = sample_logits(logits_BV, jax.random.fold_in(key, step), temperature, top_p)
        tokens = tokens.at[:, step].set(jnp.where(done, pad_token_id, tok))
        if return_scores:
            scores = scores.at[:, step].set(logits_BV)
        return tok, tokens, scores, done | (tok[:, None] == stops[None]).any(-1)

    def cond(state):
        step, *_, done, _ = state
        return (step < n) & ~done.all()

    def body(state):
        step, tok, tokens, scores, done, cache = state
        # Stopped rows keep decoding their raw token (pad ids may lie outside the vocabulary).
        logits, cache = forward_cached(cfg, params, tok[:, None], (first_pos + step - 1)[:, None], slot_mask, cache)
        return (step + 1, *emit(step, logits[:, 0], tokens, scores, done), cache)

    tokens = jnp.full((b, n), pad_token_id, jnp.int32)
    scores = jnp.zeros((b, n, cfg.vocab_size), jnp.float32) if return_scores else None
    init = emit(0, logits[:, -1], tokens, scores, jnp.zeros((b,), bool))
    _, _, tokens, scores, stopped, _ = jax.lax.while_loop(cond, body, (jnp.int32(1), *init, cache))
    is_stop = (tokens[:, :, None] == stops).any(-1)
    lengths = jnp.where(stopped, jnp.argmax(is_stop, axis=1) + 1, n)
    return tokens, lengths, stopped, scores


# `generate` calls it on concrete arrays: compiled without hoisting bfloat16 weight conversions
# out of the layer loop (modeling.LAYER_LOOP_OPTIONS)
_generate_tokens_top = top_level(generate_tokens, static_argnames=("cfg", "max_new_tokens", "greedy", "return_scores"))


def generate(model, input_ids, attention_mask=None, *, max_new_tokens: int = 20, temperature: float = 0.0,
             top_p: float = 1.0, stop_tokens=(), pad_token_id: int = 0, seed: int = 0,
             return_scores: bool = False) -> Generation:
    """Continue each prompt of a `CausalLM` by max_new_tokens tokens.

    input_ids (B, P) int, LEFT-padded; attention_mask (B, P) marks real tokens (None: all).
    temperature 0 is greedy (argmax); otherwise sampling from softmax(logits / temperature)
    kept to the top_p nucleus, with key `jax.random.key(seed)`. stop_tokens: a row that
    emits one keeps it, then gets pad_token_id; decoding stops once every row has stopped.
    Returns a `Generation` of numpy arrays holding only the new tokens (not the prompt);
    `.lengths` / `.mask()` tell the generated tokens from the padding after a stop.
    """
    cfg = model.cfg
    ids = np.asarray(input_ids)
    if ids.ndim != 2 or ids.shape[1] == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"input_ids must be a non-empty (batch, seq) integer array; got shape {ids.shape}, "
                         f"dtype {ids.dtype}")
    mask = np.ones(ids.shape, bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask shape {mask.shape} differs from input_ids shape {ids.shape}")
    if not (mask[:, -1].all() and (np.diff(mask.astype(np.int8), axis=1) >= 0).all()):
        raise ValueError("prompts must be LEFT-padded (attention_mask 0...0 1...1, last token real in every row)")
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer; got {max_new_tokens!r}")
    if ids.shape[1] + max_new_tokens > cfg.max_positions:
        raise ValueError(f"prompt of {ids.shape[1]} tokens + max_new_tokens={max_new_tokens} = "
                         f"{ids.shape[1] + max_new_tokens} exceeds the model's {cfg.max_positions} positions")
    if not (np.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be >= 0 (0 = greedy); got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1]; got {top_p}")
    stops = (stop_tokens,) if isinstance(stop_tokens, (int, np.integer)) else tuple(stop_tokens)
    out = _generate_tokens_top(cfg, model.param_tree(), jnp.asarray(ids, jnp.int32), jnp.asarray(mask),
                          jax.random.key(seed), jnp.float32(temperature or 1.0), jnp.float32(top_p),
                          jnp.asarray(stops, jnp.int32).reshape(-1), jnp.int32(pad_token_id),
                          max_new_tokens=int(max_new_tokens), greedy=temperature == 0, return_scores=return_scores)
    return Generation(*(None if x is None else np.asarray(x) for x in out))
