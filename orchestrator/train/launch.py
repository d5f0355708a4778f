"""Driver side of one training run: validate, build the space, train on Ray, write the catalog.

:func:`run_training` is what ``python -m orchestrator.train`` calls and what each sweep trial
calls inside its Ray Tune trainable. Everything a user can get wrong (settings, model names,
checkpoint files, anchors that cannot be stitched, the dataset) is checked here before any
Ray resource is requested.

The driver loads no weights (:func:`prepare`): anchors are built with their random
initialisation for their class counts, FLOPs and parameters, checkpoints are checked from their
keys and shapes. What it found (:class:`Known`: anchor profiles, checked weights, the dataset's
counts) travels to a sweep's trials, which then build and open nothing to check; each Ray Train
worker builds its supernet once, with the weights, and opens the dataset once, to train.
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.storage import check_outside_ray_runtime, default_storage, ray_runtime_folder  # noqa: F401 - re-exported
from orchestrator.train.config import TrainConfig
from orchestrator.train.ray_hooks import _quiet_cleaner_hook, quiet_train_worker  # noqa: F401 - re-exported
from snnet import AnchorProfile, AnchorSpec, SNNetError, StitchSpace, create_anchor, profile_anchor
from snnet.anchors import Anchor, check_model_name

__all__ = ["TrainResult", "Prepared", "prepare", "DatasetFacts", "Known", "anchor_key", "dataset_key", "preflight",
           "worker_resources", "run_training", "ensure_ray", "check_storage", "check_writable", "check_resources",
           "default_storage", "check_outside_ray_runtime",
           "check_batch", "check_weights", "quiet_ray", "code_version"]


@dataclass
class TrainResult:
    config: TrainConfig
    space: StitchSpace
    rows: list[dict[str, Any]]
    catalog_file: str
    checkpoint: str
    r2: dict[str, float]
    loss: float | None = None  # the last training epoch's mean loss (None without training)
    train_images: int | None = None  # images trained on per epoch (after the selection split and data_fraction)
    hv_selection: float | None = None  # the whole space's hypervolume on the selection split (None without one)
    early_hv: dict[int, float] | None = None  # epoch -> its early-front hypervolume, across resumes (None: not scored)


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The package's version, with the git commit when the code runs from a checkout:
    ``0.1.0+g<12 hex digits>``, ``.dirty`` added when tracked files differ from that commit
    (``unknown+g...`` for a source tree that is not installed). Looked up once per process."""
    try:
        from importlib.metadata import version

        base = version("snnet-orchestrator")
    except Exception:  # noqa: BLE001 - running from a source tree that is not installed
        base = "unknown"
    import orchestrator

    root = os.path.dirname(os.path.dirname(os.path.abspath(orchestrator.__file__)))
    if not os.path.exists(os.path.join(root, ".git")):  # an installed copy, or a tree shipped without .git
        return base
    import subprocess

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "--short=12", "HEAD")
        if head.returncode != 0 or not head.stdout.strip():
            return base
        dirty = git("diff", "--quiet", "HEAD", "--").returncode == 1
    except (OSError, subprocess.SubprocessError):  # no git on this machine
        return base
    return f"{base}+g{head.stdout.strip()}" + (".dirty" if dirty else "")


#: Ray settings for a console a person reads, applied (unless the user set them) before Ray starts:
#: the preemption watcher has nothing to watch on a local instance and logs a spurious
#: ``core_worker.cc ... PreemptionWatcher`` error when it stops. Ray Train reads it from the
#: driver's environment and propagates it to its controller and workers.
QUIET_RAY_ENV = {
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
}

#: Ray's ``worker_process_setup_hook`` for this job's workers (see :func:`quiet_train_worker`, which
#: lives in a module of its own that imports only the standard library: Ray runs it in every worker
#: process of the job, the Ray Train and Ray Tune helper actors included).
WORKER_SETUP_HOOK = f"{quiet_train_worker.__module__}.{quiet_train_worker.__name__}"


def quiet_ray(stream: Any = None) -> dict[str, str]:
    """Set :data:`QUIET_RAY_ENV` and, unless ``stream`` (stdout) is a terminal or the user chose,
    ``RAY_COLOR_PREFIX=0`` (no ANSI colours in redirected output; ``NO_COLOR`` also turns them
    off); returns what was set. Call before Ray starts; a variable the user set wins."""
    import sys

    stream = stream if stream is not None else sys.stdout
    wanted = dict(QUIET_RAY_ENV)
    tty = bool(getattr(stream, "isatty", lambda: False)())
    if not tty or os.environ.get("NO_COLOR"):
        wanted["RAY_COLOR_PREFIX"] = "0"
    done = {k: v for k, v in wanted.items() if k not in os.environ}
    os.environ.update(done)
    return done


def ensure_ray(address: str | None = None, **init_kwargs: Any) -> None:
    """Connect to ``address`` (or ``$RAY_ADDRESS``) if given, else start a local Ray instance
    (``address="local"``: never a cluster some earlier ``ray start`` left registered).

    Ray's own log lines go to its session's log folder; the driver shows the workers' output
    and WARNING and above from Ray (``logging_level``).
    """
    import logging

    import ray

    if ray.is_initialized():
        return
    quiet_ray()
    init_kwargs.setdefault("logging_level", logging.WARNING)
    runtime_env = dict(init_kwargs.pop("runtime_env", None) or {})
    runtime_env.setdefault("worker_process_setup_hook", WORKER_SETUP_HOOK)
    init_kwargs["runtime_env"] = runtime_env
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        _check_reachable(address)
        try:
            with _quiet_token_notice():
                ray.init(address=address, **init_kwargs)
        except (ConnectionError, RuntimeError) as e:
            raise SNNetError(f"Could not connect to the Ray cluster at {address!r}: {e}") from None
    else:
        with _quiet_token_notice():
            ray.init(address="local", **init_kwargs)


class _quiet_token_notice:
    """Ray logs token authentication's opt-out notice (``Token authentication is enabled for this
    Ray cluster...``) as a WARNING on every start; its logger is raised to ERROR while Ray starts,
    so the console shows only real problems (the mode itself is left to Ray and ``RAY_AUTH_MODE``)."""

    name = "ray._private.authentication.authentication_token_setup"

    def __enter__(self) -> None:
        import logging

        self.logger = logging.getLogger(self.name)
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: Any) -> None:
        self.logger.setLevel(self.level)


def check_storage(path: str) -> None:
    """Ray's run storage must be a URI or a folder that exists or can be made (not below a file), and
    not inside Ray's runtime folder (:func:`check_outside_ray_runtime`)."""
    if "://" in path:
        return
    check_outside_ray_runtime(path)
    current = _nearest_existing(os.path.abspath(path))
    if os.path.exists(current) and not os.path.isdir(current):
        where = "is a file" if current == os.path.abspath(path) else f"lies below the file {current!r}"
        raise SNNetError(f"Ray's run storage (--storage) must be a folder or URI, but {path!r} {where}.")


def _nearest_existing(path: str) -> str:
    """``path`` or its nearest existing parent (the root when none exists)."""
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


PROBE_PREFIX = ".snnet-write-probe-"


def check_writable(location: str, what: str = "The catalog", flag: str = "--catalog") -> None:
    """Write and remove a probe file where ``location`` (a folder or a URI pyarrow reaches) will be
    written: the folder itself, or the nearest existing parent of a folder still to be made
    (nothing is created). Raises one :class:`SNNetError` paragraph when that fails."""
    name = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    try:
        if "://" in location and not location.startswith("file://"):
            import pyarrow.fs as pafs

            fs, path = pafs.FileSystem.from_uri(location)
            _probe_remote(fs, path.rstrip("/"), name)
            return
        folder = _nearest_existing(os.path.abspath(location.removeprefix("file://")))
        if not os.path.isdir(folder):
            return  # check_storage and CatalogWriter say "is a file" with the path
        probe = os.path.join(folder, name)
        with open(probe, "wb"):
            pass
        os.unlink(probe)
    except Exception as e:  # noqa: BLE001 - any failure to write is the location's
        reason = " ".join(str(e).split()) or type(e).__name__
        raise SNNetError(
            f"{what} location {location!r} is not writable ({reason}). Check that the folder or bucket exists "
            f"and that this machine may write there (credentials for object storage), or pass another {flag}; "
            "nothing was trained."
        ) from None


def _probe_remote(fs: Any, path: str, name: str) -> None:
    """Write and delete ``path/name``; where ``path`` does not exist yet on a filesystem with real
    folders, in its nearest existing parent instead (the first error is the one raised)."""
    import pyarrow.fs as pafs

    def probe(folder: str) -> None:
        target = f"{folder}/{name}" if folder else name
        with fs.open_output_stream(target) as out:
            out.write(b"")
        fs.delete_file(target)

    try:
        probe(path)
    except Exception as first:
        folder = path
        while folder:
            folder = folder.rsplit("/", 1)[0] if "/" in folder else ""
            try:
                kind = fs.get_file_info(folder).type
            except Exception:  # noqa: BLE001 - the parent cannot be looked at: the probe's own error says more
                raise first from None
            if kind == pafs.FileType.Directory:
                try:
                    probe(folder)
                    return
                except Exception:  # noqa: BLE001 - any failure here: the first error, on path itself, is the one raised
                    raise first from None
            if kind == pafs.FileType.File:
                break
        raise first from None


def local_resources() -> dict[str, float]:
    """What a local Ray instance would offer: this process's CPUs and the GPUs torch sees."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    gpus = 0
    try:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a missing or broken torch or CUDA install: no GPUs to offer
        gpus = 0
    return {"CPU": float(cpus), "GPU": float(gpus)}


def check_resources(config: TrainConfig, available: dict[str, float], where: str, *, what: str = "The run",
                    workers: str = "--workers {n}", lower: str = "--workers") -> None:
    """The run's ``workers x (CPUs, GPUs)`` must fit ``available`` (``{"CPU": n, "GPU": m}``), else
    Ray would wait for them forever; ``where`` says whose resources they are. ``what`` names the run,
    ``workers`` (with ``{n}``, the most workers that fit) and ``lower`` the setting that changes its
    worker count (the sweep's are ``--set resources.workers_per_trial=N``)."""
    each = worker_resources(config)
    cpus, gpus = config.workers * each["CPU"], config.workers * each.get("GPU", 0)
    have_cpu, have_gpu = float(available.get("CPU", 0)), float(available.get("GPU", 0))
    if cpus <= have_cpu and gpus <= have_gpu:
        return
    need = f"{config.workers} workers x {each['CPU']:g} CPU" + (f" and {each['GPU']:g} GPU" if gpus else "")
    most = int(have_cpu // each["CPU"]) if each["CPU"] else config.workers
    if gpus:
        most = min(most, int(have_gpu // each["GPU"]))
    raise SNNetError(
        f"{what} needs {need} each ({cpus:g} CPUs" + (f", {gpus:g} GPUs" if gpus else "")
        + f"), but {where} has {have_cpu:g} CPUs and {have_gpu:g} GPUs: "
        + (f"pass {workers.format(n=most)} or fewer" if most >= 1 else f"lower {lower} or the CPUs/GPUs per worker")
        + ", or run on a larger cluster (--address)."
    )


def check_batch(config: TrainConfig, train_size: int) -> None:
    """Every worker must get at least one full batch per epoch (``drop_last``), else training
    would run 0 steps and the catalog would hold untrained rows."""
    if config.epochs == 0:
        return
    if (train_size // config.workers) // config.batch_size >= 1:
        return
    raise SNNetError(
        f"The batch size {config.batch_size} per worker x {config.workers} workers needs at least "
        f"{config.batch_size * config.workers} training images for one step, but the training set of "
        f"{config.dataset!r} has {train_size}: lower --batch-size (at most {max(1, train_size // config.workers)}) "
        "or --workers, or use --epochs 0 to only initialise and evaluate."
    )


def check_weights(config: TrainConfig, *, models: dict[str, Any] | None = None,
                  checked: frozenset[str] | set[str] = frozenset()) -> None:
    """Every anchor's (and the teacher's) weights are reachable: :func:`snnet.anchors.check_spec`,
    without loading them; all problems in one paragraph.

    ``models``: :func:`anchor_key` -> the timm model already built without weights for that
    spec, read instead of a meta build. ``checked``: keys of specs a driver checked already
    (:attr:`Known.checked`), skipped.
    """
    from snnet.anchors import check_spec

    extra = {"img_size": config.image_size} if config.image_size else {}
    problems = []
    for spec in config.anchors or []:
        key = anchor_key(spec, config.image_size)
        if key not in checked:
            problems += check_spec(spec, model=(models or {}).get(key), **extra)
    if config.teacher is not None and anchor_key(config.teacher, None) not in checked:
        from orchestrator.train.augment import (
            teacher_problems,  # a plain timm classifier, run but never stitched: no family check
        )

        problems += teacher_problems(config.teacher)
    if problems:
        raise SNNetError(" ".join(dict.fromkeys(problems)))


def weights_line(weights: dict[str, str]) -> list[str]:
    """Console lines saying where each anchor's weights came from (a warning for random ones)."""
    from snnet.anchors import RANDOM

    lines = ["[snnet] weights: " + ", ".join(f"{name} <- {source}" for name, source in weights.items())]
    random_ones = [name for name, source in weights.items() if source == RANDOM]
    if random_ones:
        lines.append(f"warning: {', '.join(random_ones)} start from random weights (no --pretrained and no "
                     "NAME=PATH checkpoint): stitching assumes trained anchors, so expect low accuracy.")
    return lines


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not minutes, when a cluster address does not answer."""
    import socket

    if address == "auto" or address.startswith("local"):
        return
    hostport = address.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise SNNetError(f"A Ray cluster address looks like HOST:PORT or ray://HOST:PORT, got {address!r}.")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise SNNetError(
            f"The Ray cluster at {address!r} does not answer ({e}). Start one with `ray start --head`, "
            "check the address (`ray status` on the head prints it), or leave --address and RAY_ADDRESS "
            "unset to start a local Ray instance."
        ) from None


def anchor_key(spec: AnchorSpec, image_size: int | None) -> str:
    """What an anchor's build depends on (name, weights, kwargs, the run's image size), as one string."""
    import json

    return json.dumps([spec.name, spec.pretrained, spec.checkpoint, spec.kwargs, image_size], sort_keys=True,
                      default=repr)


@dataclass(frozen=True)
class DatasetFacts:
    """What the driver learns of a training set by opening it once: its class count, its size and,
    for a labelled (map-style) set, how many images each class has. The sizes of the selection
    split and of ``data_fraction``'s subset depend on those counts alone (per class, a rounded
    fraction), so a trial checks its batch size from them without opening the dataset."""

    num_classes: int
    train_size: int
    class_counts: tuple[int, ...] | None = None  # None for streamed shards (split by key, not by label)

    @classmethod
    def read(cls, config: TrainConfig) -> DatasetFacts:
        """Open ``config.dataset``'s training split (the usual errors for a bad dataset) and count."""
        import numpy as np

        from orchestrator.data import dataset_labels, dataset_size, get_datasets, num_classes

        train_ds, _ = get_datasets(config.dataset, config.image_size)
        try:
            labels = dataset_labels(train_ds)
        except TypeError:  # a dataset that does not tell its labels is not split either
            labels = None
        try:
            size = len(train_ds)
        except TypeError:  # a streamed dataset without a length
            size = dataset_size(config.dataset, "train")
        counts = None if labels is None else tuple(int(c) for c in np.unique(labels, return_counts=True)[1])
        return cls(num_classes(train_ds), size, counts)

    def training_images(self, config: TrainConfig) -> int:
        """Images one epoch trains on: the length of :func:`orchestrator.data.split_training_set`'s
        ``train`` under ``config``'s selection split and ``data_fraction``, from the class counts
        (streamed shards: the training set less :class:`orchestrator.data.KeySplit`'s expected
        held-out count, then the expected ``data_fraction`` of that, as the stream's ``len()``)."""
        if self.class_counts is None:
            from orchestrator.data import DATA_SALT, KeySplit

            size = self.train_size
            if config.selection_fraction > 0:
                size -= KeySplit(config.selection_fraction, config.seed).expected(size)
            if config.data_fraction < 1:
                size = KeySplit(config.data_fraction, config.seed, salt=DATA_SALT).expected(size)
            return size
        if config.selection_fraction <= 0 and config.data_fraction >= 1:
            return self.train_size
        import numpy as np

        from orchestrator.data.fidelity import selection_split, training_subset

        labels = np.repeat(np.arange(len(self.class_counts)), self.class_counts)
        rest, _ = selection_split(labels, config.selection_fraction, config.seed)
        return len(training_subset(labels[rest], config.data_fraction, config.seed))


@dataclass
class Known:
    """What one driver-side :func:`prepare` found, for the later prepares of the same anchors and
    data (a sweep's trials get it in their context): each anchor's profile and weights source by
    :func:`anchor_key`, the keys whose weights were checked (:func:`check_weights`), and the
    dataset's :class:`DatasetFacts` by :func:`dataset_key`. A later prepare builds and opens only
    what is not here."""

    anchors: dict[str, tuple[AnchorProfile, str]] = field(default_factory=dict)
    checked: set[str] = field(default_factory=set)
    datasets: dict[str, DatasetFacts] = field(default_factory=dict)

    def update(self, other: Known) -> Known:
        self.anchors.update(other.anchors)
        self.checked.update(other.checked)
        self.datasets.update(other.datasets)
        return self


def dataset_key(config: TrainConfig) -> str:
    return f"{config.dataset}|{config.image_size}"


class Prepared(tuple):
    """``(config, space)`` as :func:`prepare` returns it, plus ``weights``: where each anchor's
    weights came from (``{name: "hub:<id>" | "file:<path>" | "random"}``), and ``known``: what
    the prepare found (:class:`Known`), for later prepares of the same anchors and data."""

    weights: dict[str, str]
    known: Known

    def __new__(cls, config: TrainConfig, space: StitchSpace, weights: dict[str, str] | None = None,
                known: Known | None = None):
        obj = super().__new__(cls, (config, space))
        obj.weights = dict(weights or {})
        obj.known = known or Known()
        return obj


def prepare(config: TrainConfig, progress: Callable[[str], None] = print, *, known: Known | None = None,
            probed: set[str] | None = None) -> Prepared:
    """Validate ``config``, resolve the demo anchors, build and check the stitch space.

    Everything that can fail before training fails here, before Ray starts, as one
    :class:`SNNetError`: settings, model names and weights (:func:`check_weights`), the dataset
    and its class count, the batch size against the training set (:func:`check_batch`), the
    catalog and the run storage (written to, :func:`check_writable`). The cluster's resources
    are checked by :func:`preflight` (the sweep checks its own). Prints where each anchor's
    weights came from.

    No weights are loaded: anchors are built with their random initialisation
    (``create_anchor(load_weights=False)``: class counts, FLOPs and parameters do not depend on
    the values; fvcore cannot trace on the meta device), checkpoints are checked from their keys
    and shapes, and the weights line is derived from the specs (:func:`snnet.anchors.weights_source`).
    ``known`` (a sweep driver's :attr:`Prepared.known`) holds anchors, checks and dataset facts
    found before: those are not built, checked or opened again. ``probed`` (a driver's own set, never
    a trial's) holds the catalog and storage locations written to already: they are not probed again,
    and the ones probed here are added.
    """
    progress = progress or (lambda message: None)
    config = _settled(config, progress, probed)
    known = known or Known()
    found = Known(checked=set(known.checked))
    todo = [s for s in config.anchors if anchor_key(s, config.image_size) not in known.anchors]
    built = _unloaded_anchors(todo, config.image_size)
    check_weights(config, models={k: a.model for k, a in built.items() if a is not None}, checked=known.checked)
    found.checked.update(anchor_key(s, config.image_size) for s in config.anchors)
    if config.teacher is not None:
        found.checked.add(anchor_key(config.teacher, None))
    facts = known.datasets.get(dataset_key(config)) or DatasetFacts.read(config)
    found.datasets[dataset_key(config)] = facts
    for spec in config.anchors:
        key = anchor_key(spec, config.image_size)
        found.anchors[key] = known.anchors.get(key) or _profile(spec, built.get(key), config.image_size)
    profiles = [found.anchors[anchor_key(s, config.image_size)][0] for s in config.anchors]
    _check_classes(profiles, facts.num_classes)
    space = StitchSpace(profiles, config.space_config())
    check_batch(config, facts.training_images(config))
    weights = {s.name: found.anchors[anchor_key(s, config.image_size)][1] for s in config.anchors}
    for line in weights_line(weights):
        progress(line)
    return Prepared(config, space, weights, found)


def _settled(config: TrainConfig, progress: Callable[[str], None], probed: set[str] | None = None) -> TrainConfig:
    """``config`` validated, with the demo anchors and a trial id filled in; the catalog and the
    run storage checked (writable, not files) unless both are in ``probed``."""
    config.validate()
    if config.anchors is None:
        if config.dataset != "demo":
            raise SNNetError(
                f"The embedded demo anchors are trained on the 'demo' dataset; dataset {config.dataset!r} "
                "needs its own anchors (give them with --anchors)."
            )
        from orchestrator.data.demo_anchors import demo_anchor_specs

        config = config.model_copy(update={"anchors": demo_anchor_specs(progress=progress, brief=True)})
    else:
        from orchestrator.data import demo_anchors as demo  # noqa: F401 - demo anchors may be named explicitly

    config.space_config().validate()
    for spec in config.anchors:
        check_model_name(spec.name)
    if config.teacher is not None:
        check_model_name(config.teacher.name)
    if config.trial_id is None:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        config = config.model_copy(update={"trial_id": f"{stamp}-{uuid.uuid4().hex[:6]}"})
    from orchestrator.catalog import CatalogWriter
    from orchestrator.catalog._store import check_name

    check_name("trial", config.trial_id)
    locations = {f"catalog:{config.catalog}|{config.sweep}", f"storage:{config.storage_path}"}
    if probed is not None and locations <= probed:
        return config  # written to by this driver already (and the sweep name checked by its CatalogWriter)
    check_outside_ray_runtime(config.catalog, "The catalog", "--catalog")  # before a probe writes there
    check_outside_ray_runtime(config.storage_path)
    check_writable(config.catalog, "The catalog", "--catalog")
    check_writable(config.storage_path, "Ray's run storage", "--storage")
    CatalogWriter(config.catalog, config.sweep)  # a folder or URI, not a file
    check_storage(config.storage_path)
    if probed is not None:
        probed.update(locations)
    return config


def _unloaded_anchors(specs: list[AnchorSpec], image_size: int | None) -> dict[str, Anchor | None]:
    """:func:`anchor_key` -> the anchor built without weights (``None`` where it does not build:
    :func:`check_weights` then says why, in its paragraph)."""
    extra = {"img_size": image_size} if image_size else {}
    built: dict[str, Anchor | None] = {}
    for spec in specs:
        try:
            built[anchor_key(spec, image_size)] = create_anchor(spec, load_weights=False, **extra)
        except Exception:  # noqa: BLE001 - check_spec reports it with the other problems
            built[anchor_key(spec, image_size)] = None
    return built


def _profile(spec: AnchorSpec, anchor: Anchor | None, image_size: int | None) -> tuple[AnchorProfile, str]:
    """An anchor's profile and weights source (:func:`snnet.anchors.weights_source`). Only where the
    spec cannot tell its source (``pretrained`` on a model whose own builder picks a weights file)
    is the anchor built with its weights, to read :attr:`~snnet.anchors.Anchor.weights`."""
    from snnet.anchors import weights_source

    extra = {"img_size": image_size} if image_size else {}
    source = weights_source(spec)
    if source is None:
        anchor = create_anchor(spec, **extra)
        source = anchor.weights
    if anchor is None:  # it did not build without weights: this raises the build's own error
        anchor = create_anchor(spec, load_weights=False, **extra)
    return profile_anchor(anchor), source


def _check_classes(profiles: list[AnchorProfile], classes: int) -> None:
    wrong = [f"{p.name} has {p.num_classes}" for p in profiles if p.num_classes != classes]
    if wrong:
        raise SNNetError(
            f"Anchors must classify the dataset's {classes} classes, but {', '.join(wrong)} "
            "(pass --num-classes N, or set num_classes in the family's kwargs of the YAML: the classifier "
            "is then reset; or fine-tune the anchors on this dataset first)."
        )


def preflight(config: TrainConfig, address: str | None = None) -> None:
    """The cluster check of :func:`run_training`, before any resource is requested: with no
    address (and no ``$RAY_ADDRESS``, no connected Ray) against this machine's CPUs and GPUs,
    without starting Ray; otherwise connects and checks ``ray.cluster_resources()``."""
    import sys

    address = address or os.environ.get("RAY_ADDRESS")
    ray = sys.modules.get("ray")
    connected = ray is not None and ray.is_initialized()
    if not connected and (not address or address == "local"):
        check_resources(config, local_resources(), "this machine (a local Ray instance)")
        return
    ensure_ray(address)
    import ray

    check_resources(config, ray.cluster_resources(), f"the Ray cluster{f' at {address}' if address else ''}")


def worker_resources(config: TrainConfig) -> dict[str, float]:
    """What each Ray Train worker reserves: its CPUs and, with ``use_gpu``, ``gpus_per_worker`` GPUs
    (a fraction shares one GPU between workers; 0 means one whole GPU)."""
    gpus = (config.gpus_per_worker or 1) if config.use_gpu else 0
    return {"CPU": config.cpus_per_worker, **({"GPU": gpus} if gpus else {})}


def _uri(storage: str, path: str) -> str:
    """Ray's ``Checkpoint.path`` drops the scheme of remote storage: put it back."""
    scheme = storage.split("://", 1)[0] if "://" in storage else ""
    return f"{scheme}://{path}" if scheme and "://" not in path else path


def _storage(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


def _run_dir(storage: str, name: str) -> str:
    """The Ray Train run's folder: ``<storage>/<name>`` (a URI keeps its scheme)."""
    return f"{storage.rstrip('/')}/{name}" if "://" in storage else os.path.join(_storage(storage), name)


def run_training(
    config: TrainConfig,
    *,
    progress: Callable[[str], None] = print,
    prepared: Prepared | tuple[TrainConfig, StitchSpace] | None = None,
    fault_injection: dict[str, Any] | None = None,
    address: str | None = None,
    callbacks: list[Any] | None = None,
) -> TrainResult:
    """Train one supernet with Ray Train and write one catalog row per stitch.

    ``fault_injection`` (tests only): ``{"pid_dir": DIR, "hold_at_step": N}`` makes workers
    publish their pids and hold at step ``N`` on the first attempt, so a test can kill one.
    """
    prepared = prepared or prepare(config, progress)
    config, space = prepared
    weights = getattr(prepared, "weights", None) or {}
    preflight(config, address)  # workers x CPUs x GPUs fit, before any resource is requested
    import ray.train
    from ray.train.torch import TorchTrainer

    from orchestrator.catalog import CatalogWriter
    from orchestrator.train.worker import remove_unregistered, stored_checkpoints, train_loop_per_worker

    ensure_ray(address)
    name = f"{config.sweep}-{config.trial_id}"
    # A run started again under its name resumes from its newest checkpoint, registered by Ray or not
    # (orchestrator.train.worker.latest_state); the checkpoints are listed here, once, for every worker.
    stored = stored_checkpoints(_run_dir(config.storage_path, name))
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"train": config.model_dump(), "space": space.to_json(), "stored_checkpoints": stored,
                           **(fault_injection or {})},
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.workers,
            use_gpu=config.use_gpu,
            resources_per_worker=worker_resources(config),
            placement_strategy=config.placement_strategy,
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=_storage(config.storage_path),
            failure_config=ray.train.FailureConfig(max_failures=config.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            # Ray Train's console at ERROR: its WARNINGs (a transient autoscaling-request traceback
            # every few seconds on a busy machine, among others) stay in Ray's own log files.
            logging_config=ray.train.LoggingConfig(log_level="ERROR"),
            callbacks=callbacks or None,
        ),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    if stored:  # what an earlier, stopped attempt left that Ray's num_to_keep does not know of
        remove_unregistered(stored, [c.path for c, _ in result.best_checkpoints or []])
    metrics = result.metrics or {}
    if "results" not in metrics:
        raise RuntimeError(f"training ended without evaluation results (last metrics: {metrics})")
    checkpoint = _uri(config.storage_path, result.checkpoint.path) if result.checkpoint else ""
    rows = catalog_rows(config, space, metrics["results"], metrics.get("r2", {}), checkpoint,
                        latency=metrics.get("latency") or {}, device=metrics.get("device"), weights=weights,
                        selection=metrics.get("results_selection") or {},
                        selection_images=metrics.get("selection_images"), scores=metrics.get("init_scores"),
                        before=metrics.get("anchors_before"), eval_images=metrics.get("eval_images"))
    path = CatalogWriter(config.catalog, config.sweep).write_trial(config.trial_id, rows)
    return TrainResult(config, space, rows, path, checkpoint, metrics.get("r2", {}), metrics.get("loss"),
                       metrics.get("train_images"), metrics.get("hv_selection"),
                       {int(k): float(v) for k, v in (metrics.get("early_hv_history") or {}).items()} or None)


def catalog_rows(config: TrainConfig, space: StitchSpace, results: dict[str, list[float]],
                 r2: dict[str, float], checkpoint: str, *, latency: dict[str, float] | None = None,
                 device: str | None = None, weights: dict[str, str] | None = None,
                 selection: dict[str, float] | None = None, selection_images: int | None = None,
                 experiment: str | None = None,
                 scores: dict[str, dict[str, Any]] | None = None,
                 before: dict[str, list[float | None]] | None = None,
                 eval_images: int | None = None) -> list[dict[str, Any]]:
    """One catalog row per stitch; ``weights`` (anchor name -> source) fills the ``weights``
    column: ``name=source`` of each anchor on the stitch's path, joined by ``; ``; ``selection``
    (stitch id -> top-1 on the held-out selection split) fills ``top1_selection`` (null without one)
    and ``selection_images`` the split's size (0: none; None: not told). ``device`` (where the run
    measured) is stored only beside a measured latency. ``experiment`` names the run (default: Ray's run name
    ``<sweep>-<trial_id>``, which a resumed run keeps; a sweep gives its Tune experiment's name);
    ``config_fingerprint`` identifies the configuration (:func:`search_spaces.fingerprint.config_fingerprint`).
    ``scores`` (stitch id -> :meth:`snnet.scores.StitchScore.to_dict`) fills the init-score columns
    ``init_cka``, ``init_kl``, ``init_top1`` and ``score_images`` (null without them). ``before`` (an anchor's
    stitch id -> [top-1 on the evaluation split, on the selection split or None] before joint training) fills
    ``top1_before`` and ``top1_selection_before`` of the anchor rows (null on stitched rows and without it);
    ``eval_images`` is the evaluation split's size."""
    from search_spaces.fingerprint import config_fingerprint

    version = code_version()
    fingerprint = config_fingerprint(config)
    experiment = experiment or f"{config.sweep}-{config.trial_id}"
    rows = []
    for stitch in space:
        top1, top5 = results[str(stitch.stitch_id)]
        layer_r2 = [r2[k] for k in stitch.layers if k in r2]
        latency_ms = (latency or {}).get(str(stitch.stitch_id))
        score = (scores or {}).get(str(stitch.stitch_id)) or {}
        prior = list((before or {}).get(str(stitch.stitch_id)) or []) + [None, None]
        rows.append({
            "stitch_id": stitch.stitch_id,
            "anchors": list(space.names(stitch)),
            "cuts": [list(c) for c in stitch.cuts],
            "kernel_size": config.kernel_size,
            "stride": config.stride,
            "preset": space.config.preset,
            "released_deit_head": bool(getattr(space.config, "released_deit_head", False)),
            "sampling": config.sampling,
            "flops": stitch.flops,
            "params": stitch.params,
            "top1": top1,
            "top5": top5,
            "top1_selection": (selection or {}).get(str(stitch.stitch_id)),
            "selection_images": selection_images,
            "top1_before": prior[0],
            "top1_selection_before": prior[1],
            "eval_images": eval_images,
            "latency_ms": latency_ms,
            "latency_batch_size": config.latency_batch_size if latency_ms is not None else None,
            "device": (device or ("cuda" if config.use_gpu else "cpu")) if latency_ms is not None else None,
            "dataset": config.dataset,
            "checkpoint": checkpoint,
            "layers": list(stitch.layers),
            "ls_r2": min(layer_r2) if layer_r2 else None,
            "init_cka": score.get("cka"),
            "init_kl": score.get("kl"),
            "init_top1": score.get("init_top1"),
            "score_images": score.get("images"),
            "init": config.init,
            "mode": config.mode,
            "epochs": config.epochs,
            "data_fraction": float(config.data_fraction),  # fidelity: a cheap trial vs its full re-run
            "image_size": config.image_size,  # null: each family's default resolution
            "anchor_lr": float(config.anchor_lr),
            "stitch_lr": float(config.stitch_lr) if config.stitch_lr is not None else None,  # None: one lr group
            "seed": config.seed,
            "workers": config.workers,
            "code_version": version,
            "experiment": experiment,
            "config_fingerprint": fingerprint,
            "weights": "; ".join(f"{a}={weights[a]}" for a in dict.fromkeys(space.names(stitch)) if a in weights)
                       or None if weights else None,
        })
    return rows
