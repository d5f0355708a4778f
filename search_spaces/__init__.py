"""Declarative search spaces for SN-Net sweeps: YAML files and the typed configuration they load into.

:class:`TrainConfig` (``config``) is one resolved training run; :class:`SearchSpace` (``schema``) is what a
sweep searches over; :func:`load_space` (``loader``) reads a shipped space by name or a YAML file by path.
``search_spaces/README.md`` is the format's reference. This package imports neither Ray nor Optuna
(``orchestrator -> search_spaces -> snnet``).
"""

from .config import INITS, LS_MODES, MODES, PLACEMENTS, SPACE_FIELDS, TrainConfig
from .loader import MAX_BYTES, load_space, shipped_spaces
from .schema import (
                     ALGORITHMS,
                     OBJECTIVES,
                     SCHEDULERS,
                     TRAINING_SET_ELSEWHERE,
                     AnchorEntry,
                     Choice,
                     Family,
                     FloatRange,
                     IntRange,
                     Param,
                     Resources,
                     Searcher,
                     SearchSpace,
                     TrainingSection,
)

__all__ = [
    "ALGORITHMS", "AnchorEntry", "Choice", "Family", "FloatRange", "INITS", "IntRange", "LS_MODES", "MAX_BYTES",
    "MODES", "OBJECTIVES", "PLACEMENTS", "Param", "Resources", "SCHEDULERS", "SPACE_FIELDS", "SearchSpace",
    "Searcher", "TRAINING_SET_ELSEWHERE", "TrainConfig", "TrainingSection", "load_space", "shipped_spaces",
]
