"""Load the trained supernets SN-Net released (Pan, Cai and Zhuang, CVPR 2023).

The released DeiT checkpoint (``snnet_deit.pth`` of github.com/ziplab/SN-Net, written by
``stitching_deit/main.py``) holds ``{'model': SNNet.state_dict(), ...}``. Its keys are

* ``anchors.{i}.<timm VisionTransformer key>`` for anchor ``i`` in the order given (small to
  large: DeiT-Ti, DeiT-S, DeiT-B);
* ``stitch_layers.{p}.{w}.transform.{weight,bias}``: the linear stitching layer of window
  ``w`` for anchor pair ``p``, where pairs are numbered in ``itertools.combinations`` order,
  without the non-neighbouring pairs under nearest stitching (``[(0, 1), (1, 2)]`` for three
  anchors, or ``[(0, 1), (0, 2), (1, 2)]`` without nearest stitching).

:func:`load_paper_checkpoint` rebuilds that supernet as a :class:`StitchedSupernet` of the
same space (``stitch_id`` equals the released config id) with
:attr:`~snnet.supernet.StitchedSupernet.released_deit_head` on, so that
``supernet(x, i)`` computes what the released ``SNNet`` computes for config ``i``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

import torch

from ._errors import SNNetError
from ._space import StitchSpace
from ._stitch import SpaceConfig
from .anchors import AnchorSpec, check_model_name, create_anchor
from .flops import profile_anchor
from .supernet import StitchedSupernet

__all__ = ["load_paper_checkpoint", "paper_state_dict_keys"]


def _read(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SNNetError(f"Checkpoint file {path!r} does not exist or is not a file.")
    try:
        # The released training script also stores its argparse Namespace ('args'); allow that
        # one class and nothing else that could run code.
        with torch.serialization.safe_globals([argparse.Namespace]):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any parse failure is the user's file
        raise SNNetError(f"Could not read {path!r} as a weights-only SN-Net checkpoint: {e}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SNNetError(f"{path!r} holds no state dict of tensors (expected {{'model': SNNet.state_dict()}}).")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _released_pairs(space: StitchSpace) -> list[tuple[int, int]]:
    return space._pairs()  # fast-to-slow: combinations order, neighbours only when nearest


def paper_state_dict_keys(supernet: StitchedSupernet) -> dict[str, str]:
    """Map every key of the released ``SNNet.state_dict()`` to this supernet's key."""
    space = supernet.space
    mapping: dict[str, str] = {}
    for key in supernet.state_dict():
        head, _, rest = key.partition(".")
        if head == "anchors":
            index, _, inner = rest.partition(".")
            mapping[f"anchors.{index}.{inner.removeprefix('model.')}"] = key
    pair_index = {pair: p for p, pair in enumerate(_released_pairs(space))}
    for name, spec in space.layers.items():
        p = pair_index[(spec.front, spec.back)]
        for tensor in ("weight", "bias"):
            mapping[f"stitch_layers.{p}.{spec.window}.transform.{tensor}"] = f"stitch_layers.{name}.proj.{tensor}"
    return mapping


def load_paper_checkpoint(
    path: str | os.PathLike[str],
    anchors: Sequence[AnchorSpec | str],
    kernel_size: int = 2,
    stride: int = 1,
    **space_options: Any,
) -> StitchedSupernet:
    """A :class:`StitchedSupernet` holding SN-Net's released DeiT supernet from ``path``.

    Args:
        path: the released checkpoint (``{'model': SNNet.state_dict(), ...}``), read with
            ``torch.load(weights_only=True)``.
        anchors: the anchors it was trained with, small to large (timm names or
            :class:`AnchorSpec`; their weights come from the checkpoint, so give neither
            ``pretrained`` nor ``checkpoint``; ``kwargs`` such as ``num_classes`` must match).
        kernel_size, stride: its ``--stitch_kernel_size`` and ``--stitch_stride``.
        space_options: further :class:`SpaceConfig` fields, e.g. ``nearest=False`` for a run
            with ``nearest_stitching=False``.

    The space is ``SpaceConfig(preset="paper", released_deit_head=True, ...)``: its ids are the
    released config ids and stitched networks skip the back anchor's final norm, as the
    released forward does. Call ``supernet.set_released_deit_head(False)`` to fine-tune on with
    the norm (the project's forward, and the paper's Swin and SN-Netv2 code).
    """
    specs = [AnchorSpec(a) if isinstance(a, str) else a for a in anchors]
    config = SpaceConfig(
        kernel_size=kernel_size, stride=stride, preset="paper", released_deit_head=True, **space_options
    )
    config.validate()
    for spec in specs:
        check_model_name(spec.name)
    state = _read(path)
    built = [create_anchor(AnchorSpec(s.name, kwargs=dict(s.kwargs))) for s in specs]
    if [a.family for a in built] != ["vit"] * len(built):
        raise SNNetError(
            "load_paper_checkpoint reads the released DeiT supernet (stitching_deit); its anchors are ViT/DeiT "
            f"models, got {[f'{a.name} ({a.family})' for a in built]}."
        )
    space = StitchSpace([profile_anchor(a) for a in built], config)
    if list(space.anchor_names) != [s.name for s in specs]:
        raise SNNetError(
            f"Give the anchors small to large, as the released code stacks them: {list(space.anchor_names)}, "
            f"got {[s.name for s in specs]}."
        )
    supernet = StitchedSupernet(space, built)
    mapping = paper_state_dict_keys(supernet)
    missing = sorted(set(mapping) - set(state))
    unexpected = sorted(set(state) - set(mapping))
    if missing or unexpected:
        raise SNNetError(
            f"Checkpoint {os.fspath(path)!r} does not fit SN-Net's DeiT supernet of {[s.name for s in specs]} with "
            f"kernel_size={kernel_size}, stride={stride}, {space_options or 'default options'}: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected keys "
            f"(e.g. {unexpected[:3]})."
        )
    ours = {mapping[k]: v for k, v in state.items()}
    try:
        supernet.load_state_dict(ours, strict=True)
    except RuntimeError as e:
        first = str(e).split("\n\t")[1:2] or [str(e)]
        raise SNNetError(f"Checkpoint {os.fspath(path)!r} does not fit the anchors: {first[0].strip()}") from None
    return supernet.eval()
