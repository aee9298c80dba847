"""Write a synthetic Narratives dataset with known ground truth: `python scripts/make_synthetic.py --help`.

    python scripts/make_synthetic.py --out DIR
    python scripts/make_synthetic.py --out DIR --from-metadata ../shared/narratives --stories pieman,tunnel --n-subjects 4
"""
import sys

from assocjax.cli import run_cli
from assocjax.data.synthetic import SyntheticConfig, make_synthetic, summary_line


def main(cfg: SyntheticConfig) -> None:
    print(summary_line(make_synthetic(cfg, progress=True), cfg.out))


if __name__ == "__main__":
    sys.exit(run_cli(main, SyntheticConfig, description=__doc__))
