"""Range checks of command-line options, shared by every config's validation function
(`pipeline.config.check_options`, `SyntheticConfig`'s `check_config`, the demo's and the
scripts' own): each failure is a ValueError naming the option, its value and the allowed
range, raised before any long work. NaN and infinities fail every range (math.isfinite),
because a comparison with NaN is silently False."""
from __future__ import annotations

import math
import os
import resource
from typing import Mapping


def at_least(options: Mapping[str, float | None], lo: float) -> None:
    """Every option given (None: unset, skipped) is finite and >= lo."""
    for name, value in options.items():
        if value is not None and not (math.isfinite(value) and value >= lo):
            raise ValueError(f"{name} {value} must be >= {lo}")


def between(name: str, value: float | None, lo: float, hi: float, *, lo_open: bool = False,
            hi_open: bool = False, why: str = "") -> None:
    """value (None: unset, skipped) is finite and in the interval; `why` ends the message."""
    if value is None:
        return
    ok = math.isfinite(value) and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise ValueError(f"{name} {value} must be in {interval}" + (f": {why}" if why else ""))


def _memory_limits() -> dict[str, int]:
    """Bytes a run may allocate: the physical memory, and the address-space limit where one is set."""
    limits = {"this machine has": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")}
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limits["this process may reserve (ulimit -v)"] = soft
    return limits


def fits_memory(estimate: Mapping[str, float]) -> None:
    """`estimate`: bytes a run will allocate, keyed by the options that size each part. A
    ValueError naming the largest part when the whole exceeds the machine's memory (or the process's `ulimit -v`), so that a size
    option too large for the machine fails here, not after minutes of work with a MemoryError.
    The parts are lower bounds (the largest arrays only), so passing is no promise."""
    total = sum(estimate.values())
    has, limit = min(_memory_limits().items(), key=lambda kv: kv[1])
    if total > limit:
        what, most = max(estimate.items(), key=lambda kv: kv[1])
        raise ValueError(f"{what} need about {_gib(most)} of memory (the run at least {_gib(total)}); {has} "
                         f"{_gib(limit)}: make them smaller")


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"
