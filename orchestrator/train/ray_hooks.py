"""Ray's ``worker_process_setup_hook`` for this project's jobs (:data:`orchestrator.train.cluster.WORKER_SETUP_HOOK`).

Ray runs the hook in *every* worker process of the job as it starts: the Ray Train workers, but
also Ray Train's controller and helper actors and Ray Tune's trial actors, a handful of fresh
processes per training run. This module therefore imports nothing beyond the standard library
(importing :mod:`orchestrator.train.launch` would pull in torch and ``snnet``, importing Ray Train's
context module would pull in pandas: seconds of CPU in each of those processes, every run).

This is the project's one place that names Ray Train's private ``ray.train.v2._internal`` modules
(the report logger's file, the placement-group cleaner's logger and thread): Ray offers no public
hook to quiet them, so their names are kept here, as data, and a Ray version without them only
leaves its lines unquieted. :func:`interrupt_as_keyboard` (driver side, a context manager) replaces the one private
method of Ray Train's trainer that this project overrides, for the same reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["interrupt_as_keyboard", "quiet_train_worker", "quiet_cleaner_hook"]

#: The trainer's method that installs Ray Train V2's SIGINT handler as ``fit()`` starts its controller.
_SIGINT_METHOD = "_register_sigint_handler"
#: Seconds a Ctrl-C waits for the controller to stop the workers before the command goes on exiting.
ABORT_SECONDS = 60.0

#: Ray Train's report path logs under a logger named by its file (``logging.getLogger(__file__)``).
_REPORT_LOGGER_MODULE = ("train", "v2", "_internal", "execution", "context.py")
#: Ray Train's placement-group cleaner warns each time a busy GCS answers its poll of the controller
#: late ("Failed to query Ray Train Controller actor state ... Continuing to monitor"), and goes on.
_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
#: When a run stops (Ctrl-C, or its end) on a busy machine, the controller's wait for the cleaner to stop can
#: time out: Ray logs it with a traceback ("Failed to stop PlacementGroupCleaner gracefully"), and nothing is
#: wrong (the cleaner then removes the run's placement group itself, as it would after a crash).
_PG_CALLBACK_LOGGER = "ray.train.v2._internal.callbacks.placement_group_callback"
_STOP_TIMEOUT = ("Failed to stop PlacementGroupCleaner gracefully", "GetTimeoutError")
#: What ends the cleaner's polling thread without anything being wrong with the run (see below).
_CLEANER_FAULTS = frozenset({"RpcError", "ConnectionError"})


def quiet_train_worker() -> None:
    """Runs in every Ray worker process of the job as it starts (``worker_process_setup_hook``).

    Ray Train sets its workers' root logger to INFO, and its report path logs each report as
    ``Reporting training result N: TrainingReport(...)`` (every stitch's accuracy in the
    evaluation ones) under a logger named by its file, outside the ``ray.train`` loggers that
    ``RunConfig(logging_config=...)`` governs. Raising that logger to WARNING keeps those dicts
    off the console; Ray Train's own records still go to its log files in Ray's log folder.
    timm's INFO lines (``Loaded ... from checkpoint``, once per anchor and worker) are raised to
    WARNING too, as they are on the driver: the driver's weights line says where weights came from.
    The placement-group cleaner's warning about a slow answer from a busy GCS is raised to ERROR, and the
    controller's traceback when its wait for the cleaner to stop times out becomes a DEBUG line.

    The report logger's name is the path of ``ray/train/v2/_internal/execution/context.py``, found
    beside the imported ``ray`` package without importing that module (another Ray version without
    that file: nothing to configure).
    """
    logging.getLogger("timm").setLevel(logging.WARNING)
    logging.getLogger(_CLEANER_LOGGER).setLevel(logging.ERROR)  # a slow poll is not the user's news
    callback = logging.getLogger(_PG_CALLBACK_LOGGER)
    if not any(isinstance(f, _SlowCleanerStop) for f in callback.filters):
        callback.addFilter(_SlowCleanerStop())
    if not getattr(threading.excepthook, "_snnet", False):
        threading.excepthook = quiet_cleaner_hook(threading.excepthook)
    ray = sys.modules.get("ray")
    if ray is None:
        try:
            import ray
        except ImportError:
            return
    path = os.path.join(os.path.dirname(ray.__file__), *_REPORT_LOGGER_MODULE)
    if os.path.isfile(path):
        logging.getLogger(path).setLevel(logging.WARNING)


class _SlowCleanerStop(logging.Filter):
    """Turns the controller's "Failed to stop PlacementGroupCleaner gracefully" after a ``GetTimeoutError``
    into a DEBUG record without its traceback: Ray's console and files, which take INFO and up, pass it by."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if str(record.msg).startswith(_STOP_TIMEOUT[0]) and type(exc).__name__ == _STOP_TIMEOUT[1]:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.msg, record.args, record.exc_info, record.exc_text = f"{_STOP_TIMEOUT[0]}: {exc}", (), None, None
        return True


def quiet_cleaner_hook(previous: Callable[[Any], None]) -> Callable[[Any], None]:
    """``threading.excepthook`` that turns one known Ray Train fault into one log record.

    Ray Train's detached ``PlacementGroupCleaner`` polls the controller's state from a thread
    (``PlacementGroupCleanerMonitor``) and catches only the state API's own exception: when the
    GCS is slow to answer (a busy head node) the ``RpcError`` ends that thread with a 30-line
    traceback on the driver's console, in the middle of a healthy run; so does a ``ConnectionError``
    ("Found multiple active Ray instances") when another local Ray instance runs on the same machine,
    as the state API looks its address up instead of using the job's. The cleaner only matters
    when the controller dies ungracefully; the run goes on. That one case is logged at DEBUG
    (Ray's log folder keeps it); every other uncaught exception goes to ``previous``.
    """

    def hook(args: Any) -> None:
        thread = getattr(args.thread, "name", "")
        if thread == "PlacementGroupCleanerMonitor" and type(args.exc_value).__name__ in _CLEANER_FAULTS:
            logging.getLogger("orchestrator.train.launch").debug("Ray Train's placement-group cleaner stopped: %s",
                                                                 args.exc_value)
            return
        previous(args)

    hook._snnet = True  # type: ignore[attr-defined]
    return hook


@contextlib.contextmanager
def interrupt_as_keyboard(trainer: Any) -> Iterator[None]:
    """Inside the block, Ctrl-C during ``trainer.fit()`` is a :class:`KeyboardInterrupt` (driver side).

    Ray Train V2's ``fit()`` installs its own SIGINT handler (in the main thread), which aborts the run's
    controller and then leaves the process by ``sys.exit`` with status 1 and not a word, so the command
    never learns it was interrupted and cannot say how to resume. The handler installed here aborts the
    controller the same way (the workers stop; the checkpoints they reported stay in the run's storage,
    which a run started again under its name resumes from), then raises :class:`KeyboardInterrupt` out of
    ``fit()``; a second Ctrl-C while the abort waits interrupts at once. The block restores the handler it
    found (in the main thread; elsewhere, as in a Tune trial, ``fit()`` installs none). A Ray version without
    the method keeps its own behaviour.
    """
    previous = signal.getsignal(signal.SIGINT)

    def register(controller: Any) -> None:
        def on_sigint(signum: int, frame: Any) -> None:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # the next Ctrl-C interrupts the wait
            import ray

            try:
                ray.get(controller.abort.remote(), timeout=ABORT_SECONDS)
            except Exception as e:  # noqa: BLE001 - a controller already gone, or slow: exit all the same
                logging.getLogger("orchestrator.train.launch").debug("aborting the training run: %s", e)
            raise KeyboardInterrupt

        signal.signal(signal.SIGINT, on_sigint)

    if callable(getattr(trainer, _SIGINT_METHOD, None)):
        setattr(trainer, _SIGINT_METHOD, register)
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous)
