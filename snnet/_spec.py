"""What names an anchor, without building it: :class:`AnchorSpec` and :func:`check_model_name`.

Torch-free (timm is imported only to look a name up), so that configuration and search spaces,
which hold specs, load without the training stack; :mod:`snnet.anchors` builds anchors from them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from ._errors import UnknownModelError
from .text import did_you_mean

__all__ = ["AnchorSpec", "check_model_name"]


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
        _check_tag(name)
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownModelError(
        f"Unknown model {name!r}: anchors must be timm model names (see timm.list_models()).{hint}"
    )


def _check_tag(name: str) -> None:
    """A pretrained tag (``resnet50.a1_in1k``) must be one timm registers for the architecture, as
    ``timm.create_model`` requires; an architecture with no registered weights takes any tag, as in timm."""
    from timm.models import get_arch_pretrained_cfgs

    arch, _, tag = name.partition(".")
    if not tag:
        return
    known = sorted(get_arch_pretrained_cfgs(arch))
    if known and name not in known:
        tags = [k.partition(".")[2] for k in known]
        shown = ", ".join(repr(k) for k in known[:8]) + (f", ... ({len(known)} in all)" if len(known) > 8 else "")
        raise UnknownModelError(
            f"Unknown pretrained tag {tag!r} in {name!r}{did_you_mean(tag, tags)}: timm's weights for {arch!r} "
            f"are {shown}; or name the architecture alone ({arch!r}) for its default weights."
        )
