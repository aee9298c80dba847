"""The one way targets are streamed through a compiled solve: how wide a chunk is
(`targets_within`, `chunk_layout`), where it runs (`target_mesh`, `replicate`) and the loop
that reads, pads, shards, solves and fetches the chunks (`stream`).

Every solve in the library is independent per target (a column of Y: a vertex, or one subject
at a vertex), so a problem larger than memory is solved chunk by chunk of targets:

    per, fixed = target_bytes(plan, tile=tile)                       # the solve's bytes
    layout = chunk_layout(n_targets, targets_within(budget, per, fixed, tile or 1, n_dev), n_devices=n_dev, tile=tile)
    for chunk, out in stream(solve, read, layout, mesh):             # out: host arrays
        r[..., chunk.start:chunk.stop] = out.r_T[..., :chunk.used]

Its users: `RidgeCV` / `Ridge` (fit, predict, score, coef_), `brain_score`, the pipeline's
layers (`pipeline.fitting.solve_layer`) and its noise ceiling (`pipeline.store.ceiling`).

- Width: `targets_within` turns a memory budget and a solve's bytes (per target + fixed, e.g.
  from `nested.target_bytes`) into the targets one chunk may hold; `chunk_layout` spreads the
  items over chunks of one balanced width (one compilation; the last chunk is padded with
  zero columns, whose results are dropped), in whole CPU tiles on every device.
- Devices: with several local devices each chunk's targets are sharded over a 1-D "targets"
  mesh and everything else is replicated; each target is solved on its own, so the numbers
  equal one device's up to float32 rounding (a target's last bits depend on the compiled shape
  and on its column in it: 8 CPU devices against one, 1e-8 in the test world's scores).
- Reading: `read(start, stop)` returns the chunk's targets, on the last axis of every leaf
  (any pytree), from the host (an np.memmap slice is fine: only the chunk is cast) or the
  device. Chunk i + 1 is read and dispatched before chunk i is fetched, so reading overlaps
  computing.
- Items: a chunk is a range of items of `per_item` targets each. The pipeline streams vertices,
  each with its F fits (every subject z-scored per story, then their mean), made on the device
  from a vertex range of its BOLD cache: its targets never exist as one (N, T) array, and it
  keeps only each fold's r and alpha, so it calls the nested core (`solve_nested`) through
  `stream` rather than `brain_score`, which slices a given Y.
- Resuming: the unit of resumption is the caller's. The pipeline saves every finished layer (and,
  across processes, every process's vertex range) and skips it when rerun; the chunks of one
  layer are not saved one by one (they are seconds of work each, and their results are small
  enough to hold until the layer is done).
"""
from __future__ import annotations

import collections
import dataclasses
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MAX_TARGETS = 65536
"""Targets per device in one chunk at most: beyond this a chunk is no faster, only bigger."""
CPU_TILE = 1024
"""On CPU a chunk is solved in tiles of this many targets, so each tile's intermediates stay
in cache (measured: 1024 beat 512, 2048, 4096 and untiled at the real shapes)."""


def cpu_tile() -> int | None:
    """The tile of a nested solve on these devices: CPU_TILE on CPU, None (whole chunks) else."""
    return CPU_TILE if jax.local_devices()[0].platform == "cpu" else None


def target_mesh(shard: bool = True) -> Mesh | None:
    """A 1-D "targets" mesh over the local devices (None with one device, or shard=False)."""
    devices = jax.local_devices()
    if not shard or len(devices) == 1:
        return None
    return Mesh(np.array(devices), ("targets",))


def replicate(tree, mesh: Mesh | None):
    """`tree` on every device of `mesh` (on the default device without a mesh)."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()) if mesh is not None else None)


def targets_within(memory_bytes: float, per_target: float, fixed: float = 0, multiple: int = 1, n_devices: int = 1,
                   cap: int = MAX_TARGETS, what: str = "the memory budget") -> int:
    """Targets per chunk whose solve fits in `memory_bytes` per device: (memory - fixed) //
    per_target on each device, at most `cap`, floored to a multiple of `multiple` (a tile), times
    n_devices (the fixed part, e.g. the decompositions, is on every device). A ValueError naming
    `what` when not even `multiple` targets fit."""
    n = min(cap, int((memory_bytes - fixed) // max(per_target, 1))) // multiple * multiple
    if n < 1:
        raise ValueError(f"{what} is too small for one chunk of {multiple} target(s): of the {memory_bytes / 2**30:.3f} "
                         f"GiB a chunk may take, its fixed part takes {fixed / 2**30:.3f} GiB, and each target "
                         f"{per_target:.0f} bytes")
    return n * n_devices


@dataclasses.dataclass(frozen=True)
class Layout:
    """n_items items of per_item targets each, `items` per chunk (the last chunk may hold
    fewer), compiled as `columns` targets (items * per_item, padded); `tile` is the tile to
    solve a chunk in (None: the whole chunk at once)."""

    n_items: int
    per_item: int
    items: int
    columns: int
    tile: int | None

    def chunks(self) -> list[tuple[int, int]]:
        return [(s, min(s + self.items, self.n_items)) for s in range(0, self.n_items, self.items)]


def chunk_layout(n_items: int, max_targets: int, per_item: int = 1, n_devices: int = 1,
                 tile: int | None = None) -> Layout:
    """The fewest chunks of at most max_targets targets (at least one item each), balanced (the
    same width for all, so no chunk is mostly padding). A chunk wider than one tile is padded
    so that every device holds whole tiles: each device then runs the shapes one device runs
    (a tile), which keeps a target's numbers the same on one device and on several."""
    max_items = max(1, max_targets // per_item)
    n_chunks = max(1, math.ceil(n_items / max_items))
    items = max(1, math.ceil(n_items / n_chunks))
    share = math.ceil(items * per_item / n_devices)   # each device's columns
    if tile is not None and items * per_item > tile:
        share = math.ceil(share / tile) * tile
    return Layout(n_items, per_item, items, share * n_devices, tile if tile is not None and share > tile else None)


class Chunk(NamedTuple):
    """Items start..stop of a stream; their results are the first `used` columns."""

    start: int
    stop: int
    used: int


def cpu_workers() -> int:
    """Chunks a CPU solves at once (`stream`'s workers): 2 where there are 2 cores or more, else 1;
    1 on accelerators (their queue already overlaps chunks). XLA:CPU runs the small per-fold
    products of one solve on about 1.5 of 2 cores; two chunks in flight keep both busy (and
    read one chunk while the other solves)."""
    return min(2, os.cpu_count() or 1) if jax.local_devices()[0].platform == "cpu" else 1


def stream(solve: Callable, read: Callable, layout: Layout, mesh: Mesh | None = None, dtype=None,
           progress: bool = False, desc: str = "target chunks", leave: bool = True,
           workers: int = 1) -> Iterator[tuple[Chunk, object]]:
    """Yield (Chunk, solve's output fetched to the host) for every chunk of `layout`, in order.

    read(start, stop) -> the targets of items start..stop, each leaf (..., columns) (host or
    device; cast to `dtype` when given, padded with zero columns to layout.columns and, with a
    mesh, sharded on its last axis); solve(block) -> a pytree of device arrays, dispatched
    asynchronously: chunk i + 1 is read and dispatched before chunk i is fetched.
    workers > 1: that many chunks are read, solved and fetched at once, each by its own thread
    (`cpu_workers`; the caller sizes chunks for that many in flight). Every target is solved on
    its own, so the results do not depend on it."""
    chunks = layout.chunks()
    if progress:
        from tqdm.auto import tqdm
        chunks = tqdm(chunks, desc=desc, unit="chunk", leave=leave)
    stage = lambda a: _stage(a, layout.columns, dtype, mesh)  # noqa: E731
    if workers > 1:
        yield from _stream_threads(solve, read, stage, chunks, layout.per_item, workers)
        return
    pending = None
    for start, stop in chunks:
        out = solve(jax.tree.map(stage, read(start, stop)))
        if pending is not None:
            yield pending[0], jax.device_get(pending[1])
        pending = (Chunk(start, stop, (stop - start) * layout.per_item), out)
    if pending is not None:
        yield pending[0], jax.device_get(pending[1])


def _stream_threads(solve, read, stage, chunks, per_item: int, workers: int):
    """`stream` with `workers` chunks in flight, each read, solved and fetched by a thread; yielded in order."""
    def task(start, stop):
        return jax.device_get(solve(jax.tree.map(stage, read(start, stop))))

    with ThreadPoolExecutor(workers) as pool:
        pending = collections.deque()
        for start, stop in chunks:
            pending.append((Chunk(start, stop, (stop - start) * per_item), pool.submit(task, start, stop)))
            if len(pending) >= workers:
                chunk, fut = pending.popleft()
                yield chunk, fut.result()
        while pending:
            chunk, fut = pending.popleft()
            yield chunk, fut.result()


def _stage(a, columns: int, dtype, mesh: Mesh | None):
    """One leaf of a chunk: cast, padded with zero (flat) columns to `columns`, on the device(s)."""
    on_device = isinstance(a, jax.Array)
    a = (a if dtype is None else a.astype(dtype)) if on_device else np.asarray(a, dtype=dtype)
    if a.shape[-1] < columns:  # every chunk one compiled shape; flat columns give NaN results, dropped
        pad = [(0, 0)] * (a.ndim - 1) + [(0, columns - a.shape[-1])]
        a = jnp.pad(a, pad) if on_device else np.pad(a, pad)
    if mesh is None:
        return a if on_device else jax.device_put(a)
    return jax.device_put(a, NamedSharding(mesh, PartitionSpec(*[None] * (a.ndim - 1), "targets")))


def tiled(solve: Callable, y_NT: jnp.ndarray, tile: int | None):
    """solve(y_NT) computed over the targets in slices of `tile` one after another (`lax.map`), so
    that every intermediate of a slice stays in cache (a CPU setting: `CPU_TILE`); None, or a
    tile at least the width, solves all targets at once (accelerators). `solve` maps (N, T') to a
    pytree of arrays whose last axis is the targets; their slices are joined back in order."""
    n, t = y_NT.shape
    if tile is None or tile >= t:
        return solve(y_NT)
    if t % tile:
        raise ValueError(f"chunk of {t} targets is not a multiple of tile={tile}")
    out = jax.lax.map(solve, jnp.moveaxis(y_NT.reshape(n, t // tile, tile), 1, 0))
    return jax.tree.map(lambda a: jnp.moveaxis(a, 0, -2).reshape(a.shape[1:-1] + (t,)), out)
