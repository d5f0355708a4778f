"""A search space's fingerprint and what changed between two spaces (for ``--resume``).

The fingerprint is a stable hash of the validated space: ``model_dump(mode="json")`` written as
canonical JSON (sorted keys, no spaces) and hashed with SHA-256. Two spaces with equal
fingerprints resolve every trial to the same settings; the sweep records it beside its Tune
experiment and in every catalog file it writes, and ``--resume`` compares it with the space it
is given. :func:`changed_fields` names the dotted fields that differ (``training.epochs``,
``families[0].anchors[1].name``) for the error that stops a resume with an edited space.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["canonical_json", "changed_fields", "space_fingerprint"]


def canonical_json(value: Any) -> str:
    """``value`` as canonical JSON: sorted keys, no whitespace, non-ASCII escaped."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)


def space_fingerprint(space: Any) -> str:
    """``sha256:<hex>`` of a :class:`~search_spaces.SearchSpace` (or its ``model_dump(mode="json")``)."""
    data = space.model_dump(mode="json") if hasattr(space, "model_dump") else space
    return "sha256:" + hashlib.sha256(canonical_json(data).encode()).hexdigest()


def changed_fields(old: Any, new: Any, path: str = "") -> list[str]:
    """The dotted paths at which two plain (JSON-like) values differ, in document order.

    Mappings are compared key by key (a key on one side only is a change at that key); lists of
    equal length element by element (``[i]``); anything else, and lists whose length changed,
    as a whole at ``path``.
    """
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in [*old, *(k for k in new if k not in old)]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in old or key not in new:
                out.append(sub)
            else:
                out.extend(changed_fields(old[key], new[key], sub))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [p for i, (a, b) in enumerate(zip(old, new)) for p in changed_fields(a, b, f"{path}[{i}]")]
    same = canonical_json(old) == canonical_json(new)
    return [] if same else [path or "<the whole space>"]
