"""A uniform view of a timm model as ``stem -> units -> head``.

SN-Net cuts an anchor after one block and resumes another anchor from one block, so it
needs each model as a sequence of *units* with a known activation shape between them.
:class:`Anchor` gives that view for the timm families the project supports, on top of
timm's own modules (no model code is copied):

============  =======================================  ==================  ==========
family        timm class                               unit                layout
============  =======================================  ==================  ==========
``vit``       ``VisionTransformer`` (ViT, DeiT, DeiT3)  ``blocks[i]``       ``tokens``
``swin``      ``SwinTransformer``                      ``layers[s]`` block ``nhwc``
``resnet``    ``ResNet``                               ``layer{s}[b]``     ``nchw``
============  =======================================  ==================  ==========

Block indices are 0-based and count across stages. For hierarchical models the stage's
downsampling (Swin's patch merging) belongs to the first unit of the stage, so a unit's
*input* has the resolution of the previous stage and its *output* that of its own.

Stem, units and head are also exposed as parameter-free scope modules so that one fvcore
trace of :meth:`Anchor.forward` yields per-unit FLOPs (see :mod:`snnet.flops`).
"""

from __future__ import annotations

import difflib
import functools
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ._errors import SNNetError, UnknownModelError, UnsupportedFamilyError

__all__ = ["Anchor", "AnchorSpec", "create_anchor", "check_model_name", "load_checkpoint", "LAYOUTS"]

#: Activation layouts at a cut: ViT tokens ``(B, N, C)``, Swin ``(B, H, W, C)``, CNN ``(B, C, H, W)``.
LAYOUTS = ("tokens", "nhwc", "nchw")


@dataclass(frozen=True)
class AnchorSpec:
    """How to obtain one anchor: a timm name, optional weights, optional model kwargs.

    ``pretrained=True`` loads timm's hub weights (needs network access); ``checkpoint`` is a
    local file (``.pth``/``.pt`` loaded with ``weights_only=True``, or ``.safetensors``).
    ``kwargs`` go to :func:`timm.create_model` (``img_size``, ``num_classes``, ...).
    """

    name: str
    pretrained: bool = False
    checkpoint: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __hash__(self) -> int:  # kwargs is a dict; hash its sorted items
        return hash((self.name, self.pretrained, self.checkpoint, tuple(sorted(self.kwargs.items()))))


def check_model_name(name: str) -> None:
    """Raise :class:`UnknownModelError`, with the closest valid names, if timm lacks ``name``."""
    import timm

    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownModelError(
        f"Unknown model {name!r}: anchors must be timm model names (see timm.list_models()).{hint}"
    )


class _Scope(nn.Module):
    """A parameter-free module that runs ``fn``; it exists so tracers see a named scope."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class Anchor(nn.Module):
    """One pretrained model seen as stem, a flat list of units, and head.

    Args:
        model: a timm model of a supported family.
        name: the name recorded in stitch paths and catalogs (usually the timm name).
    """

    family: str
    layout: str

    def __init__(self, model: nn.Module, name: str, image_size: int | None = None):
        super().__init__()
        self.name = name
        self.model = model
        self._image_size = image_size
        self._units: list[tuple[int, list[nn.Module]]] = []  # (stage, modules run in order)
        self._head_modules: list[nn.Module] = []
        self._init_family(model)
        self.stem = _Scope(self.forward_stem)
        self.units = nn.ModuleList(_Scope(functools.partial(self._run_unit, i)) for i in range(len(self._units)))
        self.head = _Scope(self.forward_head)

    # -- family dispatch -------------------------------------------------------------
    def _init_family(self, model: nn.Module) -> None:
        from timm.models.resnet import ResNet
        from timm.models.swin_transformer import SwinTransformer
        from timm.models.vision_transformer import VisionTransformer

        if isinstance(model, VisionTransformer):
            self.family, self.layout = "vit", "tokens"
            self._units = [(0, [blk]) for blk in model.blocks]
            self._head_modules = [model.norm, model.fc_norm, model.head]
            for extra in ("attn_pool", "head_dist"):
                if isinstance(getattr(model, extra, None), nn.Module):
                    self._head_modules.append(getattr(model, extra))
        elif isinstance(model, SwinTransformer):
            self.family, self.layout = "swin", "nhwc"
            for s, stage in enumerate(model.layers):
                for b, blk in enumerate(stage.blocks):
                    self._units.append((s, [stage.downsample, blk] if b == 0 else [blk]))
            self._head_modules = [model.norm, model.head]
        elif isinstance(model, ResNet):
            self.family, self.layout = "resnet", "nchw"
            for s, layer in enumerate((model.layer1, model.layer2, model.layer3, model.layer4)):
                self._units.extend((s, [blk]) for blk in layer)
            self._head_modules = [model.global_pool, model.fc]
        else:
            raise UnsupportedFamilyError(
                f"Model {self.name!r} is a timm {type(model).__name__}; the anchor adapter supports "
                "VisionTransformer (ViT, DeiT, DeiT III), SwinTransformer and ResNet models."
            )

    def _run_unit(self, i: int, x: torch.Tensor) -> torch.Tensor:
        for m in self._units[i][1]:
            x = m(x)
        return x

    # -- structure ---------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Number of units (blocks across all stages)."""
        return len(self._units)

    @property
    def stage_of(self) -> tuple[int, ...]:
        """Stage index of every unit (all zeros for plain ViTs)."""
        return tuple(s for s, _ in self._units)

    @property
    def input_size(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one input image."""
        m = self.model
        if self.family in ("vit", "swin"):
            h, w = m.patch_embed.img_size
            return (m.patch_embed.proj.in_channels, int(h), int(w))
        first_conv = next(mod for mod in m.conv1.modules() if isinstance(mod, nn.Conv2d))
        if self._image_size is not None:
            h = w = int(self._image_size)
        else:
            _, h, w = m.pretrained_cfg.get("input_size", (3, 224, 224))
        return (first_conv.in_channels, int(h), int(w))

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)

    # -- forward pieces ----------------------------------------------------------------
    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        if self.family == "vit":
            x = m.patch_embed(x)
            x = m._pos_embed(x)
            x = m.patch_drop(x)
            return m.norm_pre(x)
        if self.family == "swin":
            return m.patch_embed(x)
        x = m.conv1(x)
        x = m.bn1(x)
        x = m.act1(x)
        return m.maxpool(x)

    def forward_units(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Run units ``start .. stop-1``."""
        for i in range(start, stop):
            x = self.units[i](x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        if self.family in ("vit", "swin"):
            x = m.norm(x)
        return m.forward_head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for unit in self.units:
            x = unit(x)
        return self.head(x)

    # -- parameter ownership -------------------------------------------------------------
    def unit_parameters(self, i: int) -> list[nn.Parameter]:
        return _unique_params(self._units[i][1])

    def head_parameters(self) -> list[nn.Parameter]:
        return _unique_params(self._head_modules)

    def stem_parameters(self) -> list[nn.Parameter]:
        """Every model parameter that belongs to no unit and not to the head."""
        taken = {id(p) for i in range(self.depth) for p in self.unit_parameters(i)}
        taken.update(id(p) for p in self.head_parameters())
        return [p for p in self.model.parameters() if id(p) not in taken]


def _unique_params(modules: Sequence[nn.Module]) -> list[nn.Parameter]:
    seen: dict[int, nn.Parameter] = {}
    for m in modules:
        for p in m.parameters():
            seen.setdefault(id(p), p)
    return list(seen.values())


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from a local file without executing code from it.

    ``.safetensors`` files go through safetensors; anything else through
    ``torch.load(weights_only=True)``. Wrappers written by common trainers
    (``{"state_dict": ...}``, ``{"model": ...}``) and DDP's ``module.`` prefix are removed.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SNNetError(f"Checkpoint file {path!r} does not exist or is not a file.")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any parse failure is the user's file
        raise SNNetError(
            f"Could not read checkpoint {path!r} as a safe weights-only file: {e}. "
            "Checkpoints must hold tensors only (torch.save of a state dict, or safetensors)."
        ) from None
    for key in ("state_dict", "model", "state_dict_ema", "model_ema"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise SNNetError(f"Checkpoint {path!r} holds a {type(state).__name__}, not a state dict.")
    return {k.removeprefix("module."): v for k, v in state.items()}


def create_anchor(spec: AnchorSpec | str, **kwargs: Any) -> Anchor:
    """Build an :class:`Anchor` from a timm name (random, hub or local-file weights).

    ``kwargs`` are merged into ``spec.kwargs``; ``img_size`` is dropped for CNN families,
    which take any resolution.
    """
    import timm

    if isinstance(spec, str):
        spec = AnchorSpec(spec)
    check_model_name(spec.name)
    model_kwargs = {**spec.kwargs, **kwargs}
    image_size = model_kwargs.get("img_size")
    if image_size is not None and not _accepts_img_size(spec.name):
        model_kwargs.pop("img_size")
    try:
        model = timm.create_model(spec.name, pretrained=spec.pretrained and not spec.checkpoint, **model_kwargs)
    except TypeError as e:
        raise SNNetError(f"timm could not build {spec.name!r} with {model_kwargs}: {e}") from None
    if spec.checkpoint:
        state = load_checkpoint(spec.checkpoint)
        try:
            result = model.load_state_dict(state, strict=False)
        except RuntimeError as e:  # shape mismatches
            first = str(e).split("\n\t")[1:2] or [str(e)]
            raise SNNetError(
                f"Checkpoint {spec.checkpoint!r} does not fit {spec.name!r} built with {model_kwargs}: "
                f"{first[0].strip()}"
            ) from None
        if result.missing_keys or result.unexpected_keys:
            raise SNNetError(
                f"Checkpoint {spec.checkpoint!r} does not fit {spec.name!r}: "
                f"{len(result.missing_keys)} missing keys (e.g. {result.missing_keys[:3]}), "
                f"{len(result.unexpected_keys)} unexpected keys (e.g. {result.unexpected_keys[:3]})."
            )
    return Anchor(model, spec.name, image_size=image_size).eval()


def _accepts_img_size(name: str) -> bool:
    from timm.models import is_model_in_modules

    return is_model_in_modules(name, ["vision_transformer", "swin_transformer", "deit"])
