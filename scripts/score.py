"""Score a language model's layers against fMRI: `python scripts/score.py --help`.

    python scripts/score.py                      # built-in synthetic example (made once, cached)
    python scripts/score.py --data.root /data/narratives --model.path /models/gpt2 \
        --data.tasks pieman,tunnel --features.layers 4 6 8 --output outputs/gpt2
    python scripts/score.py --augment.files aug/*.json --augment.compare   # F per condition vs plain
    python scripts/score.py --model.path base --compare.models tuned-lora tuned-control   # M
    python scripts/score.py --model.path base --compare.models runs/lora-cf   # M, each story by its fold's model
"""
import sys

from assocjax.cli import run_cli
from assocjax.pipeline import ScoreConfig
from assocjax.pipeline import main as score


def main(cfg: ScoreConfig) -> None:
    score(cfg)


if __name__ == "__main__":
    sys.exit(run_cli(main, ScoreConfig, description=__doc__))
