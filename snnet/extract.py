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
unregistered. The result (a :class:`~snnet.supernet.StandaloneStitch`) runs the same path with the same modules, so its
output equals ``supernet(x, stitch)`` and its parameter count equals ``stitch.params``.

The module is plain PyTorch, ready for ``torch.export.export(module.eval(), (x,))``; the
exported program no longer needs this package or timm to run.
"""

from __future__ import annotations

import copy

from ._adapters import Pruned
from ._stitch import Stitch
from .supernet import StandaloneStitch, StitchedSupernet

__all__ = ["Pruned", "extract_stitch"]


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
