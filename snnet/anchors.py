"""A uniform view of a timm model as ``stem -> units -> head``.

SN-Net cuts an anchor after one block and resumes another anchor from one block, so it
needs each model as a sequence of *units* with a known activation shape between them.
:class:`Anchor` gives that view for the timm families the project supports, on top of
timm's own modules (no model code is copied). What differs between families lives in one
small adapter class per timm model class (:mod:`snnet._adapters`: ViT/DeiT/DeiT III, Swin,
ResNet, LeViT), registered in one table; :class:`Anchor` itself has no family switches.

Block indices are 0-based and count across stages. For hierarchical models the stage's
downsampling (Swin's patch merging) belongs to the first unit of the stage, so a unit's
*input* has the resolution of the previous stage and its *output* that of its own.

Stem, units and head are also exposed as parameter-free scope modules so that one fvcore
trace of :meth:`Anchor.forward` yields per-unit FLOPs (see :mod:`snnet.flops`).

Weights are explicit: every anchor built by :func:`create_anchor` records in
:attr:`Anchor.weights` where they came from (``hub:<id>``, ``file:<path>`` or ``random``).
The driver never loads them: :func:`check_spec` validates an :class:`AnchorSpec` from the
checkpoint's keys and shapes, ``create_anchor(spec, load_weights=False)`` builds the model
(random initialisation, for its structure and FLOPs) and :func:`weights_source` says where the
workers' builds will take the weights from.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from . import _weights
from ._adapters import ADAPTERS, FamilyAdapter, adapter_for, register_adapter
from ._errors import SNNetError, UnknownModelError, UnsupportedFamilyError
from ._spec import AnchorSpec, check_model_name
from ._weights import load_checkpoint

__all__ = [
    "ADAPTERS", "Anchor", "AnchorSpec", "FamilyAdapter", "LAYOUTS", "RANDOM", "Scope", "build_model",
    "check_model_name", "check_spec", "create_anchor", "load_checkpoint", "register_adapter", "weights_source",
]

logger = logging.getLogger(__name__)

#: :attr:`Anchor.weights` of an anchor whose weights are its random initialisation.
RANDOM = "random"

#: Activation layouts at a cut: ViT tokens ``(B, N, C)``, Swin ``(B, H, W, C)``, CNN ``(B, C, H, W)``.
LAYOUTS = ("tokens", "nhwc", "nchw")


class Scope(nn.Module):
    """A module that runs ``fn``; it exists so tracers see a named scope. Parameter-free, unless
    ``owner`` (the module whose parameters ``fn`` uses) is given for a tracer to see them too."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], owner: nn.Module | None = None):
        super().__init__()
        self.fn = fn
        if owner is not None:
            self.owner = owner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class Anchor(nn.Module):
    """One model seen as stem, a flat list of units, and head.

    Args:
        model: a timm model of a supported family (see :data:`ADAPTERS`).
        name: the name recorded in stitch paths and catalogs (usually the timm name).
        image_size: the input resolution asked for (CNNs take any; their config says 224).
        weights: where the weights came from (``hub:<id>``, ``file:<path>`` or ``random``).

    ``stem``, ``units[i]`` and ``head`` are parameter-free scope modules that run those pieces;
    :meth:`unit_modules` gives the model's own modules of a unit.
    """

    def __init__(self, model: nn.Module, name: str, image_size: int | None = None, weights: str = RANDOM):
        super().__init__()
        self.name = name
        self.model = model
        self.weights = weights
        self.adapter: FamilyAdapter = adapter_for(model, name, image_size)
        self.stem = Scope(self.forward_stem)
        self.units = nn.ModuleList(Scope(functools.partial(self.run_unit, i)) for i in range(self.depth))
        self.head = Scope(self.forward_head)

    # -- structure ---------------------------------------------------------------------
    @property
    def family(self) -> str:
        return self.adapter.family

    @property
    def layout(self) -> str:
        return self.adapter.layout

    @property
    def depth(self) -> int:
        """Number of units (blocks across all stages)."""
        return len(self.adapter.index)

    @property
    def stage_of(self) -> tuple[int, ...]:
        """Stage index of every unit (all zeros for plain ViTs)."""
        return self.adapter.stage_of()

    @property
    def input_size(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one input image."""
        return self.adapter.input_size()

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)

    @property
    def random_weights(self) -> bool:
        """True when the weights are a random initialisation (worth a warning before training)."""
        return self.weights == RANDOM

    def unit_modules(self, i: int) -> list[nn.Module]:
        """The model's modules that unit ``i`` runs, in order."""
        return self.adapter.unit_modules(i)

    def head_modules(self) -> list[nn.Module]:
        return self.adapter.head_modules()

    # -- forward pieces ----------------------------------------------------------------
    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter.forward_stem(x)

    def run_unit(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Run unit ``i``'s modules on ``x``."""
        for m in self.adapter.unit_modules(i):
            x = m(x)
        return x

    def forward_units(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Run units ``start .. stop-1``."""
        for i in range(start, stop):
            x = self.units[i](x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter.forward_head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for unit in self.units:
            x = unit(x)
        return self.head(x)

    # -- parameter ownership -------------------------------------------------------------
    def unit_parameters(self, i: int) -> list[nn.Parameter]:
        return _unique_params(self.unit_modules(i))

    def head_parameters(self) -> list[nn.Parameter]:
        return _unique_params(self.head_modules())

    def stem_parameters(self) -> list[nn.Parameter]:
        """Every model parameter that belongs to no unit and not to the head."""
        taken = {id(p) for i in range(self.depth) for p in self.unit_parameters(i)}
        taken.update(id(p) for p in self.head_parameters())
        return [p for p in self.model.parameters() if id(p) not in taken]

    def prune(self, keep: Iterable[nn.Parameter]) -> None:
        """Drop every weight not in ``keep``: sub-modules holding only such weights become
        :class:`~snnet.extract.Pruned` placeholders (which raise if run), and such parameters
        held directly by a kept module are unregistered. Units and head are looked up in the
        model when used, so the anchor runs the kept pieces unchanged."""
        self.adapter.prune({id(p) for p in keep}, self.name)


def _unique_params(modules: Sequence[nn.Module]) -> list[nn.Parameter]:
    seen: dict[int, nn.Parameter] = {}
    for m in modules:
        for p in m.parameters():
            seen.setdefault(id(p), p)
    return list(seen.values())


# -- building ----------------------------------------------------------------------------------
def _model_kwargs(spec: AnchorSpec, kwargs: dict[str, Any]) -> dict[str, Any]:
    model_kwargs = {**spec.kwargs, **kwargs}
    if model_kwargs.get("img_size") is not None and not _accepts_img_size(spec.name):
        model_kwargs.pop("img_size")  # CNN families take any resolution
    return model_kwargs


def _build(name: str, model_kwargs: dict[str, Any], **timm_kwargs: Any) -> nn.Module:
    import timm

    try:
        return timm.create_model(name, **timm_kwargs, **model_kwargs)
    except TypeError as e:
        raise SNNetError(f"timm could not build {name!r} with {model_kwargs}: {e}") from None


def _reset_note(name: str, source: str, had: int, wants: Any) -> None:
    logger.warning("%s: the weights from %s have %s classes; the classifier is reset for %s classes "
                   "(timm num_classes), the rest of the model is loaded.", name, source, had, wants)


def _load_file(model: nn.Module, spec: AnchorSpec, model_kwargs: dict[str, Any]) -> str:
    """Load ``spec.checkpoint`` into ``model``; a classifier of another class count is left as built."""
    state = load_checkpoint(spec.checkpoint)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    head = _weights.classifier_keys(cfg, own)
    if _weights.head_mismatch(cfg, own, {k: tuple(v.shape) for k, v in state.items()}):
        had = next((state[k].shape[0] for k in head if k.endswith("weight") and k in state), "other")
        _reset_note(spec.name, spec.checkpoint, had, model.num_classes)
        state = {k: v for k, v in state.items() if k not in set(head)}
    else:
        head = []
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        first = str(e).split("\n\t")[1:2] or [str(e)]
        raise SNNetError(
            f"Checkpoint {spec.checkpoint!r} does not fit {spec.name!r} built with {model_kwargs}: "
            f"{first[0].strip()}"
        ) from None
    missing = [k for k in result.missing_keys if k not in head]
    if missing or result.unexpected_keys:
        raise SNNetError(
            f"Checkpoint {spec.checkpoint!r} does not fit {spec.name!r}: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(result.unexpected_keys)} unexpected keys (e.g. {result.unexpected_keys[:3]})."
        )
    return f"file:{os.path.abspath(spec.checkpoint)}"


def hub_reachable(kind: str, where: str) -> bool:
    """Whether hub weights can be fetched now (see :func:`snnet._weights.hub_reachable`)."""
    return _weights.hub_reachable(kind, where)


def _build_pretrained(spec: AnchorSpec, model_kwargs: dict[str, Any], **timm_kwargs: Any) -> tuple[nn.Module, str]:
    """timm's hub weights: probe the host first, fall back to the cache, fail fast offline."""
    cfg = _hub_cfg(spec)
    source = _weights.hub_source(cfg)
    if source is not None and not hub_reachable(*source):
        cached = _weights.cached_hub_file(cfg)
        if cached is None:
            raise _weights.offline_error(spec.name, *source)
        timm_kwargs["pretrained_cfg_overlay"] = {"file": cached}  # timm's own local-file override
    model = _build(spec.name, model_kwargs, pretrained=True, **timm_kwargs)
    wants = model_kwargs.get("num_classes")
    if source is not None and wants is not None and cfg.get("num_classes") not in (None, wants):
        _reset_note(spec.name, source[1], cfg["num_classes"], wants)
    used = getattr(model, "pretrained_cfg", None) or {}
    if source is not None:
        return model, f"hub:{source[1]}"
    if used.get("file"):  # a registered model whose default weights are a local file (the demo)
        return model, f"file:{used['file']}"
    return model, RANDOM


def create_anchor(spec: AnchorSpec | str, *, load_weights: bool = True, **kwargs: Any) -> Anchor:
    """Build an :class:`Anchor` from a timm name (random, hub or local-file weights).

    ``kwargs`` are merged into ``spec.kwargs``; ``img_size`` is dropped for CNN families,
    which take any resolution. A checkpoint replaces hub weights. Weights whose classifier has
    another class count than the model's (``num_classes``) load with the classifier reset,
    said in one log line. :attr:`Anchor.weights` records the source.

    ``load_weights=False`` builds the same model with its random initialisation and reads no
    weights (no hub probe, no checkpoint file): what the driver needs to check class counts
    and count FLOPs and parameters, which do not depend on the weights' values. The classifier
    note is logged as loading would log it (from the checkpoint's header or the hub config);
    :attr:`Anchor.weights` is ``random``, and :func:`weights_source` names the source.
    """
    if isinstance(spec, str):
        spec = AnchorSpec(spec)
    model, weights = build_model(spec, load_weights=load_weights, **kwargs)
    if not load_weights:
        _note_head_reset(spec, model, _model_kwargs(spec, kwargs))
    image_size = {**spec.kwargs, **kwargs}.get("img_size")
    return Anchor(model, spec.name, image_size=image_size, weights=weights).eval()


def build_model(spec: AnchorSpec | str, *, load_weights: bool = True, device: str | torch.device | None = None,
                **kwargs: Any) -> tuple[nn.Module, str]:
    """``spec``'s plain timm model and where its weights came from (:attr:`Anchor.weights`):
    what :func:`create_anchor` wraps, for a model that is only run, never stitched (a
    distillation teacher of any timm family).

    Weights as :func:`create_anchor` loads them: a checkpoint (``spec.checkpoint``), else timm's
    hub weights (``spec.pretrained``: the host probed first, the cache as fallback, an
    :class:`SNNetError` offline), else the random initialisation; ``load_weights=False`` reads none.
    ``kwargs`` are merged into ``spec.kwargs`` (``img_size`` is dropped for CNN families);
    ``device`` is timm's (``"meta"``: a build without memory or weights).
    """
    if isinstance(spec, str):
        spec = AnchorSpec(spec)
    check_model_name(spec.name)
    model_kwargs = _model_kwargs(spec, kwargs)
    timm_kwargs = {"device": device} if device is not None else {}
    if load_weights and spec.checkpoint:
        model = _build(spec.name, model_kwargs, pretrained=False, **timm_kwargs)
        return model, _load_file(model, spec, model_kwargs)
    if load_weights and spec.pretrained:
        return _build_pretrained(spec, model_kwargs, **timm_kwargs)
    return _build(spec.name, model_kwargs, pretrained=False, **timm_kwargs), RANDOM


def _note_head_reset(spec: AnchorSpec, model: nn.Module, model_kwargs: dict[str, Any]) -> None:
    """Log the classifier note :func:`create_anchor` logs when it loads ``spec``'s weights, from
    the checkpoint's keys and shapes or the hub config alone; an unreadable file is left to
    :func:`check_spec`."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if spec.checkpoint:
        try:
            shapes = _weights.checkpoint_shapes(spec.checkpoint)
        except SNNetError:
            return
        own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        if _weights.head_mismatch(cfg, own, shapes):
            head = _weights.classifier_keys(cfg, own)
            had = next((shapes[k][0] for k in head if k.endswith("weight") and k in shapes), "other")
            _reset_note(spec.name, spec.checkpoint, had, model.num_classes)
        return
    if spec.pretrained:
        hub = _hub_cfg(spec)
        source, wants = _weights.hub_source(hub), model_kwargs.get("num_classes")
        if source is not None and wants is not None and hub.get("num_classes") not in (None, wants) and (
                _weights.cached_hub_file(hub) is not None or hub_reachable(*source)):  # else nothing will load
            _reset_note(spec.name, source[1], hub["num_classes"], wants)


def _hub_cfg(spec: AnchorSpec) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` of ``spec.name`` as a dict (empty when timm has none)."""
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(spec.name)
    except RuntimeError as e:  # an unknown pretrained tag
        raise SNNetError(f"{spec.name!r}: {e}") from None
    return cfg.to_dict() if cfg is not None else {}


def weights_source(spec: AnchorSpec | str) -> str | None:
    """Where :func:`create_anchor` takes ``spec``'s weights from, without loading or fetching them:
    ``file:<absolute path>`` for a checkpoint, ``hub:<id>`` for timm's hub weights, ``random``
    without either (the value :attr:`Anchor.weights` records). ``None`` where only a build can
    tell: ``pretrained`` on a model registered outside timm whose own builder picks its weights
    (a local file, as the demo anchors do)."""
    if isinstance(spec, str):
        spec = AnchorSpec(spec)
    if spec.checkpoint:
        return f"file:{os.path.abspath(spec.checkpoint)}"
    if not spec.pretrained:
        return RANDOM
    cfg = _hub_cfg(spec)
    source = _weights.hub_source(cfg)
    if source is not None:
        return f"hub:{source[1]}"
    if cfg.get("file"):
        return f"file:{cfg['file']}"
    from timm.models import model_entrypoint

    return RANDOM if model_entrypoint(spec.name).__module__.startswith("timm.") else None


def _accepts_img_size(name: str) -> bool:
    from timm.models import is_model_in_modules

    return is_model_in_modules(name, ["vision_transformer", "swin_transformer", "deit"])


def anchor_depth(spec: AnchorSpec | str, **kwargs: Any) -> int:
    """The units (blocks across stages) of ``spec``'s model, from a build on the meta device
    (no memory, no weights): what a window is checked against before anchors are built."""
    if isinstance(spec, str):
        spec = AnchorSpec(spec)
    check_model_name(spec.name)
    model = _build(spec.name, _model_kwargs(spec, kwargs), pretrained=False, device="meta")
    return len(adapter_for(model, spec.name).index)


# -- checking a spec without weights -----------------------------------------------------------
def check_spec(spec: AnchorSpec | str, *, network: bool = True, model: nn.Module | None = None,
               **kwargs: Any) -> list[str]:
    """Every problem of ``spec`` found without loading weights; an empty list when it is sound.

    Checks that timm knows the name (with the closest names), that the model builds with the
    kwargs (on the meta device: no memory, no weights), that its class is a supported family,
    that ``num_classes`` is a count, that a checkpoint file exists and its keys and shapes fit
    the model (read from the file's header or a memory map, not loaded; a classifier of another
    class count is fine: it is reset), and, for hub weights with ``network``, that timm has
    weights for the name and that they are reachable or cached.

    ``model``: the timm model the caller already built from ``spec`` and ``kwargs`` without
    weights (``create_anchor(..., load_weights=False).model``); it stands in for the meta build.
    """
    import timm

    if isinstance(spec, str):
        spec = AnchorSpec(spec)
    try:
        check_model_name(spec.name)
    except UnknownModelError as e:
        return [str(e)]
    problems: list[str] = []
    model_kwargs = _model_kwargs(spec, kwargs)
    classes = model_kwargs.get("num_classes")
    if classes is not None and (isinstance(classes, bool) or not isinstance(classes, int) or classes < 0):
        return [f"{spec.name}: num_classes must be an integer >= 0, got {classes!r}."]
    try:
        model = model if model is not None else timm.create_model(spec.name, pretrained=False, device="meta",
                                                                  **model_kwargs)
    except Exception as e:  # noqa: BLE001 - any failure to build is the spec's
        return [f"timm could not build {spec.name!r} with {model_kwargs}: {e}"]
    try:
        adapter_for(model, spec.name)
    except UnsupportedFamilyError as e:
        problems.append(str(e))
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if spec.checkpoint:
        problems.extend(_checkpoint_problems(spec, model, cfg))
    elif spec.pretrained and network:
        from timm.models import model_entrypoint

        source = _weights.hub_source(cfg)
        own_builder = model_entrypoint(spec.name).__module__.startswith("timm.")  # others pick their own weights
        if source is None and not cfg.get("file") and own_builder:
            problems.append(f"timm has no pretrained weights for {spec.name!r}: drop pretrained, or pass a "
                            "local checkpoint.")
        elif source is not None and _weights.cached_hub_file(cfg) is None and not hub_reachable(*source):
            problems.append(str(_weights.offline_error(spec.name, *source)))
    return problems


def _checkpoint_problems(spec: AnchorSpec, model: nn.Module, cfg: dict[str, Any]) -> list[str]:
    try:
        shapes = _weights.checkpoint_shapes(spec.checkpoint)
    except SNNetError as e:
        return [str(e)]
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    skip = set(_weights.classifier_keys(cfg, own)) if _weights.head_mismatch(cfg, own, shapes) else set()
    missing = [k for k in own if k not in shapes and k not in skip]
    unexpected = [k for k in shapes if k not in own and k not in skip]
    wrong = [f"{k} {shapes[k]} vs {own[k]}" for k in own if k in shapes and k not in skip and shapes[k] != own[k]]
    if not (missing or unexpected or wrong):
        return []
    parts = [f"{len(items)} {what} (e.g. {items[:3]})" for what, items in
             (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong)) if items]
    return [f"Checkpoint {spec.checkpoint!r} does not fit {spec.name!r}: " + ", ".join(parts) + "."]
