"""The sweep's Ray Tune ``Tuner``: the space as Tune distributions, the searcher, the scheduler, the console.

Tune's variant generator runs grid search, random search and a space with nothing to search (one trial
per seed); Optuna (:mod:`orchestrator.sweep.searchers`) runs the other algorithms, repeated over
``searcher.seeds`` when given; an early-stopping scheduler (:mod:`orchestrator.sweep.schedulers`) acts on
each trial's per-epoch ``early_hv``. Tune pickles the searcher, scheduler and console callback with the
experiment's state, which ``--resume`` reads back: each is a class at a module path.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import optuna
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from orchestrator.catalog.objectives import OBJECTIVES
from orchestrator.sweep.schedulers import FinalResultsOnly, make_scheduler
from orchestrator.sweep.searchers import SeedRepeater, make_sampler
from orchestrator.sweep.space import RERUN_KEY, SEED_KEY, config_key, max_epochs, num_trials, searcher_free
from search_spaces import Choice, FloatRange, IntRange, SearchSpace

__all__ = ["TrialLines", "new_tuner", "trial_lines", "tune_metric", "tune_search_space"]


def tune_search_space(search: SearchSpace) -> dict[str, Any]:
    """Tune distributions for every searched parameter of a search space."""
    grid = search.searcher.algorithm == "grid"
    out: dict[str, Any] = {}
    for path, dist in search.parameters().items():
        if isinstance(dist, Choice):
            values = list(dist.values)
            out[config_key(path)] = tune.grid_search(values) if grid else tune.choice(values)
        elif isinstance(dist, FloatRange):
            out[config_key(path)] = (tune.loguniform if dist.log else tune.uniform)(dist.low, dist.high)
        elif isinstance(dist, IntRange) and grid:
            out[config_key(path)] = tune.grid_search(dist.grid_values())
        elif isinstance(dist, IntRange):
            out[config_key(path)] = (tune.lograndint(dist.low, dist.high + 1) if dist.log
                                     else tune.randint(dist.low, dist.high + 1))
        else:  # pragma: no cover - the schema admits only the three kinds
            raise TypeError(f"unknown distribution {dist!r}")
    seeds = search.searcher.seeds
    if seeds is not None and searcher_free(search):  # a grid over seeds repeats each configuration
        out[SEED_KEY] = tune.grid_search(list(seeds))
    return out


def _scheduler(search: SearchSpace):
    """The early-stopping scheduler ``searcher.scheduler`` names, acting on ``early_hv``
    (:mod:`orchestrator.sweep.schedulers`); None for ``none``."""
    if search.searcher.scheduler == "none":
        return None
    return make_scheduler(search.searcher.scheduler, max_epochs(search))


def _searcher(search: SearchSpace, metrics: list[str], modes: list[str]):
    """The search algorithm: None (Tune's variant generator) for grid search, random search and a
    fully fixed space; Optuna otherwise, repeated over ``searcher.seeds`` when given."""
    algorithm, seeds = search.searcher.algorithm, search.searcher.seeds
    if searcher_free(search) or (algorithm == "random" and seeds is None):
        return None  # Tune's BasicVariantGenerator (a fixed space: one trial per seed, nothing to search)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" line per sweep
    sampler = make_sampler(algorithm, search.searcher.seed)
    if len(metrics) == 1:
        optuna_search = OptunaSearch(metric=metrics[0], mode=modes[0], sampler=sampler)
    else:
        optuna_search = OptunaSearch(metric=metrics, mode=modes, sampler=sampler)
    searcher = SeedRepeater(optuna_search, repeat=len(seeds), set_index=True) if seeds is not None else optuna_search
    if search.searcher.scheduler == "none":
        return searcher
    return FinalResultsOnly(searcher)  # per-epoch placeholders stay away from Optuna


def tune_metric(metrics: Sequence[str], modes: Sequence[str], *, searcher: bool, scheduler: bool) -> dict[str, str]:
    """``TuneConfig``'s ``metric`` and ``mode`` for a sweep: ``{}`` or both.

    Ray Tune 2.x hands them to the search algorithm and the scheduler (``set_search_properties``) and
    refuses them, with a ``ValueError`` once Ray runs, when either was built with its own: every
    searcher here (Optuna, given the objectives) and every scheduler (ASHA, HyperBand and the median
    pruner, given ``early_hv``) is. So they go only to Tune's variant generator with its FIFO scheduler
    (grid, random without seeds, nothing searched; no ``searcher.scheduler``), and only for one
    objective: the results' default metric. ``searcher``/``scheduler``: whether the sweep has one."""
    if searcher or scheduler or len(metrics) != 1:
        return {}
    return {"metric": metrics[0], "mode": modes[0]}


def _short_config(config: dict[str, Any]) -> str:
    """A trial's searched settings as ``kernel_size=3, sampling=uniform`` (Tune's ``space__``/``training__``
    prefixes left out)."""
    return ", ".join(f"{k.split('__')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('__')[-1]}={v}"
                     for k, v in sorted(config.items())) or "the space's settings"


class TrialLines(tune.Callback):
    """A Tune callback that prints one line to stdout when a trial starts, finishes or fails; ``total``: the
    trials the sweep runs, when known. Tune pickles it with the experiment: it holds only plain values, and
    looks ``print`` up when it prints (Ray replaces ``builtins.print`` in a driver, so a reference to the
    original one taken earlier no longer pickles)."""

    def __init__(self, objectives: Sequence[str], total: int | None = None) -> None:
        self.objectives, self.total = list(objectives), total
        self.started: dict[str, float] = {}
        self.done = 0

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.started[trial.trial_id] = time.perf_counter()
        count = f"{len(trials)} of {self.total}" if self.total else f"{len(trials)} so far"
        print(f"[snnet] trial {trial.trial_id} started ({count}): {_short_config(trial.config)}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.done += 1
        result = trial.last_result or {}
        took = time.perf_counter() - self.started.get(trial.trial_id, time.perf_counter())
        values = ", ".join(f"{m} {result[m]:.4g}" for m in self.objectives if isinstance(result.get(m), (int, float)))
        best = result.get("best_top1")
        print(f"[snnet] trial {trial.trial_id} done in {took:.0f}s ({self.done} finished): "
              + (values or "no objective reported")
              + (f", best top-1 {best:.1f}%" if isinstance(best, (int, float)) else "")
              + (f", {result['num_stitches']} stitches in the catalog" if result.get("num_stitches") else ""),
              flush=True)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        print(f"[snnet] trial {trial.trial_id} failed ({_short_config(trial.config)}); its error is in "
              f"{trial.path}/error.txt; Tune retries it up to the failure limit", flush=True)


def trial_lines(objectives: Sequence[str], total: int | None = None) -> TrialLines:
    """The sweep's console: one line per trial event (:class:`TrialLines`), not Tune's status boxes."""
    return TrialLines(objectives, total)


def new_tuner(search: SearchSpace, trainable, experiment: str, storage: str, concurrent: int,
              rerun: dict[str, Any] | None, fingerprint: str, progress):
    """A fresh Tuner: Tune's variant generator or Optuna, the scheduler, the trial count."""
    metrics = list(search.searcher.objectives)
    modes = [OBJECTIVES[m] for m in metrics]
    fixed, seeds = not search.parameters(), search.searcher.seeds
    search_alg = None if rerun else _searcher(search, metrics, modes)
    if rerun:
        param_space, samples = {RERUN_KEY: tune.grid_search(list(rerun["trials"]))}, 1
    else:
        param_space = tune_search_space(search)
        samples = 1 if fixed else (search.searcher.num_samples
                                   * (len(seeds) if seeds and not searcher_free(search) else 1))
    scheduler = _scheduler(search)
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=search_alg, scheduler=scheduler, num_samples=samples, max_concurrent_trials=concurrent,
            **tune_metric(metrics, modes, searcher=search_alg is not None, scheduler=scheduler is not None),
        ),
        # verbose=0: the project's own trial lines (trial_lines) instead of Tune's status boxes, which
        # filled most of the console (181 lines for the demo's 2 trials, "0/2 CPUs" while trials trained,
        # a TensorBoard hint for a tool that is not installed)
        run_config=tune.RunConfig(name=os.path.basename(experiment.rstrip("/")), storage_path=storage,
                                  failure_config=tune.FailureConfig(max_failures=1), verbose=0,
                                  callbacks=[trial_lines(list(metrics), num_trials(search) if not rerun
                                                         else len(rerun["trials"]))]),
    )
    if rerun:
        how = f"re-running the {len(rerun['trials'])} best trials of {rerun['source_experiment']}"
        trials = len(rerun["trials"])
    else:
        how = ("nothing searched: one trial per seed" if fixed else f"searcher {search.searcher.algorithm}") + (
            f" over seeds {list(seeds)}" if seeds else "")
        trials = num_trials(search)
    if search.searcher.scheduler != "none":
        how += f", scheduler {search.searcher.scheduler} on early_hv"
    progress(f"[snnet] sweep '{search.name}': {trials} trials, {how}, objectives {metrics}, up to "
             f"{concurrent} at a time; storage {experiment}; space {fingerprint[:19]}")
    return tuner
