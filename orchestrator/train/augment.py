"""The paper's training recipe, built from timm's own parts and a :class:`TrainConfig`.

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
``optimizer``,              :func:`timm.optim.create_optimizer_v2` over the supernet's
``momentum``, learning      anchor/stitch groups (:func:`make_optimizer`); ``stitch_lr:
rates, ``lr_scale_batch``   null`` gives both groups ``anchor_lr``
``min_lr``                  the cosine floor of :func:`lr_lambda`
==========================  ==============================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from orchestrator.train.config import TrainConfig

__all__ = [
    "transform_options",
    "make_batch_erasing",
    "make_mixup",
    "make_criterion",
    "scaled_lrs",
    "make_optimizer",
    "lr_lambda",
    "anchor_options",
    "group_lambdas",
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
    from timm.data.random_erasing import RandomErasing

    return RandomErasing(probability=config.random_erasing, mode=config.random_erasing_mode, device=str(device))


def mixup_active(config: TrainConfig) -> bool:
    return config.mixup > 0 or config.cutmix > 0


def make_mixup(config: TrainConfig, num_classes: int) -> Any | None:
    """timm's :class:`~timm.data.Mixup` (label smoothing folded into its targets), or ``None`` when off."""
    if not mixup_active(config):
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=config.mixup, cutmix_alpha=config.cutmix, prob=config.mixup_prob,
                 switch_prob=config.mixup_switch_prob, mode="batch", label_smoothing=config.label_smoothing,
                 num_classes=num_classes)


def make_criterion(config: TrainConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The label loss: timm's soft-target cross-entropy under mixup, its label-smoothing
    cross-entropy with ``label_smoothing`` alone, plain cross-entropy otherwise (as DeiT's main)."""
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if mixup_active(config):
        return SoftTargetCrossEntropy()
    if config.label_smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=config.label_smoothing)
    return F.cross_entropy


def scaled_lrs(config: TrainConfig, world: int) -> tuple[float, float, float]:
    """``(anchor_lr, stitch_lr, scale)`` after the paper's batch scaling (lr x total batch /
    ``lr_scale_batch``); ``stitch_lr: null`` gives the stitching layers ``anchor_lr``."""
    scale = config.batch_size * world / config.lr_scale_batch if config.lr_scale_batch else 1.0
    stitch = config.stitch_lr if config.stitch_lr is not None else config.anchor_lr
    return config.anchor_lr * scale, stitch * scale, scale


def make_optimizer(net: Any, config: TrainConfig, world: int) -> torch.optim.Optimizer:
    """timm's optimizer (``adamw`` or ``sgd`` with Nesterov momentum) over the supernet's groups:
    anchors and stitching layers, each with and without weight decay."""
    from timm.optim import create_optimizer_v2

    anchor_lr, stitch_lr, _ = scaled_lrs(config, world)
    groups = net.param_groups(anchor_lr, stitch_lr, config.weight_decay)
    kwargs: dict[str, Any] = {"momentum": config.momentum} if config.optimizer == "sgd" else {}
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


def anchor_options(config: TrainConfig) -> dict[str, Any]:
    """Extra ``timm.create_model`` kwargs of every anchor (``drop_path_rate`` when set)."""
    return {"drop_path_rate": config.drop_path_rate} if config.drop_path_rate is not None else {}



# -- the distillation teacher: any timm classifier, not only a stitchable family ------------------

_NO_TEACHER_WEIGHTS = ("teacher {name!r} has neither hub weights (pretrained: true) nor a local checkpoint; "
                       "a teacher with random weights teaches nothing: set one of them, or drop the teacher.")


def teacher_problems(spec: Any, **kwargs: Any) -> list[str]:
    """Every problem of a teacher found without loading weights (:func:`snnet.anchors.check_spec`
    less its stitchable-family check: a teacher such as ``regnety_160`` is only run, never
    stitched); a teacher without weights is a problem. An empty list when it is sound."""
    from snnet.anchors import AnchorSpec, UnsupportedFamilyError, adapter_for, build_model, check_spec

    if isinstance(spec, str):
        spec = AnchorSpec(spec, pretrained=True)
    try:  # one meta build, shared with check_spec
        model, _ = build_model(spec, load_weights=False, device="meta", **kwargs)
    except Exception:  # noqa: BLE001 - an unknown name or bad kwargs: check_spec builds again and says so
        model = None
    problems = check_spec(spec, model=model, **kwargs)
    if model is not None:
        try:
            adapter_for(model, spec.name)
        except UnsupportedFamilyError as e:
            problems = [p for p in problems if p != str(e)]
    if not spec.pretrained and not spec.checkpoint:
        problems.append(_NO_TEACHER_WEIGHTS.format(name=spec.name))
    return problems


def create_teacher(spec: Any, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The teacher as a plain timm model in eval mode, frozen: hub weights where reachable (or
    cached), a local checkpoint otherwise (``spec.checkpoint`` wins), an :class:`SNNetError`
    saying what to do when neither loads."""
    from snnet import SNNetError
    from snnet.anchors import AnchorSpec, build_model, check_model_name

    if isinstance(spec, str):
        spec = AnchorSpec(spec, pretrained=True)
    check_model_name(spec.name)
    if not spec.checkpoint and not spec.pretrained:
        raise SNNetError(_NO_TEACHER_WEIGHTS.format(name=spec.name))
    model, _ = build_model(spec)
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
