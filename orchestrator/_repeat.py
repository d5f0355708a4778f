"""Repeat each configuration a searcher proposes over the sweep's seeds (``searcher.seeds``).

A module of its own (importing Ray Tune at the top) so the class pickles by reference with the
Tuner's state, which ``--resume`` reads back.
"""

from __future__ import annotations

import numpy as np
from ray.tune.search import Repeater

__all__ = ["SeedRepeater"]


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
