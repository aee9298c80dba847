"""Brain-score demo on generated data (no downloads): `python scripts/demo.py --help`."""
import tyro

from assocjax.demo import DemoConfig, print_summary, run_demo

if __name__ == "__main__":
    cfg = tyro.cli(DemoConfig)
    print_summary(run_demo(cfg), cfg.output)
