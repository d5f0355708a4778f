"""One stitch as a standalone module that holds only the weights it runs.

A :class:`~snnet.supernet.StitchedSupernet` holds every anchor and every stitching layer of
its space; a deployment needs one stitch. :func:`extract_stitch` walks ``stitch.path`` (the
object that also drives :meth:`StitchedSupernet.forward` and the FLOPs and parameter counts)
to find the parameters the stitch uses, deep-copies the anchors on the path and the
stitching layers of its junctions, and prunes each copied anchor through its family adapter
(:meth:`~snnet.anchors.Anchor.prune`): every sub-module that holds only unused parameters
(blocks not run, the front anchor's norm and head, the back anchor's patch embedding or CNN
stem) becomes a parameter-free :class:`Pruned` placeholder, and parameters held directly by
a module that stays (a ViT's ``cls_token`` and ``pos_embed`` when its stem is not run) are
unregistered. The result runs the same path with the same modules, so its
output equals ``supernet(x, stitch)`` and its parameter count equals ``stitch.params``.

The module is plain PyTorch, ready for ``torch.export.export(module.eval(), (x,))``; the
exported program no longer needs this package or timm to run.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from ._adapters import Pruned
from ._space import Step, Stitch
from .anchors import Anchor

if TYPE_CHECKING:
    from .supernet import StitchedSupernet

__all__ = ["Pruned", "StandaloneStitch", "extract_stitch"]


class StandaloneStitch(nn.Module):
    """A module bound to one stitch: ``forward(x)`` runs ``stitch.path`` over ``anchors`` and ``stitch_layers``.

    Args:
        stitch: the :class:`~snnet.Stitch` to run (or, for older callers, its path).
        anchors: the anchors on the path, keyed by their index in the space as a string.
        stitch_layers: the stitching layers of the stitch's junctions, keyed by layer key.

    :meth:`bind` builds one that shares a supernet's modules (what ``StitchedSupernet.fix``
    needs: ``FixedStitch`` can be this class); :func:`extract_stitch` builds one over pruned
    copies that hold only the stitch's weights (for deployment and ``torch.export``).
    """

    def __init__(self, stitch: Stitch | Sequence[Step], anchors: dict[str, Anchor],
                 stitch_layers: dict[str, nn.Module]):
        super().__init__()
        self.stitch = stitch if isinstance(stitch, Stitch) else None
        self.path = tuple(stitch.path if isinstance(stitch, Stitch) else stitch)
        self.anchors = nn.ModuleDict(anchors)
        self.stitch_layers = nn.ModuleDict(stitch_layers)

    @staticmethod
    def modules_of(supernet: StitchedSupernet, stitch: Stitch) -> tuple[dict[str, Anchor], dict[str, nn.Module]]:
        """The supernet's anchors and stitching layers that ``stitch`` runs (shared, not copied)."""
        anchors = {str(a): supernet.anchors[a] for a in sorted(set(stitch.anchors))}
        layers = {k: supernet.stitch_layers[k] for k in dict.fromkeys(stitch.layers)}
        return anchors, layers

    @classmethod
    def bind(cls, supernet: StitchedSupernet, stitch: Stitch | int) -> StandaloneStitch:
        """``stitch`` of ``supernet`` as a module sharing the supernet's weights."""
        stitch = supernet.space[stitch] if isinstance(stitch, int) else stitch
        return cls(stitch, *cls.modules_of(supernet, stitch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _supernet.run_path(self.path, x, lambda a: self.anchors[str(a)], self.stitch_layers.__getitem__)


def extract_stitch(supernet: StitchedSupernet, stitch: Stitch | int) -> StandaloneStitch:
    """A deep copy of the weights ``stitch`` uses, as a module that runs that stitch only.

    The supernet is not modified. Stitching layers with an unmerged LoRA update are copied as
    they are; call :meth:`~snnet.supernet.StitchingLayer.merge_lora` first for one affine map.
    """
    stitch = supernet.space[stitch] if isinstance(stitch, int) else stitch
    memo: dict[int, object] = {}
    # one memo: shared tensors stay shared
    anchors, layers = copy.deepcopy(StandaloneStitch.modules_of(supernet, stitch), memo)
    keep = [memo[id(p)] for p in supernet.stitch_parameters(stitch) if id(p) in memo]
    for anchor in anchors.values():
        anchor.prune(keep)
    module = StandaloneStitch(stitch, anchors, layers)
    module.train(supernet.training)
    return module


# Last, as supernet.py imports StandaloneStitch at its own end (as FixedStitch): whichever of the two
# modules is imported first, the other finds what it needs. Read at call time: ``_supernet.run_path``.
from . import supernet as _supernet  # noqa: E402 - last on purpose: the import cycle, see above
