"""The Parquet stitch catalog (see :mod:`orchestrator.catalog._store`), its queries and plots."""

from ._plot import plot
from ._query import (
    CatalogWarning,
    best_under,
    catalog_warnings_to_stderr,
    load,
    parse_flops,
    parse_latency,
    pareto_front,
    query,
    scan,
    sweeps,
    to_records,
)
from ._store import SCHEMA, SCHEMA_VERSION, CatalogWriter, read_catalog, resolve, trial_file

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "CatalogWarning",
    "CatalogWriter",
    "best_under",
    "catalog_warnings_to_stderr",
    "load",
    "pareto_front",
    "parse_flops",
    "parse_latency",
    "plot",
    "query",
    "read_catalog",
    "resolve",
    "scan",
    "sweeps",
    "to_records",
    "trial_file",
]
