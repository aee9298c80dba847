"""Bad values of every numeric option of the seven scripts: 0, -1, huge, and for floats nan and inf.

Each option is one row: its flag, its kind, and which of the bad values correct code accepts
(`ok`), may either refuse or accept (`either`), or must accept with a note (`note`); every other
value must be refused in one line naming the option (the match is the flag's last part, so
`batch_size=0` names `--data.batch-size` too). Runs that are accepted go on with tiny sizes.
"""
from __future__ import annotations

from fixtures import SCORE_FAST, score_argv, tune_argv
from harness import Case

INT_VALUES = {"0": "0", "-1": "-1", "huge": "1000000000"}
FLOAT_VALUES = {"0": "0", "-1": "-1", "nan": "nan", "inf": "inf", "huge": "1e30"}


def option_cases(script: str, base, rows, label: str | None = None, timeout: float = 120.0) -> list[Case]:
    """Cases of `rows` (flag, kind "int"/"float", dict of value label -> expectation tuple for
    the labels that are not plain errors); `base(ctx)` gives the argv every case starts from."""
    cases = []
    for flag, kind, special in rows:
        values = INT_VALUES if kind == "int" else FLOAT_VALUES
        for name, value in values.items():
            expects = special.get(name, ("error",))
            cases.append(Case(f"{label or script[:-3]}:{flag}={name}", script,
                              lambda ctx, flag=flag, value=value: [*base(ctx), flag, value],
                              expects=expects, match=flag.rsplit(".", 1)[-1].lstrip("-"), timeout=timeout))
    return cases


OK, EITHER, NOTE = ("ok",), ("error", "ok"), ("note", "error")
ZERO_OK = {"0": OK}
HUGE_EITHER = {"huge": EITHER}


def _score(ctx):
    return score_argv(ctx.work)


SCORE_ROWS = [
    ("--features.context", "int", {}),                       # huge: more than the model's positions
    ("--features.stride", "int", {}),
    ("--features.batch-size", "int", HUGE_EITHER),
    ("--features.delays", "int", {}),                        # 0 and -1 acausal; huge longer than the story
    ("--features.layers", "int", {"0": OK, "-1": OK}),   # negative: from the end
    ("--data.trim-start", "int", ZERO_OK),
    ("--data.max-words-outside", "float", {"0": EITHER}),
    ("--compare.n-perm", "int", HUGE_EITHER),
    # 0 is refused on purpose: the ratio divides by scores near 0 (+-inf; docs/troubleshooting.md)
    ("--compare.min-base", "float", {}),
    ("--compare.fdr", "float", {}),
    ("--ridge.alphas", "float", {"huge": ("error", "note")}),
    ("--ridge.outer-folds", "int", {}),
    ("--ridge.inner-folds", "int", {"huge": ("error", "ok", "note")}),  # documented: capped at the groups
    ("--ridge.story-chunks", "int", {}),
    ("--ridge.buffer-trs", "int", ZERO_OK),
    ("--ridge.target-chunk", "int", HUGE_EITHER),
    ("--ceiling.n-splits", "int", {}),
    ("--ceiling.min-ceiling", "float", {}),                  # 0 refused on purpose, as --compare.min-base
    ("--ceiling.vertex-chunk", "int", HUGE_EITHER),
    ("--report.n-boot", "int", {}),
    ("--report.ci", "float", {}),
    ("--memory-gb", "float", {"huge": ("error", "note", "ok")}),
    ("--seed", "int", {"0": OK, "huge": EITHER}),
]

# the built-in world's options, on a tiny world so that an accepted value costs seconds
SYNTH_BASE = ["--synthetic.space", "tiny", "--synthetic.n-vertices", "40", "--synthetic.n-subjects", "3",
              "--synthetic.story-trs", "60", "--synthetic.n-stories", "2"]
SYNTH_ROWS = [
    ("--synthetic.n-stories", "int", {}),
    ("--synthetic.n-subjects", "int", {}),
    ("--synthetic.story-trs", "int", {}),
    ("--synthetic.n-vertices", "int", {}),
    ("--synthetic.n-layers", "int", {}),
    ("--synthetic.hidden", "int", {}),
    ("--synthetic.n-heads", "int", {}),
    ("--synthetic.positions", "int", {}),
    ("--synthetic.planted-layer", "int", ZERO_OK),
    ("--synthetic.init-std", "float", {}),
    ("--synthetic.position-scale", "float", ZERO_OK),
    ("--synthetic.assoc-share", "float", ZERO_OK),
    ("--synthetic.seed", "int", {"0": OK, "huge": EITHER}),
]


def _synthetic(ctx):
    return ["--output", "out", "--cache-dir", "cache", *SCORE_FAST[2:], *SYNTH_BASE]


DEMO_BASE = ["--n-stories", "3", "--trs-per-story", "60", "--n-subjects", "3", "--n-voxels", "40", "--vocab-size", "50",
             "--output", "out"]
DEMO_ROWS = [
    ("--n-stories", "int", {}),
    ("--trs-per-story", "int", {}),
    ("--tr", "float", {}),
    ("--words-per-second", "float", {}),
    ("--vocab-size", "int", {}),
    ("--embed-dim", "int", {}),
    ("--n-subjects", "int", {}),
    ("--n-voxels", "int", {}),
    ("--delays", "int", {}),
    ("--noise", "float", ZERO_OK),
    ("--seed", "int", {"0": OK, "huge": EITHER}),
]

SYNTHETIC_BASE = ["--out", "ds", "--space", "tiny", "--n-vertices", "30", "--story-trs", "40", "--n-stories", "1",
                  "--n-subjects", "2"]
MAKE_SYNTHETIC_ROWS = [
    ("--n-stories", "int", {}),
    ("--n-subjects", "int", {}),
    ("--tr", "float", {}),
    # 0 lead TRs cannot hold the default music event (3 s + 6 s) before the story: an error naming
    # --lead-trs and what fits is right (0 runs with --audio-onset 0 --music-seconds 0)
    ("--lead-trs", "int", {"0": EITHER}),
    ("--story-trs", "int", {}),
    ("--tail-trs", "int", ZERO_OK),
    ("--audio-onset", "float", ZERO_OK),
    ("--music-seconds", "float", ZERO_OK),
    ("--words-per-second", "float", {}),
    ("--untimed-fraction", "float", ZERO_OK),
    ("--vocab-size", "int", {}),
    ("--n-associates", "int", {"0": EITHER}),
    ("--feature-dim", "int", {}),
    ("--assoc-share", "float", ZERO_OK),
    ("--noise-ar1", "float", ZERO_OK),
    ("--medial-wall-fraction", "float", ZERO_OK),
    ("--n-vertices", "int", {}),
    ("--seed", "int", {"0": OK, "huge": EITHER}),
]


def _sweep(ctx):
    return ["--stories", "pieman", "--folder", "sweep",
            *[a if not a.startswith("--") else "--base." + a[2:] for a in score_argv(ctx.work)]]


SWEEP_ROWS = [
    ("--layers-per-job", "int", HUGE_EITHER),
    ("--timeout-min", "int", HUGE_EITHER),
    ("--cpus-per-task", "int", HUGE_EITHER),
    ("--mem-gb", "float", HUGE_EITHER),
    ("--gpus-per-node", "int", {"0": OK, "huge": EITHER}),
    ("--array-parallelism", "int", HUGE_EITHER),
]


def _tune(ctx):
    return tune_argv(ctx.work, "tuned")


TUNE_ROWS = [
    ("--optim.lr", "float", {}),
    ("--schedule.warmup-steps", "int", {"0": OK, "huge": EITHER}),
    ("--schedule.total-steps", "int", {}),
    ("--schedule.end-lr-fraction", "float", ZERO_OK),
    ("--optim.weight-decay", "float", ZERO_OK),
    ("--optim.adam-b1", "float", ZERO_OK),
    ("--optim.adam-b2", "float", ZERO_OK),
    ("--optim.adam-eps", "float", {"0": EITHER}),
    ("--optim.clip-norm", "float", {"0": OK, "inf": EITHER, "huge": EITHER}),  # 0, inf, huge: no clipping
    ("--data.batch-size", "int", {}),
    ("--data.accum", "int", {}),
    ("--data.max-len", "int", {}),
    ("--data.eval-every", "int", {"0": OK, "huge": OK}),
    ("--data.eval-batch-size", "int", HUGE_EITHER),
    ("--save-every", "int", {"0": OK, "huge": OK}),
    ("--keep", "int", HUGE_EITHER),
    ("--data.seed", "int", {"0": OK, "huge": EITHER}),
    ("--method.lora.rank", "int", {}),
    ("--method.lora.alpha", "float", {}),
    ("--method.lora.dropout", "float", ZERO_OK),
    ("--cross-fit", "int", {"0": OK}),
    ("--fold-seed", "int", {"0": OK, "huge": EITHER}),
]


def _association(ctx):
    from fixtures import align_csv

    return ["--stories", str(align_csv(ctx.work)), str(ctx.work / "other" / "align.csv"), "--augmentations",
            str(ctx.work / "aug.json"), str(ctx.work / "aug2.json"), "--out", "assoc"]


ASSOCIATION_ROWS = [
    ("--n", "int", {}),
    ("--seed", "int", {"0": OK, "huge": EITHER}),
    ("--val-fraction", "float", {"0": EITHER}),
    ("--gap-s", "float", {"inf": EITHER, "huge": EITHER}),  # no pause ends a sentence
]


def _generate(ctx):
    from fixtures import align_csv

    return ["generate", "--align", str(align_csv(ctx.work)), "--model-path", str(ctx.work / "model"), "--out", "g.json",
            "--every", "40", "--max-new-tokens", "4", "--context-words", "100"]


GENERATE_ROWS = [
    ("--every", "int", {}),
    ("--seed", "int", {"0": OK, "huge": EITHER}),
    ("--context-words", "int", HUGE_EITHER),
    ("--max-words", "int", {}),
    ("--retries", "int", {"0": OK}),
    ("--temperature", "float", ZERO_OK),
    ("--top-p", "float", {}),
    ("--max-new-tokens", "int", {}),
    ("--batch-size", "int", HUGE_EITHER),
    ("--timeout-s", "float", {}),
    ("--max-retries", "int", {"0": OK}),
    ("--gap-s", "float", {"inf": EITHER, "huge": EITHER}),
]


def _show(ctx):
    return ["show", str(ctx.work / "aug.json")]


SHOW_ROWS = [("--n", "int", {"0": OK, "huge": OK}), ("--context", "int", {"0": OK, "huge": OK})]


def _random_match(ctx):
    from fixtures import align_csv

    return ["random-match", "--augmentation", str(ctx.work / "aug.json"), "--align", str(align_csv(ctx.work)),
            "--pool-align", str(ctx.work / "other" / "align.csv"), "--out", "r.json"]


RANDOM_ROWS = [("--seed", "int", {"0": OK, "huge": EITHER}), ("--gap-s", "float", {"inf": EITHER, "huge": EITHER})]


def cases() -> list[Case]:
    return [*option_cases("score.py", _score, SCORE_ROWS),
            *option_cases("score.py", _synthetic, SYNTH_ROWS, "score builtin"),
            *option_cases("demo.py", lambda ctx: DEMO_BASE, DEMO_ROWS),
            *option_cases("make_synthetic.py", lambda ctx: SYNTHETIC_BASE, MAKE_SYNTHETIC_ROWS),
            *option_cases("sweep.py", _sweep, SWEEP_ROWS),
            *option_cases("finetune.py", _tune, TUNE_ROWS),
            *option_cases("make_association.py", _association, ASSOCIATION_ROWS),
            *option_cases("augment.py", _generate, GENERATE_ROWS, "augment generate"),
            *option_cases("augment.py", _show, SHOW_ROWS, "augment show"),
            *option_cases("augment.py", _random_match, RANDOM_ROWS, "augment random-match")]
