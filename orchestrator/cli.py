"""What every ``python -m orchestrator.*`` command shares: exit codes, pipes, Ctrl-C, and the wording.

:func:`run_cli` (or the :func:`cli` decorator) runs a ``main(argv) -> int`` with the project's
command-line conventions:

- a user's mistake (:class:`~snnet.SNNetError`) prints one ``error: <paragraph>`` line on
  stderr and exits 2, without a traceback; other exception types can map to other codes;
- Ctrl-C exits 130 after printing an optional hint (what finished, how to resume): the
  innermost :func:`interrupt_hint` block the interrupt came through, else ``on_interrupt``;
- a reader that went away (``| head``) ends the command quietly with exit 0
  (:func:`write_stdout` for output that a closed pipe should end).

:class:`ArgumentParser` is argparse's parser with the same ``error:`` paragraph for a mistake in
the command line itself (an unknown flag gets the closest known one), exit 2, no usage dump.

The wording (:func:`plural`, :func:`did_you_mean`, :func:`format_flops`, :func:`flops_unit`,
:func:`render_table`) is :mod:`snnet.text`'s, re-exported here for the commands: the whole project
words counts, FLOPs and tables one way. ``python -m snnet.space`` follows the same conventions
with its own few lines (``snnet`` does not import ``orchestrator``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TextIO

from snnet import SNNetError
from snnet.text import FLOPS_UNITS, did_you_mean, flops_unit, format_flops, plural, render_table, unrecognized_arguments

__all__ = [
    "FLOPS_UNITS",
    "ArgumentParser",
    "cli",
    "did_you_mean",
    "flops_unit",
    "format_flops",
    "interrupt_hint",
    "plural",
    "render_table",
    "run_cli",
    "shared_flags",
    "write_stdout",
]

_HINT = "snnet_interrupt_hint"  # where interrupt_hint leaves its message on the KeyboardInterrupt


@contextlib.contextmanager
def interrupt_hint(message: str | Callable[[], str | None]) -> Iterator[None]:
    """Ctrl-C inside the block makes :func:`run_cli` print ``message`` (or what it returns,
    when called at that moment); the innermost block wins."""
    try:
        yield
    except KeyboardInterrupt as e:
        if not hasattr(e, _HINT):
            setattr(e, _HINT, message)
        raise


def _silence(stream: TextIO | None = None) -> None:
    """After a broken pipe, point the stream (stdout) at /dev/null: the final flush stays quiet."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), (stream if stream is not None else sys.stdout).fileno())
    except (OSError, ValueError):
        pass


def write_stdout(text: str, stream: TextIO | None = None) -> bool:
    """Write and flush ``text`` (to stdout); False, and the stream silenced, when the reader went away."""
    stream = stream if stream is not None else sys.stdout
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        _silence(stream)
        return False
    return True


def run_cli(
    main: Callable[[Sequence[str] | None], int | None],
    argv: Sequence[str] | None = None,
    *,
    exit_codes: Mapping[type[BaseException], int] | None = None,
    on_interrupt: Callable[[], str | None] | None = None,
) -> int:
    """Run ``main(argv)`` with the conventions of the module docstring; returns the exit status.

    ``exit_codes`` maps exception types to exit statuses, checked in order before the default
    ``{SNNetError: 2}``; each prints ``error: <message>`` on stderr.
    """
    codes = dict(exit_codes or {})
    codes.setdefault(SNNetError, 2)
    try:
        return int(main(argv) or 0)
    except KeyboardInterrupt as e:
        hint = getattr(e, _HINT, None) or on_interrupt
        hint = hint() if callable(hint) else hint
        if hint:
            print(hint, file=sys.stderr)
        return 130
    except BrokenPipeError:
        _silence()
        return 0
    except tuple(codes) as e:  # type: ignore[misc]  # a user's mistake: a paragraph, no traceback
        code = next(c for kind, c in codes.items() if isinstance(e, kind))
        print(f"error: {e}", file=sys.stderr)
        return code


def cli(
    *,
    exit_codes: Mapping[type[BaseException], int] | None = None,
    on_interrupt: Callable[[], str | None] | None = None,
) -> Callable[[Callable[..., int | None]], Callable[[Sequence[str] | None], int]]:
    """Decorator form of :func:`run_cli`: ``@cli()`` over ``def main(argv=None) -> int``."""

    def wrap(main: Callable[..., int | None]) -> Callable[[Sequence[str] | None], int]:
        @functools.wraps(main)
        def run(argv: Sequence[str] | None = None) -> int:
            return run_cli(main, argv, exit_codes=exit_codes, on_interrupt=on_interrupt)

        return run

    return wrap


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, whose errors follow :func:`run_cli`'s form: one paragraph
    ``error: <what>; see <prog> --help`` on stderr and exit 2, instead of the usage dump.

    An unknown flag names the closest known one of the command (or of its sub-command):
    ``error: unrecognized argument --epocs (did you mean '--epochs'?); see python -m orchestrator.train --help``.
    Sub-commands (``add_subparsers``) are made of this class too.
    """

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            parser = self._chosen(parsed)
            parser.error(unrecognized_arguments(extra, [o for a in parser._actions for o in a.option_strings]))
        return parsed

    def _chosen(self, parsed: argparse.Namespace) -> ArgumentParser:
        """The sub-command's parser the arguments went to (this one without sub-commands)."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and action.dest is not argparse.SUPPRESS:
                sub = action.choices.get(getattr(parsed, action.dest, None) or "")
                if isinstance(sub, ArgumentParser):
                    return sub._chosen(parsed)
        return self

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


# -- the flags several commands take ---------------------------------------------------------------

#: Each shared flag's ``add_argument`` keywords, its dest and help written here once; a command picks
#: the ones it takes with :func:`shared_flags` and may give its own defaults (and a sharper help).
SHARED_FLAGS = {
    "space": {"help": "a shipped search space (see search_spaces/) or a YAML path"},
    "set": {"dest": "overrides", "action": "append", "default": [], "metavar": "PATH=VALUE",
            "help": "override a setting by its dotted path (training.epochs=1, dataset=/data/x, "
                    "resources.workers_per_trial=1); repeatable"},
    "catalog": {"help": "catalog folder or URI (s3://, gs://)"},
    "sweep": {"help": "the catalog partition (sweep) to write into or read"},
    "address": {"default": None, "help": "Ray cluster address (default: $RAY_ADDRESS or local)"},
    "storage": {"dest": "storage_path", "help": "Ray run storage (checkpoints): folder or URI; default: runs beside "
                                                "the catalog, in the same folder or bucket"},
}

def shared_flags(*names: str, helps: dict[str, str] | None = None,
                 options: dict[str, dict[str, Any]] | None = None, **defaults: Any) -> ArgumentParser:
    """A parent parser (``add_help=False``; pass it as ``parents=[...]``) holding the shared flags
    ``names`` (keys of :data:`SHARED_FLAGS`, in that order). ``defaults`` (by flag name) replace a
    flag's default (``argparse.SUPPRESS``: left out of the namespace unless given), ``helps`` its help,
    ``options`` any other of its ``add_argument`` keywords (a ``metavar``; a ``dest`` a command keeps)."""
    unknown = [n for n in [*names, *defaults, *(helps or {}), *(options or {})] if n not in SHARED_FLAGS]
    if unknown:
        raise ValueError(f"shared_flags knows {', '.join(SHARED_FLAGS)}; got {', '.join(unknown)}")
    parser = ArgumentParser(add_help=False)
    for name in names:
        keywords = {**SHARED_FLAGS[name], **({"default": defaults[name]} if name in defaults else {}),
                    **(options or {}).get(name, {})}
        if helps and name in helps:
            keywords["help"] = helps[name]
        parser.add_argument(f"--{name}", **keywords)
    return parser
