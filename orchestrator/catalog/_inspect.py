"""Finding damaged catalog files, reading the rest, and moving the damaged ones aside.

Every reader of the catalog (:func:`~orchestrator.catalog.load`, the CLI, export) goes through
:func:`inspect`, which looks at each trial file (``*.parquet`` under the catalog, skipping
names or folders that start with ``.`` or ``_``, as pyarrow does) and leaves out, naming it
with its reason, any file that

* is not readable Parquet (corrupt, truncated, empty): ``unreadable``;
* fails a data page's CRC checksum or otherwise cannot be decoded: ``unreadable``;
* lacks a column its schema version holds, or has a column of an incompatible type: ``columns``;
* lies outside a ``sweep=<name>/`` folder at the catalog's top (a trial file copied to the top
  or into a backup folder): ``layout``. Its rows would count as another trial, and DuckDB
  refuses the whole catalog (a Hive partition mismatch);
* repeats ``(sweep, trial_id, stitch_id)`` rows, within itself or of another file (a copied
  trial file): ``duplicate``. Of several files holding one trial's rows, the one named
  ``sweep=<sweep>/trial-<trial_id>.parquet`` is kept (else the first by path) and the
  others are left out.

A file written by a newer version of the catalog (schema version above
:data:`~orchestrator.catalog.SCHEMA_VERSION`) is read, its unknown columns ignored, and named
in a *note*. What the readers return is exactly what the catalog holds after
:func:`quarantine` moved the problem files aside, so DuckDB, pandas and ``pyarrow.dataset``
then agree with this package.

Quarantine never deletes: ``<catalog>/sweep=s/trial-t.parquet`` moves to
``<catalog>/_quarantine/sweep=s/trial-t.parquet.quarantined`` with a ``.txt`` beside it that
says why and when. The ``_`` prefix hides the folder from pyarrow and pandas; the
``.quarantined`` suffix hides the file from DuckDB's ``'<catalog>/**/*.parquet'`` glob.
To restore a file, move it back and drop the suffix.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pyarrow.types as patypes
from pyarrow import fs as pafs

from orchestrator.catalog._repeats import describe, repeats
from orchestrator.catalog._store import (
    SCHEMA,
    SCHEMA_VERSION,
    VERSION_KEY,
    columns_of_version,
    list_files,
    open_catalog,
    parquet_format,
)

__all__ = ["QUARANTINE", "REQUIRED_COLUMNS", "Inspection", "Problem", "check", "inspect", "quarantine"]

#: Columns a Parquet file must hold to count as a trial file of the catalog at all.
REQUIRED_COLUMNS = ("trial_id", "stitch_id", "anchors", "cuts", "flops", "params")
#: The folder under the catalog root that holds quarantined files.
QUARANTINE = "_quarantine"
_SUFFIX = ".quarantined"


@dataclass(frozen=True)
class Problem:
    """One file and why it is left out (or, for a note, read with a caveat)."""
    path: str  # as the catalog's filesystem names it
    kind: str  # "unreadable" | "columns" | "layout" | "duplicate" | "newer-schema" | "repeat"
    reason: str


@dataclass
class Inspection:
    """What :func:`inspect` found: files read, files left out, notes, and the rows read."""
    catalog: str
    base: str
    filesystem: Any
    files: list[str] = field(default_factory=list)  # every trial file looked at
    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)
    strays: int = 0  # other files (README, notes): not part of the catalog
    table: pa.Table | None = None

    @property
    def good(self) -> list[str]:
        bad = {p.path for p in self.problems}
        return [f for f in self.files if f not in bad]

    def shown(self, path: str) -> str:
        """A path as the user named the catalog: a URI stays a URI, a local path is absolute."""
        if "://" in self.catalog:
            return self.catalog.rstrip("/") + path[len(self.base):]
        return path


def _castable(have: pa.DataType, want: pa.DataType) -> bool:
    """Whether a file column of type ``have`` reads safely as the catalog type ``want``."""
    if have == want or patypes.is_null(have):
        return True
    if patypes.is_integer(want):
        return patypes.is_integer(have)
    if patypes.is_floating(want):
        return patypes.is_integer(have) or patypes.is_floating(have)
    if patypes.is_string(want) or patypes.is_large_string(want):
        return patypes.is_string(have) or patypes.is_large_string(have)
    if patypes.is_timestamp(want):
        return patypes.is_timestamp(have) or patypes.is_date(have)
    if patypes.is_list(want):
        return (patypes.is_list(have) or patypes.is_large_list(have)) and _castable(have.value_type, want.value_type)
    return False


def check_file(filesystem: Any, path: str) -> Problem | None:
    """Why a trial file cannot be read from its footer alone (a newer schema gives a note)."""
    return _check_footer(filesystem, path)[0]


def _check_footer(filesystem: Any, path: str) -> tuple[Problem | None, Any]:
    """:func:`check_file`'s answer and the file's Parquet metadata (None when unreadable)."""
    try:
        with filesystem.open_input_file(path) as handle:
            footer = pq.ParquetFile(handle)
            schema, metadata = footer.schema_arrow, footer.metadata
    except (pa.ArrowException, OSError, ValueError) as e:
        return Problem(path, "unreadable", f"not a readable Parquet file ({e})"), None
    return _check_schema(path, schema), metadata


def _check_schema(path: str, schema: pa.Schema) -> Problem | None:
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        return Problem(path, "columns", f"not a trial file: it lacks the column(s) {', '.join(missing)}")
    raw = (schema.metadata or {}).get(VERSION_KEY)
    text = raw.decode(errors="replace") if raw is not None else None
    if text is not None and not text.isdigit():
        return Problem(path, "columns", f"its catalog schema version {text!r} is not a number")
    version = int(text) if text is not None else 1
    expected = columns_of_version(min(version, int(SCHEMA_VERSION)))
    missing = [c for c in expected if c not in schema.names]
    if missing:
        which = f"files of catalog schema version {version} hold" if text else "every catalog file holds"
        return Problem(path, "columns", f"it lacks the column(s) {', '.join(missing)}, which {which}")
    for fld in schema:
        if fld.name in SCHEMA.names and not _castable(fld.type, SCHEMA.field(fld.name).type):
            return Problem(path, "columns", f"column {fld.name!r} has type {fld.type}, "
                                            f"the catalog expects {SCHEMA.field(fld.name).type}")
    if version > int(SCHEMA_VERSION):
        return Problem(path, "newer-schema",
                       f"written with catalog schema version {version}, newer than this reader's "
                       f"{SCHEMA_VERSION}: its known columns are read, the others ignored (upgrade to see them)")
    return None


def misplaced(base: str, path: str) -> Problem | None:
    """Why a trial file outside the layout ``sweep=<name>/...`` is not read (None: it is in place).

    Its rows would count as another trial (a copy at the catalog's top is not even a duplicate,
    having no sweep), and DuckDB refuses such a catalog with a Hive partition mismatch.
    """
    parts = path[len(base):].lstrip("/").split("/")
    if len(parts) > 1 and parts[0].startswith("sweep=") and parts[0] != "sweep=":
        return None
    return Problem(path, "layout", "not under a sweep=<name> folder at the catalog's top "
                                   "(the catalog's layout is sweep=<name>/trial-<id>.parquet)")


def _may_hold(metadata: Any, trials: Collection[str]) -> bool:
    """Whether a file may hold rows of ``trials``, by its row groups' trial_id statistics (True when unsure)."""
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        column = next((group.column(j) for j in range(group.num_columns)
                       if group.column(j).path_in_schema == "trial_id"), None)
        stats = column.statistics if column is not None else None
        if stats is None or not stats.has_min_max or not isinstance(stats.min, str) or not isinstance(stats.max, str):
            return True
        if not (getattr(stats, "is_min_value_exact", True) and getattr(stats, "is_max_value_exact", True)):
            return True
        if any(stats.min <= trial <= stats.max for trial in trials):
            return True
    return False


def dataset_schema() -> pa.Schema:

    return SCHEMA.append(pa.field("sweep", pa.string()))


def _read(filesystem: Any, base: str, files: Sequence[str]) -> tuple[list[pa.Table], list[Problem]]:
    """Each file's rows (sweep from the Hive partition), checksums verified; files that fail."""
    schema = dataset_schema()
    if not files:
        return [], []
    partitioning = ds.partitioning(pa.schema([pa.field("sweep", pa.string())]), flavor="hive")
    dataset = ds.dataset(list(files), filesystem=filesystem, format=parquet_format(),
                         partitioning=partitioning, partition_base_dir=base, schema=schema)
    tables, problems = [], []
    for fragment in dataset.get_fragments():
        try:
            tables.append(fragment.to_table(schema=schema))
        except (pa.ArrowException, OSError, ValueError) as e:
            tables.append(None)
            problems.append(Problem(fragment.path, "unreadable", f"its data cannot be read ({e})"))
    return tables, problems


def _duplicates(base: str, files: Sequence[str], tables: Sequence[pa.Table],
                shown: Callable[[str], str]) -> list[Problem]:
    """Files that repeat (sweep, trial_id, stitch_id) rows, within themselves or of another file."""
    problems: list[Problem] = []
    keys: list[list[tuple]] = []
    for path, table in zip(files, tables):
        rows = list(zip(table.column("sweep").to_pylist(), table.column("trial_id").to_pylist(),
                        table.column("stitch_id").to_pylist()))
        seen, repeated = set(), set()
        for key in rows:
            (repeated if key in seen else seen).add(key)
        if repeated:
            ids = ", ".join(str(k[2]) for k in sorted(repeated, key=str)[:5])
            more = f" and {len(repeated) - 5} more" if len(repeated) > 5 else ""
            problems.append(Problem(path, "duplicate", f"it holds stitch_id {ids}{more} of its trial more than once"))
            keys.append([])
        else:
            keys.append(rows)
    owners: dict[tuple, list[int]] = {}  # key -> files holding it
    for index, rows in enumerate(keys):
        for key in rows:
            owners.setdefault(key, []).append(index)
    clashes: dict[tuple, set[int]] = {}  # (sweep, trial) -> files with rows repeated elsewhere
    for key, holders in owners.items():
        if len(holders) > 1:
            clashes.setdefault(key[:2], set()).update(holders)
    left_out: set[int] = set()
    for (sweep, trial), holders in sorted(clashes.items(), key=str):
        holders -= left_out
        if len(holders) < 2:
            continue
        own = f"{base}/sweep={sweep}/trial-{trial}.parquet"
        keep = next((i for i in sorted(holders) if files[i] == own), min(holders))
        for i in sorted(holders - {keep}):
            n = sum(1 for key in keys[i] if key[:2] == (sweep, trial) and keep in owners[key])
            problems.append(Problem(files[i], "duplicate",
                                    f"it repeats {n} row(s) of trial {trial!r} (sweep {sweep!r}) already in "
                                    f"{shown(files[keep])} (a copied trial file?)"))
            left_out.add(i)
    return problems


def inspect(catalog: str | os.PathLike[str], sweep: str | Sequence[str] | None = None, *,
            read: bool = True, trial: Sequence[str] | None = None) -> Inspection:
    """Look at every trial file of a catalog (or of some sweeps); with ``read``, read and verify their rows.

    Without ``read`` only the footers are checked (cheap: no data pages are fetched), so
    damaged pages and duplicate rows are not found. With ``trial`` (trial ids), a file whose
    footer statistics show it holds none of them is passed over, and the table keeps only
    those trials' rows. A catalog path that is missing or a file raises SNNetError.
    """
    filesystem, base = open_catalog(catalog)
    files, strays = list_files(filesystem, base, sweep)
    result = Inspection(os.fspath(catalog), base, filesystem, files=[], strays=strays)
    for path in files:
        problem, metadata = misplaced(base, path), None
        if problem is None:
            problem, metadata = _check_footer(filesystem, path)
        if trial is not None and metadata is not None and (problem is None or problem.kind == "newer-schema") \
                and not _may_hold(metadata, trial):
            continue  # none of the wanted trials: not read (a damaged file is still named)
        result.files.append(path)
        if problem is None:
            continue
        (result.notes if problem.kind == "newer-schema" else result.problems).append(problem)
    if not read:
        return result
    candidates = result.good
    tables, failed = _read(filesystem, base, candidates)
    result.problems.extend(failed)
    readable = [(p, t) for p, t in zip(candidates, tables) if t is not None]
    duplicates = _duplicates(base, [p for p, _ in readable], [t for _, t in readable], result.shown)
    result.problems.extend(duplicates)
    dropped = {p.path for p in duplicates}
    kept = [t for p, t in readable if p not in dropped]
    result.table = pa.concat_tables(kept) if kept else dataset_schema().empty_table()
    if trial is not None:
        wanted = pa.array(list(trial), pa.string())
        result.table = result.table.filter(pc.is_in(result.table.column("trial_id"), value_set=wanted))
    order = {path: i for i, path in enumerate(result.files)}
    result.problems.sort(key=lambda p: order.get(p.path, len(order)))
    return result


def check(catalog: str | os.PathLike[str], sweep: str | None = None) -> Inspection:
    """Read and verify every file of the catalog; the result lists its problems and notes.

    Besides the notes of :func:`inspect`, each trial that repeats the configuration and seed of a
    newer trial (an identical repeat: :mod:`orchestrator.catalog._repeats`) is named in a note of
    kind ``repeat``; its file is kept and is no problem."""
    result = inspect(catalog, sweep, read=True)
    table = result.table
    if table is not None and table.num_rows:
        columns = [c for c in ("sweep", "trial_id", "config_fingerprint", "created_at", "experiment", "code_version")
                   if c in table.column_names]
        for repeat in repeats(table.select(columns).to_pandas()):
            path = f"{result.base}/sweep={repeat.trial['sweep']}/trial-{repeat.trial['trial_id']}.parquet"
            result.notes.append(Problem(path, "repeat", describe(repeat)))
    result.table = None  # the rows are not what a check returns; let them go
    return result


def quarantine(inspection: Inspection, problems: Sequence[Problem] | None = None) -> list[tuple[str, str]]:
    """Move problem files under ``<catalog>/_quarantine/`` (never deleting); returns ``(from, to)`` pairs.

    Each moved file keeps its path relative to the catalog and gains the suffix
    ``.quarantined`` (``-2``, ``-3``, ... when that name is taken); a ``.txt`` beside it records
    where it came from, why and when. Works on any pyarrow filesystem (local, ``s3://``, ...).
    """
    filesystem, base = inspection.filesystem, inspection.base
    moved = []
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    for problem in problems if problems is not None else inspection.problems:
        relative = problem.path[len(base):].lstrip("/")
        target = f"{base}/{QUARANTINE}/{relative}{_SUFFIX}"
        n = 1
        while filesystem.get_file_info(target).type != pafs.FileType.NotFound:
            n += 1
            target = f"{base}/{QUARANTINE}/{relative}{_SUFFIX}-{n}"
        filesystem.create_dir(target.rsplit("/", 1)[0], recursive=True)
        filesystem.move(problem.path, target)
        with filesystem.open_output_stream(target + ".txt") as out:
            out.write(f"from: {inspection.shown(problem.path)}\nproblem: {problem.kind}\n"
                      f"reason: {problem.reason}\nmoved: {now}\n".encode())
        moved.append((problem.path, target))
    return moved
