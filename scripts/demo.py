"""Brain-score demo on generated data (no downloads): `python scripts/demo.py --help`."""
import sys

from assocjax.cli import run_cli
from assocjax.demo import DemoConfig, print_summary, run_demo


def main(cfg: DemoConfig) -> None:
    print_summary(run_demo(cfg), cfg.output)


if __name__ == "__main__":
    sys.exit(run_cli(main, DemoConfig, description=__doc__))
