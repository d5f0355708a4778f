"""The Parquet stitch catalog (see :mod:`orchestrator.catalog._store`)."""

from ._store import SCHEMA, SCHEMA_VERSION, CatalogWriter, read_catalog, resolve, trial_file

__all__ = ["SCHEMA", "SCHEMA_VERSION", "CatalogWriter", "read_catalog", "resolve", "trial_file"]
