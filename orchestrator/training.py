"""Joint training of a stitched supernet on Ray Train: the worker's entry point.

:func:`train_loop_per_worker` runs on every Ray Train worker (DDP over gloo on CPU, nccl on
GPU, set up by Ray's ``TorchTrainer``). It runs :class:`~orchestrator.recipe.SupernetRecipe`
(least-squares init, joint training, evaluation of every stitch) and connects it to Ray:

- **Checkpoints** (a :class:`~orchestrator.recipe.TrainState` in ``state.pt``) are written to a
  temporary folder that lives only around ``ray.train.report``: Ray copies it to the run's
  storage during the call (synchronous upload, Ray Train's default), so nothing is left in the
  temp folder, and ``CheckpointConfig(num_to_keep=...)`` bounds what storage keeps. After a
  failure Ray restarts the worker group and the recipe resumes from the latest one.
  Checkpoints load with ``weights_only=True``. A worker killed inside ``report`` cannot clean
  up; its folder names its host and pid, and the next worker on that host removes the folders
  of pids that no longer run (:func:`remove_stale_checkpoints`).
- **DDP**: ``ray.train.torch.prepare_model`` wraps the step module when there are several
  workers (``find_unused_parameters``: a step trains only some stitches).
- **Test-only callbacks** (:class:`~orchestrator.recipe.TrainCallback`) come from import specs
  in the loop config's ``callbacks`` and in ``$SNNET_TRAIN_CALLBACKS`` (comma-separated
  ``package.module:name``); the ``pid_dir``/``hold_at_step`` keys of ``fault_injection`` become
  :class:`orchestrator._testing.PidFileHold`.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from typing import Any

import torch

from snnet import StitchSpace

from .config import TrainConfig
from .recipe import SupernetRecipe, SupernetStep, TrainState, Worker, evaluate_stitch, load_callbacks, step_loss

__all__ = ["train_loop_per_worker", "SupernetStep", "evaluate_stitch", "step_loss", "CHECKPOINT_FILE",
           "CALLBACKS_ENV", "report_to_ray", "remove_stale_checkpoints"]

CHECKPOINT_FILE = TrainState.FILE
CALLBACKS_ENV = "SNNET_TRAIN_CALLBACKS"
CHECKPOINT_PREFIX = "snnet-ckpt-"  # temporary checkpoint folders, removed once Ray has copied them
_FAULT_KEYS = ("pid_dir", "hold_at_step", "hold_seconds")


def report_to_ray(metrics: dict[str, Any], state: TrainState | None) -> None:
    """``ray.train.report``, with ``state`` (if any) as the checkpoint; leaves no local copy."""
    import ray.train

    if state is None:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix=f"{_host_prefix()}{os.getpid()}-") as folder:
        state.write(folder)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def _host_prefix() -> str:
    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())
    return f"{CHECKPOINT_PREFIX}{host}-"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_checkpoints(folder: str | None = None) -> list[str]:
    """Remove this host's temporary checkpoint folders whose writer process no longer runs (a
    worker SIGKILLed inside ``ray.train.report``); returns the removed paths. Folders of live
    processes and of other hosts sharing the folder are left alone."""
    folder = folder or tempfile.gettempdir()
    prefix = _host_prefix()
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        pid = name[len(prefix):].split("-", 1)[0]
        if name.startswith(prefix) and pid.isdigit() and not _running(int(pid)):
            path = os.path.join(folder, name)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def latest_state() -> TrainState | None:
    """The run's latest reported checkpoint, if Ray restarted this worker group after a failure."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return TrainState.read(folder)


def callbacks_from(loop_config: dict[str, Any]) -> list:
    """The loop config's ``callbacks``, ``$SNNET_TRAIN_CALLBACKS``, and the fault-injection keys."""
    specs: list[Any] = list(loop_config.get("callbacks") or [])
    specs += [s.strip() for s in os.environ.get(CALLBACKS_ENV, "").split(",") if s.strip()]
    if loop_config.get("pid_dir"):
        specs.append({"target": "orchestrator._testing:PidFileHold",
                      **{k: loop_config[k] for k in _FAULT_KEYS if k in loop_config}})
    return load_callbacks(specs)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """The Ray Train worker function: ``{"train": TrainConfig.model_dump(), "space": StitchSpace JSON}``."""
    import ray.train
    import ray.train.torch

    config = TrainConfig.model_validate(loop_config["train"])
    space = StitchSpace.from_json(loop_config["space"])
    ctx = ray.train.get_context()
    remove_stale_checkpoints()
    torch.set_num_threads(max(1, config.cpus_per_worker - config.data_workers()))  # the loader has the rest
    worker = Worker(
        rank=ctx.get_world_rank(),
        world=ctx.get_world_size(),
        device=ray.train.torch.get_device(),
        report=report_to_ray,
        wrap=lambda module: ray.train.torch.prepare_model(
            module, parallel_strategy_kwargs={"find_unused_parameters": True}),
    )
    SupernetRecipe(config, space, worker, callbacks=callbacks_from(loop_config)).run(latest_state())
