"""What every command of this project shares: exit codes, pipes, Ctrl-C, FLOPs, tables.

``python -m snnet.space`` and every ``python -m orchestrator.*`` command follow one set of
command-line conventions, written here once. The module lives in ``snnet`` because that is the
lowest layer with a command and where :class:`~snnet.SNNetError` (the user's-mistake error the
conventions turn into exit 2) is defined; ``orchestrator.cli`` re-exports it, since imports
only go ``orchestrator -> search_spaces -> snnet``.

:func:`run_cli` (or the :func:`cli` decorator) runs a ``main(argv) -> int`` with these
conventions:

- a user's mistake (:class:`~snnet.SNNetError`) prints one ``error: <paragraph>`` line on
  stderr and exits 2, without a traceback; other exception types can map to other codes;
- Ctrl-C exits 130 after printing an optional hint (what finished, how to resume): the
  innermost :func:`interrupt_hint` block the interrupt came through, else ``on_interrupt``;
- a reader that went away (``| head``) ends the command quietly with exit 0.

:class:`ArgumentParser` is argparse's parser with the same ``error:`` paragraph for a mistake in
the command line itself (an unknown flag gets the closest known one), exit 2, no usage dump.

:func:`format_flops` is the one way FLOPs are written for people, :func:`render_table` the one
way a text table is aligned.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import functools
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TextIO

from ._errors import SNNetError

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
    "write_stdout",
]

#: Scale of each unit prefix, largest first.
FLOPS_UNITS: dict[str, float] = {"T": 1e12, "G": 1e9, "M": 1e6, "K": 1e3, "": 1.0}

_HINT = "snnet_interrupt_hint"  # where interrupt_hint leaves its message on the KeyboardInterrupt


# -- running a command ---------------------------------------------------------------------------


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
            parser.error(parser._unrecognized(extra))
        return parsed

    def _chosen(self, parsed: argparse.Namespace) -> ArgumentParser:
        """The sub-command's parser the arguments went to (this one without sub-commands)."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and action.dest is not argparse.SUPPRESS:
                sub = action.choices.get(getattr(parsed, action.dest, None) or "")
                if isinstance(sub, ArgumentParser):
                    return sub._chosen(parsed)
        return self

    def _unrecognized(self, extra: Sequence[str]) -> str:
        # "--epocs 1": the flag is the mistake, its value only follows it
        flags = [e.split("=", 1)[0] for e in extra if e.startswith("--") or (e[:1] == "-" and e[1:2].isalpha())]
        known = [o for action in self._actions for o in action.option_strings]
        words = [f"{f}{did_you_mean(f, known)}" for f in flags] if flags else list(extra)
        return f"unrecognized argument{'s' * (len(words) > 1)} {', '.join(words)}"

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


# -- FLOPs and tables ----------------------------------------------------------------------------


def plural(count: int, noun: str) -> str:
    """``"1 epoch"``, ``"3 epochs"``: the count and the noun, with an ``s`` unless the count is 1."""
    return f"{count} {noun}{'s' * (count != 1)}"


def did_you_mean(word: object, options: object) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``options`` to ``word``; when none is close,
    the (at most three) options with ``word`` as one part of their name, those ending in it first:
    ``lr`` -> ``" (did you mean 'anchor_lr', 'stitch_lr' or 'min_lr'?)"``; else ``""``."""
    names = [str(o) for o in options]
    bare = {n.lstrip("-"): n for n in reversed(names)}  # flags compare without their dashes
    close = [bare[c] for c in difflib.get_close_matches(str(word).lstrip("-"), list(bare), n=1, cutoff=0.6)]
    if not close:
        part = str(word).strip("-").lower()
        parts = {n: re.split(r"[-_.\s]+", n.strip("-").lower()) for n in names}
        close = sorted((n for n in names if part and part in parts[n]), key=lambda n: parts[n][-1] != part)[:3]
    if not close:
        return ""
    quoted = [repr(c) for c in close]
    return f" (did you mean {' or '.join([', '.join(quoted[:-1]), quoted[-1]] if len(quoted) > 1 else quoted)}?)"


def flops_unit(largest: float, *, units: Sequence[str] = ("G", "M"), at_least: float = 1.0) -> tuple[float, str]:
    """``(scale, prefix)``: the first of ``units`` with ``largest >= at_least * scale``, else the last.

    One unit for a whole column or axis: ``flops_unit(max(column), at_least=0.1)`` keeps 0.1 G
    and up in G.
    """
    if not units or any(u not in FLOPS_UNITS for u in units):
        raise ValueError(f"units must be some of {', '.join(map(repr, FLOPS_UNITS))}, got {list(units)!r}")
    for unit in units:
        if largest >= at_least * FLOPS_UNITS[unit]:
            return FLOPS_UNITS[unit], unit
    return FLOPS_UNITS[units[-1]], units[-1]


def format_flops(flops: float, unit: str | None = None, *, digits: int = 3, sep: str = " ",
                 suffix: str = "", label: bool = True) -> str:
    """FLOPs for people: ``format_flops(1.26e9) == "1.260 G"``.

    ``unit`` fixes the prefix (``"G"``, ``"M"``, ...; ``""`` writes the plain count); ``None``
    picks the largest prefix not above ``flops`` (below 1000: the plain integer). ``suffix``
    follows the prefix: ``format_flops(5e6, "M", digits=2, suffix="FLOPs") == "5.00 MFLOPs"``.
    ``label=False`` writes the number alone, for a column whose header names the unit:
    ``format_flops(1.26e9, "G", label=False) == "1.260"``.
    """
    if unit is None:
        unit = next((u for u, scale in FLOPS_UNITS.items() if u and flops >= scale), "")
    if unit not in FLOPS_UNITS:
        raise ValueError(f"unit must be one of {', '.join(map(repr, FLOPS_UNITS))}, got {unit!r}")
    number = f"{flops / FLOPS_UNITS[unit]:.{digits}f}"
    if not label:
        return number
    if unit == "" and not suffix:
        return str(int(flops)) if float(flops).is_integer() else f"{flops:.{digits}f}"
    return f"{number}{sep}{unit}{suffix}"


def render_table(rows: Sequence[Sequence[object]], *, header: Sequence[str] | None = None,
                 right: Sequence[bool] | Callable[[int], bool] | None = None, rule: bool = False,
                 sep: str = "  ") -> str:
    """Rows of cells as aligned text columns, one line per row, no trailing newline.

    ``right`` says per column (a sequence of flags, or a function of the column index) whether
    it is right-aligned (numbers); the default aligns every column left. With ``header``, it is
    the first line, and ``rule=True`` puts a line of dashes under it. Trailing blanks are cut.
    """
    lines = [list(map(str, header))] if header is not None else []
    lines += [[str(c) for c in row] for row in rows]
    if not lines:
        return ""
    ncols = max(len(r) for r in lines)
    lines = [r + [""] * (ncols - len(r)) for r in lines]
    widths = [max(len(r[i]) for r in lines) for i in range(ncols)]
    is_right = right if callable(right) else (
        lambda i: bool(right[i]) if right is not None and i < len(right) else False)
    out = [sep.join(c.rjust(w) if is_right(i) else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
           for r in lines]
    if header is not None and rule:
        out.insert(1, sep.join("-" * w for w in widths))
    return "\n".join(out)
