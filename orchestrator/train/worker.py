"""Joint training of a stitched supernet on Ray Train: the worker's entry point.

:func:`train_loop_per_worker` runs on every Ray Train worker (DDP over gloo on CPU, nccl on
GPU, set up by Ray's ``TorchTrainer``). It runs :class:`~orchestrator.train.recipe.SupernetRecipe`
(least-squares init, joint training, evaluation of every stitch) and connects it to Ray:

- **Checkpoints** (a :class:`~orchestrator.train.state.TrainState` in ``state.pt``) are written to a
  temporary folder that lives only around ``ray.train.report``: Ray copies it to the run's
  storage during the call (synchronous upload, Ray Train's default), so nothing is left in the
  temp folder, and ``CheckpointConfig(num_to_keep=...)`` bounds what storage keeps. After a
  failure Ray restarts the worker group and the recipe resumes from the latest one.
  Checkpoints load with ``weights_only=True``. A worker killed inside ``report`` cannot clean
  up; its folder names its host and pid, and the next worker on that host removes the folders
  of pids that no longer run (:func:`remove_stale_checkpoints`).
- **Resuming a stopped run** (``sweep --resume``, ``train`` with its sweep and trial id): Ray Train
  restores a run started again under its name ``<sweep>-<trial_id>`` from the checkpoints its
  controller registered (``ray.train.get_checkpoint()``), and it registers one only when it next
  polls the workers (every 2 s): a run stopped between a checkpoint's upload and that poll (Ctrl-C,
  a killed driver) leaves a complete checkpoint in its folder that Ray never hands back. So the
  driver lists the run's checkpoint folders (:func:`stored_checkpoints`), the workers resume from
  the newest one that reads when it is newer than Ray's (:func:`latest_state`), and the driver
  removes the unregistered folders once the run has finished (:func:`remove_unregistered`), as
  ``num_to_keep`` would have.
- **DDP**: ``ray.train.torch.prepare_model`` wraps the step module when there are several
  workers (``find_unused_parameters``: a step trains only some stitches).
- **Callbacks** (:class:`~orchestrator.train.state.TrainCallback`): the loop config's ``callbacks``,
  the objects or import specs the caller gave :func:`orchestrator.train.launch.run_training`
  (``worker_callbacks``); a test registers its probes there, nothing is read from the environment.

Ray is imported inside the functions that run on a worker: the driver imports this module for
:func:`stored_checkpoints` and :func:`remove_unregistered`, and so do tests that never start Ray.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from typing import Any

import torch
from pyarrow import fs as pafs

from orchestrator.storage import filesystem
from orchestrator.train.config import TrainConfig
from orchestrator.train.recipe import SupernetRecipe
from orchestrator.train.state import TrainState, Worker, load_callbacks
from snnet import StitchSpace

__all__ = ["train_loop_per_worker", "CHECKPOINT_FILE",
           "report_to_ray", "remove_stale_checkpoints", "stored_checkpoints", "latest_state",
           "remove_unregistered"]

CHECKPOINT_FILE = TrainState.FILE
CHECKPOINT_PREFIX = "snnet-ckpt-"  # temporary checkpoint folders, removed once Ray has copied them


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


#: Ray Train's checkpoint folders in a run's folder: ``checkpoint_<YYYY-mm-dd_HH-MM-SS.ffffff>``, the time
#: of the report, so the names sort in the order the checkpoints were taken.
RAY_CHECKPOINT_PREFIX = "checkpoint_"


def stored_checkpoints(run_dir: str) -> list[str]:
    """The checkpoint folders in the Ray Train run folder ``run_dir`` (``<storage>/<run name>``, local
    or a URI), newest first, whether or not Ray's checkpoint manager registered them; ``[]`` when the
    folder does not exist or cannot be listed."""
    try:
        fs, path = filesystem(run_dir)
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except (OSError, ValueError):
        return []
    names = sorted((i.base_name for i in infos
                    if i.type == pafs.FileType.Directory and i.base_name.startswith(RAY_CHECKPOINT_PREFIX)),
                   reverse=True)
    return [f"{run_dir.rstrip('/')}/{name}" for name in names]


def _name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def latest_state(stored: list[str] | tuple[str, ...] = (), log=None) -> TrainState | None:
    """The state this worker resumes from: the run's latest checkpoint that Ray registered
    (``ray.train.get_checkpoint()``: after a failure of the worker group, or when a stopped run is
    started again under its name), unless ``stored`` (:func:`stored_checkpoints`, listed by the driver
    before the run started) holds a newer one that Ray never registered; of those, the newest that
    reads (a folder cut short by the stop is skipped). ``None``: a fresh run."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    registered = _name(checkpoint.path) if checkpoint is not None else ""
    for path in stored:
        if _name(path) <= registered:
            break  # newest first: the rest are older than Ray's own
        try:
            with ray.train.Checkpoint(path).as_directory() as folder:
                state = TrainState.read(folder)
        except Exception as e:  # noqa: BLE001 - a checkpoint cut short by the stop: try an older one
            if log is not None:
                log(f"skipping the checkpoint {_name(path)}, which Ray never registered: it does not read "
                    f"({type(e).__name__}: {' '.join(str(e).split())[:200]})")
            continue
        if log is not None:
            log(f"the run stopped before Ray registered its checkpoint {_name(path)}: resuming from it")
        return state
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return TrainState.read(folder)


def remove_unregistered(stored: list[str], kept: list[str]) -> list[str]:
    """Remove the folders of ``stored`` (checkpoints found before a run started) that are not among
    ``kept`` (the checkpoints Ray keeps when the run has finished): what a resume from an unregistered
    checkpoint leaves behind, which Ray's ``num_to_keep`` does not know of. Returns the removed paths."""
    keep = {_name(path) for path in kept}
    removed = []
    for path in stored:
        if _name(path) in keep:
            continue
        try:
            fs, where = filesystem(path)
            fs.delete_dir(where)
        except (OSError, ValueError):  # gone already (num_to_keep), or not ours to remove: leave it
            continue
        removed.append(path)
    return removed


def callbacks_from(loop_config: dict[str, Any]) -> list:
    """The loop config's ``callbacks`` (objects or import specs: :func:`~orchestrator.train.state.load_callbacks`)."""
    return load_callbacks(loop_config.get("callbacks") or [])


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """The Ray Train worker function: ``{"train": TrainConfig.model_dump(), "space": StitchSpace JSON}``."""
    import ray.train
    import ray.train.torch

    config = TrainConfig.model_validate(loop_config["train"])
    space = StitchSpace.from_json(loop_config["space"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    remove_stale_checkpoints()
    torch.set_num_threads(max(1, config.cpus_per_worker - config.data_workers()))  # the loader has the rest
    worker = Worker(
        rank=rank,
        world=ctx.get_world_size(),
        device=ray.train.torch.get_device(),
        report=report_to_ray,
        wrap=lambda module: ray.train.torch.prepare_model(
            module, parallel_strategy_kwargs={"find_unused_parameters": True}),
    )
    recipe = SupernetRecipe(config, space, worker, callbacks=callbacks_from(loop_config))
    state = latest_state(loop_config.get("stored_checkpoints") or (), log=recipe.log.info if rank == 0 else None)
    recipe.run(state)
