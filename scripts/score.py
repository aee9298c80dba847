"""Score a language model's layers against fMRI: `python scripts/score.py --help`.

    python scripts/score.py                      # built-in synthetic example (made once, cached)
    python scripts/score.py --data.root /data/narratives --model.path /models/gpt2 \
        --data.tasks pieman,tunnel --features.layers 4 6 8 --output outputs/gpt2
"""
import tyro

from assocjax.pipeline import ScoreConfig, score

if __name__ == "__main__":
    score(tyro.cli(ScoreConfig))
