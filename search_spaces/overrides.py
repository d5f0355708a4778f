"""``--set dotted.path=value``: change a search space without editing its YAML (:func:`search_spaces.loader.apply`).

The path walks the YAML document (``training.epochs``, ``families.0.pretrained``); the value is read as
YAML (``1``, ``[2, 3]``, ``{low: 1, high: 3}``, ``null``) by the same bounded reader as a file, and the
result is validated like the file itself, so a wrong value is reported at its path.
"""

from .loader import apply, parse

__all__ = ["apply", "parse"]
