"""Declarative search spaces for SN-Net sweeps: YAML files and the typed configuration they load into.

A search space says which anchor families to stitch, which SN-Net space settings (window
kernel size k, step s, nearest stitching, direction, preset; Pan, Cai and Zhuang, CVPR 2023)
and which training settings to search over, what one trial reserves, and how the sweep
searches. ``search_spaces/README.md`` has the full reference; the models are pydantic v2
(``extra="forbid"``):

* :class:`TrainConfig` (``search_spaces.config``): one training run, resolved and plain; it
  crosses to Ray workers and into checkpoints as ``model_dump()``.
* :class:`SearchSpace` (``search_spaces.schema``): families, ``space:`` and ``training:``
  sections derived from TrainConfig's own fields, where a setting is ``T | Choice[T] | Range``,
  plus ``resources:`` and ``searcher:``. :meth:`SearchSpace.trial_config` resolves one point
  of the search into a ``TrainConfig``.
* :func:`load_space` reads a shipped space by name or a YAML file by path, with bounded cost
  and ``--set dotted.path=value`` overrides; every problem is reported at once with its YAML
  path and line.

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
