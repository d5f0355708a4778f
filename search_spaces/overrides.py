"""``--set dotted.path=value``: change a search space without editing its YAML.

The path walks the YAML document (``training.epochs``, ``dataset``, ``resources.workers_per_trial``,
``families.0.pretrained``); the value is read as YAML (``1``, ``1e-4``, ``[2, 3]``,
``{low: 1, high: 3}``, ``null``) with the same bounded reader as a file. The result is validated
like the file itself, so a wrong value is reported at its path.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable

from snnet import SNNetError

__all__ = ["apply", "parse"]


def parse(text: str) -> tuple[list[str], Any]:
    """``"training.epochs=1"`` -> ``(["training", "epochs"], 1)``."""
    from .loader import parse_yaml

    path, sep, raw = text.partition("=")
    keys = path.strip().split(".")
    if not sep or not all(keys):
        raise SNNetError(f"--set takes dotted.path=value (e.g. training.epochs=1), got {text!r}.")
    value, _ = parse_yaml(raw, f"--set {text}")
    return keys, value


def apply(data: Any, overrides: Iterable[str]) -> Any:
    """A copy of the document ``data`` with every ``dotted.path=value`` set."""
    data = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse(text)
        node = data
        for depth, key in enumerate(keys[:-1]):
            where = ".".join(keys[: depth + 1])
            if isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            elif isinstance(node, dict):
                if node.get(key) is None:  # a section left out or null
                    node[key] = {}
                node = node[key]
            else:
                raise SNNetError(f"--set {text}: {where} is not a mapping or list in this search space.")
        last = keys[-1]
        if isinstance(node, list) and last.isdigit() and int(last) < len(node):
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise SNNetError(f"--set {text}: {'.'.join(keys[:-1])} is not a mapping or list in this search space.")
    return data

