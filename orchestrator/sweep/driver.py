"""Run (or resume) a sweep, step by step: :func:`run_sweep`.

The space is loaded with the command line's settings (:mod:`.space`) and checked before Ray starts
(:mod:`.preflight`); the sweep records its space beside the experiment (:mod:`.record`); a re-run takes
its trials from a finished sweep (:mod:`.rerun`); the driver then connects to the Ray cluster it is
submitted to (``ray job submit``) or starts a local instance, binds the sweep's constants
(:class:`.trial.SweepContext`) to the trainable (:func:`.trial.trial_function`) and runs the Tuner
(:mod:`.tuner`). Trials need 0 CPUs of their own; their training workers ask for theirs, and
``max_concurrent_trials`` is derived from what the cluster holds so nested trainers never starve
each other. Ctrl-C prints what finished and the command that continues with ``--resume``.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Sequence
from typing import Any

from ray import tune

from orchestrator.catalog import repeat_note
from orchestrator.cli import interrupt_hint, plural
from orchestrator.storage import join
from orchestrator.sweep.preflight import (
    check_locations,
    check_trial_resources,
    locate_experiment,
    max_concurrent,
    validate_families,
)
from orchestrator.sweep.record import RECORD, finished_trials, read_record, sweep_record, write_json
from orchestrator.sweep.report import early_hv_spearman, pareto_trials
from orchestrator.sweep.rerun import rerun_plan, rerun_space
from orchestrator.sweep.schedulers import FINAL_KEY
from orchestrator.sweep.space import RERUN_KEY, SEED_KEY, dotted_path, load_search
from orchestrator.sweep.trial import SweepContext, TrialHooks, trial_function
from orchestrator.sweep.tuner import new_tuner
from orchestrator.train import cluster  # called through the module: a test's replacement of cluster.ensure_ray applies
from search_spaces import SearchSpace
from snnet import SNNetError

__all__ = ["run_sweep", "summarize_results"]


def run_sweep(space: str = "demo", *, catalog: str = "catalog", storage: str | None = None,
              num_samples: int | None = None, resume: bool = False, name: str | None = None,
              address: str | None = None, max_concurrent_trials: int | None = None,
              overrides: Sequence[str] = (), accept_changed_space: bool = False,
              resume_command: Sequence[str] | None = None, rerun_best: int | None = None,
              rerun_from: str | None = None, progress: Callable[[str], None] = print,
              search: SearchSpace | None = None, hooks: TrialHooks | None = None) -> dict[str, Any]:
    """Run (or resume) a sweep; returns a summary dict (experiment path, trials, catalog, and
    ``objectives``, ``pareto``, ``early_hv_spearman``: see :func:`summarize_results`).

    ``storage``: Ray's run storage; ``None``: ``runs`` beside the catalog
    (:func:`orchestrator.storage.default_storage`).
    ``overrides``: ``dotted.path=value`` settings of the space (``training.epochs=1``), as ``--set``.
    ``accept_changed_space``: let ``resume`` continue with a space that differs from the one the
    sweep started with. ``resume_command``: the command line Ctrl-C prints to continue.
    ``rerun_best``: re-run the N best finished trials of the experiment ``rerun_from`` (default:
    the space's latest) with ``overrides``, as a new sweep ``<name>_rerun`` (:func:`.rerun.rerun_plan`).
    ``search``: the space as :func:`.space.load_search` loaded it from ``space``, ``overrides`` and
    ``num_samples`` (the command line loads it before the sweep's imports); None: loaded here.
    ``hooks``: code added to every trial (:class:`.trial.TrialHooks`: worker callbacks, a call after the
    trial's catalog write).
    """
    if search is None:
        search = load_search(space, overrides, num_samples, max_concurrent_trials)
    if address or os.environ.get("RAY_ADDRESS"):
        cluster.check_reachable(address or os.environ["RAY_ADDRESS"])
    source = search
    catalog, storage = check_locations(search, catalog, storage)
    if rerun_best is not None:
        search = rerun_space(source)
    experiment, started = locate_experiment(search, storage, name, resume, accept_changed_space,
                                            rerun=rerun_best is not None)
    record = sweep_record(search)
    if not resume:  # a result is counted once: name the experiments of this space the partition holds already
        note = repeat_note(catalog, search.name, record["space_fingerprint"], exclude=os.path.basename(experiment))
        if note:
            progress(note)
    rerun = None
    if rerun_best is not None:
        rerun = (read_record(experiment) or {}).get("rerun") if resume else \
            rerun_plan(source, catalog, storage, rerun_best, rerun_from, overrides)
        if not rerun:
            raise SNNetError(f"The sweep in {experiment} is not a re-run: resume it without --rerun-best.")
        record["rerun"] = rerun
    check_trial_resources(search, address, rerun)  # one trial fits this machine, before Ray starts
    started_space = SearchSpace.model_validate(started["space"]) if started else None
    found, flops_ref = validate_families(search, catalog, storage, progress, started_space,  # before Ray starts
                                         values=rerun is None)  # a re-run runs its trials' recorded values only
    if started is not None:
        progress(f"[snnet] --accept-changed-space: resuming {os.path.basename(experiment)} with an edited search "
                 f"space ({record['space_fingerprint']}, started with {started['space_fingerprint']})")
    else:
        write_json(join(experiment, RECORD), record)
    cluster.ensure_ray(address)

    context = SweepContext(
        catalog=catalog, storage=storage, experiment=experiment, sweep=search.name,
        search=search.model_dump(mode="json"), fingerprint=record["space_fingerprint"],
        started_search=started["space"] if started else None,
        started_fingerprint=started["space_fingerprint"] if started else None,
        demo_specs=found["demo_specs"], known=found["known"], flops_ref=flops_ref,
        code_version=record["code_version"],
        rerun=(rerun or {}).get("trials"), rerun_source_sweep=(rerun or {}).get("source_sweep"),
        hooks=hooks or TrialHooks())
    # A trial only waits on its nested TorchTrainer: it holds no CPU (a bundle may not be empty,
    # so it asks for a little memory), leaving every core to the training workers.
    trainable = tune.with_resources(tune.with_parameters(trial_function, context=context), {"cpu": 0, "memory": 2**26})
    concurrent = max_concurrent_trials or search.searcher.max_concurrent_trials or max_concurrent(search)
    if resume:
        progress(f"[snnet] resuming sweep from {experiment}")
        tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = new_tuner(search, trainable, experiment, storage, concurrent, rerun, record["space_fingerprint"],
                          progress)
    command = list(resume_command) if resume_command is not None else [
        "python", "-m", "orchestrator.sweep", "--space", space, "--catalog", catalog, "--storage", storage,
        *(a for o in overrides for a in ("--set", o)),
        *(["--rerun-best", str(rerun_best)] if rerun_best is not None else [])]
    results = _fit(tuner, command, catalog, search.name, experiment)
    return summarize_results(search, results, catalog)


def _fit(tuner, command: list[str], catalog: str, sweep: str, experiment: str):
    """``tuner.fit()``; Ctrl-C prints what finished and the command that continues."""
    exp_name = os.path.basename(experiment.rstrip("/"))

    def hint() -> str:
        done = finished_trials(catalog, sweep, experiment)
        return (f"interrupted: {plural(len(done), 'trial')} finished"
                + (f" ({', '.join(done)})" if done else "")
                + f", their rows are in {catalog} (partition sweep={sweep}).\n"
                + f"continue with:  {shlex.join([*command, '--resume', '--name', exp_name])}")

    # Ctrl-C reaches us at once (Tune's own handler would stop trials one by one and report them
    # as failed); Tune's experiment state and the catalog are what --resume continues from.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    # Tune's newer console output prints an experiment box, a results path and a TensorBoard hint even at
    # verbose=0; its classic output prints nothing there, leaving the console to trial_lines
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    with interrupt_hint(hint):
        return tuner.fit()


def summarize_results(search: SearchSpace, results, catalog: str) -> dict[str, Any]:
    """The sweep's summary: each trial (:func:`_trials`), the objectives, the Pareto set of finished
    trials over them, and ``early_hv_spearman`` (:func:`orchestrator.sweep.report.early_hv_spearman`)."""
    trials = _trials(results)
    finished = [t for t in trials if "error" not in t and not t.get("stopped_early")]
    objectives = list(search.searcher.objectives)
    return {"sweep": search.name, "experiment": results.experiment_path, "catalog": catalog, "trials": trials,
            "objectives": objectives, "pareto": pareto_trials(finished, objectives),
            "early_hv_spearman": early_hv_spearman(finished)}


#: What the summary keeps of a finished trial's result.
_SUMMARY_KEYS = ("trial_id", "family", "hypervolume", "train_cost", "best_top1", "num_stitches", "catalog_file",
                 "seed", "objective_split", "hypervolume_selection", "hypervolume_eval", "best_top1_eval",
                 "early_hv", "early_hv_epoch1", "epoch", "source_trial", "source_sweep", "anchors_kept",
                 "prune_score", "prune_keep", "pruned_stitches", "stitched_stitches")


def _trials(results) -> list[dict[str, Any]]:
    """One summary per trial of Tune's results: its objectives and settings, whether a scheduler
    stopped it early (its last result is a per-epoch one), or its error."""
    trials = []
    for r in results:
        metrics = r.metrics or {}
        if r.error or not metrics or "hypervolume" not in metrics:
            trials.append({"trial_id": metrics.get("trial_id") or getattr(r, "path", ""), "error": str(r.error)})
            continue
        config = {dotted_path(k): v for k, v in r.config.items() if k not in ("__trial_index__", SEED_KEY, RERUN_KEY)} \
            | ({"seed": metrics["seed"]} if metrics.get("seed") is not None else {})
        if FINAL_KEY not in metrics:
            trials.append({"trial_id": metrics.get("trial_id"), "stopped_early": True, "epoch": metrics.get("epoch"),
                           "early_hv": metrics.get("early_hv"), "config": config})
            continue
        trials.append({k: metrics.get(k) for k in _SUMMARY_KEYS} | {"config": config})
    return trials
