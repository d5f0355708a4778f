"""Querying the stitch catalog: filters, budgets and the Pareto front (design brief, sections 1 and 4).

This is the notebook API behind ``python -m orchestrator.catalog query``::

    from orchestrator.catalog import load, query, pareto_front, best_under

    df = load("catalog/")                                  # every row, as a pandas DataFrame
    query(df, sweep="deit-tsb", max_flops="4.6G", pareto=True)
    best_under(df, max_flops="2G")                         # one row (a Series) or None

:func:`best_under` chooses on ``top1_selection`` (the split held out of training, what a search
selects on) where the rows have it and falls back to ``top1`` (the evaluation split, what one
reports once) where they do not, saying so in the row's ``attrs``.

Reading is robust: :func:`load` reads every trial file (``*.parquet``, skipping names that
start with ``.`` or ``_`` as pyarrow does) with page checksums verified; a corrupt, half-copied,
bit-flipped or copied file, one lacking columns or one outside a ``sweep=<name>/`` folder, is left
out with one :class:`CatalogWarning` naming it and the reason, and the rest is read (see
:mod:`orchestrator.catalog._inspect`). List columns (``anchors``, ``cuts``, ``layers``) come back as plain
Python lists and integer columns as pandas' nullable integer types.

A result is counted once: :func:`query` and :func:`best_under` leave out the trials that repeat a
newer trial's configuration and seed (the same sweep run twice into one catalog), so its fronts and
budgets list each configuration once; :func:`load` returns every row (see
:mod:`orchestrator.catalog._repeats`).

The Pareto front is taken in (maximise ``top1``, minimise ``flops``): a row is dominated when
another row has ``top1 >=`` and ``flops <=`` with at least one of the two strict. Rows with
identical ``(flops, top1)`` do not dominate each other, so when such a pair is on the front,
*all* of them are kept (the same stitch evaluated by several trials stays visible). Rows
without ``top1`` are never on the front.

Budgets accept human values: ``parse_flops("1.5G") == 1_500_000_000``; ``K``, ``M``, ``G``,
``T`` and ``P`` are powers of 10^3 (``M`` is mega, not milli), and ``2e9``, ``1_000`` and
plain integers work too. Every mistake raises :class:`snnet.SNNetError` with one paragraph.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import warnings
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from orchestrator.catalog._inspect import REQUIRED_COLUMNS, inspect
from orchestrator.catalog._inspect import dataset_schema as _dataset_schema
from orchestrator.catalog._inspect import open_catalog as _open
from orchestrator.catalog._names import validate_name
from orchestrator.catalog._repeats import drop_repeats
from snnet import SNNetError
from snnet.text import did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import pyarrow as pa

__all__ = [
    "CatalogWarning",
    "REQUIRED_COLUMNS",
    "best_under",
    "choice_column",
    "load",
    "parse_flops",
    "parse_latency",
    "parse_top1",
    "pareto_front",
    "query",
    "scan",
    "sweeps",
    "to_records",
]

#: Columns holding lists (rendered as JSON in CSV output; not sortable).
LIST_COLUMNS = ("anchors", "cuts", "layers")
_STITCH_KEY = ("sweep", "trial_id", "stitch_id")
#: The largest FLOPs budget :func:`parse_flops` accepts: the most the int64 ``flops`` column holds.
MAX_FLOPS = 2**63 - 1
_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}
_FLOPS = re.compile(
    r"(?P<num>[+-]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:e[+-]?\d+)?)\s*(?P<suffix>[kmgtp]?)\s*(?:flops?|f)?",
    re.IGNORECASE,
)


class CatalogWarning(UserWarning):
    """A file of the catalog that was left out (or read with a caveat), named with the reason."""


# ---------------------------------------------------------------------------------------------
# parsing of budgets and thresholds
# ---------------------------------------------------------------------------------------------


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


def _parse_limit(value: Any) -> int:
    try:
        limit = int(value) if not isinstance(value, (bool, float)) else None
    except (TypeError, ValueError):
        limit = None
    if limit is None or limit < 1:
        raise SNNetError(f"The row limit (--limit / limit) must be a positive whole number such as 10, got {value!r}.")
    return limit


def _names(value: str | Iterable[str] | None, what: str) -> list[str] | None:
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


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------


def scan(catalog: str | os.PathLike[str], sweep: str | None = None) -> tuple[list[str], list[tuple[str, str]]]:
    """The catalog's trial files from their footers alone: ``(good_files, [(bad_file, reason), ...])``.

    Files are the ``*.parquet`` files under the catalog (under ``sweep=<sweep>/`` when given);
    names or folders starting with ``.`` or ``_`` are skipped, as pyarrow and writers in flight
    expect. A file is bad when its Parquet footer cannot be read (corrupt, truncated, empty),
    when it lacks a column its schema version holds or when a column has an incompatible type.
    Damaged data pages and duplicate rows need the data itself: :func:`load` and
    :func:`orchestrator.catalog.check` find those too. A catalog path that is missing or a file
    raises SNNetError.
    """
    result = inspect(catalog, sweep, read=False)
    return result.good, [(p.path, p.reason) for p in result.problems]


def sweeps(catalog: str | os.PathLike[str]) -> list[str]:
    """The sweep names present in a catalog (its ``sweep=<name>`` folders), sorted."""
    from pyarrow import fs as pafs

    filesystem, base = _open(catalog)
    infos = filesystem.get_file_info(pafs.FileSelector(base, recursive=False))
    return sorted(i.base_name[len("sweep="):] for i in infos
                  if i.type == pafs.FileType.Directory and i.base_name.startswith("sweep="))


def _native(value: Any) -> Any:
    """A JSON-native Python value (lists, ints, floats, str, None) for one cell."""
    import numpy as np
    import pandas as pd

    if value is None:
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_native(v) for v in value]
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    import pandas as pd
    import pyarrow as pa

    mapping = {pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(),
               pa.int64(): pd.Int64Dtype()}
    df = table.to_pandas(types_mapper=mapping.get)
    for column in LIST_COLUMNS:
        if column in df.columns:
            df[column] = pd.Series([_native(v) for v in df[column]], index=df.index, dtype=object)
    first = [c for c in ("sweep", "trial_id", "stitch_id") if c in df.columns]
    return df[first + [c for c in df.columns if c not in first]]


def load(catalog: str | os.PathLike[str], sweep: str | Sequence[str] | None = None, *,
         trial: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Every row of a catalog (or of some sweeps and trials: a name, ``"a,b"`` or a list) as a DataFrame,
    leaving out damaged files with a warning.

    Only the named sweeps' files are read, and of those, with ``trial``, only the files whose
    footer statistics say they may hold one of the trials.

    Each file left out (unreadable, a data page failing its checksum, missing columns,
    duplicate rows: see :mod:`orchestrator.catalog._inspect`) is named in one
    :class:`CatalogWarning` with its reason; so is each file from a newer schema version, which
    is read. The rows are those the catalog holds once ``python -m orchestrator.catalog check
    --quarantine`` has moved the damaged files aside.
    """
    sweeps_wanted = _names(sweep, "sweep") if isinstance(sweep, str) and "," in sweep else sweep
    result = inspect(catalog, sweeps_wanted, trial=_names(trial, "trial"))
    for problem in result.problems:
        warnings.warn(f"skipping {result.shown(problem.path)}: {problem.reason}", CatalogWarning, stacklevel=2)
    for note in result.notes:
        warnings.warn(f"reading {result.shown(note.path)}: {note.reason}", CatalogWarning, stacklevel=2)
    return _to_pandas(result.table)


# ---------------------------------------------------------------------------------------------
# queries
# ---------------------------------------------------------------------------------------------


def _require(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SNNetError(f"{what} needs the column(s) {', '.join(missing)}, which this table lacks "
                         f"(it has: {', '.join(map(str, df.columns))}).")


def _front_mask(flops: Sequence[float], top1: Sequence[float]) -> list[bool]:
    """Non-dominated positions in (max top1, min flops); identical (flops, top1) are all kept."""
    n = len(flops)
    valid = [i for i in range(n) if not (math.isnan(flops[i]) or math.isnan(top1[i]))]
    order = sorted(valid, key=lambda i: (flops[i], -top1[i]))
    keep = [False] * n
    best_before = -math.inf  # best top1 among rows with strictly fewer FLOPs
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and flops[order[j]] == flops[order[i]]:
            j += 1
        top = top1[order[i]]  # the group's best: sorted by -top1 within equal flops
        if top > best_before:
            for k in order[i:j]:
                keep[k] = top1[k] == top
            best_before = top
        i = j
    return keep


def _float_list(series: pd.Series) -> list[float]:
    import pandas as pd

    return [math.nan if pd.isna(v) else float(v) for v in series]


def pareto_front(df: pd.DataFrame, per_trial: bool = False) -> pd.DataFrame:
    """The rows of ``df`` on the (max ``top1``, min ``flops``) Pareto front, sorted by FLOPs.

    A row is dominated when another has ``top1 >=`` and ``flops <=`` with at least one strict;
    rows with identical ``(flops, top1)`` are all kept; rows without ``top1`` are dropped. With
    ``per_trial=True`` the front is taken within each ``(sweep, trial_id)`` separately. The
    original index is kept so the result can be joined back.
    """
    import pandas as pd

    _require(df, ("flops", "top1"), "The Pareto front")
    if per_trial:
        _require(df, ("trial_id",), "The per-trial Pareto front")
        keys = [c for c in ("sweep", "trial_id") if c in df.columns]
        groups: dict[tuple, list[int]] = {}
        codes = zip(*(df[k].tolist() for k in keys))
        for pos, code in enumerate(codes):
            groups.setdefault(tuple(None if pd.isna(v) else v for v in code), []).append(pos)
        keep = [False] * len(df)
        for members in groups.values():
            sub = df.iloc[members]
            for pos, kept in zip(members, _front_mask(_float_list(sub["flops"]), _float_list(sub["top1"]))):
                keep[pos] = kept
    else:
        keep = _front_mask(_float_list(df["flops"]), _float_list(df["top1"]))
    front = df[pd.Series(keep, index=df.index, dtype=bool)] if len(df) else df
    return _sort(front, ["flops", "top1"], [True, False])


def _sort(df: pd.DataFrame, by: list[str], ascending: list[bool]) -> pd.DataFrame:
    """Stable sort with the stitch key as tie-breaker, missing values last."""
    ties = [c for c in _STITCH_KEY if c in df.columns and c not in by]
    return df.sort_values(by + ties, ascending=ascending + [True] * len(ties), kind="stable", na_position="last")


def _sort_columns(sort: str | Sequence[str], columns: Sequence[str]) -> list[str]:
    by = [s.strip() for s in sort.split(",")] if isinstance(sort, str) else list(sort)
    if not by or not all(isinstance(c, str) and c for c in by):
        raise SNNetError(f"The sort key (--sort / sort) must name one or more columns, got {sort!r}.")
    sortable = [c for c in columns if c not in LIST_COLUMNS]
    for column in by:
        if column in LIST_COLUMNS:
            raise SNNetError(f"Cannot sort by {column!r}: it holds lists. Sort by one of: {', '.join(sortable)}.")
        if column not in columns:
            raise SNNetError(f"Unknown sort column {column!r}{did_you_mean(column, sortable)}. "
                             f"Sort by one of: {', '.join(sortable)}.")
    return by


def _path(anchors: Any) -> list[str]:
    """One row's anchor path as a list (tolerates tuples, arrays and missing values)."""
    if anchors is None or isinstance(anchors, float):
        return []
    if isinstance(anchors, str):
        return [anchors]
    return [str(a) for a in anchors]


def _isin(df: pd.DataFrame, column: str, values: list[str]) -> pd.Series:
    _require(df, (column,), f"The {column} filter")
    return df[column].isin(values).fillna(False).astype(bool)


def query(
    df_or_catalog: pd.DataFrame | str | os.PathLike[str],
    *,
    sweep: str | Sequence[str] | None = None,
    trial: str | Sequence[str] | None = None,
    sampling: str | Sequence[str] | None = None,
    max_flops: str | int | float | None = None,
    max_latency_ms: str | int | float | None = None,
    min_top1: str | int | float | None = None,
    anchors: str | Sequence[str] | None = None,
    pareto: bool = False,
    per_trial: bool = False,
    sort: str | Sequence[str] = "flops",
    descending: bool = False,
    limit: int | None = None,
    repeats: bool = False,
) -> pd.DataFrame:
    """Filter catalog rows, count each configuration once, optionally keep the Pareto front, then sort and cut.

    ``df_or_catalog`` is a DataFrame from :func:`load` or a catalog path/URI (read with
    :func:`load`). Filters combine with AND:

    * ``sweep``, ``trial``, ``sampling``: one name, ``"a,b"`` or a list of names;
    * ``anchors``: model names (``"a,b"``, ``"a>b"`` or a list) that must *all* occur in the
      row's anchor path, e.g. ``anchors="deit_small_patch16_224"`` keeps every stitch through it;
    * ``max_flops`` (``"1.5G"``, ``500e6``, ...): ``flops <= max_flops``;
    * ``max_latency_ms``: ``latency_ms <= max_latency_ms``; rows without a measured latency are
      dropped, since they cannot be shown to fit;
    * ``min_top1`` (percent): ``top1 >= min_top1``.

    Of the trials left, those that repeat a newer trial's configuration (same ``config_fingerprint``:
    settings and seed; the same sweep run twice) are left out, so each configuration counts once
    (:mod:`orchestrator.catalog._repeats`); ``repeats=True`` keeps every trial's rows. The result's
    ``attrs["repeats_dropped"]`` says how many trials were left out.

    Then ``pareto=True`` keeps the :func:`pareto_front` of what is left (``per_trial=True``
    takes it per trial and implies ``pareto``), rows are sorted by ``sort`` (a column name or
    several, ties broken by sweep, trial and stitch id; ``descending`` reverses the first key)
    and ``limit`` keeps the first rows. The result has a fresh 0..n-1 index.
    """
    parsed = _arguments(sweep=sweep, trial=trial, sampling=sampling, max_flops=max_flops,
                        max_latency_ms=max_latency_ms, min_top1=min_top1, anchors=anchors, limit=limit)
    names = parsed["names"]
    df = _frame(df_or_catalog, sort, names["sweep"], names["trial_id"])
    by = _sort_columns(sort, list(df.columns))
    result = df[_mask(df, names, parsed["anchors"], parsed["flops"], parsed["latency"], parsed["top1"])]
    dropped = 0
    if not repeats:
        result = drop_repeats(result)
        dropped = result.attrs.get("repeats_dropped", 0)
    if (parsed["flops"] is not None or parsed["latency"] is not None) and names["sweep"] is None:
        _refuse_mixed(result, df)  # the stitches within the budget must come from comparable sweeps
    if pareto or per_trial:
        result = pareto_front(result, per_trial=per_trial)
    result = _sort(result, by, [not descending] + [True] * (len(by) - 1))
    if parsed["limit"] is not None:
        result = result.head(parsed["limit"])
    result = result.reset_index(drop=True)
    result.attrs = {**result.attrs, "repeats_dropped": dropped}
    return result


def _arguments(
    *,
    sweep: Any = None,
    trial: Any = None,
    sampling: Any = None,
    max_flops: Any = None,
    max_latency_ms: Any = None,
    min_top1: Any = None,
    anchors: Any = None,
    limit: Any = None,
) -> dict[str, Any]:
    """Every filter, budget and limit of :func:`query` parsed, so that a mistake fails before any read."""
    return {
        "flops": parse_flops(max_flops) if max_flops is not None else None,
        "latency": parse_latency(max_latency_ms) if max_latency_ms is not None else None,
        "top1": parse_top1(min_top1) if min_top1 is not None else None,
        "limit": _parse_limit(limit) if limit is not None else None,
        "names": {"sweep": _names(sweep, "sweep"), "trial_id": _names(trial, "trial"),
                  "sampling": _names(sampling, "sampling")},
        "anchors": _names(anchors, "anchors"),
    }


def _catalog_columns() -> list[str]:
    """The columns of a DataFrame from :func:`load`, in its order."""
    names = _dataset_schema().names
    return [c for c in _STITCH_KEY if c in names] + [c for c in names if c not in _STITCH_KEY]


def check_arguments(sort: str | Sequence[str] = "flops", **arguments: Any) -> dict[str, Any]:
    """:func:`query`'s arguments parsed and its sort checked against the catalog's columns: what the
    CLIs call before reading a catalog, so that ``--sort top_1`` fails at once, not after the read."""
    parsed = _arguments(**arguments)
    for name in parsed["names"]["sweep"] or []:
        validate_name("sweep", name)
    _sort_columns(sort, _catalog_columns())
    return parsed


def _frame(df_or_catalog: Any, sort: str | Sequence[str], sweep_names: list[str] | None,
           trial_names: list[str] | None = None) -> pd.DataFrame:
    """The DataFrame :func:`query` filters: the one given, or the catalog read (only the files of the
    named sweeps that may hold the named trials)."""
    import pandas as pd

    if isinstance(df_or_catalog, pd.DataFrame):
        return df_or_catalog
    if isinstance(df_or_catalog, (str, os.PathLike)):
        _sort_columns(sort, _catalog_columns())  # fail before reading a large catalog
        return load(df_or_catalog, sweep=sweep_names, trial=trial_names)
    kind = type(df_or_catalog).__name__
    raise SNNetError(f"query() takes a DataFrame from load() or a catalog path, got a {kind}.")


def _mask(
    df: pd.DataFrame,
    names: dict[str, list[str] | None],
    anchor_names: list[str] | None,
    flops_budget: int | None,
    latency_budget: float | None,
    top1_floor: float | None,
) -> pd.Series:
    """The rows every filter keeps (AND): named sweeps/trials/rules, anchors on the path, budgets, floor."""
    import pandas as pd

    mask = pd.Series(True, index=df.index)
    for column, values in names.items():
        if values is not None:
            mask &= _isin(df, column, values)
    if anchor_names is not None:
        _require(df, ("anchors",), "The anchors filter")
        wanted = set(anchor_names)
        mask &= pd.Series([wanted <= set(_path(a)) for a in df["anchors"]], index=df.index, dtype=bool)
    if flops_budget is not None:
        _require(df, ("flops",), "The FLOPs budget")
        mask &= (df["flops"] <= flops_budget).fillna(False).astype(bool)
    if latency_budget is not None:
        _require(df, ("latency_ms",), "The latency budget")
        mask &= (df["latency_ms"] <= latency_budget).fillna(False).astype(bool)
    if top1_floor is not None:
        _require(df, ("top1",), "The top-1 threshold")
        mask &= (df["top1"] >= top1_floor).fillna(False).astype(bool)
    return mask


def _refuse_mixed(result: pd.DataFrame, df: pd.DataFrame) -> None:
    """A budget over several sweeps that differ in dataset or family of anchors would pick a stitch
    trained on something else: refuse it and say to pass ``--sweep``.

    ``result`` holds the rows within the budget, ``df`` every row: a trial's family is the union of
    the anchors over all its rows, so a sweep none of whose A>B stitches fits the budget still
    counts as the family A, B.
    """
    import pandas as pd

    if "sweep" not in result.columns or result["sweep"].nunique() < 2:
        return
    keys = [c for c in ("sweep", "trial_id") if c in df.columns]
    if keys == ["sweep", "trial_id"]:  # every row of the trials left, not only those within the budget
        left = pd.MultiIndex.from_frame(result[keys].drop_duplicates())
        df = df[pd.MultiIndex.from_frame(df[keys]).isin(left)]
    else:
        df = result
    datasets = set(df["dataset"].dropna()) if "dataset" in df.columns else set()
    families: set[frozenset[str]] = set()
    if "anchors" in df.columns:
        for _, group in df.groupby(keys, sort=False):
            families.add(frozenset(a for path in group["anchors"] for a in _path(path)))
    if len(datasets) < 2 and len(families) < 2:
        return
    what = " and ".join(w for w, n in (("datasets", len(datasets)), ("families of anchors", len(families))) if n > 1)
    listing = "; ".join(
        f"{name} ({', '.join(sorted(set(g['dataset'].dropna()))) or 'no dataset'})" if "dataset" in g.columns
        else str(name) for name, g in df.groupby("sweep", sort=True))
    raise SNNetError(f"A budget query over the whole catalog would mix {what}: its sweeps are {listing}. "
                     "Pass --sweep NAME (sweep= in Python) to pick the stitch from one of them.")


#: The accuracy a choice is made on (the held-out selection split) and the one reported (the evaluation split).
SELECTION_COLUMN, EVALUATION_COLUMN = "top1_selection", "top1"


def choice_column(df: pd.DataFrame) -> tuple[str, str | None]:
    """The column a choice among ``df``'s rows is made on, and a note when it is not the selection split.

    ``top1_selection`` (top-1 on the split held out of training: what a search selects on) when
    every row has it; otherwise ``top1`` (the evaluation split, what is reported), for all rows
    alike, since the two splits' accuracies are not comparable with each other, with a note
    saying why (an older catalog, or trials run with ``training.selection_fraction: 0``).
    """
    if SELECTION_COLUMN in df.columns and len(df) and bool(df[SELECTION_COLUMN].notna().all()):
        return SELECTION_COLUMN, None
    lacking = len(df) if SELECTION_COLUMN not in df.columns else int(df[SELECTION_COLUMN].isna().sum())
    return EVALUATION_COLUMN, (
        f"chosen on top1, the evaluation split: {lacking} of the {len(df)} candidate row(s) have no "
        "top1_selection (a catalog written before it existed, or trials run with training.selection_fraction: 0)")


def best_under(
    df_or_catalog: pd.DataFrame | str | os.PathLike[str],
    max_flops: str | int | float | None = None,
    max_latency_ms: str | int | float | None = None,
) -> pd.Series | None:
    """The most accurate row within the budgets (a Series), or None when nothing fits.

    Accuracy is ``top1_selection``, the held-out selection split a search selects on, when every
    row under the budget has it, else ``top1`` for all of them (:func:`choice_column`); the row's
    ``attrs`` say which: ``best.attrs["chosen_by"]`` is the column, ``best.attrs["note"]`` the
    reason for a fallback to ``top1`` (else None). Report ``top1``, the evaluation split.
    Ties go to fewer FLOPs, then lower latency, then the first stitch key. Rows without
    ``top1`` never win; with ``max_latency_ms``, rows without a latency do not fit.
    """
    fitting = query(df_or_catalog, max_flops=max_flops, max_latency_ms=max_latency_ms)
    fitting = fitting[fitting["top1"].notna()]
    if fitting.empty:
        return None
    column, note = choice_column(fitting)
    by = [column, "flops"] + (["latency_ms"] if "latency_ms" in fitting.columns else [])
    ranked = _sort(fitting, by, [False, True] + [True] * (len(by) - 2))
    best = ranked.iloc[0].copy()
    best.attrs = {"chosen_by": column, "note": note}
    return best


def to_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows as JSON-native dicts: lists stay lists, timestamps become ISO 8601, NaN/inf/NA become None."""
    columns = list(df.columns)
    return [{c: _native(v) for c, v in zip(columns, row)} for row in df.itertuples(index=False, name=None)]


@contextlib.contextmanager
def catalog_warnings_to_stderr():
    """Show every :class:`CatalogWarning` as one ``warning: ...`` line on stderr (for the CLIs)."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", CatalogWarning)
        warnings.showwarning = show
        yield
