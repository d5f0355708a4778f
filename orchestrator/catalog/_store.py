"""The Parquet stitch catalog: one row per (trial, stitch), one file per trial.

Layout (design brief, section 5)::

    <root>/sweep=<name>/trial-<trial_id>.parquet

Hive-partitioned by ``sweep``, so DuckDB's ``read_parquet('<root>/**/*.parquet',
hive_partitioning=true)``, ``pandas.read_parquet(root)`` and ``pyarrow.dataset`` read it as it
is; the ``sweep`` column comes from the partition. Each file is written under a temporary
name starting with ``.`` in the same folder and renamed into place, so readers (which skip
names starting with ``.`` or ``_``) never see half a file and concurrent trials never
collide. ``root`` may be a local path or any URI pyarrow's filesystems accept (``s3://``,
``gs://``). The file schema carries its version in the Parquet metadata.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import uuid
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from snnet import SNNetError

__all__ = ["SCHEMA", "SCHEMA_VERSION", "CatalogWriter", "read_catalog", "resolve", "trial_file"]

SCHEMA_VERSION = "2"  # 2: latency_batch_size
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# A sweep name is a Hive partition value: one made of digits only would be read back as an
# integer by DuckDB and pyarrow's inference, so it must start with a letter.
_SWEEP = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")

#: Columns stored in each trial file (``sweep`` is the Hive partition, added on read).
SCHEMA = pa.schema(
    [
        pa.field("trial_id", pa.string(), nullable=False),
        pa.field("stitch_id", pa.int32(), nullable=False),
        pa.field("anchors", pa.list_(pa.string()), nullable=False),
        pa.field("cuts", pa.list_(pa.list_(pa.int32())), nullable=False),
        pa.field("kernel_size", pa.int32()),
        pa.field("stride", pa.int32()),
        pa.field("sampling", pa.string()),
        pa.field("flops", pa.int64(), nullable=False),
        pa.field("params", pa.int64(), nullable=False),
        pa.field("top1", pa.float64()),
        pa.field("top5", pa.float64()),
        pa.field("latency_ms", pa.float64()),
        pa.field("latency_batch_size", pa.int32()),
        pa.field("device", pa.string()),
        pa.field("dataset", pa.string()),
        pa.field("checkpoint", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        # additions: how the trial was trained and how well its stitching layers fit
        pa.field("layers", pa.list_(pa.string())),
        pa.field("ls_r2", pa.float64()),
        pa.field("init", pa.string()),
        pa.field("mode", pa.string()),
        pa.field("epochs", pa.int32()),
        pa.field("anchor_lr", pa.float64()),
        pa.field("stitch_lr", pa.float64()),
        pa.field("seed", pa.int64()),
        pa.field("workers", pa.int32()),
        pa.field("code_version", pa.string()),
    ],
    metadata={"snnet.catalog.schema_version": SCHEMA_VERSION},
)


def resolve(root: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and path for a local folder or a URI."""
    root = os.fspath(root)
    if "://" in root:
        return pafs.FileSystem.from_uri(root)
    return pafs.LocalFileSystem(), os.path.abspath(root)


def check_name(kind: str, value: str) -> str:
    pattern, first = (_SWEEP, "a letter") if kind == "sweep" else (_NAME, "a letter or digit")
    if not isinstance(value, str) or not pattern.match(value):
        raise SNNetError(
            f"A {kind} name must start with {first} and hold only letters, digits, '_', '.' "
            f"and '-', got {value!r}."
        )
    return value


def trial_file(root: str, sweep: str, trial_id: str) -> str:
    _, path = resolve(root)
    return f"{path}/sweep={check_name('sweep', sweep)}/trial-{check_name('trial', trial_id)}.parquet"


class CatalogWriter:
    """Writes trial files into ``<root>/sweep=<sweep>/``."""

    def __init__(self, root: str | os.PathLike[str], sweep: str):
        self.root = os.fspath(root)
        self.sweep = check_name("sweep", sweep)
        self.fs, self.base = resolve(self.root)
        path = self.base
        while True:  # the catalog, or the nearest of its parents that exists, must be a folder
            info = self.fs.get_file_info(path)
            if info.type == pafs.FileType.File:
                where = "is a file" if path == self.base else f"lies below the file {path!r}"
                raise SNNetError(f"The catalog must be a folder or URI, but {self.root!r} {where}.")
            parent = path.rsplit("/", 1)[0]
            if info.type == pafs.FileType.Directory or not parent or parent == path:
                break
            path = parent

    def write_trial(self, trial_id: str, rows: Iterable[Mapping[str, Any]]) -> str:
        """Write all rows of one trial atomically; replaces an earlier file of the same trial."""
        check_name("trial", trial_id)
        now = _dt.datetime.now(_dt.timezone.utc)
        rows = list(rows)
        unknown = sorted({k for row in rows for k in row} - set(SCHEMA.names))
        if unknown:  # a typo such as "top_1" would otherwise be dropped silently
            raise ValueError(f"catalog rows have columns not in the schema: {unknown}")
        records = [{**{"created_at": now}, **row, "trial_id": trial_id} for row in rows]
        table = pa.Table.from_pylist(records, schema=SCHEMA)
        folder = f"{self.base}/sweep={self.sweep}"
        self.fs.create_dir(folder, recursive=True)
        final = f"{folder}/trial-{trial_id}.parquet"
        tmp = f"{folder}/.trial-{trial_id}.{uuid.uuid4().hex}.tmp"
        try:
            with self.fs.open_output_stream(tmp) as out:
                pq.write_table(table, out)
            self.fs.move(tmp, final)
        except BaseException:
            try:
                self.fs.delete_file(tmp)
            except OSError:
                pass
            raise
        return final


def read_catalog(root: str | os.PathLike[str], sweep: str | None = None) -> pa.Table:
    """Every row of the catalog (or one sweep) as a pyarrow table with a ``sweep`` column."""
    import pyarrow.dataset as ds

    filesystem, base = resolve(root)
    info = filesystem.get_file_info(base)
    if info.type != pafs.FileType.Directory:
        kind = "a file" if info.type == pafs.FileType.File else "missing"
        raise SNNetError(f"{os.fspath(root)!r} is not a stitch catalog: it is {kind}, not a folder.")
    partitioning = ds.partitioning(pa.schema([pa.field("sweep", pa.string())]), flavor="hive")
    files = [
        info.path
        for info in filesystem.get_file_info(pafs.FileSelector(base, recursive=True))
        if info.type == pafs.FileType.File and info.path.endswith(".parquet")
        and not any(part.startswith((".", "_")) for part in info.path[len(base):].split("/") if part)
    ]
    dataset = ds.dataset(files, filesystem=filesystem, format="parquet", partitioning=partitioning,
                         partition_base_dir=base, schema=SCHEMA.append(pa.field("sweep", pa.string())))
    table = dataset.to_table(filter=(ds.field("sweep") == sweep) if sweep else None)
    return table
