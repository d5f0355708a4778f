"""What the sweep checks and settles before Ray starts, so a mistake is one paragraph and nothing trains.

The catalog and storage are probed (:func:`check_locations`), one trial's workers must fit this machine
when no cluster is given (:func:`check_trial_resources`), every family's space is built once on the
driver without loading weights, and each searched setting's other values get a trial's checks
(:func:`validate_families`); what the driver found travels to the trials in their context. The
experiment folder is named or found (:func:`locate_experiment`), and once Ray is connected the number
of trials at a time is what the cluster holds (:func:`max_concurrent`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import ray
from ray import tune

from orchestrator.catalog import CatalogWriter, validate_name
from orchestrator.data.demo_anchors import demo_anchor_specs
from orchestrator.storage import check_outside_ray_runtime, default_storage, join
from orchestrator.sweep.record import check_resume, exists, latest_experiment, read_record
from orchestrator.sweep.trial import family_anchors
from orchestrator.train import checks, cluster, prepare  # called through the modules: a test's replacement applies
from search_spaces import Choice, SearchSpace, TrainConfig
from snnet import AnchorSpec, SNNetError

__all__ = ["check_experiment_name", "check_locations", "check_trial_resources", "demo_specs", "locate_experiment",
           "max_concurrent", "validate_families"]


def check_locations(search: SearchSpace, catalog: str, storage: str | None) -> tuple[str, str]:
    """Probe the catalog and storage (a probe file written and removed); absolute paths for local ones.
    No ``storage``: ``runs`` beside the catalog (:func:`orchestrator.storage.default_storage`). Neither may lie
    in Ray's runtime folder, where ``ray job submit --working-dir`` runs the driver (relative paths land there).
    The catalog is probed before a writer resolves it: a bucket that cannot be reached is one paragraph
    (``check_writable``), as for ``--storage`` and ``orchestrator.train``, not pyarrow's OSError."""
    check_outside_ray_runtime(catalog, "The catalog", "--catalog")  # lost with a `ray job submit` package
    checks.check_writable(catalog)  # a catalog nobody can write fails now, not after training
    CatalogWriter(catalog, search.name)  # a folder or URI, not a file
    if storage is None:
        storage = default_storage(catalog)
    checks.check_storage(storage)
    checks.check_writable(storage, "Ray's run storage", "--storage")
    storage = storage if "://" in storage else os.path.abspath(storage)
    catalog = catalog if "://" in catalog else os.path.abspath(catalog)
    return catalog, storage


def check_trial_resources(search: SearchSpace, address: str | None, rerun: dict[str, Any] | None = None) -> None:
    """With no cluster to join (no ``--address``, no ``$RAY_ADDRESS``, no connected Ray), one trial's
    workers x (CPUs, GPUs) must fit this machine, as :func:`orchestrator.train.cluster.preflight` checks a
    training run; checked before Ray starts. A cluster's resources are checked once connected
    (:func:`max_concurrent`). ``rerun``: each re-run trial's recorded resources are checked."""
    address = address or os.environ.get("RAY_ADDRESS")
    if (address and address != "local") or ray.is_initialized():
        return
    if rerun:
        configs = [TrainConfig.model_validate(t["config"]) for t in rerun["trials"].values()]
    else:
        res = search.resources
        configs = [TrainConfig(workers=res.workers_per_trial, cpus_per_worker=res.cpus_per_worker,
                               use_gpu=res.gpus_per_worker > 0, gpus_per_worker=res.gpus_per_worker)]
    available = cluster.local_resources()
    for config in configs:
        cluster.check_resources(config, available, "this machine (a local Ray instance)", what="A trial of the sweep",
                        workers="--set resources.workers_per_trial={n}", lower="resources.workers_per_trial")


def validate_families(search: SearchSpace, catalog: str, storage: str, progress: Callable[[str], None],
                      started: SearchSpace | None = None, *, values: bool = True) -> tuple[dict[str, Any], float]:
    """Build every family's space once on the driver, before Ray starts, without loading weights:
    stitchability, model names, checkpoints and data are checked, and the FLOPs reference is fixed.
    With ``values`` each searched setting's other values get a trial's checks too (:func:`_check_values`).
    Returns the FLOPs reference and what was found: ``known`` (anchor profiles, weight checks, the dataset's
    counts: :class:`orchestrator.train.prepare.Known`) and ``demo_specs``, for the trials' context, so a trial
    builds no anchor and opens no dataset to check. The demo anchors that the demo families of ``search``
    (and of ``started``, the space an ``--accept-changed-space`` sweep began with) stitch are pretrained or
    found in the cache here, once."""
    flops_ref = 0.0
    known, probed = prepare.Known(), set()
    specs = demo_specs([search] + ([started] if started is not None else []), progress)
    for family in search.families:
        first = search.first_point(family.name)
        driver = {"catalog": catalog, "storage_path": storage, "anchors": family_anchors(family, specs)}
        prepared = prepare.prepare(search.trial_config(first, **driver), progress=progress, known=known, probed=probed)
        known.update(prepared.known)
        space = prepared.space
        flops_ref = max(flops_ref, max(p.flops for p in space.profiles))
        progress(f"[snnet] family {family.name}: {', '.join(space.anchor_names)} "
                 f"({len(space)} stitches at the first k/s choice)")
        if values:
            _check_values(search, family.name, first, driver, known, probed)
    return {"demo_specs": specs, "known": known}, flops_ref


def _other_values(param, first: Any) -> list[Any]:
    """A searched setting's values besides ``first``: each choice, a range's low and high ends."""
    out: list[Any] = []
    for value in (param.values if isinstance(param, Choice) else (param.low, param.high)):
        if not any(_same(value, v) for v in [first, *out]):
            out.append(value)
    return out


def _same(a: Any, b: Any) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _check_values(search: SearchSpace, family: str, first: dict[str, Any], driver: dict[str, Any],
                  known: prepare.Known, probed: set[str]) -> None:
    """Give each searched setting's other values (:func:`_other_values`), one at a time from the family's
    ``first`` point, the checks a trial's :func:`orchestrator.train.prepare.prepare` makes (a window deeper than the
    anchors, a batch larger than the training set, ...), quietly; ``known`` and ``probed`` (the first
    point's findings) mean no anchor is rebuilt, no dataset reopened, no location probed again. A value
    that fails is one paragraph naming the family and ``setting=value``, before Ray starts."""
    for key, param in search.parameters().items():
        if key == "family":  # every family is validated at its own first point
            continue
        for value in _other_values(param, first[key]):
            try:
                config = search.trial_config({**first, key: value}, **driver)
                known.update(prepare.prepare(config, progress=None, known=known, probed=probed).known)
            except SNNetError as e:
                raise SNNetError(f"Search space {search.name!r}, family {family}: {key}={_shown(value)} cannot run "
                                 f"(checked with every other searched setting at its first value): {e}") from None


def _shown(value: Any) -> str:
    """A searched value as the YAML writes it (``30``, ``balanced``, ``0.001``)."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value, default=str)


def demo_specs(spaces: Sequence[SearchSpace], progress: Callable[[str], None]) -> dict[str, AnchorSpec]:
    """``{name: AnchorSpec}`` of the pretrained demo anchors that the demo families of ``spaces`` stitch."""
    names = list(dict.fromkeys(n for s in spaces for f in s.families if f.demo for n in f.anchor_names()))
    if not names:
        return {}
    return {spec.name: spec for spec in demo_anchor_specs(anchors=names, progress=progress, brief=True)}


def check_experiment_name(name: str, storage: str, *, resume: bool) -> str:
    """``--name`` is one folder name under ``--storage`` (no separators, no ``..``); without
    ``--resume`` it must not exist yet."""
    try:
        validate_name("experiment", name)
    except SNNetError as e:
        raise SNNetError(f"--name {name!r} is not a folder name under --storage: {e}") from None
    if not resume and exists(join(storage, name)):
        raise SNNetError(
            f"A sweep named {name!r} exists already in storage {storage!r}. Continue it with --resume "
            f"(--resume --name {name}), or give a new --name to start another sweep."
        )
    return name


def locate_experiment(search: SearchSpace, storage: str, name: str | None, resume: bool,
                      accept_changed_space: bool, rerun: bool = False) -> tuple[str, dict[str, Any] | None]:
    """The experiment folder, and (resuming an edited space the user accepted) the record it started with."""
    if name is not None:
        check_experiment_name(name, storage, resume=resume)
    if not resume:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        return join(storage, name or f"{search.name}-sweep-{stamp}"), None
    experiment = join(storage, name) if name else latest_experiment(storage, search.name)
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


def max_concurrent(search: SearchSpace) -> int:
    """Trials at a time: as many as the connected Ray cluster holds now (at least one must fit)."""
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
