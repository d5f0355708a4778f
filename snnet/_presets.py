"""``SpaceConfig(preset="paper")``: the stitch spaces of SN-Net's released code, per family.

SN-Net (Pan, Cai and Zhuang, CVPR 2023) released one enumeration per model family
(github.com/ziplab/SN-Net). This module reproduces each exactly (cuts, shared stitching
layers and order, so ``stitch_id`` equals the released config id); the tests hold tables
written from running the released functions.

=====================  ==============================  ============================================
family                 released code                   space
=====================  ==============================  ============================================
ViT / DeiT             ``stitching_deit``               ``paired_stitching`` windows over equal
                                                        depths, all pairs ``(j, k)`` in a window;
                                                        ``nearest=False`` adds chains (DeiT-Ti/S/B,
                                                        k=2, s=1: 71, or 732 without nearest)
Swin                   ``stitching_swin``               stages 0-2, FLOPs neighbours (T/S/B: 41)
ResNet, ResNet->Swin   ``stitching_resnet_swin``        stages 1-2, FLOPs neighbours (ResNet-18/50:
                                                        10; ResNet-18 -> Swin-T: 8)
LeViT                  ``stitching_levit``              stages 0-1, FLOPs neighbours
                                                        (LeViT-192/256: 8)
=====================  ==============================  ============================================

Within a stage of the hierarchical families, anchors of equal stage depth get the plain cuts
of a window of 2 (``j < k``), and unequal depths the released ``unpaired_stitching``: the front
stage's block ids are stretched to the back's depth by nearest interpolation
(``torch.nn.functional.interpolate``, i.e. ``floor(i * front / back)``), and front block ``t``
pairs with each back block ``i > t`` that maps back to ``t``. The released code assigns the
``n``-th of those cuts to stitching layer ``mapped[n]`` (it zips the cuts with the mapping);
that sharing is kept here too. Local ids ``(j, k)`` of stage ``s`` become global unit ids by
adding each anchor's units before stage ``s``; timm puts a stage's downsampling in its first
unit, and the released cuts never resume there (``k >= 1``).

The released code fixes the window (k=2, s=1), nearest stitching and the fast-to-slow direction
for these families; asking the preset for anything else is an error, not a silent change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._errors import SNNetError, UnstitchableError
from ._stitch import LayerSpec, SpaceConfig

if TYPE_CHECKING:  # pragma: no cover - flops imports torch; a paper space is planned without it
    from .flops import AnchorProfile

__all__ = ["paired_stitching", "unpaired_stitching", "paper_plan", "PAPER_FAMILIES"]

#: families (tuples of anchor families in FLOPs order) the paper preset knows, and their stages
PAPER_FAMILIES = {
    "vit": "ViT/DeiT (stitching_deit)",
    "swin": "Swin (stitching_swin)",
    "resnet": "ResNet (stitching_resnet_swin)",
    "resnet->swin": "ResNet -> Swin (stitching_resnet_swin)",
    "levit": "LeViT (stitching_levit)",
}
#: the stages each hierarchical family's released code stitches
PAPER_STAGES = {"swin": (0, 1, 2), "resnet": (1, 2), "resnet->swin": (1, 2), "levit": (0, 1)}


def paired_stitching(depth: int, kernel_size: int = 2, stride: int = 1, *, plain_only: bool = False):
    """The released ``paired_stitching``: ``(cuts, layer_of_cut, num_layers)``.

    With ``plain_only`` only pairs ``j < k`` are kept (the Swin and ResNet versions; the
    ResNet one also drops ``k == 0``, which ``j < k`` already excludes).
    """
    cuts: list[tuple[int, int]] = []
    layer_of: list[int] = []
    layer = -1
    i = 0
    while i < depth:
        ids = range(i, min(i + kernel_size, depth))
        new = False
        for j in ids:
            for k in ids:
                if (j, k) in cuts or (plain_only and j >= k):
                    continue
                new = True
                cuts.append((j, k))
                layer_of.append(layer + 1)
        if new:
            layer += 1
        i += stride
    return cuts, layer_of, layer + 1


def unpaired_stitching(front_depth: int, back_depth: int):
    """The released ``unpaired_stitching``: ``(cuts, layer_of_cut, num_layers)``.

    ``mapped[i]`` (about ``floor(i * front_depth / back_depth)``) is PyTorch's nearest
    interpolation of ``0..front_depth-1`` to ``back_depth`` points, computed by PyTorch as in the
    released code so float rounding agrees. The released code zips the cuts with ``mapped``, so
    cut ``n`` uses layer ``mapped[n]``.
    """
    import torch

    ids = torch.arange(front_depth, dtype=torch.float32)[None, None]
    mapped = torch.nn.functional.interpolate(ids, size=back_depth, mode="nearest").long().flatten().tolist()
    cuts = [(t, i) for t in range(front_depth) for i, m in enumerate(mapped) if m == t and t < i]
    return cuts, mapped[: len(cuts)], front_depth


def _family(profiles: Sequence[AnchorProfile]) -> str:
    families = [p.family for p in profiles]
    if len(set(families)) == 1 and families[0] in PAPER_FAMILIES:
        return families[0]
    if families[0] == "resnet" and set(families[1:]) == {"swin"} and len(families) == 2:
        return "resnet->swin"
    names = ", ".join(f"{p.name} ({p.family})" for p in profiles)
    raise SNNetError(
        f"preset 'paper' knows the families of SN-Net's released code: {', '.join(PAPER_FAMILIES.values())}; "
        f"got {names}. Drop the preset for this project's wider spaces."
    )


def paper_plan(profiles: Sequence[AnchorProfile], config: SpaceConfig, layers: dict[str, LayerSpec]):
    """The released enumeration for a space's anchors (``profiles``, in FLOPs order), or ``None``
    where it is the default one.

    Returns ``[(anchors, cuts, layer_keys), ...]`` for the stitched networks (the anchors alone
    come first, as in the released code) and registers their layers in ``layers`` (the space's).
    """
    family = _family(profiles)
    if config.direction != "fast-to-slow" or config.two_way:
        raise SNNetError(
            "preset 'paper' reproduces the released code, which stitches fast-to-slow only and has no two-way "
            f"stitches; got direction={config.direction!r}, two_way={config.two_way}."
        )
    if family == "vit":
        depths = {p.depth for p in profiles}
        if len(depths) != 1:
            raise SNNetError(
                "preset 'paper' for ViT/DeiT reproduces the released stitching_deit code, which stitches anchors "
                f"of equal depth; got depths {[p.depth for p in profiles]}. Drop the preset to map unequal "
                "depths by relative depth."
            )
        return None  # the default enumeration is the released one
    if (config.kernel_size, config.stride, config.nearest) != (2, 1, True):
        raise SNNetError(
            f"preset 'paper' for {PAPER_FAMILIES[family]} reproduces the released code, which fixes kernel_size=2, "
            f"stride=1 and nearest stitching; got kernel_size={config.kernel_size}, stride={config.stride}, "
            f"nearest={config.nearest}. Drop the preset to vary them."
        )
    stages = PAPER_STAGES[family]
    plan = []
    for stage in stages:
        for front in range(len(profiles) - 1):
            plan.extend(_stage_pair(profiles, layers, stage, front, front + 1))
    return plan


def _stage_units(profile, stage: int) -> list[int]:
    return [u for u, s in enumerate(profile.stage_of) if s == stage]


def _stage_pair(profiles: Sequence[AnchorProfile], layers: dict[str, LayerSpec], stage: int, front: int,
                back: int):
    f, b = profiles[front], profiles[back]
    f_units, b_units = _stage_units(f, stage), _stage_units(b, stage)
    if not f_units or not b_units:
        raise UnstitchableError(f"preset 'paper' stitches stage {stage}, which {f.name} or {b.name} lacks.")
    grid_f = tuple(f.grid(f.unit_shapes[f_units[-1]]))
    grid_b = tuple(b.grid(b.unit_shapes[b_units[-1]]))
    if grid_f != grid_b:
        raise UnstitchableError(
            f"preset 'paper' stitches stage {stage} of {f.name} into stage {stage} of {b.name}, but their feature "
            f"maps differ ({grid_f} and {grid_b})."
        )
    if len(f_units) == len(b_units):
        cuts, layer_of, num_layers = paired_stitching(len(f_units), plain_only=True)
    else:
        cuts, layer_of, num_layers = unpaired_stitching(len(f_units), len(b_units))
    global_cuts = [(f_units[0] + j, b_units[0] + k) for j, k in cuts]
    keys = [f"{front}to{back}_s{stage}_w{layer}" for layer in layer_of]
    for layer in range(num_layers):
        key = f"{front}to{back}_s{stage}_w{layer}"
        layer_cuts = tuple(c for c, k in zip(global_cuts, keys) if k == key)
        if not layer_cuts:  # the released code builds it but no stitch uses it
            continue
        layers[key] = LayerSpec(
            key=key, front=front, back=back, stage=stage, window=layer,
            in_dim=f.width(f.unit_shapes[f_units[0]]), out_dim=b.width(b.unit_shapes[b_units[0]]),
            in_layout=f.layout, out_layout=b.layout, grid=grid_f, cuts=layer_cuts,
        )
    return [((front, back), (cut,), (key,)) for cut, key in zip(global_cuts, keys)]
