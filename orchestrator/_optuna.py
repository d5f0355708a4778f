"""Optuna samplers that survive Tune's experiment state.

Tune pickles the searcher, with its Optuna sampler, into the experiment state that ``--resume``
reads back. Optuna's genetic samplers (``NSGAIISampler`` of optuna 5.x) keep a ``threading.Lock``
and define no ``__getstate__``, so an ``nsga2`` sweep's state could not be saved. The subclass here
drops the lock when pickled and makes a new one when unpickled; it lives in a module of its own
so it pickles by reference.
"""

from __future__ import annotations

import threading
from typing import Any

import optuna

__all__ = ["NSGAIISampler", "make_sampler"]


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
