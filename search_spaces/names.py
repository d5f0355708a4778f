"""The one rule for sweep, trial and experiment names (shared by the schema, the CLIs and the catalog).

It lives here, below the orchestrator, so the search-space schema can use it;
``orchestrator.catalog.validate_name`` re-exports it.

A **sweep** name becomes the Hive partition folder ``sweep=<name>`` of the catalog and is read
back by DuckDB, pandas and ``pyarrow.dataset`` through their partition type inference, so it must:

* start with a letter and hold only ASCII letters, digits, ``_``, ``.`` and ``-``
  (no path separators, no spaces, no ``=``);
* not contain ``..``;
* be at most 100 characters long;
* not be one of ``inf``, ``infinity`` or ``epoch`` (any case), which DuckDB reads back as dates.

Starting with a letter keeps every value a string for both readers: digit-only names
(``2024``), hexadecimal (``0x10``) and dates (``2024-01-01``, ``1-1-1``) would come back as
integers, dates or timestamps, and names starting with ``.`` or ``_`` would be hidden from
pyarrow. ``1demo`` is therefore refused everywhere (it happens to read back as a string, but
``20240101`` and ``1-1-1`` would not, and one simple rule is easier to keep than a list of
exceptions).

A **trial** id becomes the file name ``trial-<id>.parquet``; an **experiment** name is a
folder under Ray's run storage. They may also start with a digit (Ray Tune's trial ids do),
otherwise the same rule holds: letters, digits, ``_``, ``.``, ``-``; no ``..``; at most 100
characters.
"""

from __future__ import annotations

import re

from snnet import SNNetError

__all__ = ["NAME_RULES", "validate_name"]

_MAX = 100
_SWEEP = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
_OTHER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_READ_AS_DATES = frozenset({"inf", "infinity", "epoch"})  # DuckDB's Hive inference turns these into DATEs

#: kind -> (pattern, what the first character must be)
NAME_RULES = {
    "sweep": (_SWEEP, "a letter"),
    "trial": (_OTHER, "a letter or digit"),
    "experiment": (_OTHER, "a letter or digit"),
}


def validate_name(kind: str, value: object) -> str:
    """Return ``value`` when it is a valid ``kind`` name ("sweep", "trial" or "experiment").

    Raises :class:`snnet.SNNetError` (a ``ValueError``) with one sentence that says what must
    hold and what came, e.g. ``A sweep name must start with a letter and hold only letters,
    digits, '_', '.' and '-' (at most 100 characters, no '..'), got '1demo'.``
    """
    if kind not in NAME_RULES:
        raise ValueError(f"kind must be one of {', '.join(NAME_RULES)}, got {kind!r}")
    pattern, first = NAME_RULES[kind]
    rule = (f"A {kind} name must start with {first} and hold only letters, digits, '_', '.' and '-' "
            f"(at most {_MAX} characters, no '..')")
    if not isinstance(value, str) or not pattern.fullmatch(value) or ".." in value or len(value) > _MAX:
        raise SNNetError(f"{rule}, got {value!r}.")
    if kind == "sweep" and value.lower() in _READ_AS_DATES:
        raise SNNetError(f"A sweep name must not be 'inf', 'infinity' or 'epoch' in any case (DuckDB reads "
                         f"them back as dates from the catalog's sweep=<name> folders), got {value!r}.")
    return value
