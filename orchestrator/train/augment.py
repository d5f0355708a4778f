"""The paper's augmentation and regularisation, built from timm's own parts and a :class:`TrainConfig`.

SN-Net's released runs (Pan, Cai and Zhuang, CVPR 2023) train with DeiT's recipe: timm's
RandAugment and random erasing in the training transform, mixup/cutmix with label smoothing
folded into soft targets, repeated augmentation, stochastic depth on the anchors, a cosine
schedule to a floor, and a learning rate scaled by the total batch over 512. Each piece here
is timm's (no copies), switched by one :class:`~orchestrator.train.config.TrainConfig` field; the
defaults switch them all off, which keeps the demo's light recipe:

==========================  ==============================================================
setting                     timm part
==========================  ==============================================================
``auto_augment``,           :func:`timm.data.create_transform` (ImageNet folders and
``random_erasing[_mode]``,  WebDataset shards; :func:`transform_options`). On tensor data
``interpolation``,          (the demo) erasing is :class:`timm.data.random_erasing.RandomErasing`
``crop_pct``                on the batch (:func:`make_batch_erasing`).
``mixup``, ``cutmix``,      :class:`timm.data.Mixup` (:func:`make_mixup`), label smoothing
``mixup_prob``,             folded into its soft targets
``mixup_switch_prob``
``label_smoothing``         :class:`timm.loss.SoftTargetCrossEntropy` with mixup,
                            :class:`timm.loss.LabelSmoothingCrossEntropy` without
                            (:func:`make_criterion`)
``aug_repeats``             :class:`timm.data.distributed_sampler.RepeatAugSampler`
                            (:func:`orchestrator.data.make_loader`'s ``repeats``)
``drop_path_rate``          ``timm.create_model(..., drop_path_rate=)`` of every anchor
                            (:func:`anchor_options`)
==========================  ==============================================================

The optimizer and its schedule are :mod:`orchestrator.train.optim`'s, the distillation
teacher :mod:`orchestrator.train.teacher`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.data.random_erasing import RandomErasing
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from orchestrator.train.config import TrainConfig

__all__ = [
    "transform_options",
    "make_batch_erasing",
    "make_mixup",
    "make_criterion",
    "anchor_options",
    "mixup_active",
]


def transform_options(config: TrainConfig) -> dict[str, Any]:
    """Keyword arguments of :func:`orchestrator.data.get_datasets` for timm's transforms."""
    return {"auto_augment": config.auto_augment, "interpolation": config.interpolation, "crop_pct": config.crop_pct,
            "re_prob": config.random_erasing, "re_mode": config.random_erasing_mode}


def make_batch_erasing(config: TrainConfig,
                       device: torch.device | str = "cpu") -> Callable[[torch.Tensor], torch.Tensor] | None:
    """timm's :class:`RandomErasing` over a normalised batch ``[B, C, H, W]`` (each image on its
    own), for data without a timm transform (the demo); ``None`` when ``random_erasing`` is 0."""
    if config.random_erasing <= 0:
        return None
    return RandomErasing(probability=config.random_erasing, mode=config.random_erasing_mode, device=str(device))


def mixup_active(config: TrainConfig) -> bool:
    return config.mixup > 0 or config.cutmix > 0


def make_mixup(config: TrainConfig, num_classes: int) -> Any | None:
    """timm's :class:`~timm.data.Mixup` (label smoothing folded into its targets), or ``None`` when off."""
    if not mixup_active(config):
        return None
    return Mixup(mixup_alpha=config.mixup, cutmix_alpha=config.cutmix, prob=config.mixup_prob,
                 switch_prob=config.mixup_switch_prob, mode="batch", label_smoothing=config.label_smoothing,
                 num_classes=num_classes)


def make_criterion(config: TrainConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The label loss: timm's soft-target cross-entropy under mixup, its label-smoothing
    cross-entropy with ``label_smoothing`` alone, plain cross-entropy otherwise (as DeiT's main)."""
    if mixup_active(config):
        return SoftTargetCrossEntropy()
    if config.label_smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=config.label_smoothing)
    return F.cross_entropy


def anchor_options(config: TrainConfig) -> dict[str, Any]:
    """Extra ``timm.create_model`` kwargs of every anchor (``drop_path_rate`` when set)."""
    return {"drop_path_rate": config.drop_path_rate} if config.drop_path_rate is not None else {}
