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
