"""The pieces of a training step: the step module, the least-squares init, the loss.

:class:`SupernetStep` runs all stitches of a step in one forward (one DDP forward, so DDP's
unused-parameter detection sees the whole step); :func:`initialise` fits every stitching layer by
least squares over the ranks' shards (:mod:`snnet.least_squares`) or resets it (Kaiming);
:func:`step_loss` is a step's loss under a sampling rule (:mod:`snnet.sampling`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from orchestrator.data import calibration_batches
from orchestrator.train.config import TrainConfig
from snnet import StitchedSupernet
from snnet.sampling import SamplingRule, rule_class

__all__ = ["SupernetStep", "ls_batches", "initialise", "LeastSquaresFit", "ls_line", "step_loss"]


class SupernetStep(nn.Module):
    """``forward(x, stitch_ids)`` -> one output per stitch: a whole step in one DDP forward."""

    def __init__(self, supernet: StitchedSupernet):
        super().__init__()
        self.supernet = supernet

    def forward(self, x: torch.Tensor, stitch_ids: tuple[int, ...]) -> list[torch.Tensor]:
        return [self.supernet(x, i) for i in stitch_ids]


def ls_batches(dataset, samples: int, batch_size: int, rank: int, world: int, device, skip_log=None):
    """This rank's share of the first ``samples`` training images (fixed, seeded subset), read as
    every other reader reads them: :func:`orchestrator.data.calibration_batches` leaves unreadable
    files out and names them once (through ``skip_log``, the run's shared one, when given)."""
    for x in calibration_batches(dataset, samples, batch_size, rank, world, skip_log=skip_log):
        yield x.to(device)


def initialise(net: StitchedSupernet, config: TrainConfig, dataset, rank: int, world: int, device,
               skip_log=None) -> dict[str, float]:
    """LS-initialise (all-reduced over ranks) or Kaiming-initialise every stitching layer; R^2
    per layer (a :class:`LeastSquaresFit`, which also counts the images used), ``{}`` for Kaiming."""
    if config.init == "kaiming":
        torch.manual_seed(config.seed)
        net.reset_stitch_layers()
        return {}
    net.eval()
    accs = net.least_squares_accumulators(config.ls_mode)
    images = 0
    for x in ls_batches(dataset, config.ls_samples, config.eval_batch_size, rank, world, device, skip_log):
        net.accumulate_least_squares(accs, x)
        images += x.shape[0]
    if dist.is_available() and dist.is_initialized() and world > 1:
        for acc in accs.values():
            acc.all_reduce_()
        total = torch.tensor(float(images), dtype=torch.float64, device=device)
        dist.all_reduce(total)
        images = int(total.item())
    return LeastSquaresFit(net.solve_least_squares(accs), images=images)


class LeastSquaresFit(dict):
    """R^2 per stitching layer (a plain dict to every reader), and :attr:`images`: how many
    images the fit saw on all ranks together, which is fewer than ``ls_samples`` on a smaller
    training set or where images were unreadable."""

    def __init__(self, r2: dict[str, float], images: int):
        super().__init__(r2)
        self.images = images


def ls_line(fit: dict[str, float], config: TrainConfig, seconds: float) -> str:
    """The log line of an LS init: layers, the images it really used, time, R^2 range."""
    values = list(fit.values())
    images = getattr(fit, "images", config.ls_samples)
    asked = f" (of the {config.ls_samples} ls_samples asks for)" if images != config.ls_samples else ""
    return (f"least-squares init of {len(values)} stitching layers on {images} images{asked} in {seconds:.1f}s: "
            f"R^2 min {min(values):.3f}, mean {sum(values) / len(values):.3f}, max {max(values):.3f}")


def step_loss(outputs: list[torch.Tensor], target: torch.Tensor, rule: str | SamplingRule | type[SamplingRule],
              teacher_labels: torch.Tensor | None = None,
              criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy) -> torch.Tensor:
    """The loss of one step's outputs under a sampling rule (by name, class or instance).

    The mean cross-entropy of the stitches; a rule that :attr:`~SamplingRule.distils_from_first`
    (``sandwich``) instead sums the first output's cross-entropy and the others' cross-entropy
    against its detached prediction. ``teacher_labels`` (DeiT's hard distillation) average into
    the label term. ``criterion`` is the label loss (:func:`orchestrator.train.augment.make_criterion`:
    soft targets under mixup, label smoothing); the teacher and sandwich terms stay plain
    cross-entropy, as DeiT's hard distillation.
    """

    def ce(out: torch.Tensor) -> torch.Tensor:
        loss = criterion(out.float(), target)
        if teacher_labels is not None:
            loss = 0.5 * loss + 0.5 * F.cross_entropy(out, teacher_labels)
        return loss

    if (rule_class(rule) if isinstance(rule, str) else rule).distils_from_first:
        first = outputs[0]
        soft = first.detach().float().softmax(-1)
        return ce(first) + sum(F.cross_entropy(o.float(), soft) for o in outputs[1:])
    return sum(ce(o) for o in outputs) / len(outputs)

