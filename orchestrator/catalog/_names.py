"""The catalog's name rule is :mod:`search_spaces.names` (one rule for the schema, the CLIs and the catalog)."""

from search_spaces.names import NAME_RULES, validate_name

__all__ = ["NAME_RULES", "validate_name"]
