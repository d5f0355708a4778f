"""Declarative search spaces for SN-Net sweeps: YAML files and the typed configuration they load into.

The models are pydantic v2 (``extra="forbid"``); ``search_spaces/README.md`` is the format's reference.

* :class:`TrainConfig` (``search_spaces.config``): one training run, resolved and plain; it crosses to
  Ray workers and into checkpoints as ``model_dump()``.
* :class:`SearchSpace` (``search_spaces.schema``): anchor families, ``space:`` and ``training:`` sections
  derived from TrainConfig's fields (a setting is ``T | Choice[T] | Range``), ``resources:`` and
  ``searcher:``; :meth:`SearchSpace.trial_config` resolves one point of the search into a TrainConfig.
* :func:`load_space` (``search_spaces.loader``): a shipped space by name or a YAML file by path, read with
  bounded cost, ``--set dotted.path=value`` overrides; every problem at once, with YAML path and line.

This package imports neither Ray nor Optuna (``orchestrator -> search_spaces -> snnet``).
"""

from .config import INITS, LS_MODES, MODES, PLACEMENTS, SPACE_FIELDS, TrainConfig
from .loader import MAX_BYTES, load_space, shipped_spaces
from .schema import (ALGORITHMS, OBJECTIVES, SCHEDULERS, TRAINING_SET_ELSEWHERE, AnchorEntry, Choice, Family,
                     FloatRange, IntRange, Param, Resources, Searcher, SearchSpace, TrainingSection)

__all__ = [
    "ALGORITHMS", "AnchorEntry", "Choice", "Family", "FloatRange", "INITS", "IntRange", "LS_MODES", "MAX_BYTES",
    "MODES", "OBJECTIVES", "PLACEMENTS", "Param", "Resources", "SCHEDULERS", "SPACE_FIELDS", "SearchSpace",
    "Searcher", "TRAINING_SET_ELSEWHERE", "TrainConfig", "TrainingSection", "load_space", "shipped_spaces",
]
