"""``python -m orchestrator.sweep``: search SN-Net's design space with Ray Tune + Optuna.

Each trial is a Ray Tune *function trainable* that launches a Ray Train ``TorchTrainer``
(the nesting Ray Train V2 supports): it trains one stitched supernet for the trial's
family, window kernel size k, step s, sampling rule and learning rates, evaluates every
stitch, writes one Parquet file into the catalog partition ``sweep=<name>``, and reports the
objectives of :mod:`orchestrator.catalog.objectives` (the front's hypervolume; NSGA-II can trade it
against training cost). With no arguments it runs the embedded demo end to end.

The driver connects to the Ray cluster it is submitted to (``ray job submit``) or starts a
local instance. Trials need 0 CPUs of their own; their training workers ask for theirs, and
``max_concurrent_trials`` is derived from what the cluster holds so nested trainers never
starve each other. ``--resume`` continues an interrupted sweep from its Tune storage.

What a resume relies on: the sweep records its space's fingerprint, the code version and the
space in ``snnet-sweep.json`` beside the experiment, and ``--resume`` with an edited space stops
before Ray starts unless ``--accept-changed-space`` says so; each started trial records its
resolved settings in ``snnet-trials/<trial_id>.json``; and a trial's catalog file, written once
and atomically with its reported result in the metadata, is the record of completion: a trial
that finds its file complete reports that result and trains nothing. A space with nothing to
search runs one trial per seed without a searcher; ``searcher.seeds`` repeats configurations.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from orchestrator.cli import ArgumentParser, cli, format_flops, interrupt_hint, plural
from snnet import SNNetError

__all__ = ["RECORD", "check_resume", "completed_result", "epoch_metrics", "main", "read_record", "rerun_plan",
           "rerun_updates", "run_sweep", "summarize_results", "trial_function", "tune_metric", "tune_search_space"]

#: The sweep's record beside its Tune experiment: space fingerprint, code version, the space itself.
RECORD = "snnet-sweep.json"
#: Folder beside the experiment holding each started trial's resolved settings (``<trial_id>.json``).
TRIAL_SETTINGS = "snnet-trials"
#: Catalog file metadata keys the sweep writes (besides the schema version).
META_FINGERPRINT, META_CODE, META_EXPERIMENT, META_RESULT = (
    "snnet.space_fingerprint", "snnet.code_version", "snnet.experiment", "snnet.sweep_result")
#: Test-only: when set (to anything) on the driver, each trial kills the driver right after its catalog write.
KILL_AFTER_WRITE_ENV = "SNNET_TEST_KILL_DRIVER_AFTER_CATALOG_WRITE"
#: Test-only: JSON of ``run_training``'s ``fault_injection`` (``{"pid_dir": DIR, "hold_at_step": N}``), set on
#: the driver, for every trial's training workers (on a cluster too: it travels in the trials' context).
TRAIN_FAULTS_ENV = "SNNET_TEST_TRAIN_FAULTS"
#: Config key of a trial's seed when the space repeats configurations over ``searcher.seeds``.
SEED_KEY = "training__seed"
#: Config key of a re-run's source trial (``--rerun-best``): the trial whose settings it re-runs.
RERUN_KEY = "rerun__source"
#: Suffix of the catalog partition (and sweep name) that ``--rerun-best`` writes to.
RERUN_SUFFIX = "_rerun"
#: Folder beside the experiment holding each trial's per-epoch early front (``<trial_id>.json``).
TRIAL_EPOCHS = "snnet-epochs"
#: Catalog file metadata keys linking a re-run to the trial it re-ran.
META_SOURCE_TRIAL, META_SOURCE_SWEEP = "snnet.source_trial", "snnet.source_sweep"


def _key(path: str) -> str:
    return path.replace(".", "__")


def _unkey(key: str) -> str:
    return key.replace("__", ".")


def tune_search_space(search) -> dict[str, Any]:
    """Tune distributions for every searched parameter of a search space."""
    from ray import tune

    from search_spaces import Choice, FloatRange, IntRange

    grid = search.searcher.algorithm == "grid"
    out: dict[str, Any] = {}
    for path, dist in search.parameters().items():
        if isinstance(dist, Choice):
            values = list(dist.values)
            out[_key(path)] = tune.grid_search(values) if grid else tune.choice(values)
        elif isinstance(dist, FloatRange):
            out[_key(path)] = (tune.loguniform if dist.log else tune.uniform)(dist.low, dist.high)
        elif isinstance(dist, IntRange) and grid:
            out[_key(path)] = tune.grid_search(dist.grid_values())
        elif isinstance(dist, IntRange):
            out[_key(path)] = (tune.lograndint(dist.low, dist.high + 1) if dist.log
                               else tune.randint(dist.low, dist.high + 1))
        else:  # pragma: no cover - the schema admits only the three kinds
            raise TypeError(f"unknown distribution {dist!r}")
    seeds = search.searcher.seeds
    if seeds is not None and _searcher_free(search):  # a grid over seeds repeats each configuration
        out[SEED_KEY] = tune.grid_search(list(seeds))
    return out


def _searcher_free(search) -> bool:
    """True when Tune's own variant generator runs the sweep: grid search, or nothing searched."""
    return search.searcher.algorithm == "grid" or not search.parameters()


def num_trials(search) -> int:
    """How many trials the sweep runs (``num_samples`` for a searcher; grid points x seeds for a grid)."""
    seeds = len(search.searcher.seeds or (0,))
    if not search.parameters():
        return seeds
    if search.searcher.algorithm == "grid":
        return search.searcher.num_samples * (search.grid_size() or 1) * seeds
    return search.searcher.num_samples * seeds


def _max_epochs(search) -> int:
    """The most epochs any trial of the space trains (``training.epochs``, searched or fixed)."""
    from search_spaces import Choice, IntRange, TrainConfig

    param = search.parameters().get("training.epochs")
    if isinstance(param, Choice):
        return max(int(v) for v in param.values)
    if isinstance(param, IntRange):
        return int(param.high)
    return int(search.fixed().get("training.epochs", TrainConfig.model_fields["epochs"].default))


def _scheduler(search):
    """The early-stopping scheduler ``searcher.scheduler`` names, acting on ``early_hv``
    (:mod:`orchestrator.sweep.schedulers`); None for ``none``."""
    if search.searcher.scheduler == "none":
        return None
    from orchestrator.sweep.schedulers import make_scheduler

    return make_scheduler(search.searcher.scheduler, _max_epochs(search))


def _searcher(search, metrics: list[str], modes: list[str]):
    """The search algorithm: None (Tune's variant generator) for grid search, random search and a
    fully fixed space; Optuna otherwise, repeated over ``searcher.seeds`` when given."""
    algorithm, seeds = search.searcher.algorithm, search.searcher.seeds
    if _searcher_free(search) or (algorithm == "random" and seeds is None):
        return None  # Tune's BasicVariantGenerator (a fixed space: one trial per seed, nothing to search)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from orchestrator.sweep.searchers import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" line per sweep
    sampler = make_sampler(algorithm, search.searcher.seed)
    if len(metrics) == 1:
        optuna_search = OptunaSearch(metric=metrics[0], mode=modes[0], sampler=sampler)
    else:
        optuna_search = OptunaSearch(metric=metrics, mode=modes, sampler=sampler)
    searcher = _seed_repeater(optuna_search, len(seeds)) if seeds is not None else optuna_search
    if search.searcher.scheduler == "none":
        return searcher
    from orchestrator.sweep.schedulers import FinalResultsOnly  # per-epoch placeholders stay away from Optuna

    return FinalResultsOnly(searcher)


def _seed_repeater(searcher, repeat: int):
    """``searcher`` with each suggestion repeated ``repeat`` times (:class:`.searchers.SeedRepeater`)."""
    from orchestrator.sweep.searchers import SeedRepeater

    return SeedRepeater(searcher, repeat=repeat, set_index=True)


def _stitches_per_step(sampling: str, options: dict) -> float:
    """Stitches one rank trains per step under the rule ``sampling`` (the rule's own count)."""
    from snnet.sampling import rule_class

    return float(rule_class(sampling).stitches_per_step(**options))


def _point_and_seed(search, config: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """A trial's point of the search (dotted keys) and its seed under ``searcher.seeds`` (else None)."""
    from ray.tune.search.repeater import TRIAL_INDEX

    params = {_unkey(k): v for k, v in config.items() if k not in (TRIAL_INDEX, SEED_KEY, RERUN_KEY)}
    seeds = search.searcher.seeds
    if SEED_KEY in config:
        return params, int(config[SEED_KEY])
    if TRIAL_INDEX in config and seeds:
        return params, int(seeds[int(config[TRIAL_INDEX]) % len(seeds)])
    return params, None


def trial_settings(ctx: dict[str, Any], config: dict[str, Any], trial_id: str):
    """The ``TrainConfig`` a trial runs with, and the fingerprint of the space it came from.

    A trial that started before (its settings recorded under :data:`TRIAL_SETTINGS`) keeps its
    recorded settings, so a resumed trial never mixes two spaces. A new trial resolves its point
    in the current space, or, when ``--accept-changed-space`` let an edited space resume and the
    restored searcher proposed a point the new space does not hold, in the space the sweep
    started with.
    """
    from search_spaces import SearchSpace, TrainConfig

    recorded = _read_json(_join(ctx["experiment"], TRIAL_SETTINGS, f"{trial_id}.json"))
    if recorded is not None:
        return TrainConfig.model_validate(recorded["config"]), recorded["space_fingerprint"]
    if RERUN_KEY in config:
        return _rerun_settings(ctx, config[RERUN_KEY], trial_id)
    # the early front's reference point: the sweep's, so trials compare on one scale
    driver = {"hv_flops_ref": ctx["flops_ref"]} if ctx.get("flops_ref") else {}
    candidates = [(ctx["search"], ctx["fingerprint"])]
    if ctx.get("started_search") is not None:
        candidates.append((ctx["started_search"], ctx["started_fingerprint"]))
    error: Exception | None = None
    for dump, fingerprint in candidates:
        search = SearchSpace.model_validate(dump)
        params, seed = _point_and_seed(search, config)
        try:
            train = search.trial_config(params, anchors=family_anchors(search.trial_family(params), ctx["demo_specs"]),
                                        catalog=ctx["catalog"], trial_id=trial_id, storage_path=ctx["storage"],
                                        **driver, **({"seed": seed} if seed is not None else {}))
        except SNNetError as e:
            error = error or e
            continue
        _write_json(_join(ctx["experiment"], TRIAL_SETTINGS, f"{trial_id}.json"),
                    {"config": train.model_dump(mode="json"), "space_fingerprint": fingerprint})
        return train, fingerprint
    raise error  # type: ignore[misc]


def _rerun_settings(ctx: dict[str, Any], source: str, trial_id: str):
    """A re-run's ``TrainConfig``: its source trial's, with the ``--set`` overrides the driver applied."""
    from search_spaces import TrainConfig

    train = TrainConfig.model_validate({**ctx["rerun"][source]["config"], "trial_id": trial_id, "sweep": ctx["sweep"],
                                        "catalog": ctx["catalog"], "storage_path": ctx["storage"]})
    _write_json(_join(ctx["experiment"], TRIAL_SETTINGS, f"{trial_id}.json"),
                {"config": train.model_dump(mode="json"), "space_fingerprint": ctx["fingerprint"],
                 "source_trial": source})
    return train, ctx["fingerprint"]


def completed_result(catalog: str, sweep: str, trial_id: str) -> dict[str, Any] | None:
    """The result a finished trial reported, read from its catalog file; None when it has not finished.

    The catalog is the record of completion: a trial's file is written atomically, once, with
    the reported result in its metadata, so a trial found here is never trained again.
    """
    from orchestrator.catalog import trial_metadata

    meta = trial_metadata(catalog, sweep, trial_id)
    if not meta or META_RESULT not in meta:
        return None
    try:
        return json.loads(meta[META_RESULT])
    except ValueError:
        return None


def trial_function(config: dict[str, Any], ctx: dict[str, Any]) -> None:
    """The Tune trainable: one supernet per trial, launched as a nested TorchTrainer.

    ``config`` holds the searched parameters; ``ctx`` (bound with ``tune.with_parameters``)
    the sweep's constants: the validated search space, catalog, storage and FLOPs reference.
    A trial whose catalog file is complete reports the result stored there and trains nothing.
    """
    from ray import tune

    from orchestrator.catalog import CatalogWriter
    from orchestrator.train.launch import code_version

    trial_id = tune.get_context().get_trial_id()
    done = completed_result(ctx["catalog"], ctx["sweep"], trial_id)
    if done is not None:
        print(f"[snnet] trial {trial_id} finished before: its catalog file is kept, nothing is re-run")
        tune.report(done)
        return
    train, fingerprint = trial_settings(ctx, config, trial_id)
    search = _trial_search(ctx, fingerprint)
    result, epochs = _train_trial(ctx, train, search, trial_id)
    report = _trial_report(ctx, train, search, config, result, epochs, trial_id)
    version = ctx.get("code_version") or code_version()  # the driver's: one code version per experiment
    experiment = os.path.basename(ctx["experiment"].rstrip("/"))  # the Tune experiment's name, kept by --resume
    rows = [{**row, "space_fingerprint": fingerprint, "code_version": version, "experiment": experiment}
            for row in result.rows]
    metadata = {META_FINGERPRINT: fingerprint, META_CODE: version, META_EXPERIMENT: experiment,
                META_RESULT: json.dumps(report, allow_nan=True)}
    if report.get("source_trial"):
        metadata.update({META_SOURCE_TRIAL: report["source_trial"], META_SOURCE_SWEEP: report["source_sweep"]})
    CatalogWriter(ctx["catalog"], ctx["sweep"]).write_trial(trial_id, rows, metadata=metadata)
    if ctx.get("kill_driver_after_write"):  # test-only: the window between this write and Tune's state save
        import signal

        os.kill(int(ctx["kill_driver_after_write"]), signal.SIGKILL)
    tune.report(report)


def _trial_search(ctx: dict[str, Any], fingerprint: str):
    """The search space a trial's settings came from (the edited one, or the one the sweep started with)."""
    from search_spaces import SearchSpace

    return SearchSpace.model_validate(ctx["search"] if fingerprint == ctx["fingerprint"] else ctx["started_search"])


def _train_trial(ctx: dict[str, Any], train, search, trial_id: str):
    """Train the trial's supernet; returns the run's result and its per-epoch early fronts
    (``{epoch: early_hv}``, recorded under :data:`TRIAL_EPOCHS` by the epoch callback)."""
    import tempfile

    from orchestrator.train.launch import run_training
    from orchestrator.train.prepare import prepare

    history = _join(ctx["experiment"], TRIAL_EPOCHS, f"{trial_id}.json")
    callback = _epoch_reporter(list(search.searcher.objectives), history,
                               forward=search.searcher.scheduler != "none")
    with tempfile.TemporaryDirectory(prefix="snnet-trial-rows-") as staging:
        # run_training writes its rows to a staging catalog; the trial's one catalog file is
        # written by trial_function, once, with the fingerprint, code version and the result it reports.
        staged = train.model_copy(update={"catalog": staging})
        # the driver's anchor profiles, weight checks and dataset counts: nothing is built or opened again
        prepared = prepare(staged, progress=print, known=ctx.get("known"))
        result = run_training(staged, prepared=prepared, callbacks=[callback], fault_injection=ctx.get("train_faults"))
    # the run's own record first: epochs whose reports Ray never saw (a resume from a checkpoint it had not
    # registered) are missing from the callback's file
    return result, {**(getattr(result, "early_hv", None) or {}),
                    **{int(k): v for k, v in (_read_json(history) or {}).items()}}


def _train_images(train, result, known=None) -> float:
    """Images one epoch trains on (after the selection split and ``data_fraction``): the run's own
    count, else the training set less the selection split, times ``data_fraction``. The training
    set's size is the driver's count (``known``, :class:`orchestrator.train.prepare.Known`) where it has one."""
    if getattr(result, "train_images", None):
        return result.train_images
    from orchestrator.train.prepare import DatasetFacts, dataset_key

    facts = (known.datasets if known is not None else {}).get(dataset_key(train)) or DatasetFacts.read(train)
    images = facts.train_size
    return images * getattr(train, "data_fraction", 1.0) * (1.0 - getattr(train, "selection_fraction", 0.0))


def _trial_report(ctx: dict[str, Any], train, search, config: dict[str, Any], result, epochs: dict[int, float],
                  trial_id: str) -> dict[str, Any]:
    """What a finished trial reports to Tune and stores in its catalog file's metadata."""
    from orchestrator.catalog.objectives import objective_values, split_values
    from orchestrator.sweep.schedulers import EARLY_METRIC, FINAL_KEY
    from orchestrator.train.summary import anchor_changes

    values = objective_values(result.rows, ctx["flops_ref"], epochs=train.epochs,
                              train_images=_train_images(train, result, ctx.get("known")),
                              stitches_per_step=_stitches_per_step(train.sampling, train.sampling_options))
    source = config.get(RERUN_KEY)
    last = epochs[max(epochs)] if epochs else None
    return {
        **values,
        **split_values(result.rows, ctx["flops_ref"]),
        "epoch": train.epochs,
        "loss": result.loss if result.loss is not None else float("nan"),
        EARLY_METRIC: last if last is not None else float("nan"),
        "early_hv_epoch1": epochs.get(1),
        "family": ctx["rerun"][source]["family"] if source else train_family(search, config),
        "num_stitches": len(result.rows),
        "anchors_kept": anchor_changes(result.rows),  # each anchor's top-1 before -> after joint training
        FINAL_KEY: f"{ctx['catalog'].rstrip('/')}/sweep={ctx['sweep']}/trial-{trial_id}.parquet",
        "checkpoint": result.checkpoint,
        "seed": train.seed,
        **({"source_trial": source, "source_sweep": ctx["rerun_source_sweep"]} if source else {}),
    }


def train_family(search, config: dict[str, Any]) -> str:
    params, _ = _point_and_seed(search, config)
    return params.get("family", search.families[0].name)


def epoch_metrics(metrics: dict[str, Any], objectives: Sequence[str]) -> dict[str, Any]:
    """One per-epoch report of the nested trainer as Tune receives it: the objectives as 0
    placeholders (Tune checks every result holds the searcher's metric; the searcher never sees
    them, :class:`orchestrator.sweep.schedulers.FinalResultsOnly`), ``early_hv`` NaN when the
    worker scored no early front (a NaN never stops a trial), the stitch results left out."""
    from orchestrator.sweep.schedulers import EARLY_METRIC

    return {**{name: 0.0 for name in objectives}, EARLY_METRIC: float("nan"),
            **{k: v for k, v in metrics.items() if k != "results"}}


def _epoch_reporter(objectives: list[str], history: str, *, forward: bool):
    """A Ray Train callback that records each epoch's ``early_hv`` in the file ``history``
    (``{epoch: early_hv}``, read back by the trial) and, when ``forward`` (a scheduler acts on
    it), passes every per-epoch report on to Tune (:func:`epoch_metrics`).

    The callback runs in Ray Train's controller, not in the trial, hence the file.
    """
    import ray.train
    from ray.tune.integration.ray_train import TuneReportCallback

    from orchestrator.sweep.schedulers import EARLY_METRIC, TIME_ATTR

    base = TuneReportCallback if forward else ray.train.UserCallback

    class EpochReport(base):  # type: ignore[misc, valid-type]
        def after_report(self, run_context, metrics, checkpoint):
            first = metrics[0] if metrics else {}
            if first.get(EARLY_METRIC) is not None and first.get(TIME_ATTR) is not None:
                seen = getattr(self, "seen", None)
                if seen is None:  # a restarted trial keeps the epochs it recorded before
                    seen = self.seen = {str(k): v for k, v in (_read_json(history) or {}).items()}
                seen[str(int(first[TIME_ATTR]))] = float(first[EARLY_METRIC])
                _write_json(history, seen)
            if forward:
                super().after_report(run_context, [epoch_metrics(m, objectives) for m in metrics], checkpoint)

    return EpochReport()


# -- the sweep's record beside its Tune experiment ---------------------------------------------------
def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if "://" in base else os.path.join(base, *parts)


def _fs(path: str):
    """(pyarrow filesystem, path on it) for a URI; (None, path) for a local path."""
    if "://" not in path:
        return None, path
    from pyarrow import fs as pafs

    return pafs.FileSystem.from_uri(path)


def _exists(path: str) -> bool:
    fs, where = _fs(path)
    if fs is None:
        return os.path.exists(where)
    from pyarrow import fs as pafs

    return fs.get_file_info(where).type != pafs.FileType.NotFound


def _read_json(path: str) -> Any:
    """The JSON file at ``path`` (local or URI), or None when absent or unreadable."""
    fs, where = _fs(path)
    try:
        if fs is None:
            with open(where, "rb") as f:
                data = f.read()
        else:
            with fs.open_input_stream(where) as f:
                data = f.read()
        return json.loads(data)
    except (OSError, ValueError):
        return None


def _write_json(path: str, value: Any) -> None:
    from orchestrator.storage import atomic_write

    data = json.dumps(value, indent=1, sort_keys=True, allow_nan=True).encode()
    fs, where = _fs(path)
    if fs is None:
        os.makedirs(os.path.dirname(where), exist_ok=True)
    else:
        fs.create_dir(where.rsplit("/", 1)[0], recursive=True)
    atomic_write(path, lambda out: out.write(data))


def sweep_record(search) -> dict[str, Any]:
    """What a sweep records beside its experiment (:data:`RECORD`)."""
    from orchestrator.train.launch import code_version
    from search_spaces.fingerprint import space_document, space_fingerprint

    return {"sweep": search.name, "space_fingerprint": space_fingerprint(search), "code_version": code_version(),
            "space": space_document(search)}


def read_record(experiment: str) -> dict[str, Any] | None:
    return _read_json(_join(experiment, RECORD))


def check_resume(record: dict[str, Any] | None, search, *, accept_changed_space: bool, experiment: str) -> bool:
    """Compare the space a sweep started with (its record) with the one ``--resume`` was given.

    Returns True when they differ and the user accepted it; raises one paragraph naming the
    changed dotted fields when they differ and ``accept_changed_space`` is False.
    """
    from search_spaces.fingerprint import changed_fields, space_document, space_fingerprint

    if record is None or record.get("space_fingerprint") == space_fingerprint(search):
        return False
    changed = changed_fields(record.get("space", {}), space_document(search))
    if accept_changed_space:
        return True
    shown = ", ".join(changed[:12]) + (f" and {len(changed) - 12} more" if len(changed) > 12 else "")
    raise SNNetError(
        f"The sweep in {experiment} started with a different search space: {shown or 'its fingerprint'} "
        f"changed (fingerprint {record.get('space_fingerprint')} then, {space_fingerprint(search)} now). "
        "Resume with the space and --set overrides it started with, start a new sweep (leave out --resume, "
        "or give a new --name), or pass --accept-changed-space to continue anyway: trials that already "
        "started keep the settings they started with, new trials take the edited space where it holds "
        "their point, and each trial's catalog rows say what it ran with."
    )


def finished_trials(catalog: str, sweep: str, experiment: str) -> list[str]:
    """Trial ids of this experiment whose catalog file is complete (for the Ctrl-C summary)."""
    from orchestrator.catalog import trial_metadata

    folder = _join(experiment, TRIAL_SETTINGS)
    fs, where = _fs(folder)
    try:
        if fs is None:
            names = os.listdir(where)
        else:
            from pyarrow import fs as pafs

            names = [i.base_name for i in fs.get_file_info(pafs.FileSelector(where))]
    except (OSError, ValueError):
        return []
    ids = sorted(n[:-5] for n in names if n.endswith(".json"))
    return [t for t in ids if META_RESULT in (trial_metadata(catalog, sweep, t) or {})]


def check_experiment_name(name: str, storage: str, *, resume: bool) -> str:
    """``--name`` is one folder name under ``--storage`` (no separators, no ``..``); without
    ``--resume`` it must not exist yet."""
    from orchestrator.catalog import validate_name

    try:
        validate_name("experiment", name)
    except SNNetError as e:
        raise SNNetError(f"--name {name!r} is not a folder name under --storage: {e}") from None
    if not resume and _exists(_join(storage, name)):
        raise SNNetError(
            f"A sweep named {name!r} exists already in storage {storage!r}. Continue it with --resume "
            f"(--resume --name {name}), or give a new --name to start another sweep."
        )
    return name


def _validate_families(search, catalog: str, storage: str, progress, started=None, *,
                       values: bool = True) -> tuple[dict[str, Any], float]:
    """Build every family's space once on the driver, before Ray starts, without loading weights:
    stitchability, model names, checkpoints and data are checked, and the FLOPs reference is fixed.
    With ``values`` each searched setting's other values get a trial's checks too (:func:`_check_values`).
    What was found (anchor profiles, weight checks, the dataset's counts: :class:`orchestrator.train.prepare.Known`)
    goes into the trials' context as ``known``, so a trial builds no anchor and opens no dataset to check.
    The demo anchors that the demo families of ``search`` (and of ``started``, the space an
    ``--accept-changed-space`` sweep began with) stitch are pretrained or found in the cache here, once."""
    from orchestrator.train.prepare import Known, prepare

    flops_ref = 0.0
    known, probed = Known(), set()
    demo_specs = _demo_specs([search] + ([started] if started is not None else []), progress)
    for family in search.families:
        first = search.first_point(family.name)
        driver = {"catalog": catalog, "storage_path": storage, "anchors": family_anchors(family, demo_specs)}
        prepared = prepare(search.trial_config(first, **driver), progress=progress, known=known, probed=probed)
        known.update(prepared.known)
        space = prepared.space
        flops_ref = max(flops_ref, max(p.flops for p in space.profiles))
        progress(f"[snnet] family {family.name}: {', '.join(space.anchor_names)} "
                 f"({len(space)} stitches at the first k/s choice)")
        if values:
            _check_values(search, family.name, first, driver, known, probed)
    return {"demo_specs": demo_specs, "known": known}, flops_ref


def _other_values(param, first: Any) -> list[Any]:
    """A searched setting's values besides ``first``: each choice, a range's low and high ends."""
    from search_spaces import Choice

    out: list[Any] = []
    for value in (param.values if isinstance(param, Choice) else (param.low, param.high)):
        if not any(_same(value, v) for v in [first, *out]):
            out.append(value)
    return out


def _same(a: Any, b: Any) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _check_values(search, family: str, first: dict[str, Any], driver: dict[str, Any], known, probed: set[str]) -> None:
    """Give each searched setting's other values (:func:`_other_values`), one at a time from the family's
    ``first`` point, the checks a trial's :func:`orchestrator.train.prepare.prepare` makes (a window deeper than the
    anchors, a batch larger than the training set, ...), quietly; ``known`` and ``probed`` (the first
    point's findings) mean no anchor is rebuilt, no dataset reopened, no location probed again. A value
    that fails is one paragraph naming the family and ``setting=value``, before Ray starts."""
    from orchestrator.train.prepare import prepare

    for key, param in search.parameters().items():
        if key == "family":  # every family is validated at its own first point
            continue
        for value in _other_values(param, first[key]):
            try:
                config = search.trial_config({**first, key: value}, **driver)
                known.update(prepare(config, progress=None, known=known, probed=probed).known)
            except SNNetError as e:
                raise SNNetError(f"Search space {search.name!r}, family {family}: {key}={_shown(value)} cannot run "
                                 f"(checked with every other searched setting at its first value): {e}") from None


def _shown(value: Any) -> str:
    """A searched value as the YAML writes it (``30``, ``balanced``, ``0.001``)."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value, default=str)


def _demo_specs(spaces: Sequence[Any], progress) -> dict[str, Any]:
    """``{name: AnchorSpec}`` of the pretrained demo anchors that the demo families of ``spaces`` stitch."""
    names = list(dict.fromkeys(n for s in spaces for f in s.families if f.demo for n in f.anchor_names()))
    if not names:
        return {}
    from orchestrator.data.demo_anchors import demo_anchor_specs

    return {spec.name: spec for spec in demo_anchor_specs(anchors=names, progress=progress, brief=True)}


def family_anchors(family, demo_specs: dict[str, Any]) -> list[Any]:
    """A family's anchors, in its order: a demo family's from ``demo_specs`` (:func:`_demo_specs`)."""
    return [demo_specs[name] for name in family.anchor_names()] if family.demo else family.anchor_specs()


def _max_concurrent(search) -> int:
    import ray

    res = search.resources
    cpus = ray.cluster_resources().get("CPU", 0)
    gpus = ray.cluster_resources().get("GPU", 0)
    per_cpu = res.workers_per_trial * res.cpus_per_worker
    fits = int(cpus // per_cpu) if per_cpu else 1
    if res.gpus_per_worker:
        fits = min(fits, int(gpus // (res.workers_per_trial * res.gpus_per_worker)))
    if fits < 1:
        raise SNNetError(
            f"A trial needs {res.workers_per_trial} workers x {res.cpus_per_worker} CPU"
            + (f" and {res.gpus_per_worker} GPU" if res.gpus_per_worker else "")
            + f" each, but the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs now: lower workers_per_trial, "
            "add nodes, or, on an autoscaling cluster, pass --max-concurrent-trials N so trials wait for nodes."
        )
    return fits


def _latest_experiment(storage: str, sweep: str) -> str | None:
    if "://" in storage:
        return None
    if not os.path.isdir(storage):
        return None
    names = sorted(n for n in os.listdir(storage) if n.startswith(f"{sweep}-sweep-"))
    return os.path.join(storage, names[-1]) if names else None


# -- re-running the best trials at full fidelity (--rerun-best) ----------------------------------
#: ``--set resources.X`` -> the ``TrainConfig`` field it sets.
_RESOURCE_FIELDS = {"workers_per_trial": "workers", "cpus_per_worker": "cpus_per_worker",
                    "gpus_per_worker": "gpus_per_worker"}


def rerun_updates(overrides: Sequence[str]) -> dict[str, Any]:
    """The ``TrainConfig`` fields ``--set`` overrides change in a re-run: ``training.*``, ``dataset``,
    ``image_size`` and ``resources.*`` (``searcher.*`` and ``name`` belong to the re-run sweep itself).
    A re-run keeps its source trial's stitch space and family, so other paths are refused."""
    from search_spaces import TrainConfig
    from search_spaces.loader import parse

    updates: dict[str, Any] = {}
    for text in overrides:
        keys, value = parse(text)
        if len(keys) == 2 and keys[0] == "training" and keys[1] in TrainConfig.model_fields:
            updates[keys[1]] = value
        elif keys in (["dataset"], ["image_size"]):
            updates[keys[0]] = value
        elif len(keys) == 2 and keys[0] == "resources" and keys[1] in _RESOURCE_FIELDS:
            updates[_RESOURCE_FIELDS[keys[1]]] = value
            if keys[1] == "gpus_per_worker":
                updates["use_gpu"] = isinstance(value, (int, float)) and value > 0
        elif keys[0] not in ("searcher", "name"):
            raise SNNetError(f"--rerun-best re-runs each trial with its own stitch space and family, so --set {text} "
                             "cannot apply: a re-run takes training.*, dataset, image_size and resources.* settings.")
    return updates


def rerun_plan(search, catalog: str, storage: str, best: int, source: str | None,
               overrides: Sequence[str]) -> dict[str, Any]:
    """Which trials ``--rerun-best N`` re-runs, and with what settings.

    The source is the experiment ``source`` under ``storage`` (default: the latest of the space's
    sweep); its finished trials (catalog file complete) are ranked by the space's objectives
    (:func:`orchestrator.train.summary.rank_trials`) and the first ``best`` keep their recorded settings
    with the ``--set`` overrides applied (:func:`rerun_updates`).
    """
    from orchestrator.train.summary import rank_trials
    from search_spaces import TrainConfig

    if best < 1:
        raise SNNetError(f"--rerun-best must be >= 1, got {best}.")
    experiment = _join(storage, check_experiment_name(source, storage, resume=True)) if source else \
        _latest_experiment(storage, search.name)
    if not experiment or not _exists(experiment):
        raise SNNetError(f"Nothing to re-run: no sweep '{search.name}' in storage {storage!r}"
                         + (f" named {source!r}" if source else "")
                         + ". Run the sweep first, or name it with --rerun-from.")
    finished = []
    for trial_id in finished_trials(catalog, search.name, experiment):
        result = completed_result(catalog, search.name, trial_id)
        settings = _read_json(_join(experiment, TRIAL_SETTINGS, f"{trial_id}.json"))
        if result is not None and settings is not None:
            finished.append({**result, "trial_id": trial_id, "settings": settings["config"]})
    if not finished:
        raise SNNetError(f"Nothing to re-run: no trial of {experiment} finished (catalog {catalog!r}, "
                         f"partition sweep={search.name}).")
    updates = rerun_updates(overrides)
    chosen = rank_trials(finished, list(search.searcher.objectives))[:best]
    trials = {t["trial_id"]: {
        "config": TrainConfig.model_validate({**t["settings"], **updates}).model_dump(mode="json"),
        "family": t.get("family"), "hypervolume": t.get("hypervolume")} for t in chosen}
    return {"source_experiment": os.path.basename(experiment.rstrip("/")), "source_sweep": search.name,
            "trials": trials}


def rerun_space(search):
    """The re-run sweep's space: the source's, named ``<name>_rerun``, with nothing searched by Tune
    (each trial re-runs a source trial's recorded settings), no seeds and no early stopping."""
    from orchestrator.catalog import validate_name

    name = validate_name("sweep", search.name + RERUN_SUFFIX)
    searcher = search.searcher.model_copy(update={"scheduler": "none", "seeds": None, "num_samples": 1})
    return search.model_copy(update={"name": name, "searcher": searcher})


# -- the sweep, step by step -----------------------------------------------------------------------
def _load_search(space: str, overrides: Sequence[str], num_samples: int | None, max_concurrent_trials: int | None,
                 address: str | None):
    """The validated space with ``--set`` and ``--num-samples`` applied; a bad flag stops here."""
    from search_spaces import load_space

    search = load_space(space, overrides=overrides)
    if address or os.environ.get("RAY_ADDRESS"):
        from orchestrator.train.cluster import check_reachable

        check_reachable(address or os.environ["RAY_ADDRESS"])
    if max_concurrent_trials is not None and max_concurrent_trials < 1:
        raise SNNetError(f"--max-concurrent-trials must be >= 1, got {max_concurrent_trials}.")
    if num_samples is not None:
        if num_samples < 1:
            raise SNNetError(f"--num-samples must be >= 1, got {num_samples}.")
        search = search.model_copy(update={"searcher": search.searcher.model_copy(update={"num_samples": num_samples})})
    return search


def _check_locations(search, catalog: str, storage: str | None) -> tuple[str, str]:
    """Probe the catalog and storage (a probe file written and removed); absolute paths for local ones.
    No ``storage``: ``runs`` beside the catalog (:func:`orchestrator.storage.default_storage`). Neither may lie
    in Ray's runtime folder, where ``ray job submit --working-dir`` runs the driver (relative paths land there).
    The catalog is probed before a writer resolves it: a bucket that cannot be reached is one paragraph
    (``check_writable``), as for ``--storage`` and ``orchestrator.train``, not pyarrow's OSError."""
    from orchestrator.catalog import CatalogWriter
    from orchestrator.storage import check_outside_ray_runtime
    from orchestrator.train.checks import check_storage, check_writable

    check_outside_ray_runtime(catalog, "The catalog", "--catalog")  # lost with a `ray job submit` package
    check_writable(catalog)  # a catalog nobody can write fails now, not after training
    CatalogWriter(catalog, search.name)  # a folder or URI, not a file
    if storage is None:
        from orchestrator.storage import default_storage

        storage = default_storage(catalog)
    check_storage(storage)
    check_writable(storage, "Ray's run storage", "--storage")
    storage = storage if "://" in storage else os.path.abspath(storage)
    catalog = catalog if "://" in catalog else os.path.abspath(catalog)
    return catalog, storage


def _check_trial_resources(search, address: str | None, rerun: dict[str, Any] | None = None) -> None:
    """With no cluster to join (no ``--address``, no ``$RAY_ADDRESS``, no connected Ray), one trial's
    workers x (CPUs, GPUs) must fit this machine, as :func:`orchestrator.train.cluster.preflight` checks a
    training run; checked before Ray starts. A cluster's resources are checked once connected
    (:func:`_max_concurrent`). ``rerun``: each re-run trial's recorded resources are checked."""
    from orchestrator.train.cluster import check_resources, local_resources
    from search_spaces import TrainConfig

    address = address or os.environ.get("RAY_ADDRESS")
    ray = sys.modules.get("ray")
    if (address and address != "local") or (ray is not None and ray.is_initialized()):
        return
    if rerun:
        configs = [TrainConfig.model_validate(t["config"]) for t in rerun["trials"].values()]
    else:
        res = search.resources
        configs = [TrainConfig(workers=res.workers_per_trial, cpus_per_worker=res.cpus_per_worker,
                               use_gpu=res.gpus_per_worker > 0, gpus_per_worker=res.gpus_per_worker)]
    available = local_resources()
    for config in configs:
        check_resources(config, available, "this machine (a local Ray instance)", what="A trial of the sweep",
                        workers="--set resources.workers_per_trial={n}", lower="resources.workers_per_trial")


def _locate_experiment(search, storage: str, name: str | None, resume: bool,
                       accept_changed_space: bool, rerun: bool = False) -> tuple[str, dict[str, Any] | None]:
    """The experiment folder, and (resuming an edited space the user accepted) the record it started with."""
    if name is not None:
        check_experiment_name(name, storage, resume=resume)
    if not resume:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        return _join(storage, name or f"{search.name}-sweep-{stamp}"), None
    from ray import tune

    experiment = _join(storage, name) if name else _latest_experiment(storage, search.name)
    if not experiment or not tune.Tuner.can_restore(experiment):
        raise SNNetError(
            f"Nothing to resume: no earlier sweep '{search.name}' in storage {storage!r}"
            + (f" named {name!r}" if name else "") + ". Run without --resume to start one."
        )
    started = read_record(experiment)
    if not rerun and (started or {}).get("rerun"):  # else check_resume would offer to continue it as its source
        source = started["rerun"].get("source_sweep", "its source sweep")
        raise SNNetError(f"The sweep in {experiment} is a re-run of {source}: resume it with --rerun-best N "
                         "--resume and the --set overrides it started with.")
    if not check_resume(started, search, accept_changed_space=accept_changed_space, experiment=experiment):
        started = None
    return experiment, started


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


def trial_lines(objectives: Sequence[str], total: int | None = None):
    """A Tune callback that prints one line to stdout when a trial starts, finishes or fails; ``total``: the
    trials the sweep runs, when known. Tune pickles it with the experiment: it holds only plain values, and
    looks ``print`` up when it prints (Ray replaces ``builtins.print`` in a driver, so a reference to the
    original one taken earlier no longer pickles)."""
    from ray import tune

    class TrialLines(tune.Callback):
        def __init__(self) -> None:
            self.started: dict[str, float] = {}
            self.done = 0

        def on_trial_start(self, iteration, trials, trial, **info) -> None:
            self.started[trial.trial_id] = time.perf_counter()
            count = f"{len(trials)} of {total}" if total else f"{len(trials)} so far"
            print(f"[snnet] trial {trial.trial_id} started ({count}): {_short_config(trial.config)}", flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self.done += 1
            result = trial.last_result or {}
            took = time.perf_counter() - self.started.get(trial.trial_id, time.perf_counter())
            values = ", ".join(f"{m} {result[m]:.4g}" for m in objectives if isinstance(result.get(m), (int, float)))
            best = result.get("best_top1")
            print(f"[snnet] trial {trial.trial_id} done in {took:.0f}s ({self.done} finished): "
                  + (values or "no objective reported")
                  + (f", best top-1 {best:.1f}%" if isinstance(best, (int, float)) else "")
                  + (f", {result['num_stitches']} stitches in the catalog" if result.get("num_stitches") else ""),
                  flush=True)

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            print(f"[snnet] trial {trial.trial_id} failed ({_short_config(trial.config)}); its error is in "
                  f"{trial.path}/error.txt; Tune retries it up to the failure limit", flush=True)

    return TrialLines()


def _new_tuner(search, trainable, experiment: str, storage: str, concurrent: int, rerun: dict[str, Any] | None,
               fingerprint: str, progress):
    """A fresh Tuner: Tune's variant generator or Optuna, the scheduler, the trial count."""
    from ray import tune

    from orchestrator.catalog.objectives import OBJECTIVES

    metrics = list(search.searcher.objectives)
    modes = [OBJECTIVES[m] for m in metrics]
    fixed, seeds = not search.parameters(), search.searcher.seeds
    search_alg = None if rerun else _searcher(search, metrics, modes)
    if rerun:
        param_space, samples = {RERUN_KEY: tune.grid_search(list(rerun["trials"]))}, 1
    else:
        param_space = tune_search_space(search)
        samples = 1 if fixed else (search.searcher.num_samples
                                   * (len(seeds) if seeds and not _searcher_free(search) else 1))
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


def run_sweep(space: str = "demo", *, catalog: str = "catalog", storage: str | None = None,
              num_samples: int | None = None, resume: bool = False, name: str | None = None,
              address: str | None = None, max_concurrent_trials: int | None = None,
              overrides: Sequence[str] = (), accept_changed_space: bool = False,
              resume_command: Sequence[str] | None = None, rerun_best: int | None = None,
              rerun_from: str | None = None, progress=print) -> dict[str, Any]:
    """Run (or resume) a sweep; returns a summary dict (experiment path, trials, catalog, and
    ``objectives``, ``pareto``, ``early_hv_spearman``: see :func:`summarize_results`).

    ``storage``: Ray's run storage; ``None``: ``runs`` beside the catalog
    (:func:`orchestrator.storage.default_storage`).
    ``overrides``: ``dotted.path=value`` settings of the space (``training.epochs=1``), as ``--set``.
    ``accept_changed_space``: let ``resume`` continue with a space that differs from the one the
    sweep started with. ``resume_command``: the command line Ctrl-C prints to continue.
    ``rerun_best``: re-run the N best finished trials of the experiment ``rerun_from`` (default:
    the space's latest) with ``overrides``, as a new sweep ``<name>_rerun`` (:func:`rerun_plan`).
    """
    from search_spaces import SearchSpace

    search = source = _load_search(space, overrides, num_samples, max_concurrent_trials, address)
    catalog, storage = _check_locations(search, catalog, storage)
    if rerun_best is not None:
        search = rerun_space(source)
    experiment, started = _locate_experiment(search, storage, name, resume, accept_changed_space,
                                             rerun=rerun_best is not None)
    record = sweep_record(search)
    if not resume:  # a result is counted once: name the experiments of this space the partition holds already
        from orchestrator.catalog._repeats import repeat_note

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
    _check_trial_resources(search, address, rerun)  # one trial fits this machine, before Ray starts
    started_space = SearchSpace.model_validate(started["space"]) if started else None
    ctx, flops_ref = _validate_families(search, catalog, storage, progress, started_space,  # before Ray starts
                                        values=rerun is None)  # a re-run runs its trials' recorded values only
    if started is not None:
        progress(f"[snnet] --accept-changed-space: resuming {os.path.basename(experiment)} with an edited search "
                 f"space ({record['space_fingerprint']}, started with {started['space_fingerprint']})")
    else:
        _write_json(_join(experiment, RECORD), record)
    from orchestrator.train.cluster import ensure_ray  # torch comes with it: a bad space or flag is answered before

    ensure_ray(address)

    from ray import tune

    ctx.update(search=search.model_dump(mode="json"), fingerprint=record["space_fingerprint"],
               started_search=started["space"] if started else None,
               started_fingerprint=started["space_fingerprint"] if started else None,
               sweep=search.name, catalog=catalog, storage=storage, experiment=experiment, flops_ref=flops_ref,
               code_version=record["code_version"],
               rerun=(rerun or {}).get("trials"), rerun_source_sweep=(rerun or {}).get("source_sweep"),
               kill_driver_after_write=os.getpid() if os.environ.get(KILL_AFTER_WRITE_ENV) else None,
               train_faults=json.loads(os.environ[TRAIN_FAULTS_ENV]) if os.environ.get(TRAIN_FAULTS_ENV) else None)
    # A trial only waits on its nested TorchTrainer: it holds no CPU (a bundle may not be empty,
    # so it asks for a little memory), leaving every core to the training workers.
    trainable = tune.with_resources(tune.with_parameters(trial_function, ctx=ctx), {"cpu": 0, "memory": 2**26})
    concurrent = max_concurrent_trials or search.searcher.max_concurrent_trials or _max_concurrent(search)
    if resume:
        progress(f"[snnet] resuming sweep from {experiment}")
        tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = _new_tuner(search, trainable, experiment, storage, concurrent, rerun, record["space_fingerprint"],
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
        import shlex

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


def summarize_results(search, results, catalog: str) -> dict[str, Any]:
    """The sweep's summary: each trial (:func:`_trials`), the objectives, the Pareto set of finished
    trials over them, and ``early_hv_spearman`` (:func:`orchestrator.train.summary.early_hv_spearman`)."""
    from orchestrator.train.summary import early_hv_spearman, pareto_trials

    trials = _trials(results)
    finished = [t for t in trials if "error" not in t and not t.get("stopped_early")]
    objectives = list(search.searcher.objectives)
    return {"sweep": search.name, "experiment": results.experiment_path, "catalog": catalog, "trials": trials,
            "objectives": objectives, "pareto": pareto_trials(finished, objectives),
            "early_hv_spearman": early_hv_spearman(finished)}


#: What the summary keeps of a finished trial's result.
_SUMMARY_KEYS = ("trial_id", "family", "hypervolume", "train_cost", "best_top1", "num_stitches", "catalog_file",
                 "seed", "objective_split", "hypervolume_selection", "hypervolume_eval", "best_top1_eval",
                 "early_hv", "early_hv_epoch1", "epoch", "source_trial", "source_sweep", "anchors_kept")


def _trials(results) -> list[dict[str, Any]]:
    """One summary per trial of Tune's results: its objectives and settings, whether a scheduler
    stopped it early (its last result is a per-epoch one), or its error."""
    from orchestrator.sweep.schedulers import FINAL_KEY

    trials = []
    for r in results:
        metrics = r.metrics or {}
        if r.error or not metrics or "hypervolume" not in metrics:
            trials.append({"trial_id": metrics.get("trial_id") or getattr(r, "path", ""), "error": str(r.error)})
            continue
        config = {_unkey(k): v for k, v in r.config.items() if k not in ("__trial_index__", SEED_KEY, RERUN_KEY)} \
            | ({"seed": metrics["seed"]} if metrics.get("seed") is not None else {})
        if FINAL_KEY not in metrics:
            trials.append({"trial_id": metrics.get("trial_id"), "stopped_early": True, "epoch": metrics.get("epoch"),
                           "early_hv": metrics.get("early_hv"), "config": config})
            continue
        trials.append({k: metrics.get(k) for k in _SUMMARY_KEYS} | {"config": config})
    return trials


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m orchestrator.sweep", description=__doc__.splitlines()[0])
    p.add_argument("--space", default="demo", help="shipped space name (see search_spaces/) or a YAML path")
    p.add_argument("--catalog", default="catalog", help="catalog folder or URI (s3://, gs://)")
    p.add_argument("--storage", default=None,
                   help="Ray Tune/Train storage (the experiment, every trial's checkpoints): folder or URI; "
                        "default: runs beside the catalog, in the same folder or bucket")
    p.add_argument("--num-samples", type=int, default=None, help="override the space's number of trials")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="override a setting of the space by its dotted path (training.epochs=1, dataset=/data/x, "
                        "resources.workers_per_trial=1, space.kernel_size=[2,3]); repeatable")
    p.add_argument("--dataset", default=None, help="shortcut for --set dataset=DATASET")
    p.add_argument("--epochs", type=int, default=None, help="shortcut for --set training.epochs=N")
    p.add_argument("--resume", action="store_true", help="continue the latest interrupted sweep of this space")
    p.add_argument("--name", default=None,
                   help="experiment name, one folder under --storage (default: <sweep>-sweep-<time>)")
    p.add_argument("--accept-changed-space", action="store_true",
                   help="with --resume: continue although the space differs from the one the sweep started with")
    p.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS or local)")
    p.add_argument("--max-concurrent-trials", type=int, default=None,
                   help="trials at a time (default: the space's, else what the cluster holds now)")
    p.add_argument("--rerun-best", type=int, default=None, metavar="N",
                   help="re-run the N best finished trials of the space's latest sweep (or --rerun-from) with the "
                        "--set overrides (e.g. training.epochs=50 training.data_fraction=1.0), as new trials of the "
                        "sweep <name>_rerun; each records the trial it re-ran")
    p.add_argument("--rerun-from", default=None, metavar="EXPERIMENT",
                   help="with --rerun-best: the experiment (folder under --storage) whose trials are re-run")
    return p.parse_args(argv)


def overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` settings, then the shortcuts ``--dataset`` and ``--epochs`` (which win)."""
    extra = [f"dataset={json.dumps(args.dataset)}"] if args.dataset is not None else []  # a YAML string
    extra += [f"training.epochs={args.epochs}"] if args.epochs is not None else []
    return [*args.overrides, *extra]


def _without_resume(argv: Sequence[str]) -> list[str]:
    """The command line minus ``--resume``, ``--accept-changed-space`` and ``--name N`` (the hint adds them)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--resume", "--accept-changed-space"):
            pass
        elif a == "--name":
            skip = True
        elif not a.startswith("--name="):
            out.append(a)
    return out


@cli()
def main(argv: Sequence[str] | None = None) -> int:
    """Sweep; a user's mistake is one ``error:`` paragraph and exit 2 (:func:`orchestrator.cli.run_cli`)."""
    args = parse_args(argv)
    start = time.perf_counter()
    if args.accept_changed_space and not args.resume:
        raise SNNetError("--accept-changed-space only applies with --resume (a new sweep records its own space).")
    if args.rerun_from is not None and args.rerun_best is None:
        raise SNNetError("--rerun-from only applies with --rerun-best N (it names the sweep whose best trials re-run).")
    given = list(sys.argv[1:] if argv is None else argv)
    command = ["python", "-m", "orchestrator.sweep", *_without_resume(given)]
    summary = run_sweep(args.space, catalog=args.catalog, storage=args.storage, num_samples=args.num_samples,
                        resume=args.resume, name=args.name, address=args.address,
                        max_concurrent_trials=args.max_concurrent_trials, overrides=overrides(args),
                        accept_changed_space=args.accept_changed_space, resume_command=command,
                        rerun_best=args.rerun_best, rerun_from=args.rerun_from)
    from orchestrator.train.summary import sweep_report

    print(sweep_report(summary))
    try:
        from orchestrator.catalog import query

        front = query(summary["catalog"], sweep=summary["sweep"], pareto=True)
        if len(front):
            print("Pareto front of the sweep (top-1 against FLOPs):")
            for _, row in front.iterrows():
                cuts = " ".join(f"[{j},{k}]" for j, k in row["cuts"]) or "-"
                print(f"  {format_flops(row['flops'], 'M', digits=2, suffix='FLOPs'):>16}  top-1 {row['top1']:5.1f}%  "
                      f"{' > '.join(row['anchors'])} {cuts}  (trial {row['trial_id']}, stitch {row['stitch_id']})")
    except Exception as e:  # noqa: BLE001 - the sweep itself succeeded; say why the front is missing
        print(f"(could not read the Pareto front: {e})")
    print(f"\nquery it:  python -m orchestrator.catalog query {summary['catalog']} --sweep {summary['sweep']} --pareto")
    print(f"time: {time.perf_counter() - start:.0f}s")
    return 0 if all("error" not in t for t in summary["trials"]) else 1


if __name__ == "__main__":
    sys.exit(main())
