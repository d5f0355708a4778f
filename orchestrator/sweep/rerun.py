"""Re-running the best trials of a finished sweep at full fidelity (``--rerun-best N``).

The N best finished trials of the source experiment (ranked by the space's objectives) re-run with
their recorded settings and the ``--set`` overrides (more epochs, the whole training set, ...), as a
new sweep ``<name>_rerun`` whose catalog rows name the trial each re-ran.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from orchestrator.catalog import validate_name
from orchestrator.storage import join
from orchestrator.sweep.preflight import check_experiment_name
from orchestrator.sweep.record import (
    TRIAL_SETTINGS,
    completed_result,
    exists,
    finished_trials,
    latest_experiment,
    read_json,
)
from orchestrator.sweep.report import rank_trials
from search_spaces import SearchSpace, TrainConfig
from search_spaces.loader import parse
from snnet import SNNetError

__all__ = ["RERUN_SUFFIX", "rerun_plan", "rerun_space", "rerun_updates"]

#: Suffix of the catalog partition (and sweep name) that ``--rerun-best`` writes to.
RERUN_SUFFIX = "_rerun"
#: ``--set resources.X`` -> the ``TrainConfig`` field it sets.
_RESOURCE_FIELDS = {"workers_per_trial": "workers", "cpus_per_worker": "cpus_per_worker",
                    "gpus_per_worker": "gpus_per_worker"}


def rerun_updates(overrides: Sequence[str]) -> dict[str, Any]:
    """The ``TrainConfig`` fields ``--set`` overrides change in a re-run: ``training.*``, ``dataset``,
    ``image_size`` and ``resources.*`` (``searcher.*`` and ``name`` belong to the re-run sweep itself).
    A re-run keeps its source trial's stitch space and family, so other paths are refused."""
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


def rerun_plan(search: SearchSpace, catalog: str, storage: str, best: int, source: str | None,
               overrides: Sequence[str]) -> dict[str, Any]:
    """Which trials ``--rerun-best N`` re-runs, and with what settings.

    The source is the experiment ``source`` under ``storage`` (default: the latest of the space's
    sweep); its finished trials (catalog file complete) are ranked by the space's objectives
    (:func:`orchestrator.sweep.report.rank_trials`) and the first ``best`` keep their recorded settings
    with the ``--set`` overrides applied (:func:`rerun_updates`).
    """
    if best < 1:
        raise SNNetError(f"--rerun-best must be >= 1, got {best}.")
    experiment = join(storage, check_experiment_name(source, storage, resume=True)) if source else \
        latest_experiment(storage, search.name)
    if not experiment or not exists(experiment):
        raise SNNetError(f"Nothing to re-run: no sweep '{search.name}' in storage {storage!r}"
                         + (f" named {source!r}" if source else "")
                         + ". Run the sweep first, or name it with --rerun-from.")
    finished = []
    for trial_id in finished_trials(catalog, search.name, experiment):
        result = completed_result(catalog, search.name, trial_id)
        settings = read_json(join(experiment, TRIAL_SETTINGS, f"{trial_id}.json"))
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


def rerun_space(search: SearchSpace) -> SearchSpace:
    """The re-run sweep's space: the source's, named ``<name>_rerun``, with nothing searched by Tune
    (each trial re-runs a source trial's recorded settings), no seeds and no early stopping."""
    name = validate_name("sweep", search.name + RERUN_SUFFIX)
    searcher = search.searcher.model_copy(update={"scheduler": "none", "seeds": None, "num_samples": 1})
    return search.model_copy(update={"name": name, "searcher": searcher})
