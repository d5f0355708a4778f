"""The Parquet stitch catalog: one file per trial, one row per stitch; its queries, checks and plots.

Writing: :class:`CatalogWriter`, rows built from :data:`SCHEMA` by :func:`catalog_row` and :func:`catalog_values`
(``_store``). Reading
and querying: :func:`load`, :func:`query`, :func:`pareto_front`, :func:`best_under` (``_read``, ``_query``;
budgets parsed by ``_parse``). Damaged files: :func:`check`, :func:`quarantine` (``_inspect``); repeats of one
configuration: :func:`drop_repeats` (``_repeats``); :func:`plot` (``_plot``); :func:`compare` (``_compare``); what a
sweep optimises: :mod:`orchestrator.catalog.objectives`. ``python -m orchestrator.catalog`` is the command line;
none of it imports torch.
"""

from orchestrator.catalog._compare import Comparison, compare, format_comparison
from orchestrator.catalog._inspect import QUARANTINE, Inspection, Problem, check, inspect, quarantine
from orchestrator.catalog._names import validate_name
from orchestrator.catalog._parse import parse_flops, parse_latency
from orchestrator.catalog._plot import plot
from orchestrator.catalog._query import best_under, pareto_front, query
from orchestrator.catalog._read import CatalogWarning, catalog_warnings_to_stderr, load, scan, sweeps, to_records
from orchestrator.catalog._repeats import drop_repeats, repeat_note
from orchestrator.catalog._store import (
    SCHEMA,
    SCHEMA_VERSION,
    CatalogWriter,
    catalog_row,
    catalog_values,
    columns_of_version,
    read_catalog,
    trial_file,
    trial_metadata,
)

__all__ = [
    "QUARANTINE",
    "SCHEMA",
    "SCHEMA_VERSION",
    "CatalogWarning",
    "CatalogWriter",
    "Comparison",
    "Inspection",
    "Problem",
    "best_under",
    "catalog_row",
    "catalog_values",
    "catalog_warnings_to_stderr",
    "check",
    "columns_of_version",
    "compare",
    "drop_repeats",
    "format_comparison",
    "inspect",
    "load",
    "pareto_front",
    "parse_flops",
    "parse_latency",
    "plot",
    "quarantine",
    "query",
    "read_catalog",
    "repeat_note",
    "scan",
    "sweeps",
    "to_records",
    "trial_file",
    "trial_metadata",
    "validate_name",
]
