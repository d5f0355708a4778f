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

Every data page carries a CRC-32 checksum (``write_page_checksum=True``) and every reader of
this package verifies it (``page_checksum_verification=True``), so a flipped bit on disk or in
transit makes the file unreadable (and reported) instead of silently changing a stitch's top-1.
Sweep and trial names follow :func:`orchestrator.catalog.validate_name`.
"""

from __future__ import annotations

import collections
import datetime as _dt
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pyarrow.types as patypes
from pyarrow import fs as pafs

from orchestrator import storage
from orchestrator.catalog._names import validate_name
from orchestrator.storage import atomic_write
from snnet import SNNetError

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "SETTING_COLUMNS",
    "VERSION_KEY",
    "CatalogWriter",
    "catalog_row",
    "catalog_values",
    "columns_of_version",
    "list_files",
    "open_catalog",
    "read_catalog",
    "trial_file",
    "trial_metadata",
]

_HINT = (
    "A catalog is the folder or URI given as --catalog to training and sweeps; it holds "
    "sweep=<name>/trial-<id>.parquet files."
)

#: 2 added latency_batch_size; 3 added top1_selection and space_fingerprint; 4 added weights; 5 added
#: preset and released_deit_head; 6 added the fidelity knobs data_fraction and image_size; 7 added
#: experiment, config_fingerprint and selection_images (and pandas metadata: integer columns read as integers);
#: 8 added the init scores init_cka, init_kl, init_top1 and score_images (issue 30); 9 added the anchors'
#: top-1 before joint training, top1_before and top1_selection_before, and eval_images (issue 28); 10 added pruned
#: (issue 30: a stitch a pruned run left untrained, its top1 and top5 null); 11 added the settings
#: sampling_options, prune_score and prune_keep (issue 30: compare tells scored variants and pruned runs apart).
SCHEMA_VERSION = "11"
VERSION_KEY = b"snnet.catalog.schema_version"
_ADDED_IN = {"latency_batch_size": 2, "top1_selection": 3, "space_fingerprint": 3, "weights": 4, "preset": 5,
             "released_deit_head": 5, "data_fraction": 6, "image_size": 6, "experiment": 7,
             "config_fingerprint": 7, "selection_images": 7, "init_cka": 8, "init_kl": 8, "init_top1": 8,
             "score_images": 8, "top1_before": 9, "top1_selection_before": 9, "eval_images": 9,
             "pruned": 10, "sampling_options": 11, "prune_score": 11, "prune_keep": 11}

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
        # top-1 on the selection split carved from the training set (what the search optimises);
        # top1 above is the evaluation split, scored once per finished trial for the report
        pa.field("top1_selection", pa.float64()),
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
        # fingerprint of the resolved search space and code version the trial ran with
        pa.field("space_fingerprint", pa.string()),
        # where the anchors' weights came from: "name=hub:<id>; name=file:<path>; name=random"
        pa.field("weights", pa.string()),
        # the stitch enumeration ("paper": the released code's; null: this project's wider one) and
        # whether stitched paths skip the back anchor's final norm as the released DeiT forward does
        pa.field("preset", pa.string()),
        pa.field("released_deit_head", pa.bool_()),
        # the fidelity the trial trained at, so a cheap search trial and its full-fidelity re-run
        # tell apart: the fraction of the training set it trained on (1.0: all of it) and the
        # input resolution (null: each anchor family's own default)
        pa.field("data_fraction", pa.float64()),
        pa.field("image_size", pa.int32()),
        # the run that wrote the trial: a sweep's Tune experiment name (kept by --resume), or
        # orchestrator.train's Ray run name <sweep>-<trial_id>
        pa.field("experiment", pa.string()),
        # sha256 of the trial's resolved training settings, seed included, names and locations left out
        # (search_spaces.fingerprint.config_fingerprint): trials that share it are repeats of one
        # configuration, which fronts, budgets and compare count once (the newest trial stands for them)
        pa.field("config_fingerprint", pa.string()),
        # images in the selection split that top1_selection was measured on (0: the trial had none)
        pa.field("selection_images", pa.int64()),
        # scores at initialisation, before joint training (snnet.scores), on score_images fixed selection
        # images: linear CKA and KL(back || stitch) against the back anchor, and the stitch's own top-1;
        # null where the trial computed none (score_images 0) or was written before schema 8
        pa.field("init_cka", pa.float64()),
        pa.field("init_kl", pa.float64()),
        pa.field("init_top1", pa.float64()),
        pa.field("score_images", pa.int64()),
        # an anchor's top-1 before joint training (the pretrained anchor, on the same images as top1 and
        # top1_selection after it), so a catalog shows what joint training cost the anchors; null on stitched
        # rows, for epochs 0 and before schema 9. eval_images: the evaluation split's size (top1's images)
        pa.field("top1_before", pa.float64()),
        pa.field("top1_selection_before", pa.float64()),
        pa.field("eval_images", pa.int64()),
        # true: the trial pruned this stitch (training.prune_score: it kept the best-scored part of its space) and
        # never trained or evaluated it, so top1, top5 and top1_selection are null while FLOPs, params, ls_r2 and
        # the init scores are there; false: trained; null: written before schema 10
        pa.field("pruned", pa.bool_()),
        # the sampling rule's options that differ from its defaults (JSON, keys sorted, one spelling per rule:
        # snnet.sampling.SamplingRule.canonical_options; null: all at their defaults), and
        # the pruning setting (training.prune_score, null: no pruning; training.prune_keep, null without it);
        # null in files written before schema 11
        pa.field("sampling_options", pa.string()),
        pa.field("prune_score", pa.string()),
        pa.field("prune_keep", pa.float64()),
    ],
    metadata={"snnet.catalog.schema_version": SCHEMA_VERSION},
)


def _pandas_metadata(schema: pa.Schema) -> bytes:
    """pandas' own schema metadata naming the nullable integer columns' dtypes (``Int32``, ``Int64``):
    ``pandas.read_parquet`` (and ``Table.to_pandas``) then read them as integers with ``<NA>``, not as
    float64 where a column holds nulls. Columns it does not name (``stitch_id``, ``flops``, ``params``:
    never null) are read as usual, as numpy integers."""
    columns = [{"name": f.name, "field_name": f.name, "pandas_type": str(f.type),
                "numpy_type": str(f.type).capitalize(), "metadata": None}
               for f in schema if patypes.is_integer(f.type) and f.nullable]
    return json.dumps({"index_columns": [], "column_indexes": [], "columns": columns, "attributes": {},
                       "creator": {"library": "snnet-orchestrator"}, "pandas_version": "2.0.0"}).encode()


SCHEMA = SCHEMA.with_metadata({**SCHEMA.metadata, b"pandas": _pandas_metadata(SCHEMA)})
_COLUMNS = frozenset(SCHEMA.names)

#: The columns that say how a trial was configured; the others are the stitch's identity, its outcomes and
#: bookkeeping. ``compare`` groups trials into spaces by these (:mod:`orchestrator.catalog._compare`).
SETTING_COLUMNS = frozenset({
    "kernel_size", "stride", "sampling", "dataset", "init", "mode", "epochs", "anchor_lr", "stitch_lr", "workers",
    "weights", "preset", "released_deit_head", "data_fraction", "image_size", "sampling_options", "prune_score",
    "prune_keep",
})


def open_catalog(catalog: str | os.PathLike[str]) -> tuple[Any, str]:
    """The filesystem and base path of a catalog that must be an existing folder."""
    shown = os.fspath(catalog)
    try:
        filesystem, base = storage.filesystem(shown)
        info = filesystem.get_file_info(base)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise SNNetError(f"{shown!r} is not a stitch catalog: pyarrow cannot open it ({e}). {_HINT}") from None
    if info.type != pafs.FileType.Directory:
        kind = "a file" if info.type == pafs.FileType.File else "missing"
        raise SNNetError(f"{shown!r} is not a stitch catalog: it is {kind}, not a folder. {_HINT}")
    base = base.rstrip("/") or "/"
    folder = base.rsplit("/", 1)[-1]
    if folder.startswith("sweep="):  # every file in it would lie outside a sweep= folder
        root = shown.rstrip("/")[: -len(folder)].rstrip("/") or "."
        raise SNNetError(f"{shown!r} is one sweep's folder of a catalog, not a catalog: give the catalog "
                         f"itself, {root!r}, and --sweep {folder[len('sweep='):]} (sweep= in Python) to "
                         "read only this sweep.")
    return filesystem, base


def list_files(filesystem: Any, base: str, sweep: str | Sequence[str] | None = None) -> tuple[list[str], int]:
    """The catalog's trial files (sorted) and the number of other, non-Parquet files.

    ``sweep`` (one name or several) lists only the files under those ``sweep=<name>/`` folders.
    """
    if sweep is None:
        starts = [base]
    else:
        names = [sweep] if isinstance(sweep, str) else list(sweep)
        starts = [f"{base}/sweep={validate_name('sweep', name)}" for name in dict.fromkeys(names)]
    infos = [info for start in starts
             for info in filesystem.get_file_info(pafs.FileSelector(start, recursive=True, allow_not_found=True))]
    files, strays = [], 0
    for info in sorted(infos, key=lambda i: i.path):
        if info.type != pafs.FileType.File:
            continue
        relative = info.path[len(base):].lstrip("/")
        if any(part.startswith((".", "_")) for part in relative.split("/")):
            continue  # temporary files of writers in flight, _SUCCESS markers, the quarantine
        if not info.base_name.endswith(".parquet"):
            strays += 1
            continue
        files.append(info.path)
    return files, strays


def catalog_row(**columns: Any) -> dict[str, Any]:
    """One full catalog row: every column of :data:`SCHEMA`, in its order, with None for those not given.

    The one place a row is built from the schema (:meth:`CatalogWriter.write_trial` completes the rows it
    is given with it; :func:`catalog_values` builds the part of a row a producer knows). A key the schema
    lacks raises ValueError naming it: a typo such as ``top_1`` would otherwise be dropped silently.
    """
    known = catalog_values(**columns)
    return {name: known.get(name) for name in SCHEMA.names}


def catalog_values(**columns: Any) -> dict[str, Any]:
    """The columns given, checked against :data:`SCHEMA` (ValueError naming a key it lacks) and in its
    order: the part of a row one producer fills (``orchestrator.train`` the run's, the writer the trial id
    and time, a sweep the fingerprint), completed by :func:`catalog_row` when written."""
    unknown = sorted(k for k in columns if k not in _COLUMNS)
    if unknown:
        raise ValueError(f"catalog rows have columns not in the schema: {unknown} "
                         f"(its columns: {', '.join(SCHEMA.names)})")
    return {name: columns[name] for name in SCHEMA.names if name in columns}


def columns_of_version(version: int) -> list[str]:
    """The columns every file of catalog schema ``version`` (1, 2, 3, ...) holds."""
    return [name for name in SCHEMA.names if _ADDED_IN.get(name, 1) <= version]


def _parquet_file(handle: Any) -> pq.ParquetFile:
    return pq.ParquetFile(handle, page_checksum_verification=True)


def trial_file(root: str, sweep: str, trial_id: str) -> str:
    _, path = storage.filesystem(root)
    return f"{path}/sweep={validate_name('sweep', sweep)}/trial-{validate_name('trial', trial_id)}.parquet"


class CatalogWriter:
    """Writes trial files into ``<root>/sweep=<sweep>/``."""

    def __init__(self, root: str | os.PathLike[str], sweep: str):
        self.root = os.fspath(root)
        self.sweep = validate_name("sweep", sweep)
        self.fs, self.base = storage.filesystem(self.root)
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

    def write_trial(self, trial_id: str, rows: Iterable[Mapping[str, Any]],
                    metadata: Mapping[str, str] | None = None) -> str:
        """Write all rows of one trial atomically; replaces an earlier file of the same trial.

        ``metadata`` adds string key-value pairs to the file's Parquet metadata (for instance
        the search-space fingerprint); :func:`trial_metadata` reads them back. The schema
        version key cannot be overridden.
        """
        validate_name("trial", trial_id)
        now = _dt.datetime.now(_dt.timezone.utc)
        rows = list(rows)
        unknown = sorted({k for row in rows for k in row} - _COLUMNS)
        if unknown:  # a typo such as "top_1" would otherwise be dropped silently
            raise ValueError(f"catalog rows have columns not in the schema: {unknown}")
        counts = collections.Counter(row.get("stitch_id") for row in rows)
        repeated = sorted((i for i, n in counts.items() if n > 1), key=str)
        if repeated:  # readers would report the file as damaged
            raise ValueError(f"catalog rows of trial {trial_id!r} repeat stitch_id {repeated}")
        records = [catalog_row(**{**row, "created_at": row.get("created_at") or now, "trial_id": trial_id})
                   for row in rows]
        extra = {str(k).encode(): str(v).encode() for k, v in (metadata or {}).items()}
        extra.pop(VERSION_KEY, None)
        schema = SCHEMA.with_metadata({**extra, **SCHEMA.metadata}) if extra else SCHEMA
        table = pa.Table.from_pylist(records, schema=schema)
        folder = f"{self.base}/sweep={self.sweep}"
        self.fs.create_dir(folder, recursive=True)
        final = f"{folder}/trial-{trial_id}.parquet"
        # through a hidden temporary name, which readers skip, then renamed into place
        atomic_write(final, lambda out: pq.write_table(table, out, write_page_checksum=True), filesystem=self.fs)
        return final


def read_catalog(root: str | os.PathLike[str], sweep: str | None = None) -> pa.Table:
    """Every row of the catalog (or one sweep) as a pyarrow table with a ``sweep`` column.

    Strict: a damaged file raises. :func:`orchestrator.catalog.load` skips damaged files with
    a warning instead, and ``python -m orchestrator.catalog check`` lists them.
    """
    filesystem, base = storage.filesystem(root)
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
    dataset = ds.dataset(files, filesystem=filesystem, format=parquet_format(), partitioning=partitioning,
                         partition_base_dir=base, schema=SCHEMA.append(pa.field("sweep", pa.string())))
    table = dataset.to_table(filter=(ds.field("sweep") == sweep) if sweep else None)
    return table


def parquet_format() -> Any:
    """pyarrow.dataset's Parquet format with page checksum verification switched on."""
    options = ds.ParquetFragmentScanOptions(page_checksum_verification=True)
    return ds.ParquetFileFormat(default_fragment_scan_options=options)


def trial_metadata(root: str | os.PathLike[str], sweep: str, trial_id: str) -> dict[str, str] | None:
    """The Parquet metadata of a trial's file (schema version, fingerprint, ...), or None when absent.

    A file that exists but whose footer cannot be read counts as absent: the trial is not
    finished (the sweep's resume consults this to skip trials whose file is complete).
    """
    filesystem, _ = storage.filesystem(root)
    path = trial_file(root, sweep, trial_id)
    try:
        with filesystem.open_input_file(path) as handle:
            meta = _parquet_file(handle).schema_arrow.metadata or {}
    except (pa.ArrowException, OSError, ValueError):
        return None
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in meta.items()}
