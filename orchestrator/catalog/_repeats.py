"""A result is counted once: repeats of one configuration in the catalog.

Every trial file records the run that wrote it (``experiment``: a sweep's Tune experiment, kept by
``--resume``, or ``orchestrator.train``'s ``<sweep>-<trial_id>``) and the fingerprint of its
resolved training settings, seed included (``config_fingerprint``,
:func:`search_spaces.fingerprint.config_fingerprint`). Trials that share a fingerprint are
**repeats** of one configuration: the same sweep run twice into one catalog, a training command
run again. The rule:

* their files all stay in the catalog, and :func:`~orchestrator.catalog.load` returns every row;
* what summarises the catalog counts a configuration once, by its **newest** trial (latest
  ``created_at``; ties by sweep and trial id): :func:`~orchestrator.catalog.query` (its fronts
  and budgets, unless ``repeats=True``), :func:`~orchestrator.catalog.best_under`, the sweep's
  summary front and a plot read from a catalog path (:func:`drop_repeats`);
* ``compare`` counts *seeds*: trials of one group that share a seed are one replicate
  (:mod:`orchestrator.catalog._compare`);
* ``catalog check`` names each repeated trial in a note (:func:`repeats`), and a sweep that starts
  with the same space as an experiment already in its catalog partition says so (:func:`earlier_experiments`).

Rows without a fingerprint (files written before catalog schema 7) are never taken for repeats:
nothing tells their configurations apart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.catalog._store import list_files, open_catalog
from snnet import SNNetError

__all__ = ["REPEAT_KEY", "Repeat", "describe", "drop_repeats", "earlier_experiments", "repeat_note", "repeats"]

#: The column whose value names a configuration (settings and seed).
REPEAT_KEY = "config_fingerprint"
_TRIAL = ("sweep", "trial_id")


@dataclass(frozen=True)
class Repeat:
    """One trial that repeats the configuration of a newer one (``kept``), which stands for both."""

    fingerprint: str
    trial: dict[str, Any]  # sweep, trial_id, experiment, created_at, code_version of the repeated trial
    kept: dict[str, Any]  # the same of the newest trial of the configuration


def _trials(df: pd.DataFrame) -> pd.DataFrame:
    """One row per fingerprinted trial: its keys, fingerprint, time (latest ``created_at``), experiment
    and code version, oldest first (ties by sweep and trial id)."""
    keys = [c for c in _TRIAL if c in df.columns]
    extra = [c for c in ("experiment", "code_version") if c in df.columns]
    rows = df[df[REPEAT_KEY].notna()]
    if rows.empty:
        return pd.DataFrame(columns=[*keys, REPEAT_KEY, "created_at", *extra])
    agg: dict[str, Any] = {REPEAT_KEY: (REPEAT_KEY, "first"), **{c: (c, "first") for c in extra}}
    if "created_at" in rows.columns:
        agg["created_at"] = ("created_at", "max")
    frame = rows.groupby(keys, sort=False, dropna=False, observed=True).agg(**agg).reset_index()
    if "created_at" not in frame.columns:
        frame["created_at"] = pd.NaT
    return frame.sort_values(["created_at", *keys], kind="stable", na_position="first").reset_index(drop=True)


def _applies(df: pd.DataFrame) -> bool:
    return not df.empty and REPEAT_KEY in df.columns and "trial_id" in df.columns


def drop_repeats(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` without the rows of trials that repeat a newer trial's configuration (see the module).

    Counts among the rows given: filter first (a sweep, a trial) and the newest trial *left*
    stands for its configuration. The index is kept; ``df.attrs["repeats_dropped"]`` holds the number
    of trials left out (0 when none).
    """
    if not _applies(df):
        out = df.copy() if len(df) else df
        out.attrs = {**df.attrs, "repeats_dropped": 0}
        return out
    trials = _trials(df)
    keys = [c for c in _TRIAL if c in df.columns]
    older = trials[trials.duplicated(REPEAT_KEY, keep="last")]
    if older.empty:
        out = df.copy()
        out.attrs = {**df.attrs, "repeats_dropped": 0}
        return out
    gone = pd.MultiIndex.from_frame(older[keys].astype(object))
    mask = pd.MultiIndex.from_frame(df[keys].astype(object)).isin(gone)
    out = df[~mask]
    out.attrs = {**df.attrs, "repeats_dropped": len(older)}
    return out


def repeats(df: pd.DataFrame) -> list[Repeat]:
    """Each trial whose configuration a newer trial repeats, with that newer trial (oldest first)."""
    if not _applies(df):
        return []
    trials = _trials(df)
    records = trials.to_dict("records")
    newest: dict[str, dict[str, Any]] = {}
    for record in records:
        newest[record[REPEAT_KEY]] = record
    return [Repeat(r[REPEAT_KEY], r, newest[r[REPEAT_KEY]]) for r in records if newest[r[REPEAT_KEY]] is not r]


def describe(repeat: Repeat) -> str:
    """The ``check`` note's reason for one repeated trial."""

    def name(t: dict[str, Any]) -> str:
        experiment = t.get("experiment")
        where = f"experiment {experiment}" if isinstance(experiment, str) else "no experiment recorded"
        return f"trial {t['trial_id']!r} ({where}, sweep {t.get('sweep')!r})"

    versions = [v for v in (repeat.trial.get("code_version"), repeat.kept.get("code_version")) if isinstance(v, str)]
    code = f" (code versions {versions[0]} then {versions[1]})" if len(set(versions)) == 2 else ""
    return (f"identical repeat: {name(repeat.trial)} has the settings and seed of the newer {name(repeat.kept)}"
            f"{code}, config_fingerprint {repeat.fingerprint[:19]}; fronts, budgets and compare count the "
            "configuration once, by the newer trial (both files stay)")


def earlier_experiments(catalog: str | os.PathLike[str], sweep: str, space_fingerprint: str, *,
                        exclude: str | None = None) -> dict[str, int]:
    """The experiments in the partition ``sweep=<sweep>`` that ran the search space ``space_fingerprint``
    (read from each trial file's footer: ``snnet.experiment``, ``snnet.space_fingerprint``), with
    their count of finished trials; ``exclude`` (this run's experiment) is left out. An unreadable
    or missing catalog gives ``{}``: this is a note, never an obstacle."""
    try:
        filesystem, base = open_catalog(catalog)
        files, _ = list_files(filesystem, base, sweep)
    except (SNNetError, pa.ArrowException, OSError, ValueError):
        return {}
    found: dict[str, int] = {}
    for path in files:
        try:
            with filesystem.open_input_file(path) as handle:
                meta = pq.ParquetFile(handle).schema_arrow.metadata or {}
        except (pa.ArrowException, OSError, ValueError):
            continue
        experiment = meta.get(b"snnet.experiment", b"").decode(errors="replace")
        if experiment and experiment != exclude \
                and meta.get(b"snnet.space_fingerprint", b"").decode(errors="replace") == space_fingerprint:
            found[experiment] = found.get(experiment, 0) + 1
    return found


def repeat_note(catalog: str | os.PathLike[str], sweep: str, space_fingerprint: str, *,
                exclude: str | None = None) -> str | None:
    """What a new sweep says when its catalog partition holds experiments of the same search space
    (seeds included: :func:`earlier_experiments`), or None when it holds none."""
    earlier = earlier_experiments(catalog, sweep, space_fingerprint, exclude=exclude)
    if not earlier:
        return None
    names = sorted(earlier)
    shown = ", ".join(f"{name} ({earlier[name]} trial{'s' if earlier[name] != 1 else ''})" for name in names[-3:])
    more = f" and {len(names) - 3} earlier" if len(names) > 3 else ""
    return (f"[snnet] note: the catalog partition sweep={sweep} already holds "
            f"experiment{'s' if len(names) > 1 else ''} {shown}{more} of this search space with the same seeds "
            f"(space {space_fingerprint[:19]}). Trials of this run with the settings and seed of an earlier "
            "trial are repeats: both stay in the catalog, but query, its fronts and budgets, and compare count "
            "each configuration and seed once (by its newest trial), and `python -m orchestrator.catalog check` "
            "lists the repeats. For new replicates change the seeds (--set training.seed=N or searcher.seeds); "
            "to keep the runs apart use another --catalog.")
