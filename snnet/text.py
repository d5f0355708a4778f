"""How this project words things for people: counts, suggestions, FLOPs and tables.

Every command and every error message of the project (``python -m snnet.space``, the
``python -m orchestrator.*`` commands, a search space's problems) takes its wording from here,
so a count, a "did you mean", a FLOPs figure or a table reads the same everywhere:

- :func:`plural` - ``"1 epoch"``, ``"3 epochs"``;
- :func:`did_you_mean` - the closest of some names to a mistyped one;
- :func:`unrecognized_arguments` - a command line's unknown flags, each with the closest known one;
- :func:`format_flops` and :func:`flops_unit` - FLOPs with a unit prefix (``1.260 G``);
- :func:`render_table` - rows of cells as aligned text columns.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence

__all__ = [
    "FLOPS_UNITS",
    "did_you_mean",
    "flops_unit",
    "format_flops",
    "plural",
    "render_table",
    "unrecognized_arguments",
]

#: Scale of each unit prefix, largest first.
FLOPS_UNITS: dict[str, float] = {"T": 1e12, "G": 1e9, "M": 1e6, "K": 1e3, "": 1.0}


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


def unrecognized_arguments(extra: Sequence[str], known: Sequence[str]) -> str:
    """``"unrecognized argument --epocs (did you mean '--epochs'?)"``: the flags of ``extra`` (the
    arguments a parser did not take) each with the closest of the ``known`` flags; ``extra`` as it
    came when it holds no flag."""
    # "--epocs 1": the flag is the mistake, its value only follows it
    flags = [e.split("=", 1)[0] for e in extra if e.startswith("--") or (e[:1] == "-" and e[1:2].isalpha())]
    words = [f"{f}{did_you_mean(f, known)}" for f in flags] if flags else list(extra)
    return f"unrecognized argument{'s' * (len(words) > 1)} {', '.join(words)}"


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
