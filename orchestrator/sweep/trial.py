"""One trial of the sweep: the Tune trainable (:func:`trial_function`) and what it needs.

Each trial is a Ray Tune *function trainable* that launches a Ray Train ``TorchTrainer`` (the nesting
Ray Train V2 supports): it trains one stitched supernet for the trial's family and settings, evaluates
every stitch, writes one Parquet file into the catalog partition ``sweep=<name>`` and reports the
objectives of :mod:`orchestrator.catalog.objectives`. The sweep's constants reach it as one
:class:`SweepContext`, bound with ``tune.with_parameters``: Tune pickles the trainable by reference,
so it and the context live at this module's path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray.train
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.search.repeater import TRIAL_INDEX

from orchestrator.catalog import CatalogWriter
from orchestrator.catalog.objectives import objective_values, split_values
from orchestrator.storage import join
from orchestrator.sweep.record import (
    META_CODE,
    META_EXPERIMENT,
    META_FINGERPRINT,
    META_RESULT,
    META_SOURCE_SWEEP,
    META_SOURCE_TRIAL,
    TRIAL_EPOCHS,
    TRIAL_SETTINGS,
    completed_result,
    read_json,
    write_json,
)
from orchestrator.sweep.schedulers import EARLY_METRIC, FINAL_KEY, TIME_ATTR
from orchestrator.sweep.space import RERUN_KEY, SEED_KEY, dotted_path
from orchestrator.train.launch import code_version, run_training
from orchestrator.train.prepare import DatasetFacts, Known, dataset_key, prepare
from orchestrator.train.summary import anchor_changes
from search_spaces import SearchSpace, TrainConfig
from snnet import AnchorSpec, SNNetError
from snnet.sampling import rule_class

__all__ = ["SweepContext", "TrialHooks", "epoch_metrics", "family_anchors", "train_family", "trial_function",
           "trial_settings"]


@dataclass(frozen=True)
class TrialHooks:
    """Code the caller of a sweep adds to every trial; it travels to the trials pickled, with the context.

    ``worker_callbacks``: :class:`~orchestrator.train.state.TrainCallback` objects or import specs for every
    training worker (:func:`orchestrator.train.launch.run_training`'s ``worker_callbacks``).
    ``after_write``: called with the trial id in the trial's process right after its catalog file is
    written (the fault tests stop the driver there, before Tune saves its state)."""

    worker_callbacks: tuple[Any, ...] = ()
    after_write: Callable[[str], None] | None = None


@dataclass(frozen=True, kw_only=True)
class SweepContext:
    """The sweep's constants every trial reads, built once by the driver (:func:`orchestrator.sweep.driver.run_sweep`)
    and bound to :func:`trial_function` with ``tune.with_parameters``: plain, picklable values."""

    #: Where a trial writes: the catalog (partition ``sweep``), Ray's run storage and the Tune experiment
    #: folder (the sweep's record and each trial's settings and early fronts beside it).
    catalog: str
    storage: str
    experiment: str
    sweep: str | None = None

    #: The search space (``SearchSpace.model_dump(mode="json")``) and its fingerprint; with
    #: ``--accept-changed-space``, the space the sweep started with and its fingerprint, for trials whose
    #: point only that one holds.
    search: dict[str, Any] | None
    fingerprint: str
    started_search: dict[str, Any] | None = None
    started_fingerprint: str | None = None

    #: What the driver checked before Ray started, so a trial builds and opens nothing again: the demo
    #: anchors' specs by name, the anchor profiles, weight checks and dataset counts (``known``), the
    #: FLOPs reference of the early front, and the code version recorded for the experiment.
    demo_specs: dict[str, AnchorSpec] = field(default_factory=dict)
    known: Known | None = None
    flops_ref: float = 0.0
    code_version: str | None = None

    #: ``--rerun-best``: each re-run trial's recorded settings by source trial id, and the source sweep.
    rerun: dict[str, dict[str, Any]] | None = None
    rerun_source_sweep: str | None = None

    #: What the caller of :func:`orchestrator.sweep.driver.run_sweep` adds to every trial.
    hooks: TrialHooks = field(default_factory=lambda: TrialHooks())


def family_anchors(family, demo_specs: dict[str, AnchorSpec]) -> list[Any]:
    """A family's anchors, in its order: a demo family's from ``demo_specs`` (pretrained on the driver)."""
    return [demo_specs[name] for name in family.anchor_names()] if family.demo else family.anchor_specs()


def _point_and_seed(search: SearchSpace, config: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """A trial's point of the search (dotted keys) and its seed under ``searcher.seeds`` (else None)."""
    params = {dotted_path(k): v for k, v in config.items() if k not in (TRIAL_INDEX, SEED_KEY, RERUN_KEY)}
    seeds = search.searcher.seeds
    if SEED_KEY in config:
        return params, int(config[SEED_KEY])
    if TRIAL_INDEX in config and seeds:
        return params, int(seeds[int(config[TRIAL_INDEX]) % len(seeds)])
    return params, None


def train_family(search: SearchSpace, config: dict[str, Any]) -> str:
    params, _ = _point_and_seed(search, config)
    return params.get("family", search.families[0].name)


def trial_settings(context: SweepContext, config: dict[str, Any], trial_id: str) -> tuple[TrainConfig, str]:
    """The ``TrainConfig`` a trial runs with, and the fingerprint of the space it came from.

    A trial that started before (its settings recorded under :data:`.record.TRIAL_SETTINGS`) keeps its
    recorded settings, so a resumed trial never mixes two spaces. A new trial resolves its point
    in the current space, or, when ``--accept-changed-space`` let an edited space resume and the
    restored searcher proposed a point the new space does not hold, in the space the sweep
    started with.
    """
    recorded = read_json(join(context.experiment, TRIAL_SETTINGS, f"{trial_id}.json"))
    if recorded is not None:
        return TrainConfig.model_validate(recorded["config"]), recorded["space_fingerprint"]
    if RERUN_KEY in config:
        return _rerun_settings(context, config[RERUN_KEY], trial_id)
    # the early front's reference point: the sweep's, so trials compare on one scale
    driver = {"hv_flops_ref": context.flops_ref} if context.flops_ref else {}
    candidates = [(context.search, context.fingerprint)]
    if context.started_search is not None:
        candidates.append((context.started_search, context.started_fingerprint))
    error: Exception | None = None
    for dump, fingerprint in candidates:
        search = SearchSpace.model_validate(dump)
        params, seed = _point_and_seed(search, config)
        try:
            train = search.trial_config(params, anchors=family_anchors(search.trial_family(params), context.demo_specs),
                                        catalog=context.catalog, trial_id=trial_id, storage_path=context.storage,
                                        **driver, **({"seed": seed} if seed is not None else {}))
        except SNNetError as e:
            error = error or e
            continue
        write_json(join(context.experiment, TRIAL_SETTINGS, f"{trial_id}.json"),
                   {"config": train.model_dump(mode="json"), "space_fingerprint": fingerprint})
        return train, fingerprint
    raise error  # type: ignore[misc]


def _rerun_settings(context: SweepContext, source: str, trial_id: str) -> tuple[TrainConfig, str]:
    """A re-run's ``TrainConfig``: its source trial's, with the ``--set`` overrides the driver applied."""
    train = TrainConfig.model_validate({**context.rerun[source]["config"], "trial_id": trial_id,
                                        "sweep": context.sweep, "catalog": context.catalog,
                                        "storage_path": context.storage})
    write_json(join(context.experiment, TRIAL_SETTINGS, f"{trial_id}.json"),
               {"config": train.model_dump(mode="json"), "space_fingerprint": context.fingerprint,
                "source_trial": source})
    return train, context.fingerprint


def trial_function(config: dict[str, Any], context: SweepContext) -> None:
    """The Tune trainable: one supernet per trial, launched as a nested TorchTrainer.

    ``config`` holds the searched parameters; ``context`` (bound with ``tune.with_parameters``)
    the sweep's constants: the validated search space, catalog, storage and FLOPs reference.
    A trial whose catalog file is complete reports the result stored there and trains nothing.
    """
    trial_id = tune.get_context().get_trial_id()
    done = completed_result(context.catalog, context.sweep, trial_id)
    if done is not None:
        print(f"[snnet] trial {trial_id} finished before: its catalog file is kept, nothing is re-run")
        tune.report(done)
        return
    train, fingerprint = trial_settings(context, config, trial_id)
    search = _trial_search(context, fingerprint)
    result, epochs = _train_trial(context, train, search, trial_id)
    report = _trial_report(context, train, search, config, result, epochs, trial_id)
    version = context.code_version or code_version()  # the driver's: one code version per experiment
    experiment = os.path.basename(context.experiment.rstrip("/"))  # the Tune experiment's name, kept by --resume
    rows = [{**row, "space_fingerprint": fingerprint, "code_version": version, "experiment": experiment}
            for row in result.rows]
    metadata = {META_FINGERPRINT: fingerprint, META_CODE: version, META_EXPERIMENT: experiment,
                META_RESULT: json.dumps(report, allow_nan=True)}
    if report.get("source_trial"):
        metadata.update({META_SOURCE_TRIAL: report["source_trial"], META_SOURCE_SWEEP: report["source_sweep"]})
    CatalogWriter(context.catalog, context.sweep).write_trial(trial_id, rows, metadata=metadata)
    if context.hooks.after_write is not None:  # e.g. a test's crash between this write and Tune's state save
        context.hooks.after_write(trial_id)
    tune.report(report)


def _trial_search(context: SweepContext, fingerprint: str) -> SearchSpace:
    """The search space a trial's settings came from (the edited one, or the one the sweep started with)."""
    return SearchSpace.model_validate(context.search if fingerprint == context.fingerprint else context.started_search)


def _train_trial(context: SweepContext, train: TrainConfig, search: SearchSpace, trial_id: str):
    """Train the trial's supernet; returns the run's result and its per-epoch early fronts
    (``{epoch: early_hv}``, recorded under :data:`.record.TRIAL_EPOCHS` by the epoch callback)."""
    history = join(context.experiment, TRIAL_EPOCHS, f"{trial_id}.json")
    callback = _epoch_reporter(list(search.searcher.objectives), history,
                               forward=search.searcher.scheduler != "none")
    # the driver's anchor profiles, weight checks and dataset counts: nothing is built or opened again
    prepared = prepare(train, progress=print, known=context.known)
    # the run's rows come back; trial_function writes the trial's one catalog file, with the fingerprint,
    # code version and the result it reports
    result = run_training(train, prepared=prepared, callbacks=[callback],
                          worker_callbacks=context.hooks.worker_callbacks)
    # the run's own record first: epochs whose reports Ray never saw (a resume from a checkpoint it had not
    # registered) are missing from the callback's file
    return result, {**(getattr(result, "early_hv", None) or {}),
                    **{int(k): v for k, v in (read_json(history) or {}).items()}}


def _train_images(train: TrainConfig, result, known: Known | None = None) -> float:
    """Images one epoch trains on (after the selection split and ``data_fraction``): the run's own
    count, else the training set less the selection split, times ``data_fraction``. The training
    set's size is the driver's count (``known``, :class:`orchestrator.train.prepare.Known`) where it has one."""
    if getattr(result, "train_images", None):
        return result.train_images
    facts = (known.datasets if known is not None else {}).get(dataset_key(train)) or DatasetFacts.read(train)
    images = facts.train_size
    return images * getattr(train, "data_fraction", 1.0) * (1.0 - getattr(train, "selection_fraction", 0.0))


def _stitches_per_step(sampling: str, options: dict) -> float:
    """Stitches one rank trains per step under the rule ``sampling`` (the rule's own count)."""
    return float(rule_class(sampling).stitches_per_step(**options))


def _pruned(train: TrainConfig, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What a pruned trial left untrained (the sweep's report says it), as plain values: its score, keep
    fraction, pruned and stitched counts; nothing for a trial that pruned nothing."""
    if train.prune_score is None:
        return {}
    return {"prune_score": train.prune_score, "prune_keep": train.prune_keep,
            "pruned_stitches": sum(bool(r.get("pruned")) for r in rows),
            "stitched_stitches": sum(len(r["anchors"]) > 1 for r in rows)}


def _trial_report(context: SweepContext, train: TrainConfig, search: SearchSpace, config: dict[str, Any], result,
                  epochs: dict[int, float], trial_id: str) -> dict[str, Any]:
    """What a finished trial reports to Tune and stores in its catalog file's metadata."""
    values = objective_values(result.rows, context.flops_ref, epochs=train.epochs,
                              train_images=_train_images(train, result, context.known),
                              stitches_per_step=_stitches_per_step(train.sampling, train.sampling_options))
    source = config.get(RERUN_KEY)
    last = epochs[max(epochs)] if epochs else None
    return {
        **values,
        **split_values(result.rows, context.flops_ref),
        "epoch": train.epochs,
        "loss": result.loss if result.loss is not None else float("nan"),
        EARLY_METRIC: last if last is not None else float("nan"),
        "early_hv_epoch1": epochs.get(1),
        "family": context.rerun[source]["family"] if source else train_family(search, config),
        "num_stitches": len(result.rows),
        **_pruned(train, result.rows),
        "anchors_kept": anchor_changes(result.rows),  # each anchor's top-1 before -> after joint training
        FINAL_KEY: f"{context.catalog.rstrip('/')}/sweep={context.sweep}/trial-{trial_id}.parquet",
        "checkpoint": result.checkpoint,
        "seed": train.seed,
        **({"source_trial": source, "source_sweep": context.rerun_source_sweep} if source else {}),
    }


def epoch_metrics(metrics: dict[str, Any], objectives: Sequence[str]) -> dict[str, Any]:
    """One per-epoch report of the nested trainer as Tune receives it: the objectives as 0
    placeholders (Tune checks every result holds the searcher's metric; the searcher never sees
    them, :class:`orchestrator.sweep.schedulers.FinalResultsOnly`), ``early_hv`` NaN when the
    worker scored no early front (a NaN never stops a trial), the stitch results left out."""
    return {**{name: 0.0 for name in objectives}, EARLY_METRIC: float("nan"),
            **{k: v for k, v in metrics.items() if k != "results"}}


def _epoch_reporter(objectives: list[str], history: str, *, forward: bool):
    """A Ray Train callback that records each epoch's ``early_hv`` in the file ``history``
    (``{epoch: early_hv}``, read back by the trial) and, when ``forward`` (a scheduler acts on
    it), passes every per-epoch report on to Tune (:func:`epoch_metrics`).

    The callback runs in Ray Train's controller, not in the trial, hence the file.
    """
    base = TuneReportCallback if forward else ray.train.UserCallback

    class EpochReport(base):  # type: ignore[misc, valid-type]
        def after_report(self, run_context, metrics, checkpoint):
            first = metrics[0] if metrics else {}
            if first.get(EARLY_METRIC) is not None and first.get(TIME_ATTR) is not None:
                seen = getattr(self, "seen", None)
                if seen is None:  # a restarted trial keeps the epochs it recorded before
                    seen = self.seen = {str(k): v for k, v in (read_json(history) or {}).items()}
                seen[str(int(first[TIME_ATTR]))] = float(first[EARLY_METRIC])
                write_json(history, seen)
            if forward:
                super().after_report(run_context, [epoch_metrics(m, objectives) for m in metrics], checkpoint)

    return EpochReport()
