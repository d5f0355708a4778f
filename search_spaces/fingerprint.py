"""A search space's fingerprint and what changed between two spaces (for ``--resume``).

The fingerprint is the SHA-256 of the space's settings that differ from their defaults
(:func:`space_document`, ``model_dump(mode="json", exclude_defaults=True)``) as canonical JSON. Leaving
defaults out keeps a sweep resumable after an upgrade that only adds settings (a changed default is a code
change, recorded apart as the code version). The sweep records it beside its Tune experiment and in every
catalog file; ``--resume`` compares it with the space it is given, and :func:`changed_fields` names the
dotted fields that differ (``training.epochs``, ``families[0].anchors[1].name``) when they do not match.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

_MISSING = object()

__all__ = ["CONFIG_BOOKKEEPING", "canonical_json", "changed_fields", "config_fingerprint", "space_document",
           "space_fingerprint"]

#: TrainConfig fields that name or place a run, or only govern how it survives faults, and so leave
#: its result alone: a configuration's fingerprint leaves them out.
CONFIG_BOOKKEEPING = frozenset({"catalog", "sweep", "trial_id", "storage_path", "max_failures",
                                "checkpoint_every_steps", "eval_checkpoint_seconds", "placement_strategy",
                                "hv_flops_ref"})


def canonical_json(value: Any) -> str:
    """``value`` as canonical JSON: sorted keys, no whitespace, non-ASCII escaped."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)


def space_document(space: Any) -> Any:
    """What a fingerprint covers: the space's non-default settings as plain JSON values."""
    return space.model_dump(mode="json", exclude_defaults=True) if hasattr(space, "model_dump") else space


def space_fingerprint(space: Any) -> str:
    """``sha256:<hex>`` of a :class:`~search_spaces.SearchSpace` (or of its :func:`space_document`)."""
    data = space_document(space)
    return "sha256:" + hashlib.sha256(canonical_json(data).encode()).hexdigest()


def config_fingerprint(config: Any) -> str:
    """``sha256:<hex>`` of one run's resolved training settings (a ``TrainConfig``), the seed included.

    Like :func:`space_fingerprint` it covers the non-default settings, so an upgrade that adds a
    setting keeps it; the names and places of the run (:data:`CONFIG_BOOKKEEPING`) are left out, so
    the same configuration trained again (another experiment, catalog or trial id) has the same one.
    The catalog stores it per trial (``config_fingerprint``): trials that share it are repeats.
    """
    data = config.model_dump(mode="json", exclude_defaults=True) if hasattr(config, "model_dump") else dict(config)
    data = {k: v for k, v in data.items() if k not in CONFIG_BOOKKEEPING}
    return "sha256:" + hashlib.sha256(canonical_json(data).encode()).hexdigest()


def changed_fields(old: Any, new: Any, path: str = "") -> list[str]:
    """The dotted paths at which two plain (JSON-like) values differ, in ``new``'s document order.

    Mappings are compared key by key (a section on one side only is compared with an empty one, as
    documents leave out defaults), lists of equal length item by item (``[i]``), anything else as a whole.
    """
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in [*new, *(k for k in old if k not in new)]:
            sub = f"{path}.{key}" if path else str(key)
            a, b = old.get(key, _MISSING), new.get(key, _MISSING)
            if isinstance(a, dict) or isinstance(b, dict):  # a section left out is all defaults: compare inside
                a, b = ({} if a is _MISSING else a), ({} if b is _MISSING else b)
            out.extend([sub] if _MISSING in (a, b) else changed_fields(a, b, sub))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [p for i, (a, b) in enumerate(zip(old, new)) for p in changed_fields(a, b, f"{path}[{i}]")]
    same = canonical_json(old) == canonical_json(new)
    return [] if same else [path or "<the whole space>"]
