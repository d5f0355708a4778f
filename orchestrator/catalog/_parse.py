"""Budgets, thresholds and name filters as the catalog's queries take them, parsed with one paragraph per mistake.

Budgets accept human values: ``parse_flops("1.5G") == 1_500_000_000``; ``K``, ``M``, ``G``,
``T`` and ``P`` are powers of 10^3 (``M`` is mega, not milli), and ``2e9``, ``1_000`` and
plain integers work too. Every mistake raises :class:`snnet.SNNetError` with one paragraph.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from snnet import SNNetError

__all__ = ["MAX_FLOPS", "name_list", "parse_flops", "parse_latency", "parse_limit", "parse_top1"]

#: The largest FLOPs budget :func:`parse_flops` accepts: the most the int64 ``flops`` column holds.
MAX_FLOPS = 2**63 - 1
_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}
_FLOPS = re.compile(
    r"(?P<num>[+-]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:e[+-]?\d+)?)\s*(?P<suffix>[kmgtp]?)\s*(?:flops?|f)?",
    re.IGNORECASE,
)



def parse_flops(value: str | int | float) -> int:
    """A FLOPs budget from ``"1.5G"``, ``"500M"``, ``"2e9"``, ``"1_000"``, ``1500000000``, ... as an int.

    Suffixes ``K``, ``M``, ``G``, ``T``, ``P`` are 10^3 ... 10^15 and may be followed by
    ``FLOPs`` (``"1.5GFLOPs"``). Negative, infinite or unparsable values raise SNNetError, and
    so do budgets above :data:`MAX_FLOPS`, the most the catalog's int64 ``flops`` column holds
    (leave the budget out for no limit).
    """
    what = "The FLOPs budget (--max-flops / max_flops)"
    usage = ("a non-negative number of FLOPs such as 1.5G, 500M, 2e9 or 1500000000 "
             "(K, M, G, T = 10^3, 10^6, 10^9, 10^12)")
    number: Decimal | None = None
    scale: int | None = 1
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = Decimal(min(value, MAX_FLOPS + 1))  # exact; no float of a huge int
    elif isinstance(value, float):
        number = Decimal(value) if math.isfinite(value) else None
    elif isinstance(value, str):
        match = _FLOPS.fullmatch(value.strip())
        scale = None
        if match:
            try:
                number = Decimal(match["num"].replace("_", ""))
            except InvalidOperation:
                number = None
            scale = _SUFFIXES[match["suffix"].lower()]
    if number is None or scale is None:
        raise SNNetError(f"{what} must be {usage}, got {value!r}.")
    if number < 0:
        raise SNNetError(f"{what} must be {usage}; a negative budget matches nothing, got {value!r}.")
    # compared before multiplying: 1e999999999 would overflow Decimal's context, and int() of it
    # would spell out a billion digits
    if number > Decimal(MAX_FLOPS) / scale:
        shown = (f"an integer of {len(str(value))} digits" if isinstance(value, int) and value < 10**4000
                 else "an integer of over 4000 digits" if isinstance(value, int) else repr(value))
        raise SNNetError(f"{what} must be {usage}, at most 2^63 - 1 (about 9.2e18, the most the catalog's "
                         f"flops column holds; leave the budget out for no limit), got {shown}.")
    return int((number * scale).to_integral_value())


def _parse_float(value: Any, what: str, unit: str, low: float, high: float, usage: str) -> float:
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if unit and text.lower().endswith(unit):
            text = text[: -len(unit)].strip()
        try:
            number = float(text.replace("_", ""))
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        raise SNNetError(f"{what} must be {usage}, got {value!r}.")
    if not low <= number <= high:
        raise SNNetError(f"{what} must be {usage}, got {value!r}, which is outside that range.")
    return number


def parse_latency(value: str | int | float) -> float:
    """A latency budget in milliseconds (``5``, ``"2.5"``, ``"2.5ms"``); must be >= 0."""
    return _parse_float(value, "The latency budget (--max-latency-ms / max_latency_ms)", "ms",
                        0.0, math.inf, "a non-negative number of milliseconds such as 5 or 2.5")


def parse_top1(value: str | int | float) -> float:
    """A top-1 threshold in percent (``75``, ``"75.5"``, ``"75%"``); must lie in [0, 100]."""
    return _parse_float(value, "The top-1 threshold (--min-top1 / min_top1)", "%", 0.0, 100.0,
                        "an accuracy in percent between 0 and 100, such as 75 or 79.5")


def parse_limit(value: Any) -> int:
    try:
        limit = int(value) if not isinstance(value, (bool, float)) else None
    except (TypeError, ValueError):
        limit = None
    if limit is None or limit < 1:
        raise SNNetError(f"The row limit (--limit / limit) must be a positive whole number such as 10, got {value!r}.")
    return limit


def name_list(value: str | Iterable[str] | None, what: str) -> list[str] | None:
    """``"a"``, ``"a,b"`` or ``["a", "b"]`` as a list of non-empty names (None: no filter)."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    names = []
    for item in items:
        if not isinstance(item, str):
            raise SNNetError(f"The {what} filter takes names (strings), got {item!r} in {value!r}.")
        names.extend(part.strip() for part in re.split(r"[,>]", item) if part.strip())
    if not names:
        raise SNNetError(f"The {what} filter needs at least one name, got {value!r}.")
    return names

