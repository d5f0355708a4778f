"""The search space as the sweep loads and counts it: the command line's settings applied, the keys its
searched settings take in a Tune trial's config, how many trials it runs and the most epochs one trains.

Light on purpose (search_spaces only: no torch, Ray or pyarrow), so ``python -m orchestrator.sweep``
answers a bad ``--set``, YAML file or flag before the sweep's imports.
"""

from __future__ import annotations

from collections.abc import Sequence

from search_spaces import Choice, IntRange, SearchSpace, TrainConfig, load_space
from search_spaces.schema import TRAINING_PATHS
from snnet import SNNetError

__all__ = ["RERUN_KEY", "SEED_KEY", "config_key", "dotted_path", "load_search", "max_epochs", "num_trials",
           "searcher_free", "training_path"]

#: Config key of a trial's seed when the space repeats configurations over ``searcher.seeds``.
SEED_KEY = "training__seed"
#: Config key of a re-run's source trial (``--rerun-best``): the trial whose settings it re-runs.
RERUN_KEY = "rerun__source"


def config_key(path: str) -> str:
    """A searched setting's key in a trial's config: ``space.kernel_size`` -> ``space__kernel_size``."""
    return path.replace(".", "__")


def dotted_path(key: str) -> str:
    """The dotted path of a trial config's key (the inverse of :func:`config_key`)."""
    return key.replace("__", ".")


def load_search(space: str, overrides: Sequence[str], num_samples: int | None,
                max_concurrent_trials: int | None) -> SearchSpace:
    """The validated space with ``--set`` and ``--num-samples`` applied; a bad flag stops here.
    ``training.FIELD=V`` of a field the space keeps elsewhere sets it there (:data:`TRAINING_PATHS`)."""
    search = load_space(space, overrides=[training_path(text) for text in overrides])
    if max_concurrent_trials is not None and max_concurrent_trials < 1:
        raise SNNetError(f"--max-concurrent-trials must be >= 1, got {max_concurrent_trials}.")
    if num_samples is not None:
        if num_samples < 1:
            raise SNNetError(f"--num-samples must be >= 1, got {num_samples}.")
        search = search.model_copy(update={"searcher": search.searcher.model_copy(update={"num_samples": num_samples})})
    return search


def training_path(override: str) -> str:
    """``training.workers=2`` -> ``resources.workers_per_trial=2``: one spelling of a training setting on
    every command; other paths unchanged."""
    path, sep, value = override.partition("=")
    section, _, name = path.strip().partition(".")
    return f"{TRAINING_PATHS[name]}={value}" if sep and section == "training" and name in TRAINING_PATHS else override


def searcher_free(search: SearchSpace) -> bool:
    """True when Tune's own variant generator runs the sweep: grid search, or nothing searched."""
    return search.searcher.algorithm == "grid" or not search.parameters()


def num_trials(search: SearchSpace) -> int:
    """How many trials the sweep runs (``num_samples`` for a searcher; grid points x seeds for a grid)."""
    seeds = len(search.searcher.seeds or (0,))
    if not search.parameters():
        return seeds
    if search.searcher.algorithm == "grid":
        return search.searcher.num_samples * (search.grid_size() or 1) * seeds
    return search.searcher.num_samples * seeds


def max_epochs(search: SearchSpace) -> int:
    """The most epochs any trial of the space trains (``training.epochs``, searched or fixed)."""
    param = search.parameters().get("training.epochs")
    if isinstance(param, Choice):
        return max(int(v) for v in param.values)
    if isinstance(param, IntRange):
        return int(param.high)
    return int(search.fixed().get("training.epochs", TrainConfig.model_fields["epochs"].default))
