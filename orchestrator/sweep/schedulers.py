"""Early stopping on the early front: the Tune schedulers a sweep's ``searcher.scheduler`` names.

After every epoch a trial reports ``early_hv``, the hypervolume of a fixed, FLOPs-stratified
subset of its stitches on a fixed part of the selection split (:mod:`orchestrator.data.fidelity`),
with ``epoch``. Training loss says nothing about the front; ``early_hv`` is the front itself,
cheaply, so every scheduler here stops trials on it (mode max, time attribute ``epoch``):

``asha``
    Ray Tune's ``ASHAScheduler`` (asynchronous successive halving; Li et al., MLSys 2020).
``hyperband``
    Ray Tune's ``AsyncHyperBandScheduler`` with three brackets: HyperBand's hedging over how
    early to cut, asynchronously. Tune's synchronous ``HyperBandScheduler`` *pauses* trials and
    resumes them from a Tune checkpoint; a trial here is a nested Ray Train run, so pausing would
    mean checkpointing it through Tune twice; the asynchronous form never pauses.
``median``
    Optuna's ``MedianPruner`` through :class:`PrunerScheduler`. Ray Tune's ``OptunaSearch``
    samples points but never drives an Optuna pruner, so this scheduler keeps its own small
    in-memory Optuna study of the intermediate ``early_hv`` values and asks the pruner after each
    epoch (any ``optuna.pruners`` pruner can be passed). It is chosen over Tune's
    ``MedianStoppingRule`` because that rule compares running *means* over wall-clock time,
    whereas a front is judged at equal epochs, which is what Optuna's pruners do.

Every searched trial also reports its objectives per epoch as placeholders (Tune checks that each
result holds the searcher's metric); :class:`FinalResultsOnly` keeps them from the searcher, and a
trial the scheduler stopped reaches the searcher as pruned, never as a trial of hypervolume 0.

A module of its own, importing Ray Tune and Optuna at the top, so its classes pickle by reference with
the Tuner's state, which ``--resume`` reads back.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

__all__ = ["EARLY_METRIC", "FINAL_KEY", "TIME_ATTR", "FinalResultsOnly", "PrunerScheduler", "make_scheduler"]

#: The per-epoch metric schedulers act on, its direction and the time attribute.
EARLY_METRIC, EARLY_MODE, TIME_ATTR = "early_hv", "max", "epoch"
#: A key only a trial's final result holds (its catalog file): what tells it from a per-epoch one.
FINAL_KEY = "catalog_file"
#: Completed trials the median pruner waits for before it prunes (Optuna's default is 5, too many
#: for sweeps of ten trials; two give a median to compare with).
MEDIAN_STARTUP_TRIALS = 2


def make_scheduler(name: str, max_epochs: int) -> TrialScheduler | None:
    """The scheduler ``searcher.scheduler`` names (None for ``"none"``), acting on ``early_hv``.

    ``max_epochs`` is the most epochs any trial trains; the asynchronous schedulers never stop a
    trial only for reaching it (``stop_last_trials=False``), so every surviving trial evaluates.
    """
    if name == "none":
        return None
    if name == "median":
        return PrunerScheduler()
    if name not in ("asha", "hyperband"):
        raise ValueError(f"unknown scheduler {name!r}")
    return AsyncHyperBandScheduler(time_attr=TIME_ATTR, metric=EARLY_METRIC, mode=EARLY_MODE,
                                   max_t=max(int(max_epochs), 1), grace_period=1,
                                   brackets=3 if name == "hyperband" else 1, stop_last_trials=False)


class PrunerScheduler(FIFOScheduler):
    """Stop a trial when an Optuna pruner says so (default: ``MedianPruner``) on its per-epoch metric.

    Each Tune trial gets an Optuna trial in a private in-memory study; each result's ``metric`` at
    ``time_attr`` is reported to it and ``should_prune()`` decides STOP or CONTINUE. A trial that
    finishes is told complete, so later trials are compared with it; one that is stopped is told
    pruned. The study is not part of the pickled state (Tune pickles the scheduler with the Tuner
    before any trial ran); a resumed sweep starts comparing afresh.
    """

    def __init__(self, pruner: Any = None, *, metric: str = EARLY_METRIC, mode: str = EARLY_MODE,
                 time_attr: str = TIME_ATTR):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self._metric, self._mode, self._time_attr = metric, mode, time_attr
        self._pruner = pruner
        self._study: Any = None
        self._live: dict[str, Any] = {}
        self._last: dict[str, float] = {}
        self._steps: dict[str, set[int]] = {}
        self.stopped: list[str] = []

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_study": None, "_live": {}, "_last": {}, "_steps": {}}

    def _ensure_study(self) -> Any:
        if self._study is None:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            pruner = self._pruner or optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS)
            self._study = optuna.create_study(direction="maximize" if self._mode == "max" else "minimize",
                                              pruner=pruner)
        return self._study

    def _value(self, result: dict[str, Any]) -> tuple[float, int] | None:
        value, step = result.get(self._metric), result.get(self._time_attr)
        if value is None or step is None or not math.isfinite(float(value)):
            return None
        return float(value), int(step)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        point = self._value(result)
        if point is None or FINAL_KEY in result:
            return TrialScheduler.CONTINUE
        study = self._ensure_study()
        if trial.trial_id not in self._live:
            self._live[trial.trial_id] = study.ask()
        ot_trial = self._live[trial.trial_id]
        if point[1] in self._steps.setdefault(trial.trial_id, set()):
            return TrialScheduler.CONTINUE  # an epoch judged already (the evaluation's progress reports repeat it)
        self._steps[trial.trial_id].add(point[1])
        ot_trial.report(*point)
        self._last[trial.trial_id] = point[0]
        if not ot_trial.should_prune():
            return TrialScheduler.CONTINUE
        self._last.pop(trial.trial_id, None)
        study.tell(self._live.pop(trial.trial_id), state=optuna.trial.TrialState.PRUNED)
        self.stopped.append(trial.trial_id)
        return TrialScheduler.STOP

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        ot_trial = self._live.pop(trial.trial_id, None)
        if ot_trial is None:
            return
        point = self._value(result or {})
        last = point[0] if point else self._last.get(trial.trial_id)
        self._last.pop(trial.trial_id, None)
        if last is None:
            self._study.tell(ot_trial, state=optuna.trial.TrialState.FAIL)
        else:
            self._study.tell(ot_trial, last)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        ot_trial = self._live.pop(trial.trial_id, None)
        if ot_trial is not None:
            self._study.tell(ot_trial, state=optuna.trial.TrialState.FAIL)

    def debug_string(self) -> str:
        return f"Using Optuna's pruner on {self._metric}: stopped {len(self.stopped)} trials."


class FinalResultsOnly(Searcher):
    """A searcher that sees trials' final results only.

    Per-epoch results (whose objectives are placeholders) are not passed on; a trial that ends
    without a final result (stopped by the scheduler) completes with ``result=None``, which
    Optuna records as pruned. Everything else is the wrapped searcher's.
    """

    def __init__(self, searcher: Searcher):
        self.searcher = searcher
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    def set_search_properties(self, metric: Any, mode: Any, config: dict, **spec: Any) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.searcher.set_max_concurrency(max_concurrent)

    def suggest(self, trial_id: str) -> dict | None:
        return self.searcher.suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        return None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        final = result if result and FINAL_KEY in result else None
        self.searcher.on_trial_complete(trial_id, result=final, error=error)

    def get_state(self) -> dict:  # a wrapper's own state (it has none); Tune saves the wrapped searcher itself
        return {}

    def set_state(self, state: dict) -> None:
        return None

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)

    @property
    def metric(self) -> Any:
        return self.searcher.metric

    @property
    def mode(self) -> Any:
        return self.searcher.mode
