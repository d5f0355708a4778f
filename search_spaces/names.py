"""The one rule for sweep, trial and experiment names (the schema, the CLIs and the catalog use it).

A **sweep** name becomes the catalog's Hive partition folder ``sweep=<name>``, read back by DuckDB, pandas
and ``pyarrow.dataset`` through their partition type inference. So it starts with a letter and holds only
ASCII letters, digits, ``_``, ``.`` and ``-`` (no separators, spaces or ``=``), has no ``..``, is at most
100 characters, and is not ``inf``, ``infinity`` or ``epoch`` in any case (DuckDB reads those as dates).
Starting with a letter keeps every value a string for both readers: ``2024``, ``0x10``, ``2024-01-01`` or
``1-1-1`` would come back as numbers or dates, and names starting with ``.`` or ``_`` are hidden from
pyarrow; one simple rule (``1demo`` refused too) is easier to keep than a list of exceptions.

A **trial** id (the file ``trial-<id>.parquet``) or an **experiment** name (a folder under Ray's run
storage) may also start with a digit, as Ray Tune's trial ids do; otherwise the same rule holds.
``orchestrator.catalog.validate_name`` re-exports :func:`validate_name`.
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
