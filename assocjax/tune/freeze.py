"""Frozen-layer fine-tuning: train chosen blocks, keep everything else fixed.

`split_trainable` cuts the stacked layer arrays into runs of consecutive blocks, keyed
"first-last" (inclusive block indices, e.g. "10-11"): the trainable runs go to one tree,
the frozen runs and every other weight (embeddings, final norm, head) to the other. The
keys carry the block indices in the tree structure, so both trees are plain dicts of
arrays (jit, optax and Orbax take them as they are) and `frozen_params` knows statically
which run goes where. It gives `modeling.forward` the runs in block order, each run its
own `lax.scan`, the frozen ones (and every other fixed weight) under stop_gradient, so
differentiating with respect to the trainable tree

- never forms a weight gradient for a frozen block, the embeddings or the head, and
- never runs a backward pass through the frozen prefix (the blocks before the first
  trainable one): its output does not depend on anything being differentiated.

For the last k blocks that is one frozen scan without any backward plus one trainable scan.

Which scored layers tuning can change: hidden state i (transformers' convention) is block
i-1's output, so hidden states 0..f, f the first trained block, are computed before any
trained weight and stay bit-identical (M = 0 exactly there). The default, DEFAULT_LAYERS =
"all", trains every block (embeddings, final norm and head frozen), so every hidden state
from 1 up can change and the block that produces it is trained; `unchanged_layers_warning`
says when a choice leaves the scored layers untouched.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp


DEFAULT_LAYERS = "all"  # module docstring: every hidden state from 1 up can change


@dataclasses.dataclass(frozen=True)
class FrozenOptions:
    """The options of frozen-layer tuning (`tune.methods.METHODS["frozen"]`)."""

    # the blocks to train (parse_layers: all, first:K, last:K, 0,3). Default all: the embeddings, final norm and
    # head stay frozen, every block trains, so every hidden state from 1 up can change and the block producing each
    # scored layer is trained (hidden state i is block i-1's output: last:K leaves states 0..L-K bit-identical,
    # M = 0 there). Cheaper and still covering layers up to K: first:K.
    layers: str = DEFAULT_LAYERS


def parse_layers(spec: str | Sequence[int], n_layers: int) -> tuple[int, ...]:
    """Block indices to train, sorted: "last:2", "first:3", "all", "0,3,-1" (negative
    counts from the end) or a sequence of ints."""
    if isinstance(spec, str):
        s = spec.strip().lower()
        head, _, count = s.partition(":")
        if head in ("last", "first") and count:
            try:
                k = int(count)
            except ValueError:
                raise ValueError(f"layer spec {spec!r}: {count!r} is not an integer") from None
            if not 1 <= k <= n_layers:
                raise ValueError(f"layer spec {spec!r}: count must be in 1..{n_layers} (the model has {n_layers} layers)")
            return tuple(range(n_layers - k, n_layers)) if head == "last" else tuple(range(k))
        if s == "all":
            return tuple(range(n_layers))
        try:
            items = [int(x) for x in s.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"layer spec {spec!r}: expected 'last:K', 'first:K', 'all' or comma-separated "
                             "integers") from None
    else:
        items = [int(x) for x in spec]
    if not items:
        raise ValueError(f"layer spec {spec!r} selects no layers")
    out = set()
    for i in items:
        if not -n_layers <= i < n_layers:
            raise ValueError(f"layer spec {spec!r}: layer {i} is out of range for a model with {n_layers} layers")
        out.add(i % n_layers)
    return tuple(sorted(out))


def unchanged_layers_warning(trained: Sequence[int], n_layers: int, scored: Sequence[int] | None = None) -> str | None:
    """A warning when frozen tuning of blocks `trained` cannot change the scored hidden
    states `scored` (every one at or below the first trained block), or, with scored None
    (not known yet, as when tuning), when it leaves any hidden state above the embeddings
    unchanged; None otherwise."""
    trained = parse_layers(list(trained), n_layers)
    first = trained[0]
    blocks = ", ".join(_run_key(a, b) if b - a > 1 else str(a) for a, b in _runs(trained))
    states = "hidden state 0 is" if first == 0 else f"hidden states 0..{first} are"
    why = (f"hidden state i is block i-1's output, so with blocks {blocks} of 0..{n_layers - 1} trained, {states} "
           "bit-identical to the base model's and M is exactly 0 there")
    fix = f"score layers above {first} (--features.layers)" + ("" if first == 0 else (
        " or tune from a lower block (--method.frozen.layers all, or first:K with K at least the highest scored "
        "layer)"))
    if scored is None:
        changed = f"state {n_layers}" if first + 1 == n_layers else f"states {first + 1}..{n_layers}"
        return None if first == 0 else f"frozen tuning changes only hidden {changed}: {why}; {fix}"
    scored = sorted({int(i) for i in scored})
    if scored and scored[-1] <= first:
        return (f"every scored layer ({', '.join(map(str, scored))}) lies at or below block {first}, the first trained "
                f"block: {why}; {fix}")
    return None


def _runs(indices: Sequence[int]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive indices as (start, stop)."""
    runs: list[tuple[int, int]] = []
    for i in sorted(indices):
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def _run_key(start: int, stop: int) -> str:
    return f"{start}-{stop - 1}"


def _parse_run_key(key: str) -> tuple[int, int]:
    first, _, last = key.partition("-")
    try:
        return int(first), int(last) + 1
    except ValueError:
        raise ValueError(f"layer run key {key!r} is not 'first-last' (trees must come from split_trainable)") from None


def _n_layers(params: dict) -> int:
    return next(iter(params["layers"].values())).shape[0]


def split_trainable(params: dict, layers: Sequence[int]) -> tuple[dict, dict]:
    """(trainable, frozen): trainable = {"layers": {"first-last": stacked rows}} of the
    chosen blocks; frozen = every other weight plus {"layers": {"first-last": rows}} of the
    other blocks. `join(trainable, frozen)` gives the full tree back."""
    n = _n_layers(params)
    chosen = parse_layers(layers, n)
    rest = [i for i in range(n) if i not in chosen]

    def cut(runs):
        return {_run_key(a, b): jax.tree.map(lambda x: x[a:b], params["layers"]) for a, b in runs}

    trainable = {"layers": cut(_runs(chosen))}
    frozen = {**{k: v for k, v in params.items() if k != "layers"}, "layers": cut(_runs(rest))}
    return trainable, frozen


def ordered_runs(trainable: dict, frozen: dict) -> list[tuple[int, int, bool, dict]]:
    """(start, stop, is_trainable, stacked layer tree) of every run, in block order, for
    forwards built from the two trees; ValueError unless the runs tile 0..L."""
    runs = [(*_parse_run_key(k), True, v) for k, v in trainable["layers"].items()]
    runs += [(*_parse_run_key(k), False, v) for k, v in frozen["layers"].items()]
    runs.sort(key=lambda r: r[0])
    expect = 0
    for start, stop, _, tree in runs:
        rows = next(iter(tree.values())).shape[0]
        if start != expect or rows != stop - start:
            raise ValueError(f"trainable/frozen layer runs {[_run_key(a, b) for a, b, *_ in runs]} do not tile "
                             f"the blocks (run {_run_key(start, stop)} has {rows} rows, expected start {expect})")
        expect = stop
    return runs


def join(trainable: dict, frozen: dict) -> dict:
    """The full parameter tree again (stacked layers in block order)."""
    trees = [tree for *_, tree in ordered_runs(trainable, frozen)]
    layers = jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *trees)
    return {**{k: v for k, v in frozen.items() if k != "layers"}, "layers": layers}


def frozen_params(trainable: dict, frozen: dict) -> dict:
    """The parameter tree `modeling.forward` takes for frozen tuning: the fixed weights
    under stop_gradient (frozen stays frozen even if someone differentiates it) and
    "layers" as the list of runs in block order (module docstring)."""
    frozen = jax.lax.stop_gradient(frozen)
    return {**{k: v for k, v in frozen.items() if k != "layers"},
            "layers": [tree for *_, tree in ordered_runs(trainable, frozen)]}
