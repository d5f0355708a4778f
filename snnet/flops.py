"""FLOPs and parameter profiles of anchors, in fvcore's convention.

The project counts FLOPs exactly as :class:`fvcore.nn.FlopCountAnalysis` does (one
multiply-add is one FLOP, one input image), with one addition: timm runs attention through
``torch.nn.functional.scaled_dot_product_attention``, an op fvcore does not know and would
silently skip. :func:`sdpa_flop_jit` counts it as the two matrix products it fuses
(``Q K^T`` and ``softmax(.) V``), the same figure fvcore gives the unfused
``q @ k.transpose(-2, -1)`` / ``attn @ v`` path.

A whole stitch space is costed from the anchors alone, never per stitch: :func:`profile_anchor`
traces each anchor's stem, head and distinct units once (identical blocks share one trace), and
a stitch's FLOPs are a sum over its path, which the tests check against a full fvcore trace of
the stitched network.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._errors import SNNetError
from .anchors import Anchor, Scope

__all__ = ["AnchorProfile", "profile_anchor", "flop_count", "sdpa_flop_jit"]


def _shape(value: Any) -> list[int]:
    return list(value.type().sizes())


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for ``aten::scaled_dot_product_attention``: ``L*S*(E + Ev)`` per batch-head."""
    q, k, v = (_shape(t) for t in inputs[:3])
    *batch, length, embed = q
    source = k[-2]
    return math.prod(batch) * length * source * (embed + v[-1])


def flop_count(module: nn.Module, *inputs: torch.Tensor):
    """An fvcore ``FlopCountAnalysis`` set up the project's way (quiet, fused attention counted)."""
    with warnings.catch_warnings():  # fvcore's import scripts a helper with the deprecated torch.jit.script
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(module, inputs)
    analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    return analysis.ancestor_mode("caller")


@dataclass(frozen=True)
class AnchorProfile:
    """Everything the stitch space needs to know of one anchor, without its weights.

    Shapes exclude the batch dimension and follow the anchor's ``layout``.
    """

    name: str
    family: str
    layout: str
    input_size: tuple[int, int, int]
    num_classes: int
    stage_of: tuple[int, ...]
    stem_shape: tuple[int, ...]
    unit_shapes: tuple[tuple[int, ...], ...]
    stem_flops: int
    unit_flops: tuple[int, ...]
    head_flops: int
    stem_params: int
    unit_params: tuple[int, ...]
    head_params: int
    # The final norm's share of the head (ViT and Swin; 0 for CNNs): a stitched path of the
    # released DeiT code runs the head without it (SpaceConfig.released_deit_head).
    norm_flops: int = 0
    norm_params: int = 0

    @property
    def depth(self) -> int:
        return len(self.unit_shapes)

    @property
    def flops(self) -> int:
        return self.stem_flops + sum(self.unit_flops) + self.head_flops

    @property
    def params(self) -> int:
        return self.stem_params + sum(self.unit_params) + self.head_params

    def input_shape(self, k: int) -> tuple[int, ...]:
        """Shape entering unit ``k`` (``k == depth`` is the head's input)."""
        return self.stem_shape if k == 0 else self.unit_shapes[k - 1]

    def width(self, shape: tuple[int, ...]) -> int:
        return shape[0] if self.layout == "nchw" else shape[-1]

    def grid(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The non-channel part of a shape: ``(N,)`` tokens or ``(H, W)``."""
        return tuple(shape[1:]) if self.layout == "nchw" else tuple(shape[:-1])


def _ints(shape: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in shape)


def _unit_signature(modules: list[nn.Module], shape: tuple[int, ...]) -> str:
    """Everything fvcore's count of a unit depends on: code (module types), hyperparameters
    (plain attributes such as a Swin block's shift), parameter and buffer shapes, input shape."""
    parts: list[Any] = [shape]
    for top in modules:
        for name, m in top.named_modules():
            attrs = sorted((k, v) for k, v in vars(m).items()
                           if not k.startswith("_") and isinstance(v, (bool, int, float, str, tuple, type(None))))
            parts.append((name, type(m).__module__, type(m).__qualname__, attrs,
                          [(n, tuple(p.shape)) for n, p in m.named_parameters(recurse=False)],
                          [(n, tuple(b.shape)) for n, b in m.named_buffers(recurse=False)]))
    return repr(parts)


@torch.no_grad()
def profile_anchor(anchor: Anchor) -> AnchorProfile:
    """Per-piece FLOPs, params and shapes of ``anchor``, in fvcore's convention.

    The stem, the head and every *distinct* unit are traced once each on a batch of one; a unit
    identical to one already traced (same module types, hyperparameters, parameter shapes and
    input shape, as the blocks of a ViT are) reuses its count. The pieces sum to a full trace
    of the anchor exactly, which the tests check on every family.
    """
    was_training = anchor.training
    anchor.eval()  # FLOPs are counted in eval mode (BatchNorm counts differ in training)
    try:
        return _profile(anchor)
    except RuntimeError as e:  # the model's own shape checks: patches, windows or biases that do not fit
        own = (getattr(anchor.model, "pretrained_cfg", None) or {}).get("input_size")
        if own is not None and tuple(own) == tuple(anchor.input_size):
            raise  # at the model's own size the failure is not the choice of size: keep it whole
        raise _size_error(anchor, e, own) from None
    finally:
        anchor.train(was_training)


def _size_error(anchor: Anchor, error: RuntimeError, own: Any) -> SNNetError:
    _, height, width = anchor.input_size
    size = str(height) if height == width else f"{height}x{width}"
    reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    hint = f" (its own is {own[1]})" if own and len(own) == 3 and own[1] == own[2] and own[1] != height else ""
    return SNNetError(f"{anchor.name} cannot run at image size {size}: {reason.rstrip('.')}. Choose an image size "
                      f"the model supports{hint}.")


def _profile(anchor: Anchor) -> AnchorProfile:
    stem_flops, x = _traced(anchor.forward_stem, anchor, torch.zeros(1, *anchor.input_size))
    stem_shape = _ints(x.shape[1:])
    cache: dict[str, tuple[int, tuple[int, ...]]] = {}
    unit_flops, unit_shapes = [], []
    for i in range(anchor.depth):
        key = _unit_signature(anchor.unit_modules(i), _ints(x.shape[1:]))
        if key not in cache:
            flops, out = _traced(functools.partial(anchor.run_unit, i), anchor, x)
            cache[key] = (flops, _ints(out.shape[1:]))
        flops, shape = cache[key]
        unit_flops.append(flops)
        unit_shapes.append(shape)
        x = torch.zeros(1, *shape)
    head_flops = _traced(anchor.forward_head, anchor, x)[0]
    norm = _final_norm(anchor)
    norm_flops = _traced(norm, anchor, x)[0] if norm is not None else 0

    def numel(params: Iterable[nn.Parameter]) -> int:
        return sum(p.numel() for p in params)

    return AnchorProfile(
        name=anchor.name,
        family=anchor.family,
        layout=anchor.layout,
        input_size=anchor.input_size,
        num_classes=anchor.num_classes,
        stage_of=anchor.stage_of,
        stem_shape=stem_shape,
        unit_shapes=tuple(unit_shapes),
        stem_flops=stem_flops,
        unit_flops=tuple(unit_flops),
        head_flops=head_flops,
        stem_params=numel(anchor.stem_parameters()),
        unit_params=tuple(numel(anchor.unit_parameters(i)) for i in range(anchor.depth)),
        head_params=numel(anchor.head_parameters()),
        norm_flops=norm_flops,
        norm_params=numel(norm.parameters()) if norm is not None else 0,
    )


def _traced(fn: Callable[[torch.Tensor], torch.Tensor], owner: nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    """fvcore's FLOPs of ``fn(x)`` and its output, both from the one traced run (no second forward)."""
    outputs: list[torch.Tensor] = []

    def run(t: torch.Tensor) -> torch.Tensor:
        outputs.append(fn(t))
        return outputs[-1]

    flops = int(flop_count(Scope(run, owner), x).total())
    return flops, outputs[-1].detach()


def _final_norm(anchor: Anchor) -> nn.Module | None:
    """The norm :meth:`Anchor.forward_head` applies before the model's own ``forward_head``."""
    return anchor.model.norm if anchor.family in ("vit", "swin") else None
