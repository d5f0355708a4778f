"""FLOPs and parameter profiles of anchors, in fvcore's convention.

The project counts FLOPs exactly as :class:`fvcore.nn.FlopCountAnalysis` does (one
multiply-add is one FLOP, one input image), with one addition: timm runs attention through
``torch.nn.functional.scaled_dot_product_attention``, an op fvcore does not know and would
silently skip. :func:`sdpa_flop_jit` counts it as the two matrix products it fuses
(``Q K^T`` and ``softmax(.) V``), the same figure fvcore gives the unfused
``q @ k.transpose(-2, -1)`` / ``attn @ v`` path.

A whole stitch space is costed from one trace per anchor: :func:`profile_anchor` traces
:meth:`snnet.anchors.Anchor.forward` once and reads the FLOPs of the stem, of every unit and
of the head from fvcore's per-module counts (``ancestor_mode("caller")`` attributes each op
to the scope modules it ran under). A stitch's FLOPs are then a sum over its path, which the
tests check against a full trace of the stitched network.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .anchors import Anchor

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


@torch.no_grad()
def profile_anchor(anchor: Anchor) -> AnchorProfile:
    """Trace ``anchor`` once with fvcore; return per-piece FLOPs, params and shapes."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [anchor.stem.register_forward_hook(lambda m, i, o: shapes.__setitem__("stem", _ints(o.shape[1:])))]
    for idx, unit in enumerate(anchor.units):
        hooks.append(unit.register_forward_hook(
            lambda m, i, o, idx=idx: shapes.__setitem__(f"units.{idx}", _ints(o.shape[1:]))
        ))
    was_training = anchor.training
    anchor.eval()
    try:
        x = torch.zeros(1, *anchor.input_size)
        counts = flop_count(anchor, x).by_module()
    finally:
        for h in hooks:
            h.remove()
        anchor.train(was_training)
    numel = lambda params: sum(p.numel() for p in params)  # noqa: E731
    return AnchorProfile(
        name=anchor.name,
        family=anchor.family,
        layout=anchor.layout,
        input_size=anchor.input_size,
        num_classes=anchor.num_classes,
        stage_of=anchor.stage_of,
        stem_shape=shapes["stem"],
        unit_shapes=tuple(shapes[f"units.{i}"] for i in range(anchor.depth)),
        stem_flops=int(counts["stem"]),
        unit_flops=tuple(int(counts[f"units.{i}"]) for i in range(anchor.depth)),
        head_flops=int(counts["head"]),
        stem_params=numel(anchor.stem_parameters()),
        unit_params=tuple(numel(anchor.unit_parameters(i)) for i in range(anchor.depth)),
        head_params=numel(anchor.head_parameters()),
    )
