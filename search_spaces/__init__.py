"""Declarative search spaces for SN-Net sweeps: YAML files and the typed configuration they load into.

:class:`TrainConfig` (``training``) is one resolved training run; :class:`SearchSpace` (``schema``) is what a
sweep searches over, each searched setting a :class:`Choice` or a range (``searchable``); :func:`load_space`
(``loader``) reads a shipped space by name or a YAML file by path.
``search_spaces/README.md`` is the format's reference. This package imports neither Ray nor Optuna
(``orchestrator -> search_spaces -> snnet``).
"""

from .loader import MAX_BYTES, load_space, shipped_spaces
from .schema import (
                     ALGORITHMS,
                     OBJECTIVES,
                     SCHEDULERS,
                     TRAINING_SET_ELSEWHERE,
                     AnchorEntry,
                     Family,
                     Resources,
                     Searcher,
                     SearchSpace,
                     TrainingSection,
)
from .searchable import Choice, FloatRange, IntRange, Param
from .training import INITS, LS_MODES, MODES, PLACEMENTS, SPACE_FIELDS, TrainConfig

__all__ = [
    "ALGORITHMS", "AnchorEntry", "Choice", "Family", "FloatRange", "INITS", "IntRange", "LS_MODES", "MAX_BYTES",
    "MODES", "OBJECTIVES", "PLACEMENTS", "Param", "Resources", "SCHEDULERS", "SPACE_FIELDS", "SearchSpace",
    "Searcher", "TRAINING_SET_ELSEWHERE", "TrainConfig", "TrainingSection", "load_space", "shipped_spaces",
]
