"""Sweep models x stories x layers x augmentation conditions: `python scripts/sweep.py --help`.

    python scripts/sweep.py --base.data.root /data/narratives --models /models/gpt2 /models/llama-2-7b \
        --stories pieman,tunnel,lucy --executor slurm --slurm-partition gpu --gpus-per-node 1 --folder sweeps/paper
    python scripts/sweep.py ... --executor local        # the same jobs as local processes
    python scripts/score.py --data.root ... --model.path /models/gpt2 --data.stories pieman,tunnel,lucy --aggregate

Each job is one score run (one model, story, layer block and condition) that fills the shared
results cache (--base.cache-dir); the sweep then aggregates every model x condition into
<folder>/<model>/<condition>/ from the cache, as `score.py --aggregate` does.
"""
import sys

from assocjax.cli import run_cli
from assocjax.pipeline.sweep import JobFailed, SweepConfig, run


ERRORS = (JobFailed,)  # a failed job is one line too: its name, its error and its log


def main(cfg: SweepConfig) -> None:
    for (model, condition), res in run(cfg).items():
        s = res.summary
        print(f"{model} / {condition}: cross-validated best layer {s['cv_best_layer']}, r = {s['cv_best_score']:.3f} -> {res.output}")


if __name__ == "__main__":
    sys.exit(run_cli(main, SweepConfig, errors=ERRORS, description=__doc__))
