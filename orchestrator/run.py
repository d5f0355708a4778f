"""Driver side of one training run: validate, build the space, train on Ray, write the catalog.

:func:`run_training` is what ``python -m orchestrator.train`` calls and what each sweep trial
calls inside its Ray Tune trainable. Everything a user can get wrong (settings, model names,
checkpoint files, anchors that cannot be stitched, the dataset) is checked here before any
Ray resource is requested.
"""

from __future__ import annotations

import datetime as _dt
import os
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from snnet import SNNetError, StitchSpace, create_anchor, profile_anchor
from snnet.anchors import check_model_name

from .config import TrainConfig

__all__ = ["TrainResult", "prepare", "worker_resources", "run_training", "ensure_ray", "check_storage", "code_version"]


@dataclass
class TrainResult:
    config: TrainConfig
    space: StitchSpace
    rows: list[dict[str, Any]]
    catalog_file: str
    checkpoint: str
    r2: dict[str, float]
    loss: float | None = None  # the last training epoch's mean loss (None without training)


def code_version() -> str:
    try:
        from importlib.metadata import version

        return version("snnet-orchestrator")
    except Exception:  # noqa: BLE001 - running from a source tree that is not installed
        return "unknown"


def ensure_ray(address: str | None = None, **init_kwargs: Any) -> None:
    """Connect to ``address`` (or ``$RAY_ADDRESS``) if given, else start a local Ray instance."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, **init_kwargs)
        except (ConnectionError, RuntimeError) as e:
            raise SNNetError(f"Could not connect to the Ray cluster at {address!r}: {e}") from None
    else:
        ray.init(**init_kwargs)


def check_storage(path: str) -> None:
    """Ray's run storage must be a URI or a folder that exists or can be made (not below a file)."""
    if "://" in path:
        return
    current = os.path.abspath(path)
    while not os.path.exists(current):
        parent = os.path.dirname(current)
        if parent == current:
            return
        current = parent
    if not os.path.isdir(current):
        where = "is a file" if current == os.path.abspath(path) else f"lies below the file {current!r}"
        raise SNNetError(f"Ray's run storage (--storage) must be a folder or URI, but {path!r} {where}.")


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


def prepare(config: TrainConfig, progress: Callable[[str], None] = print) -> tuple[TrainConfig, StitchSpace]:
    """Validate ``config``, resolve the demo anchors, build and check the stitch space."""
    config.validate()
    if config.anchors is None:
        if config.dataset != "demo":
            raise SNNetError(
                f"The embedded demo anchors are trained on the 'demo' dataset; dataset {config.dataset!r} "
                "needs its own anchors (give them with --anchors)."
            )
        from .demo import demo_anchor_specs

        config = config.model_copy(update={"anchors": demo_anchor_specs(progress=progress)})
    else:
        from . import demo  # noqa: F401  - demo anchors may be named explicitly

    config.space_config().validate()
    for spec in config.anchors:
        check_model_name(spec.name)
    if config.teacher is not None:
        check_model_name(config.teacher.name)
    from .data import get_datasets, num_classes

    train_ds, _ = get_datasets(config.dataset, config.image_size)
    extra = {"img_size": config.image_size} if config.image_size else {}
    anchors = [create_anchor(spec, **extra) for spec in config.anchors]
    classes = num_classes(train_ds)
    wrong = [f"{a.name} has {a.num_classes}" for a in anchors if a.num_classes != classes]
    if wrong:
        raise SNNetError(
            f"Anchors must classify the dataset's {classes} classes, but {', '.join(wrong)} "
            "(build them with num_classes set, or fine-tune them on this dataset first)."
        )
    space = StitchSpace([profile_anchor(a) for a in anchors], config.space_config())
    if config.trial_id is None:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        config = config.model_copy(update={"trial_id": f"{stamp}-{uuid.uuid4().hex[:6]}"})
    from .catalog import CatalogWriter
    from .catalog._store import check_name

    check_name("trial", config.trial_id)
    CatalogWriter(config.catalog, config.sweep)  # checks the catalog path before training
    check_storage(config.storage_path)
    return config, space


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


def run_training(
    config: TrainConfig,
    *,
    progress: Callable[[str], None] = print,
    prepared: tuple[TrainConfig, StitchSpace] | None = None,
    fault_injection: dict[str, Any] | None = None,
    address: str | None = None,
    callbacks: list[Any] | None = None,
) -> TrainResult:
    """Train one supernet with Ray Train and write one catalog row per stitch.

    ``fault_injection`` (tests only): ``{"pid_dir": DIR, "hold_at_step": N}`` makes workers
    publish their pids and hold at step ``N`` on the first attempt, so a test can kill one.
    """
    config, space = prepared or prepare(config, progress)
    import ray.train
    from ray.train.torch import TorchTrainer

    from .catalog import CatalogWriter
    from .training import train_loop_per_worker

    ensure_ray(address)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"train": config.model_dump(), "space": space.to_json(), **(fault_injection or {})},
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.workers,
            use_gpu=config.use_gpu,
            resources_per_worker=worker_resources(config),
            placement_strategy=config.placement_strategy,
        ),
        run_config=ray.train.RunConfig(
            name=f"{config.sweep}-{config.trial_id}",
            storage_path=_storage(config.storage_path),
            failure_config=ray.train.FailureConfig(max_failures=config.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            callbacks=callbacks or None,
        ),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    metrics = result.metrics or {}
    if "results" not in metrics:
        raise RuntimeError(f"training ended without evaluation results (last metrics: {metrics})")
    checkpoint = _uri(config.storage_path, result.checkpoint.path) if result.checkpoint else ""
    rows = catalog_rows(config, space, metrics["results"], metrics.get("r2", {}), checkpoint,
                        latency=metrics.get("latency") or {}, device=metrics.get("device"))
    path = CatalogWriter(config.catalog, config.sweep).write_trial(config.trial_id, rows)
    return TrainResult(config, space, rows, path, checkpoint, metrics.get("r2", {}), metrics.get("loss"))


def catalog_rows(config: TrainConfig, space: StitchSpace, results: dict[str, list[float]],
                 r2: dict[str, float], checkpoint: str, *, latency: dict[str, float] | None = None,
                 device: str | None = None) -> list[dict[str, Any]]:
    version = code_version()
    rows = []
    for stitch in space:
        top1, top5 = results[str(stitch.stitch_id)]
        layer_r2 = [r2[k] for k in stitch.layers if k in r2]
        rows.append({
            "stitch_id": stitch.stitch_id,
            "anchors": list(space.names(stitch)),
            "cuts": [list(c) for c in stitch.cuts],
            "kernel_size": config.kernel_size,
            "stride": config.stride,
            "sampling": config.sampling,
            "flops": stitch.flops,
            "params": stitch.params,
            "top1": top1,
            "top5": top5,
            "latency_ms": (latency or {}).get(str(stitch.stitch_id)),
            "latency_batch_size": config.latency_batch_size if latency else None,
            "device": device or ("cuda" if config.use_gpu else "cpu"),
            "dataset": config.dataset,
            "checkpoint": checkpoint,
            "layers": list(stitch.layers),
            "ls_r2": min(layer_r2) if layer_r2 else None,
            "init": config.init,
            "mode": config.mode,
            "epochs": config.epochs,
            "anchor_lr": float(config.anchor_lr),
            "stitch_lr": float(config.stitch_lr),
            "seed": config.seed,
            "workers": config.workers,
            "code_version": version,
        })
    return rows
