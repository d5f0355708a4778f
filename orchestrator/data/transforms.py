"""How image folders and shards read their images: timm's training and evaluation transforms.

:class:`TransformOptions` holds the options (normalisation, interpolation, crop, AutoAugment,
random erasing, image mode) that :func:`~orchestrator.data.folders.image_folder_datasets`,
:func:`~orchestrator.data.shards.wds_datasets` and :func:`~orchestrator.data.get_datasets` take;
the demo's tensors keep their own fixed recipe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

# timm is imported inside the functions that build transforms, and the training config where it is read:
# importing orchestrator.data costs torch's import only, and orchestrator.train imports this package.

__all__ = ["TransformOptions"]


def _transforms(image_size: int, mean: Sequence[float] | None, std: Sequence[float] | None, interpolation: str,
                crop_pct: float | None, auto_augment: str | None, re_prob: float = 0.0,
                re_mode: str = "pixel") -> tuple[Any, Any]:
    """timm's training transform (``auto_augment``, random erasing with ``re_prob``/``re_mode``)
    and evaluation transform; ``interpolation="random"`` trains with a random one and
    evaluates bicubic, as timm's training scripts do."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform

    mean = tuple(mean) if mean is not None else IMAGENET_DEFAULT_MEAN
    std = tuple(std) if std is not None else IMAGENET_DEFAULT_STD
    common: dict[str, Any] = dict(input_size=image_size, mean=mean, std=std)
    train_tf = create_transform(is_training=True, auto_augment=auto_augment, interpolation=interpolation,
                                re_prob=re_prob, re_mode=re_mode, **common)
    val_tf = create_transform(is_training=False, crop_pct=crop_pct,
                              interpolation="bicubic" if interpolation == "random" else interpolation, **common)
    return train_tf, val_tf


@dataclass(frozen=True)
class TransformOptions:
    """How folders and shards read their images: timm's transforms' options and the image mode.

    One object for :func:`~orchestrator.data.folders.image_folder_datasets`,
    :func:`~orchestrator.data.shards.wds_datasets` and :func:`~orchestrator.data.get_datasets`
    (which also take the fields as keyword arguments, applied over ``options``).
    ``mean``/``std`` default to ImageNet's; ``input_img_mode="L"`` reads grey levels.
    """

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    interpolation: str = "bicubic"
    crop_pct: float | None = None
    auto_augment: str | None = None
    re_prob: float = 0.0
    re_mode: str = "pixel"
    input_img_mode: str = "RGB"

    def __post_init__(self) -> None:
        for name in ("mean", "std"):  # any sequence in, a tuple kept (frozen and hashable)
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))

    @classmethod
    def from_config(cls, config: Any) -> TransformOptions:
        """The options a :class:`~orchestrator.train.config.TrainConfig` asks for (its augmentation fields,
        mapped once by :func:`orchestrator.train.augment.transform_options`)."""
        from orchestrator.train.augment import transform_options

        return cls(**transform_options(config))

    @classmethod
    def of(cls, options: TransformOptions | None = None, **fields: Any) -> TransformOptions:
        """``options`` (default: the defaults) with ``fields`` replaced; an unknown name is a ``TypeError``."""
        base = options if options is not None else cls()
        return replace(base, **fields) if fields else base

    def transforms(self, image_size: int) -> tuple[Any, Any]:
        """timm's ``(training, evaluation)`` transforms at ``image_size``."""
        return _transforms(image_size, self.mean, self.std, self.interpolation, self.crop_pct, self.auto_augment,
                           self.re_prob, self.re_mode)
