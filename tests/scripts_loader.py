"""The one way tests load a CLI script (`scripts/<name>.py`) as a module, to call its `main`."""
from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str, alias: str | None = None):
    """scripts/<name>.py as a module, registered in sys.modules as `alias` (its dataclasses
    resolve their string annotations there; a scheduler's worker pickles its functions by it)."""
    spec = importlib.util.spec_from_file_location(alias or f"{name}_cli", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(spec.name, None)
        raise
    return module


@contextlib.contextmanager
def script(name: str, alias: str | None = None):
    """`load_script`, unregistered again when the block ends."""
    module = load_script(name, alias)
    try:
        yield module
    finally:
        sys.modules.pop(module.__name__, None)


def write_tagged_oracle(built, aug: Path, tagged: Path, seed: int | None = None) -> list[Path]:
    """The built-in world's oracle and random controls in `aug` (`augment.py oracle`), and the
    oracle tagged by part of speech in `tagged` (`augment.py tag --tagger synthetic`); the tagged
    oracles, then the random controls."""
    with script("augment") as cli:
        assert cli.main(["oracle", "--out-dir", str(aug), "--data-root", str(built.root)]
                        + ([] if seed is None else ["--seed", str(seed)])) == 0
        for story in sorted(built.manifest["tasks"]):
            assert cli.main(["tag", str(aug / f"{story}_oracle.json"), "--tagger", "synthetic",
                             "--align", str(built.root / "stimuli" / "gentle" / story / "align.csv"),
                             "--out", str(tagged / f"{story}_oracle.json")]) == 0
    return sorted(tagged.glob("*.json")) + sorted(aug.glob("*_random.json"))
