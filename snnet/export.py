"""One stitch as a standalone module that holds only the weights it runs.

A :class:`~snnet.supernet.StitchedSupernet` holds every anchor and every stitching layer of
its space; a deployment needs one stitch. :func:`extract_stitch` walks ``stitch.path`` (the
object that also drives :meth:`StitchedSupernet.forward` and the FLOPs and parameter counts)
to find the parameters the stitch uses, deep-copies the anchors on the path and the
stitching layers of its junctions, and swaps every sub-module of an anchor that holds only
unused parameters (blocks not run, the front anchor's norm and head, the back anchor's patch
embedding or CNN stem) for a parameter-free :class:`Pruned` placeholder. Parameters held
directly by a module that stays (a ViT's ``cls_token`` and ``pos_embed`` when its stem is
not run) are dropped from it. The result runs the same path with the same modules, so its
output equals ``supernet(x, stitch)`` and its parameter count equals ``stitch.params``.

The module is plain PyTorch, ready for ``torch.export.export(module.eval(), (x,))``; the
exported program no longer needs this package or timm to run.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from ._space import Step, Stitch
from .anchors import Anchor
from .supernet import StitchedSupernet, run_path

__all__ = ["Pruned", "StandaloneStitch", "extract_stitch"]


class Pruned(nn.Module):
    """Stands in for a sub-module whose weights a stitch does not use; it must never run."""

    def __init__(self, was: str):
        super().__init__()
        self.was = was

    def forward(self, *args, **kwargs):
        raise RuntimeError(f"{self.was} was pruned from this stitch: it is not on the stitch's path")

    def extra_repr(self) -> str:
        return self.was


class StandaloneStitch(nn.Module):
    """One stitch with only its own weights: ``forward(x)`` runs ``path`` over ``anchors`` and ``stitch_layers``."""

    def __init__(self, path: Sequence[Step], anchors: dict[str, Anchor], stitch_layers: dict[str, nn.Module]):
        super().__init__()
        self.path = tuple(path)
        self.anchors = nn.ModuleDict(anchors)
        self.stitch_layers = nn.ModuleDict(stitch_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_path(self.path, x, lambda a: self.anchors[str(a)], self.stitch_layers.__getitem__)


def _prune(module: nn.Module, used: set[int], name: str, replaced: dict[int, nn.Module]) -> None:
    """Replace children that hold only unused parameters; drop unused direct parameters."""
    for child_name, child in list(module.named_children()):
        params = list(child.parameters())
        if params and not any(id(p) in used for p in params):
            placeholder = Pruned(f"{name}.{child_name}")
            setattr(module, child_name, placeholder)
            replaced[id(child)] = placeholder
        else:
            _prune(child, used, f"{name}.{child_name}", replaced)
    for param_name, param in list(module._parameters.items()):
        if param is not None and id(param) not in used:
            del module._parameters[param_name]


def _prune_anchor(anchor: Anchor, used: set[int]) -> None:
    replaced: dict[int, nn.Module] = {}
    _prune(anchor.model, used, anchor.name, replaced)
    # The anchor's own unit and head lists point at the original sub-modules: repoint them,
    # so the pruned weights are really gone, not only unregistered.
    anchor._units = [(stage, [replaced.get(id(m), m) for m in mods]) for stage, mods in anchor._units]
    anchor._head_modules = [replaced.get(id(m), m) for m in anchor._head_modules]


def extract_stitch(supernet: StitchedSupernet, stitch: Stitch | int) -> StandaloneStitch:
    """A deep copy of the weights ``stitch`` uses, as a module that runs that stitch only.

    The supernet is not modified. Stitching layers with an unmerged LoRA update are copied as
    they are; call :meth:`~snnet.supernet.StitchingLayer.merge_lora` first for one affine map.
    """
    stitch = supernet.space[stitch] if isinstance(stitch, int) else stitch
    used_anchors = sorted(set(stitch.anchors))
    kept = {
        "anchors": {str(a): supernet.anchors[a] for a in used_anchors},
        "layers": {k: supernet.stitch_layers[k] for k in dict.fromkeys(stitch.layers)},
    }
    memo: dict[int, object] = {}
    copied = copy.deepcopy(kept, memo)  # one memo: shared tensors stay shared in the copy
    used = {id(memo[id(p)]) for p in supernet.stitch_parameters(stitch) if id(p) in memo}
    for anchor in copied["anchors"].values():
        _prune_anchor(anchor, used)
    module = StandaloneStitch(stitch.path, copied["anchors"], copied["layers"])
    module.train(supernet.training)
    return module
