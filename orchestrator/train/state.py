"""What a running recipe carries and who watches it: the checkpoint schema, the worker, callbacks, the logger.

:class:`TrainState` is what a run resumes from (one ``torch.save`` dict per checkpoint);
:class:`Worker` says where a :class:`~orchestrator.train.recipe.SupernetRecipe` runs (rank, world,
device) and how it reports; :class:`TrainCallback` hooks into a running recipe; progress goes to
the ``snnet.train`` logger (:func:`training_logger`), rank 0 only.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:  # the recipe imports this module
    from orchestrator.train.recipe import SupernetRecipe

__all__ = ["LOGGER_NAME", "TrainState", "Worker", "TrainCallback", "load_callbacks", "training_logger"]

LOGGER_NAME = "snnet.train"


@dataclass
class TrainState:
    """Everything a run resumes from, and enough to rebuild its supernet without the driver.

    Written as one ``torch.save`` dict (:attr:`FILE` in a checkpoint folder) whose keys are
    these field names, read back with ``weights_only=True``. ``train_config`` is the run's
    :class:`~orchestrator.train.config.TrainConfig` as a plain dict and ``space`` its
    :meth:`StitchSpace.to_json`; ``optimizer`` and ``scheduler`` are ``None`` in checkpoints
    taken after training (evaluation needs neither).
    """

    FILE: ClassVar[str] = "state.pt"

    model: dict[str, torch.Tensor]
    train_config: dict[str, Any]
    space: str
    step: int = 0
    epoch: int = 0
    r2: dict[str, float] = field(default_factory=dict)
    # stitch id -> [top1, top5] on the evaluation split, then top-1 on the selection split when there is one
    evaluated: dict[int, list[float]] = field(default_factory=dict)
    # str(stitch id) -> its init scores (snnet.scores.StitchScore.to_dict() plus ls_r2), when the run scored
    init_scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    # str(epoch) -> that epoch's early-front hypervolume: a run resumed from a checkpoint whose reports Ray
    # never saw (a stop before its controller's next poll) still knows every epoch's
    early_hv: dict[str, float] = field(default_factory=dict)
    # str(anchor's stitch id) -> [top1 on the evaluation split, top1 on the selection split or None], measured
    # before joint training (empty for epochs 0 and for checkpoints written before issue 28)
    anchors_before: dict[str, list[float | None]] = field(default_factory=dict)
    # a rule that learns from losses (scored, update: loss): the trained stitches' loss sums and counts
    # (orchestrator.train.stitch_losses.StitchLosses.state); empty for every other rule and older checkpoints
    stitch_losses: dict[str, Any] = field(default_factory=dict)
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["evaluated"] = {str(k): list(v) for k, v in self.evaluated.items()}
        return data

    @classmethod
    def from_dict(cls, data: Any) -> TrainState:
        names = [f.name for f in dataclasses.fields(cls)]
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [k for k in required if not isinstance(data, dict) or k not in data]
        if missing:
            raise ValueError(f"a training checkpoint must hold {', '.join(required)}; this one lacks "
                             f"{', '.join(missing)}")
        state = cls(**{k: data[k] for k in names if k in data})
        state.evaluated = {int(k): list(v) for k, v in state.evaluated.items()}
        return state

    def write(self, folder: str | os.PathLike[str]) -> str:
        path = os.path.join(folder, self.FILE)
        torch.save(self.to_dict(), path)
        return path

    @classmethod
    def read(cls, folder: str | os.PathLike[str]) -> TrainState:
        path = os.path.join(folder, cls.FILE)
        return cls.from_dict(torch.load(path, map_location="cpu", weights_only=True))


# -- where a recipe runs, and what may watch it ----------------------------------------------------


def _no_report(metrics: dict[str, Any], state: TrainState | None) -> None:
    pass


@dataclass
class Worker:
    """One of ``world`` data-parallel workers: its rank, device, and how it reports progress.

    ``report(metrics, state)`` is called by every rank at once (a collective under Ray Train),
    with a :class:`TrainState` on rank 0 and ``None`` elsewhere. ``wrap`` turns the step module
    into its DDP form when ``world > 1``.
    """

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    report: Callable[[dict[str, Any], TrainState | None], None] = _no_report
    wrap: Callable[[nn.Module], nn.Module] = lambda module: module


class TrainCallback:
    """Hooks into a running recipe; tests use them to observe or disturb a run."""

    def on_step(self, recipe: SupernetRecipe, step: int) -> None:
        """Before training step ``step`` (0-based, counted over the whole run)."""


def load_callbacks(specs: Iterable[TrainCallback | str | dict[str, Any]]) -> list[TrainCallback]:
    """Callbacks from :class:`TrainCallback` objects (as they are) or import specs: ``"pkg.module:factory"`` or
    ``{"target": ..., **kwargs}``."""
    callbacks = []
    for spec in specs:
        if isinstance(spec, TrainCallback):
            callbacks.append(spec)
            continue
        kwargs = dict(spec) if isinstance(spec, dict) else {"target": spec}
        module, _, name = str(kwargs.pop("target")).strip().partition(":")
        if not module or not name:
            raise ValueError(f"a callback spec looks like 'package.module:name', got {spec!r}")
        callbacks.append(getattr(importlib.import_module(module), name)(**kwargs))
    return callbacks


class _RankZeroFilter(logging.Filter):
    """Pass records of rank 0 only (the rank travels in the record's ``extra``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "rank", 0) == 0


def training_logger() -> logging.Logger:
    """The ``snnet.train`` logger: ``[snnet] message`` lines on the process's real stdout.

    The real stdout, not ``sys.stdout``: Ray Train redirects the latter on its workers and
    would log every line twice. Records carrying ``rank != 0`` are dropped.
    """
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(f, _RankZeroFilter) for h in logger.handlers for f in h.filters):
        handler = logging.StreamHandler(sys.__stdout__)
        handler.setFormatter(logging.Formatter("[snnet] %(message)s"))
        handler.addFilter(_RankZeroFilter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger

