"""Declarative search spaces for SN-Net sweeps: YAML files and the typed configuration they load into.

:class:`TrainConfig` (``config``) is one resolved training run; :class:`SearchSpace` (``schema``) is what a
sweep searches over; :func:`load_space` (``loader``) reads a shipped space by name or a YAML file by path.
``search_spaces/README.md`` is the format's reference. This package imports neither Ray nor Optuna
(``orchestrator -> search_spaces -> snnet``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from snnet._lazy import lazy_exports

if TYPE_CHECKING:
    from .config import INITS, LS_MODES, MODES, PLACEMENTS, SPACE_FIELDS, TrainConfig
    from .loader import MAX_BYTES, load_space, shipped_spaces
    from .schema import (ALGORITHMS, OBJECTIVES, SCHEDULERS, TRAINING_SET_ELSEWHERE, AnchorEntry, Choice, Family,
                         FloatRange, IntRange, Param, Resources, Searcher, SearchSpace, TrainingSection)

#: Loaded on first use (PEP 562), as in :mod:`snnet`: ``search_spaces.names`` (the catalog's name rule)
#: comes without the models, and so without torch.
_LAZY = {
    "config": ("INITS", "LS_MODES", "MODES", "PLACEMENTS", "SPACE_FIELDS", "TrainConfig"),
    "loader": ("MAX_BYTES", "load_space", "shipped_spaces"),
    "schema": ("ALGORITHMS", "AnchorEntry", "Choice", "Family", "FloatRange", "IntRange", "OBJECTIVES", "Param",
               "Resources", "SCHEDULERS", "SearchSpace", "Searcher", "TRAINING_SET_ELSEWHERE", "TrainingSection"),
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "ALGORITHMS", "AnchorEntry", "Choice", "Family", "FloatRange", "INITS", "IntRange", "LS_MODES", "MAX_BYTES",
    "MODES", "OBJECTIVES", "PLACEMENTS", "Param", "Resources", "SCHEDULERS", "SPACE_FIELDS", "SearchSpace",
    "Searcher", "TRAINING_SET_ELSEWHERE", "TrainConfig", "TrainingSection", "load_space", "shipped_spaces",
]
