"""Timing helpers shared by the benchmarks: medians of repeated calls, and the float32
matmul throughput of this machine (the ceiling every benchmark is compared with); and the
default folder of the benchmarks' large inputs (`WORK`)."""
from __future__ import annotations

import statistics
import time
from pathlib import Path

# where benchmarks that build gigabytes of inputs keep them by default: the repository's own
# ignored cache folder (.gitignore: /.assocjax_cache/), never a path of one developer's machine;
# each benchmark prints it and takes another with its option
WORK = Path(__file__).resolve().parents[1] / ".assocjax_cache" / "bench"


def median_time(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls of fn (after one untimed call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_gflops(m: int = 4096, k: int = 768, n: int = 3072, repeats: int = 10) -> float:
    """float32 (m, k) @ (k, n) through XLA, GFLOP/s."""
    import jax
    import jax.numpy as jnp

    a, b = jnp.ones((m, k), jnp.float32), jnp.ones((k, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    return 2 * m * k * n / median_time(lambda: f(a, b).block_until_ready(), repeats) / 1e9


def torch_matmul_gflops(m: int = 4096, k: int = 768, n: int = 3072, repeats: int = 10) -> float:
    import torch

    a, b = torch.ones(m, k), torch.ones(k, n)
    return 2 * m * k * n / median_time(lambda: a @ b, repeats) / 1e9
