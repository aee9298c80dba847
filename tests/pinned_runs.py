"""The three runs whose tables are pinned (tests/test_pinned.py), and the command that wrote
their reference copies in tests/data/pinned/ from the library before the result-type redesign
(issue 21): `python tests/pinned_runs.py tests/data/pinned`.

default: score.py's defaults on a smaller built-in world (its 3 stories and 12 subjects, 120
    TRs, 300 vertices), every layer, each story fitted on its own and combined.
pooled:  the same stories fitted together (--data.pool-stories).
exp1:    docs/experiments.md's experiment 1 (oracle and random-word augmentations vs the plain stories,
    and their contrast) at the planted layer: gains.csv and each condition's scores.csv.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # scripts_loader, when run as a command
from scripts_loader import script  # noqa: E402

# (run, file inside its output folder) for every pinned table
PINNED = (("default", "scores.csv"), ("pooled", "scores.csv"), ("exp1", "gains.csv"),
          ("exp1", "plain/scores.csv"), ("exp1", "oracle/scores.csv"), ("exp1", "random-word/scores.csv"))


def run_all(tmp: Path) -> dict[str, Path]:
    """Score the three runs under `tmp`; run -> its output folder."""
    from assocjax.pipeline import (AugmentOptions, CeilingOptions, DataOptions, FeatureOptions, ReportOptions,
                                   ScoreConfig, SyntheticOptions, compare, score)
    from assocjax.pipeline.assets import ensure_builtin

    small = SyntheticOptions(story_trs=120, space="tinysphere", n_vertices=300)
    base = dict(cache_dir=tmp / "cache", synthetic=small, progress=False,
                report=ReportOptions(maps=False, figures=False))
    out = {name: tmp / name for name in ("default", "pooled", "exp1")}
    score(ScoreConfig(output=out["default"], **base))
    score(ScoreConfig(output=out["pooled"], data=DataOptions(pool_stories=True), **base))
    world = ensure_builtin(small, tmp / "cache", progress=False)
    with script("augment") as cli:
        assert cli.main(["oracle", "--out-dir", str(tmp / "aug"), "--data-root", str(world.root)]) == 0
    files = tuple(sorted((tmp / "aug").glob("*.json")))
    compare(ScoreConfig(output=out["exp1"], features=FeatureOptions(layers=(small.planted_layer,)),
                        ceiling=CeilingOptions(n_splits=10), augment=AugmentOptions(files=files, compare=True),
                        **base))
    return out


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(ROOT))  # this checkout's library, whichever one pip installed

    dest = Path(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        out = run_all(Path(tmp))
        for run, name in PINNED:
            target = dest / run / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out[run] / name, target)
            print(target)
