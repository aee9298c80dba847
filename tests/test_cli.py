"""The scripts' shell: known user errors as one line on stderr with exit code 2, the
traceback only under --debug."""
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from assocjax.cli import EXIT_USER_ERROR, run_cli

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Args:
    path: Path
    n: int = 1


def _main(args: Args):
    if args.n == 0:
        raise ValueError(f"{args.path}: n must be >= 1\n(the second line of the message)")
    if args.n < 0:
        raise ZeroDivisionError("a bug, not bad input")
    return args.n - 1


def test_user_errors_are_one_line_with_exit_code_2(capsys):
    assert run_cli(_main, Args, ["--path", "x"]) == 0
    assert run_cli(_main, Args, ["--path", "x", "--n", "3"]) == 2  # main's own exit code
    assert run_cli(_main, Args, ["--path", "in.json", "--n", "0"]) == EXIT_USER_ERROR == 2
    assert capsys.readouterr().err == "error: in.json: n must be >= 1 (the second line of the message)\n"
    with pytest.raises(ValueError, match="n must be >= 1"):
        run_cli(_main, Args, ["--debug", "--path", "in.json", "--n", "0"])
    with pytest.raises(ZeroDivisionError):  # not a user error: keeps its traceback
        run_cli(_main, Args, ["--path", "x", "--n", "-1"])
    assert run_cli(lambda a: a, lambda argv: len(argv), ["a", "--debug", "b"]) == 2  # a parser function



def test_out_of_memory_is_one_line(capsys):
    """Running out of memory (numpy's, Python's or XLA's) is a size option too large: one line, exit 2."""
    import jax.numpy as jnp
    import numpy as np

    def main(args):
        if args.n == 1:
            np.empty((2**40,), np.int64)  # numpy's _ArrayMemoryError
        if args.n == 2:
            raise MemoryError
        jnp.zeros((2**50,), jnp.float32).block_until_ready()  # XLA: RESOURCE_EXHAUSTED

    for n, what in ((1, "Unable to allocate"), (2, "MemoryError"), (3, "RESOURCE_EXHAUSTED")):
        assert run_cli(main, Args, ["--path", "x", "--n", str(n)]) == EXIT_USER_ERROR
        err = capsys.readouterr().err
        assert err.startswith(f"error: out of memory ({what}") and err.count("\n") == 1, err
        assert err.endswith("): a size option too large for this machine?\n"), err
    with pytest.raises(MemoryError):  # --debug keeps the traceback
        run_cli(main, Args, ["--debug", "--path", "x", "--n", "2"])


@pytest.mark.parametrize("code", ["ENOSPC", "EFBIG", "EACCES", "EROFS"])
def test_a_refused_cache_write_is_one_line(capsys, tmp_path, code):
    import errno

    from assocjax.io import atomic_write_text, refused_writes

    def main(args):
        with refused_writes(args.path, "--cache-dir"):
            raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)), str(args.path / ".x.tmp"))

    assert run_cli(main, Args, ["--path", str(tmp_path / "bold")]) == EXIT_USER_ERROR
    remedy = {"ENOSPC": "free space", "EFBIG": "free space or raise the file-size limit"}.get(code, "make it writable")
    want = f"error: {os.strerror(getattr(errno, code)).lower()}: {tmp_path / 'bold'}; {remedy} or point --cache-dir elsewhere\n"
    assert capsys.readouterr().err == want
    with pytest.raises(OSError, match="Is a directory"):  # not a refusal of the environment: unchanged
        with refused_writes(tmp_path, "--cache-dir"):
            atomic_write_text(tmp_path, "x")

def _script(name: str, *argv: str, cwd: Path):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / f"{name}.py"), *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_scripts_print_bad_input_as_one_line(tmp_path):
    out = _script("finetune", "--model", "nosuchdir/model", "--train", "train.jsonl", "--out", "run", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith(f"error: model folder not found: {tmp_path / 'nosuchdir' / 'model'}; hub names")
    assert out.stderr.count("\n") == 1 and not (tmp_path / "run").exists()
    out = _script("make_association", "--stories", "nostories", "--augmentations", "augs", "--out", "data", "--debug",
                  cwd=tmp_path)
    assert out.returncode == 1 and "Traceback" in out.stderr and "FileNotFoundError: stories not found" in out.stderr


def test_score_names_bad_input_in_one_line(tmp_path):
    out = _script("score", "--model.path", "org/name", "--output", "run", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith(f"error: model folder not found: {tmp_path / 'org' / 'name'}; hub names") and \
        "score.py --model.hub" in out.stderr
    bad = tmp_path / "model"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    out = _script("score", "--model.path", str(bad), "--output", "run", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr == f"error: {bad / 'config.json'}: not valid JSON " \
        f"(Expecting property name enclosed in double quotes: line 1 column 2 (char 1))\n", out.stderr
    out = _script("score", "--features.delays", "--debug", cwd=tmp_path)
    assert out.returncode == 1 and "Traceback" in out.stderr and "--features.delays is empty" in out.stderr
    assert not (tmp_path / "run").exists()
