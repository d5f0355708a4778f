"""Ray for one run: connect to (or start) it quietly, and check that the run's workers fit it.

:func:`ensure_ray` connects to ``--address`` (or ``$RAY_ADDRESS``) or starts a local instance,
after :func:`check_reachable` made an address that does not answer fail in seconds;
:func:`preflight` checks ``workers x (CPUs, GPUs)`` (:func:`worker_resources`) against this
machine (:func:`local_resources`, without starting Ray) or the cluster, before any resource is
requested, so that Ray never waits forever for workers it cannot place.

This module imports neither torch nor Ray at import: the train and sweep CLIs check an address
before the training stack loads. Ray is imported inside the functions that start or ask it,
torch inside :func:`local_resources` (the GPUs it sees).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import Any

from orchestrator.train.config import TrainConfig
from orchestrator.train.ray_hooks import quiet_train_worker
from snnet import SNNetError

__all__ = ["QUIET_RAY_ENV", "WORKER_SETUP_HOOK", "quiet_ray", "ensure_ray", "check_reachable", "local_resources",
           "worker_resources", "check_resources", "preflight"]

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
    import ray  # deferred: Ray starts only when a run really starts (see the module docstring)

    if ray.is_initialized():
        return
    quiet_ray()
    init_kwargs.setdefault("logging_level", logging.WARNING)
    runtime_env = dict(init_kwargs.pop("runtime_env", None) or {})
    runtime_env.setdefault("worker_process_setup_hook", WORKER_SETUP_HOOK)
    init_kwargs["runtime_env"] = runtime_env
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        check_reachable(address)
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
        self.logger = logging.getLogger(self.name)
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: Any) -> None:
        self.logger.setLevel(self.level)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not minutes, when a cluster address does not answer."""
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


def local_resources() -> dict[str, float]:
    """What a local Ray instance would offer: this process's CPUs and the GPUs torch sees."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    gpus = 0
    try:
        import torch  # deferred: the CLIs check resources before the training stack loads

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a missing or broken torch or CUDA install: no GPUs to offer
        gpus = 0
    return {"CPU": float(cpus), "GPU": float(gpus)}


def worker_resources(config: TrainConfig) -> dict[str, float]:
    """What each Ray Train worker reserves: its CPUs and, with ``use_gpu``, ``gpus_per_worker`` GPUs
    (a fraction shares one GPU between workers; 0 means one whole GPU)."""
    gpus = (config.gpus_per_worker or 1) if config.use_gpu else 0
    return {"CPU": config.cpus_per_worker, **({"GPU": gpus} if gpus else {})}


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


def preflight(config: TrainConfig, address: str | None = None) -> None:
    """The cluster check of :func:`~orchestrator.train.launch.run_training`, before any resource is requested: with no
    address (and no ``$RAY_ADDRESS``, no connected Ray) against this machine's CPUs and GPUs,
    without starting Ray; otherwise connects and checks ``ray.cluster_resources()``."""
    address = address or os.environ.get("RAY_ADDRESS")
    ray = sys.modules.get("ray")
    connected = ray is not None and ray.is_initialized()
    if not connected and (not address or address == "local"):
        check_resources(config, local_resources(), "this machine (a local Ray instance)")
        return
    ensure_ray(address)
    import ray  # connected by ensure_ray

    check_resources(config, ray.cluster_resources(), f"the Ray cluster{f' at {address}' if address else ''}")

