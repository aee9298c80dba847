"""The FIR delays of each story: a span in seconds (`--features.delay-span`) turned into TR
multiples at the story's own TR, unless `--features.delays` gives them in TRs.

Rule: delays = round(LO / TR) .. round(HI / TR), every one at least 1 (a delay of 0 would put
the word's own TR into the design: the response must come strictly after the word), rounding
halves up. Rounding, not "k * TR inside [LO, HI]", so that a TR a little off the usual one
gives the same delays: milkyway's 17 scans at TR 1.52 s get 1-4 from 1.5-6 s as its 36 scans
at 1.5 s do (the inclusive rule would drop 4 x 1.52 = 6.08 s; the default 3-9 s gives 2-6 at
both). A fit group pools stories into one design, so its stories must get as many delays each;
when their TRs give different counts the run stops before any work, naming the stories
(`check_stories`).

The default span is the one benchmarks/delays/run.py measured best on HRF-planted worlds at
TR 1.5 and 2 s (docs/protocol.md, "FIR delays"): 3-9 s, i.e. 2-6 TRs at TR 1.5 s and 2-5 at
TR 2 s, recovered 99.1 % of the best candidate's score (mean over the planted regions, 3 worlds
per TR and both TRs); the former 1-4 TRs 89.0 % at TR 1.5 s.
"""
from __future__ import annotations

import math

# --features.delay-span's default, seconds (benchmarks/delays: see the module docstring)
DEFAULT_SPAN = (3.0, 9.0)


def span_delays(span: tuple[float, float], tr: float) -> tuple[int, ...]:
    """The TR multiples of `span` (seconds) at TR `tr` (module docstring); a ValueError when the
    span holds none."""
    lo, hi = span
    first, last = max(1, math.floor(lo / tr + 0.5)), math.floor(hi / tr + 0.5)
    if last < first:
        raise ValueError(f"--features.delay-span {lo:g} {hi:g} s holds no delay of at least one TR at TR {tr:g} s "
                         f"(rounded: {lo / tr:.2f}..{hi / tr:.2f} TRs); widen it or give --features.delays in TRs")
    return tuple(range(first, last + 1))


def story_delays(opts, tr: float) -> tuple[int, ...]:
    """A story's delays in TRs: `--features.delays` when given, else the span at its TR."""
    return tuple(opts.delays) if opts.delays is not None else span_delays(tuple(opts.delay_span), tr)


def source(opts) -> str:
    """The option the delays come from, for error messages."""
    if opts.delays is not None:
        return "--features.delays"
    lo, hi = opts.delay_span
    return f"--features.delay-span {lo:g} {hi:g} s"


def check_span(opts) -> None:
    """--features.delay-span on its own: two finite seconds, 0 < LO <= HI (strictly after the word)."""
    if opts.delays is not None:
        return
    span = tuple(opts.delay_span)
    if len(span) != 2 or not all(math.isfinite(s) for s in span) or not 0 < span[0] <= span[1]:
        raise ValueError(f"--features.delay-span {' '.join(f'{s:g}' for s in span)}: give LO HI in seconds with "
                         "0 < LO <= HI (the response strictly after the word; the default is 3 9)")


def check_stories(stories, opts, pooled: bool) -> dict[str, tuple[int, ...]]:
    """story name -> its delays; stories fitted together (`pooled`) must get as many each."""
    got = {s.name: story_delays(opts, s.tr) for s in stories}
    if pooled and len({len(d) for d in got.values()}) > 1:
        per = "; ".join(f"{s.name} (TR {s.tr:g} s): {list(got[s.name])}" for s in stories)
        raise ValueError(f"{source(opts)} gives the stories fitted together (--data.pool-stories) different numbers "
                         f"of delays, so their designs cannot share columns: {per}. Give the delays in TRs "
                         "(--features.delays), or fit the stories one by one (drop --data.pool-stories)")
    return got


def default_buffer(stories, opts) -> int:
    """--ridge.buffer-trs when unset: the group's longest delay + 8 TRs."""
    return max(max(story_delays(opts, s.tr)) for s in stories) + 8


def record(stories, opts) -> dict:
    """What run.json keeps: every story's delays in TRs and the span they came from (None when
    --features.delays gave them)."""
    return dict(delays_trs={s.name: list(story_delays(opts, s.tr)) for s in stories},
                delay_span_s=None if opts.delays is not None else list(opts.delay_span))
