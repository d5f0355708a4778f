"""Family adapters: how one timm model class maps onto ``stem -> units -> head``.

One small :class:`FamilyAdapter` subclass per timm model class, registered in one table keyed by
the timm class (by its import path, so building the table does not import timm). A model is
served by the adapter of the nearest registered class in its MRO, so timm's subclasses (DeiT's
``VisionTransformerDistilled``, LeViT's ``LevitDistilled``) and models registered on top of
timm's classes (the demo anchors) are covered. Adding a family is one class and one decorator.

Adapters hold no module references of their own beyond the model: every unit and head module is
looked up in the model when asked for, so replacing a sub-module of the model (as the export's
pruning does) is seen by the adapter at once, with nothing to repoint.

============  =======================================  ==================  ==========
family        timm class                               unit                layout
============  =======================================  ==================  ==========
``vit``       ``VisionTransformer`` (ViT, DeiT, DeiT3)  ``blocks[i]``       ``tokens``
``swin``      ``SwinTransformer``                      ``layers[s]`` block ``nhwc``
``resnet``    ``ResNet``                               ``layer{s}[b]``     ``nchw``
``levit``     ``Levit``                                ``stages[s]`` block ``tokens``
============  =======================================  ==================  ==========

For hierarchical models the stage's downsampling (Swin's patch merging, LeViT's attention
downsample) belongs to the first unit of the stage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar

import torch
from torch import nn

from ._errors import UnsupportedFamilyError

__all__ = ["FamilyAdapter", "Pruned", "adapter_for", "register_adapter", "ADAPTERS"]

#: ``"module.QualName"`` of a timm model class -> its adapter class.
ADAPTERS: dict[str, type[FamilyAdapter]] = {}


def _class_key(cls: type | str) -> str:
    return cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"


def register_adapter(model_class: type | str) -> Callable[[type[FamilyAdapter]], type[FamilyAdapter]]:
    """Class decorator: serve ``model_class`` (a class or its ``"module.QualName"``) and its subclasses."""

    def register(adapter: type[FamilyAdapter]) -> type[FamilyAdapter]:
        ADAPTERS[_class_key(model_class)] = adapter
        return adapter

    return register


def adapter_for(model: nn.Module, name: str, image_size: int | None = None) -> FamilyAdapter:
    """The adapter of the nearest registered class in ``type(model)``'s MRO."""
    for cls in type(model).__mro__:
        adapter = ADAPTERS.get(_class_key(cls))
        if adapter is not None:
            return adapter(model, image_size)
    supported = ", ".join(dict.fromkeys(k.rsplit(".", 1)[1] for k in ADAPTERS))
    raise UnsupportedFamilyError(
        f"Model {name!r} is a timm {type(model).__name__}; the anchor adapter supports {supported} models "
        "(VisionTransformer covers ViT, DeiT and DeiT III)."
    )


class Pruned(nn.Module):
    """Stands in for a sub-module whose weights a stitch does not use; it must never run."""

    def __init__(self, was: str):
        super().__init__()
        self.was = was

    def forward(self, *args, **kwargs):
        raise RuntimeError(f"{self.was} was pruned from this stitch: it is not on the stitch's path")

    def extra_repr(self) -> str:
        return self.was


class FamilyAdapter:
    """Stem, units, head, input size and stage geometry of one timm model class.

    Subclasses set ``family`` and ``layout`` and implement :meth:`stages` (the unit modules of
    every stage, in order), :meth:`head_modules`, :meth:`forward_stem` and :meth:`forward_head`;
    the rest follows. Only public timm attributes are used.
    """

    family: ClassVar[str]
    layout: ClassVar[str]

    def __init__(self, model: nn.Module, image_size: int | None = None):
        self.model = model
        self.image_size = image_size
        # (stage, index in stage) of every unit: plain ints, so pruning the model never stales them.
        self.index: list[tuple[int, int]] = [(s, b) for s, blocks in enumerate(self.stages())
                                             for b in range(len(blocks))]

    # -- to implement ---------------------------------------------------------------------
    def stages(self) -> list[list[list[nn.Module]]]:
        """Per stage, per unit: the modules the unit runs in order."""
        raise NotImplementedError

    def head_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(x)

    def input_size(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one input image (default: the image size asked for, else timm's config)."""
        _, h, w = self.model.pretrained_cfg.get("input_size", (3, 224, 224))
        if self.image_size is not None:
            h = w = int(self.image_size)
        return (self.in_chans(), int(h), int(w))

    def in_chans(self) -> int:
        return int(self.model.in_chans) if hasattr(self.model, "in_chans") else 3

    # -- derived --------------------------------------------------------------------------
    def unit_modules(self, i: int) -> list[nn.Module]:
        stage, block = self.index[i]
        return self.stages()[stage][block]

    def stage_of(self) -> tuple[int, ...]:
        return tuple(s for s, _ in self.index)

    def prune(self, keep: set[int], name: str) -> None:
        """Swap every sub-module whose parameters are all outside ``keep`` (ids) for :class:`Pruned`,
        and unregister direct parameters outside ``keep`` (``register_parameter(name, None)``).

        The containers that hold units and head (a ResNet's ``layer3``, a Swin stage and its
        ``blocks``) stay, with their pruned members inside, so unit ``i`` is still found where the
        adapter looks for it."""
        where = {id(m): n for n, m in self.model.named_modules()}
        pieces = [m for i in range(len(self.index)) for m in self.unit_modules(i)] + self.head_modules()
        holders = {""}
        for m in pieces:
            parts = where.get(id(m), "").split(".")
            holders.update(".".join(parts[:k]) for k in range(1, len(parts)))
        _prune(self.model, keep, name, "", holders)


def _prune(module: nn.Module, keep: set[int], name: str, path: str, holders: set[str]) -> None:
    for child_name, child in list(module.named_children()):
        child_path = f"{path}.{child_name}" if path else child_name
        params = list(child.parameters())
        if child_path not in holders and params and not any(id(p) in keep for p in params):
            setattr(module, child_name, Pruned(f"{name}.{child_path}"))
        else:
            _prune(child, keep, name, child_path, holders)
    for param_name, param in list(module.named_parameters(recurse=False)):
        if id(param) not in keep:
            module.register_parameter(param_name, None)


def _present(modules: Iterable[object]) -> list[nn.Module]:
    return [m for m in modules if isinstance(m, nn.Module)]


@register_adapter("timm.models.vision_transformer.VisionTransformer")
class VisionTransformerAdapter(FamilyAdapter):
    """ViT, DeiT (distilled too) and DeiT III: patch embedding + prefix tokens + position embedding.

    timm's ``VisionTransformer._pos_embed`` is private, so its documented behaviour is written
    here from public attributes: prefix tokens (``cls_token``, DeiT's ``dist_token``,
    ``reg_token``) are concatenated before the position embedding is added, unless
    ``no_embed_class`` (DeiT III) says the embedding covers patches only; ``dynamic_img_size``
    resamples the embedding with :func:`timm.layers.resample_abs_pos_embed`. The tests check the
    anchor against ``model(x)`` on each variant.
    """

    family, layout = "vit", "tokens"

    def stages(self) -> list[list[list[nn.Module]]]:
        return [[[blk] for blk in self.model.blocks]]

    def head_modules(self) -> list[nn.Module]:
        m = self.model
        return _present([m.norm, m.fc_norm, m.head, getattr(m, "attn_pool", None), getattr(m, "head_dist", None)])

    def input_size(self) -> tuple[int, int, int]:
        pe = self.model.patch_embed
        h, w = pe.img_size
        return (pe.proj.in_channels, int(h), int(w))

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.patch_embed(x)
        x = self._position(x)
        x = m.patch_drop(x)
        return m.norm_pre(x)

    def _position(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        prefix = [t.expand(x.shape[0], -1, -1) for t in (m.cls_token, getattr(m, "dist_token", None),
                                                          getattr(m, "reg_token", None)) if t is not None]
        if m.pos_embed is None:
            return torch.cat(prefix + [x.view(x.shape[0], -1, x.shape[-1])], dim=1)
        pos = m.pos_embed
        if m.dynamic_img_size:
            from timm.layers import resample_abs_pos_embed

            b, h, w, c = x.shape
            pos = resample_abs_pos_embed(pos, new_size=(h, w), old_size=m.patch_embed.grid_size,
                                         num_prefix_tokens=0 if m.no_embed_class else m.num_prefix_tokens)
            x = x.view(b, -1, c)
        if m.no_embed_class:
            x = x + pos
            x = torch.cat(prefix + [x], dim=1) if prefix else x
        else:
            x = torch.cat(prefix + [x], dim=1) if prefix else x
            x = x + pos
        return m.pos_drop(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.norm(x))


@register_adapter("timm.models.swin_transformer.SwinTransformer")
class SwinAdapter(FamilyAdapter):
    """Swin: patch embedding, stages of blocks on ``(B, H, W, C)`` maps; patch merging opens a stage."""

    family, layout = "swin", "nhwc"

    def stages(self) -> list[list[list[nn.Module]]]:
        return [[[stage.downsample, blk] if b == 0 else [blk] for b, blk in enumerate(stage.blocks)]
                for stage in self.model.layers]

    def head_modules(self) -> list[nn.Module]:
        return [self.model.norm, self.model.head]

    def input_size(self) -> tuple[int, int, int]:
        pe = self.model.patch_embed
        h, w = pe.img_size
        return (pe.proj.in_channels, int(h), int(w))

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.patch_embed(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.norm(x))


@register_adapter("timm.models.resnet.ResNet")
class ResNetAdapter(FamilyAdapter):
    """ResNet: the CNN stem (conv, norm, act, max-pool), four stages of residual blocks, pool and fc."""

    family, layout = "resnet", "nchw"

    def stages(self) -> list[list[list[nn.Module]]]:
        m = self.model
        return [[[blk] for blk in layer] for layer in (m.layer1, m.layer2, m.layer3, m.layer4)]

    def head_modules(self) -> list[nn.Module]:
        return [self.model.global_pool, self.model.fc]

    def in_chans(self) -> int:
        return next(mod for mod in self.model.conv1.modules() if isinstance(mod, nn.Conv2d)).in_channels

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.maxpool(m.act1(m.bn1(m.conv1(x))))


@register_adapter("timm.models.levit.Levit")
class LevitAdapter(FamilyAdapter):
    """LeViT: a convolutional stem, then stages of attention blocks on tokens (or on maps with
    ``use_conv``); each later stage opens with an attention downsample that shrinks the grid."""

    family = "levit"

    @property
    def layout(self) -> str:  # type: ignore[override]
        return "nchw" if self.model.use_conv else "tokens"

    def stages(self) -> list[list[list[nn.Module]]]:
        return [[[stage.downsample, blk] if b == 0 else [blk] for b, blk in enumerate(stage.blocks)]
                for stage in self.model.stages]

    def head_modules(self) -> list[nn.Module]:
        return _present([self.model.head, getattr(self.model, "head_dist", None)])

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.model.stem(x)
        return x if self.model.use_conv else x.flatten(2).transpose(1, 2)
