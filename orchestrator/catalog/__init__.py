"""The Parquet stitch catalog (see :mod:`orchestrator.catalog._store`), its queries and plots."""

from ._plot import plot
from ._query import CatalogWarning, best_under, load, parse_flops, pareto_front, query, scan, sweeps, to_records
from ._store import SCHEMA, SCHEMA_VERSION, CatalogWriter, read_catalog, resolve, trial_file

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "CatalogWarning",
    "CatalogWriter",
    "best_under",
    "load",
    "pareto_front",
    "parse_flops",
    "plot",
    "query",
    "read_catalog",
    "resolve",
    "scan",
    "sweeps",
    "to_records",
    "trial_file",
]
