"""Reading the catalog into pandas, leaving out damaged files with a warning naming each.

:func:`load` reads every trial file (``*.parquet``, skipping names that start with ``.`` or ``_``
as pyarrow does) with page checksums verified; a corrupt, half-copied, bit-flipped or copied file,
one lacking columns or one outside a ``sweep=<name>/`` folder, is left out with one
:class:`CatalogWarning` naming it and the reason, and the rest is read (see
:mod:`orchestrator.catalog._inspect`). List columns (``anchors``, ``cuts``, ``layers``) come back as
plain Python lists and integer columns as pandas' nullable integer types; :func:`to_records` gives
JSON-native dicts.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pyarrow import fs as pafs

from orchestrator.catalog._inspect import inspect
from orchestrator.catalog._parse import name_list
from orchestrator.catalog._store import open_catalog

__all__ = ["LIST_COLUMNS", "CatalogWarning", "catalog_warnings_to_stderr", "load", "native_value", "scan", "sweeps",
           "to_records"]

#: Columns holding lists (rendered as JSON in CSV output; not sortable).
LIST_COLUMNS = ("anchors", "cuts", "layers")


class CatalogWarning(UserWarning):
    """A file of the catalog that was left out (or read with a caveat), named with the reason."""


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
    filesystem, base = open_catalog(catalog)
    infos = filesystem.get_file_info(pafs.FileSelector(base, recursive=False))
    return sorted(i.base_name[len("sweep="):] for i in infos
                  if i.type == pafs.FileType.Directory and i.base_name.startswith("sweep="))


def native_value(value: Any) -> Any:
    """A JSON-native Python value (lists, ints, floats, str, None) for one cell."""
    if value is None:
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        return [native_value(v) for v in value]
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
    mapping = {pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(),
               pa.int64(): pd.Int64Dtype()}
    df = table.to_pandas(types_mapper=mapping.get)
    for column in LIST_COLUMNS:
        if column in df.columns:
            df[column] = pd.Series([native_value(v) for v in df[column]], index=df.index, dtype=object)
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
    sweeps_wanted = name_list(sweep, "sweep") if isinstance(sweep, str) and "," in sweep else sweep
    result = inspect(catalog, sweeps_wanted, trial=name_list(trial, "trial"))
    for problem in result.problems:
        warnings.warn(f"skipping {result.shown(problem.path)}: {problem.reason}", CatalogWarning, stacklevel=2)
    for note in result.notes:
        warnings.warn(f"reading {result.shown(note.path)}: {note.reason}", CatalogWarning, stacklevel=2)
    return _to_pandas(result.table)



def to_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows as JSON-native dicts: lists stay lists, timestamps become ISO 8601, NaN/inf/NA become None."""
    columns = list(df.columns)
    return [{c: native_value(v) for c, v in zip(columns, row)} for row in df.itertuples(index=False, name=None)]


@contextlib.contextmanager
def catalog_warnings_to_stderr():
    """Show every :class:`CatalogWarning` as one ``warning: ...`` line on stderr (for the CLIs)."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", CatalogWarning)
        warnings.showwarning = show
        yield
