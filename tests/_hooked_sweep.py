"""``python tests/_hooked_sweep.py HOOKS_JSON [sweep flags ...]``: ``python -m orchestrator.sweep`` with a
fault test's hooks registered on every trial (:class:`orchestrator.sweep.trial.TrialHooks`).

``HOOKS_JSON``: ``{"kill_driver_after_write": true}`` stops this driver with SIGKILL right after a
trial's catalog write; ``{"pid_dir": DIR, "hold_at_step": N, "hold_seconds": S}`` gives every trial's
workers a :class:`_hooks.PidFileHold`. The sweep's own console, exit codes and Ctrl-C are unchanged.
"""

import functools
import json
import os
import sys

import _hooks

from orchestrator.cli import run_cli
from orchestrator.sweep.__main__ import main
from orchestrator.sweep.trial import TrialHooks


def hooks(spec: dict) -> TrialHooks:
    callbacks = ()
    if spec.get("pid_dir"):
        callbacks = (_hooks.PidFileHold(spec["pid_dir"], spec.get("hold_at_step"), spec.get("hold_seconds", 120.0)),)
    after = functools.partial(_hooks.kill_process, os.getpid()) if spec.get("kill_driver_after_write") else None
    return TrialHooks(worker_callbacks=callbacks, after_write=after)


if __name__ == "__main__":
    _hooks.by_value()
    sys.exit(run_cli(functools.partial(main.__wrapped__, hooks=hooks(json.loads(sys.argv[1]))), sys.argv[2:]))
