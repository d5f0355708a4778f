"""The sweep's searchers: Optuna samplers that survive Tune's experiment state, and the seed repeater.

Tune pickles the searcher, with its Optuna sampler, into the experiment state that ``--resume``
reads back. Optuna's genetic samplers (``NSGAIISampler`` of optuna 5.x) keep a ``threading.Lock``
and define no ``__getstate__``, so an ``nsga2`` sweep's state could not be saved. The subclass here
drops the lock when pickled and makes a new one when unpickled. :class:`SeedRepeater` repeats each
configuration a searcher proposes over the sweep's seeds (``searcher.seeds``). Both live in a module
that imports Optuna and Ray Tune at the top, so they pickle by reference with the Tuner's state, which
``--resume`` reads back.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import optuna
from ray.tune.search import Repeater

__all__ = ["NSGAIISampler", "SeedRepeater", "make_sampler"]


class NSGAIISampler(optuna.samplers.NSGAIISampler):
    """:class:`optuna.samplers.NSGAIISampler` that pickles (its lock is made anew on load)."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()


def make_sampler(algorithm: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """The seeded sampler of ``searcher.algorithm``: ``nsga2``, ``random``, else TPE."""
    kind = {"nsga2": NSGAIISampler, "random": optuna.samplers.RandomSampler}.get(algorithm,
                                                                                 optuna.samplers.TPESampler)
    return kind(seed=seed)


class SeedRepeater(Repeater):
    """Tune's ``Repeater`` (each suggestion runs ``repeat`` times; ``__trial_index__`` in the
    config picks the seed) that reports the mean of *every* objective to the searcher once all
    repeats finished (Tune's own averages a single metric only)."""

    def on_trial_complete(self, trial_id, result=None, **kwargs):
        metrics = self.searcher.metric if isinstance(self.searcher.metric, list) else [self.searcher.metric]
        group = self._trial_id_to_group[trial_id]
        group.report(trial_id, [float((result or {}).get(m, np.nan)) for m in metrics])
        if group.finished_reporting():
            with np.errstate(all="ignore"):
                means = np.nanmean(np.array(group.scores(), dtype=float), axis=0)
            self.searcher.on_trial_complete(group.primary_trial_id,
                                            result=dict(zip(metrics, map(float, means))), **kwargs)
