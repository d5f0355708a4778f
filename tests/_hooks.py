"""Test-only hooks: training callbacks a test gives ``run_training(worker_callbacks=...)`` or a sweep's
:class:`orchestrator.sweep.trial.TrialHooks`, and the call that stops a sweep's driver.

Ray pickles them to its workers, whose imports do not see the tests folder: :func:`by_value` makes Ray's
cloudpickle carry this module's classes and functions by value (call it in the process that starts the
run, before the run starts).
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time

from orchestrator.train.recipe import SupernetRecipe
from orchestrator.train.state import TrainCallback

__all__ = ["PidFileHold", "TempDirProbe", "by_value", "kill_process"]


def by_value() -> None:
    """Pickle this module's objects by value for Ray's workers (idempotent)."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def kill_process(pid: int, *_: object) -> None:
    """SIGKILL ``pid`` (a sweep's ``TrialHooks(after_write=functools.partial(kill_process, driver_pid))``)."""
    os.kill(pid, signal.SIGKILL)


class PidFileHold(TrainCallback):
    """Publish this worker's pid at every step as ``<pid_dir>/rank<r>-step<t>.pid`` and, on the
    first attempt only (not after a resume), sleep at ``hold_at_step`` so a test can kill the
    process there."""

    def __init__(self, pid_dir: str, hold_at_step: int | None = None, hold_seconds: float = 120.0):
        self.pid_dir, self.hold_at_step, self.hold_seconds = pid_dir, hold_at_step, float(hold_seconds)

    def on_step(self, recipe: SupernetRecipe, step: int) -> None:
        with open(os.path.join(self.pid_dir, f"rank{recipe.rank}-step{step}.pid"), "w") as f:
            f.write(str(os.getpid()))
        if not recipe.resumed and step == self.hold_at_step:
            time.sleep(self.hold_seconds)


class TempDirProbe(TrainCallback):
    """On rank 0, before every step, count the checkpoint folders (``snnet-ckpt-*``) left in the
    worker's temp folder, and keep the largest count seen in ``<tmp>/snnet-probe-rank0``: the
    file also proves which temp folder the worker used."""

    def __init__(self) -> None:
        self.most = 0

    def on_step(self, recipe: SupernetRecipe, step: int) -> None:
        if recipe.rank != 0:
            return
        folder = tempfile.gettempdir()
        self.most = max(self.most, sum(n.startswith("snnet-ckpt-") for n in os.listdir(folder)))
        with open(os.path.join(folder, "snnet-probe-rank0"), "w") as f:
            f.write(f"{step} {self.most}")
