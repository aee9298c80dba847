"""The run's memory budget (`--memory-gb`) and the chunk sizes that respect it.

Every stage that scales with subjects x vertices works in vertex chunks: the BOLD cache is
written one scan at a time, the ceiling and each layer's ridge read chunks of it, and results
are kept per vertex only (a few floats per fit and vertex). The chunk width comes from the
bytes one target (one fit at one vertex) costs in the stage, by the library's one rule
(`ridge.chunks.targets_within`); the chunks are streamed by `ridge.chunks.stream`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import resource
import sys
import time

import jax

from ..ridge.chunks import targets_within

GiB = 2**30
# Floats per row a target costs before the solve: its raw rows on the host (two chunks are in
# flight: one solving while the next is read), their device copy, the z-scored rows, the fits
# with the mean appended and the padded chunk.
STAGING = 6
SHARE = 4  # a ridge chunk takes at most 1 / SHARE of the budget (chunk_targets)


@dataclasses.dataclass(frozen=True)
class Budget:
    host_bytes: int
    device_bytes: int
    shared: bool  # the device is the host (CPU): both parts come out of one pool

    def describe(self) -> dict:
        return dict(host_gb=round(self.host_bytes / GiB, 3), device_gb=round(self.device_bytes / GiB, 3),
                    device_is_host=self.shared)


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_budget(gb: float | None) -> Budget:
    """`gb` GiB for the run (unset: half the machine). On an accelerator the device part is half
    of its own memory (as reported by the backend) unless gb is smaller."""
    if gb is not None and not gb > 0:
        raise ValueError(f"--memory-gb must be > 0, got {gb}")
    host = int(gb * GiB) if gb is not None else physical_memory() // 2
    dev = jax.local_devices()[0]
    if dev.platform == "cpu":
        return Budget(host, host, True)
    stats = dev.memory_stats() or {}
    limit = stats.get("bytes_limit")
    device = int(limit) // 2 if limit else host
    return Budget(host, min(device, host) if gb is not None else device, False)


def chunk_targets(budget: Budget, per_target: int, fixed: int, n_rows: int, requested: int | None = None,
                  tile: int | None = None, n_devices: int = 1) -> int:
    """Targets per ridge chunk (on all `n_devices` together): `requested` per device when given,
    else what a quarter of the budget holds (the rest is the process: the model and its word
    features, compiled programs, the cache reads, the ceiling and the results; with half, a 1 GiB
    run grew to 1.002 GiB; with a third, after issue 24's ceiling null and longer delays, 0.97-1.04
    GiB (tests/test_memory.py's world); with a quarter 0.85-0.94): the solve's device bytes (`fixed` + per target, from `ridge.target_bytes`)
    plus each target's staged rows (STAGING), in whole tiles (`ridge.chunks.targets_within`)."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--ridge.target-chunk must be >= 1, got {requested}")
        return requested * n_devices
    what = f"--memory-gb {budget.host_bytes / GiB:.2f} (a ridge chunk may take a quarter)"
    host = STAGING * 4 * n_rows
    if budget.shared:
        return targets_within(budget.host_bytes // SHARE, per_target + host, fixed, tile or 1, n_devices, what=what)
    return min(targets_within(budget.device_bytes // SHARE, per_target, fixed, tile or 1, n_devices, what=what),
               targets_within(budget.host_bytes // SHARE, host, 0, tile or 1, n_devices, what=what))


def ceiling_vertices(budget: Budget, n_subjects: int, n_rows: int, cap: int, n_null: int = 0) -> int:
    """Vertices per ceiling call: the chunk (S x N) plus the split-half batch's half means and
    the LOSO batch (about 2 x 8 + 8 rows of N) per vertex, in float32, with host copies, in
    half the budget (`ridge.chunks.targets_within`); with a significance null (`ceiling.split_half_ceilings`)
    also its split's half means and FFT (about 6 rows of N) and its shifted r (about 3 x n_null)."""
    per = 4 * n_rows * (STAGING * (n_subjects + 1) + 2 * 8 + 8 + n_subjects) + (4 * (6 * n_rows + 3 * n_null)
                                                                                 if n_null else 0)
    return targets_within(budget.host_bytes // 2, per, cap=cap, what=f"--memory-gb {budget.host_bytes / GiB:.2f}")


def peak_rss() -> int:
    """The process's peak resident memory so far, in bytes: Linux's VmHWM (getrusage's
    ru_maxrss keeps the parent's peak across fork + exec, so a run started from a big
    process would report that), else ru_maxrss (KiB on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class Stages:
    """Seconds and peak RSS of each stage of a run, for run.json ("measure memory as well as
    time"): the peak is the process's high-water mark at the stage's end, so a stage's
    `peak_rss_gb` above the previous one's is memory that stage itself needed."""

    def __init__(self):
        self.record = {"start": dict(peak_rss_gb=round(peak_rss() / GiB, 3))}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t = time.perf_counter()
        yield
        self.record[name] = dict(seconds=round(time.perf_counter() - t, 3), peak_rss_gb=round(peak_rss() / GiB, 3))
