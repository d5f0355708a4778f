"""What a stitch is: the steps of its path, its stitching layers, and the config of a space.

A **stitch** is an ordered list of anchors plus one cut ``[j, k]`` per junction: the front
anchor runs its stem and units ``0..j`` inclusive, a stitching layer maps its activations to
the back anchor's width, and the back anchor resumes at unit ``k`` and runs ``k..last``, its
final norm and head. ``j = k - 1`` is the plain cut, ``j >= k`` repeats depth and
``j < k - 1`` skips some. SN-Net's released code writes the same cut as ``(fid, bid)``: its
front runs ``blocks[:fid + 1]`` and its back ``blocks[bid:]``, so ``(fid, bid)`` is our
``[fid, bid]`` (its stitch ``(0, 0)`` of DeiT-Ti -> DeiT-S runs all twelve DeiT-S blocks and
costs 4.696 GFLOPs, more than DeiT-S alone).

Every stitch carries its :attr:`Stitch.path`, a tuple of :class:`Stem`, :class:`Units`,
:class:`Junction` and :class:`Head` steps. The forward pass, the FLOPs and parameter
counts and the export all walk that one path, so they cannot disagree. Which stitches a
family of anchors holds is :class:`~snnet._space.StitchSpace`'s to enumerate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from ._errors import SNNetError

__all__ = [
    "DIRECTIONS",
    "Direction",
    "Head",
    "Junction",
    "LayerSpec",
    "PRESETS",
    "SpaceConfig",
    "Stem",
    "Step",
    "Stitch",
    "check_distinct",
    "check_window",
]

Direction = Literal["fast-to-slow", "slow-to-fast", "both"]
DIRECTIONS: tuple[str, ...] = ("fast-to-slow", "slow-to-fast", "both")


# -- path steps ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Stem:
    anchor: int


@dataclass(frozen=True)
class Units:
    anchor: int
    start: int
    stop: int  # exclusive


@dataclass(frozen=True)
class Junction:
    layer: str


@dataclass(frozen=True)
class Head:
    """The anchor's final norm (unless ``norm`` is False) and classifier head."""

    anchor: int
    norm: bool = True  # False only for stitched paths under SpaceConfig.released_deit_head


Step = Stem | Units | Junction | Head


@dataclass(frozen=True)
class LayerSpec:
    """One stitching layer: the map from ``front``'s activations to ``back``'s at some cuts."""

    key: str
    front: int
    back: int
    stage: int
    window: int
    in_dim: int
    out_dim: int
    in_layout: str
    out_layout: str
    grid: tuple[int, ...]  # tokens (N,) or feature map (H, W) at the cut
    cuts: tuple[tuple[int, int], ...]  # every one-way cut that shares this layer

    @property
    def flops(self) -> int:
        """A linear map on every token / a 1x1 convolution on every pixel (no bias FLOPs, as fvcore)."""
        rows = 1
        for d in self.grid:
            rows *= d
        return rows * self.in_dim * self.out_dim

    @property
    def params(self) -> int:
        return self.in_dim * self.out_dim + self.out_dim


@dataclass(frozen=True)
class Stitch:
    """A stitch of a space: anchors by index into the space, one cut and layer per junction."""

    stitch_id: int
    anchors: tuple[int, ...]
    cuts: tuple[tuple[int, int], ...]
    layers: tuple[str, ...]
    path: tuple[Step, ...] = field(repr=False)
    flops: int = 0
    params: int = 0

    @property
    def is_anchor(self) -> bool:
        return len(self.anchors) == 1


PRESETS: tuple[str, ...] = ("paper",)


@dataclass(frozen=True)
class SpaceConfig:
    """The arguments that define a stitch space (besides the anchors themselves).

    Args:
        kernel_size, stride: the sliding window (``k`` and ``s`` in the paper).
        nearest: stitch only anchors adjacent in FLOPs; ``False`` stitches every pair and adds
            chains through three or more anchors (front -> middle -> back), as the released
            code's ``nearest_stitching=False`` does.
        direction: fast-to-slow (small anchor first, the paper's), slow-to-fast, or both.
        two_way: add SN-Netv2's two-way stitches (A -> B -> A).
        preset: ``None`` (this project's spaces; wider than the paper's for hierarchical
            models) or ``"paper"``: exactly the enumeration of SN-Net's released code for the
            anchors' family (see :mod:`snnet._presets`).
        released_deit_head: compatibility with SN-Net's released DeiT code, whose stitched
            forward applies the back anchor's ``forward_head`` without its final norm (anchors
            alone keep it; its Swin and SN-Netv2 code apply the norm). Stitched paths then end
            in ``Head(norm=False)``, and their FLOPs and params leave the norm out. Off for new
            runs; :func:`snnet.load_paper_checkpoint` turns it on. ViT anchors only.
    """

    kernel_size: int = 2
    stride: int = 1
    nearest: bool = True
    direction: Direction = "fast-to-slow"
    two_way: bool = False
    preset: str | None = None
    released_deit_head: bool = False

    def validate(self) -> None:
        problems = []
        if self.preset is not None and self.preset not in PRESETS:
            problems.append(f"preset must be None or one of {', '.join(repr(p) for p in PRESETS)}, got {self.preset!r}")
        if not isinstance(self.kernel_size, int) or self.kernel_size < 1:
            problems.append(f"kernel_size must be an integer >= 1, got {self.kernel_size!r}")
        if not isinstance(self.stride, int) or self.stride < 1:
            problems.append(f"stride must be an integer >= 1, got {self.stride!r}")
        if self.direction not in DIRECTIONS:
            problems.append(f"direction must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}")
        if problems:
            raise SNNetError("Invalid stitch space: " + "; ".join(problems) + ".")


def check_distinct(names: Sequence[str]) -> None:
    """Refuse a model named twice: ``resnet18, resnet18``, or ``deit_tiny_patch16_224.fb_in1k`` beside
    ``deit_tiny_patch16_224`` (timm's pretrained tag after the ``.`` names weights, not another model)."""
    archs = [str(n).split(".", 1)[0] for n in names]
    twice = sorted({a for a in archs if archs.count(a) > 1})
    if twice:
        tags = (" (a pretrained tag after the '.' names weights of the same model)"
                if len(set(names)) == len(names) else "")
        raise SNNetError(f"Anchors must be distinct, got {list(names)}: {', '.join(twice)} appears twice{tags}; "
                         "stitch models of different sizes.")


def check_window(kernel_size: int, depths: Sequence[tuple[str, int]]) -> None:
    """A window of ``kernel_size`` blocks must fit the shallowest of two or more anchors
    (``depths``: ``(name, units)`` per anchor); cheap enough to ask before any anchor is built."""
    if len(depths) > 1:
        name, depth = min(depths, key=lambda d: d[1])
        if kernel_size > depth:
            raise SNNetError(f"The window must fit the depth: kernel_size <= {depth} (the depth of {name}), "
                             f"got kernel_size={kernel_size}.")
