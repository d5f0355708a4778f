"""Querying the stitch catalog: filters, budgets and the Pareto front (design brief, sections 1 and 4).

This is the notebook API behind ``python -m orchestrator.catalog query``::

    from orchestrator.catalog import load, query, pareto_front, best_under

    df = load("catalog/")                                  # every row, as a pandas DataFrame
    query(df, sweep="deit-tsb", max_flops="4.6G", pareto=True)
    best_under(df, max_flops="2G")                         # one row (a Series) or None

:func:`best_under` chooses on ``top1_selection`` (the split held out of training, what a search
selects on) where the rows have it and falls back to ``top1`` (the evaluation split, what one
reports once) where they do not, saying so in the row's ``attrs``.

Reading (:func:`load`, :mod:`orchestrator.catalog._read`) leaves out damaged files with a warning
naming each; budgets and filters are parsed by :mod:`orchestrator.catalog._parse`.

A result is counted once: :func:`query` and :func:`best_under` leave out the trials that repeat a
newer trial's configuration and seed (the same sweep run twice into one catalog), so its fronts and
budgets list each configuration once; :func:`load` returns every row (see
:mod:`orchestrator.catalog._repeats`).

The Pareto front is taken in (maximise ``top1``, minimise ``flops``): a row is dominated when
another row has ``top1 >=`` and ``flops <=`` with at least one of the two strict. Rows with
identical ``(flops, top1)`` do not dominate each other, so when such a pair is on the front,
*all* of them are kept (the same stitch evaluated by several trials stays visible). Rows
without ``top1`` are never on the front.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from orchestrator.catalog._inspect import dataset_schema
from orchestrator.catalog._names import validate_name
from orchestrator.catalog._parse import name_list, parse_flops, parse_latency, parse_limit, parse_top1
from orchestrator.catalog._read import LIST_COLUMNS, load
from orchestrator.catalog._repeats import drop_repeats
from snnet import SNNetError
from snnet.text import did_you_mean

__all__ = [
    "anchor_path",
    "best_under",
    "check_arguments",
    "choice_column",
    "pareto_front",
    "query",
    "require_columns",
]

_STITCH_KEY = ("sweep", "trial_id", "stitch_id")


def require_columns(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
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
    return [math.nan if pd.isna(v) else float(v) for v in series]


def pareto_front(df: pd.DataFrame, per_trial: bool = False) -> pd.DataFrame:
    """The rows of ``df`` on the (max ``top1``, min ``flops``) Pareto front, sorted by FLOPs.

    A row is dominated when another has ``top1 >=`` and ``flops <=`` with at least one strict;
    rows with identical ``(flops, top1)`` are all kept; rows without ``top1`` are dropped. With
    ``per_trial=True`` the front is taken within each ``(sweep, trial_id)`` separately. The
    original index is kept so the result can be joined back.
    """
    require_columns(df, ("flops", "top1"), "The Pareto front")
    if per_trial:
        require_columns(df, ("trial_id",), "The per-trial Pareto front")
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


def anchor_path(anchors: Any) -> list[str]:
    """One row's anchor path as a list (tolerates tuples, arrays and missing values)."""
    if anchors is None or isinstance(anchors, float):
        return []
    if isinstance(anchors, str):
        return [anchors]
    return [str(a) for a in anchors]


def _isin(df: pd.DataFrame, column: str, values: list[str]) -> pd.Series:
    require_columns(df, (column,), f"The {column} filter")
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
        "limit": parse_limit(limit) if limit is not None else None,
        "names": {"sweep": name_list(sweep, "sweep"), "trial_id": name_list(trial, "trial"),
                  "sampling": name_list(sampling, "sampling")},
        "anchors": name_list(anchors, "anchors"),
    }


def _catalog_columns() -> list[str]:
    """The columns of a DataFrame from :func:`load`, in its order."""
    names = dataset_schema().names
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
    mask = pd.Series(True, index=df.index)
    for column, values in names.items():
        if values is not None:
            mask &= _isin(df, column, values)
    if anchor_names is not None:
        require_columns(df, ("anchors",), "The anchors filter")
        wanted = set(anchor_names)
        mask &= pd.Series([wanted <= set(anchor_path(a)) for a in df["anchors"]], index=df.index, dtype=bool)
    if flops_budget is not None:
        require_columns(df, ("flops",), "The FLOPs budget")
        mask &= (df["flops"] <= flops_budget).fillna(False).astype(bool)
    if latency_budget is not None:
        require_columns(df, ("latency_ms",), "The latency budget")
        mask &= (df["latency_ms"] <= latency_budget).fillna(False).astype(bool)
    if top1_floor is not None:
        require_columns(df, ("top1",), "The top-1 threshold")
        mask &= (df["top1"] >= top1_floor).fillna(False).astype(bool)
    return mask


def _refuse_mixed(result: pd.DataFrame, df: pd.DataFrame) -> None:
    """A budget over several sweeps that differ in dataset or family of anchors would pick a stitch
    trained on something else: refuse it and say to pass ``--sweep``.

    ``result`` holds the rows within the budget, ``df`` every row: a trial's family is the union of
    the anchors over all its rows, so a sweep none of whose A>B stitches fits the budget still
    counts as the family A, B.
    """
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
            families.add(frozenset(a for path in group["anchors"] for a in anchor_path(path)))
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
