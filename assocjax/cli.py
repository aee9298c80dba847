"""The shell every script runs in: a known user error (a bad option value, a missing or
malformed input file) ends the run with one line on stderr and exit code 2, not a
traceback; `--debug` anywhere on the command line shows the traceback instead.

    if __name__ == "__main__":
        sys.exit(run_cli(main, Args, description=__doc__))
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence, TypeVar

from .io import WriteRefusedError

# What bad input raises (the library names the file, field or option in the message);
# anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
                                                IsADirectoryError, PermissionError, WriteRefusedError)
EXIT_USER_ERROR = 2  # as argparse (and tyro) for a bad command line
DEBUG_FLAG = "--debug"

A = TypeVar("A")


def run_cli(main: Callable[[A], int | None], parse: type[A] | Callable[[list[str]], A],
            argv: Sequence[str] | None = None, *, errors: tuple[type[BaseException], ...] = (),
            description: str | None = None) -> int:
    """Parse `argv` (default: sys.argv[1:]) and run `main` on the result; returns the exit
    code: main's return value (None: 0), or EXIT_USER_ERROR after printing "error: ..." on
    one line of stderr when main raises one of USER_ERRORS + `errors`. `--debug` is taken
    out of argv before parsing and lets such errors propagate with their traceback.

    parse: a dataclass (parsed with tyro.cli, `description` heading its --help) or a
    function argv -> arguments (e.g. a tyro subcommand parser).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    argv = [a for a in argv if a != DEBUG_FLAG]
    if isinstance(parse, type):
        import tyro

        note = f"{DEBUG_FLAG}: show the full traceback of an error."
        args = tyro.cli(parse, args=argv, description=f"{description.strip()}\n\n{note}" if description else note)
    else:
        args = parse(argv)
    try:
        code = main(args)
    except USER_ERRORS + tuple(errors) as e:
        if debug:
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as e:  # noqa: BLE001 (re-raised unless it is running out of memory)
        # The last line of defence: the configs estimate their largest arrays (options.fits_memory), but an
        # estimate misses some; a size option too large is still the user's to change, not a bug.
        if debug or not out_of_memory(e):
            raise
        print(f"error: out of memory ({one_line(e)[:300]}): a size option too large for this machine?", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0 if code is None else int(code)


def out_of_memory(e: BaseException) -> bool:
    """A failed allocation: Python's or numpy's MemoryError, or XLA's RESOURCE_EXHAUSTED (a
    JaxRuntimeError, matched by name so that this module does not import JAX)."""
    return isinstance(e, MemoryError) or (type(e).__name__ in ("JaxRuntimeError", "XlaRuntimeError")
                                          and "RESOURCE_EXHAUSTED" in str(e))


def one_line(e: BaseException) -> str:
    """The exception's message on one line (its lines joined with spaces)."""
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    return text or type(e).__name__
