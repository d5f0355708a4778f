"""The command-line conventions of ``python -m snnet.space``, the few it needs of the project's.

The same as every ``python -m orchestrator.*`` command's (``orchestrator.cli``, which ``snnet``
may not import): a mistake, in the command line or a :class:`~snnet.SNNetError`, is one
``error: <paragraph>`` line on stderr and exit 2, without a traceback or usage dump; Ctrl-C exits
130; a reader that went away (``| head``) ends the command quietly with exit 0. The wording is
:mod:`snnet.text`'s.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable, Sequence

from .._errors import SNNetError
from ..text import unrecognized_arguments


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose mistakes are one ``error: <what>; see <prog> --help`` line and exit 2."""

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            self.error(unrecognized_arguments(extra, [o for a in self._actions for o in a.option_strings]))
        return parsed

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null: the final flush stays quiet."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def write_stdout(text: str) -> bool:
    """Write and flush ``text`` to stdout; False, and stdout silenced, when the reader went away."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        return False
    return True


def command(main: Callable[[Sequence[str] | None], int]) -> Callable[[Sequence[str] | None], int]:
    """``main(argv) -> int`` with the conventions of the module docstring; returns the exit status."""

    @functools.wraps(main)
    def run(argv: Sequence[str] | None = None) -> int:
        try:
            return int(main(argv) or 0)
        except KeyboardInterrupt:
            return 130
        except BrokenPipeError:
            _silence_stdout()
            return 0
        except SNNetError as e:  # a user's mistake: a paragraph, no traceback
            print(f"error: {e}", file=sys.stderr)
            return 2

    return run
