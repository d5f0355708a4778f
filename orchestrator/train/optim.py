"""The optimizer and learning-rate schedule of a supernet run, from timm's parts and a :class:`TrainConfig`.

SN-Net's released runs (Pan, Cai and Zhuang, CVPR 2023) train with DeiT's recipe: AdamW (or SGD
with Nesterov momentum) from :func:`timm.optim.create_optimizer_v2` over two parameter groups,
the anchors and the stitching layers (``anchor_lr`` and ``stitch_lr``; ``stitch_lr: null`` gives
both ``anchor_lr``), each learning rate scaled by the total batch over ``lr_scale_batch``
(:func:`scaled_lrs`); a linear warmup over ``warmup_fraction`` of the steps, then cosine decay
to the absolute floor ``min_lr`` (:func:`lr_lambda`, one per group: :func:`group_lambdas`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from timm.optim import create_optimizer_v2

from orchestrator.train.config import TrainConfig
from orchestrator.train.speed import optimizer_options

__all__ = ["scaled_lrs", "make_optimizer", "lr_lambda", "group_lambdas"]


def scaled_lrs(config: TrainConfig, world: int) -> tuple[float, float, float]:
    """``(anchor_lr, stitch_lr, scale)`` after the paper's batch scaling (lr x total batch /
    ``lr_scale_batch``); ``stitch_lr: null`` gives the stitching layers ``anchor_lr``."""
    scale = config.batch_size * world / config.lr_scale_batch if config.lr_scale_batch else 1.0
    stitch = config.stitch_lr if config.stitch_lr is not None else config.anchor_lr
    return config.anchor_lr * scale, stitch * scale, scale


def make_optimizer(net: Any, config: TrainConfig, world: int) -> torch.optim.Optimizer:
    """timm's optimizer (``adamw`` or ``sgd`` with Nesterov momentum) over the supernet's groups:
    anchors and stitching layers, each with and without weight decay."""
    anchor_lr, stitch_lr, _ = scaled_lrs(config, world)
    groups = net.param_groups(anchor_lr, stitch_lr, config.weight_decay)
    kwargs: dict[str, Any] = ({"momentum": config.momentum} if config.optimizer == "sgd"
                              else optimizer_options(config.speed_measures()))  # fused_adamw
    return create_optimizer_v2(groups, opt=config.optimizer, lr=stitch_lr, weight_decay=config.weight_decay,
                               **kwargs)


def lr_lambda(total_steps: int, warmup_fraction: float, floor: float = 0.0) -> Callable[[int], float]:
    """Linear warmup over ``warmup_fraction`` of the steps, then cosine decay from 1 to ``floor``
    (a fraction of the group's base rate)."""
    warmup = int(total_steps * warmup_fraction)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def group_lambdas(optimizer: torch.optim.Optimizer, total_steps: int,
                  config: TrainConfig) -> list[Callable[[int], float]]:
    """One schedule per parameter group: each decays to ``min_lr`` (absolute), never rises to it."""
    out = []
    for group in optimizer.param_groups:
        base = group.get("initial_lr", group["lr"])
        floor = min(1.0, config.min_lr / base) if base > 0 else 0.0
        out.append(lr_lambda(total_steps, config.warmup_fraction, floor))
    return out

