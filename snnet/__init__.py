"""Stitchable Neural Networks (SN-Net, Pan, Cai and Zhuang, CVPR 2023) on timm models.

Pure PyTorch + timm + fvcore: this package never imports Ray, Optuna or pyarrow.

* :class:`Anchor` - a timm model seen as stem -> units -> head;
* :class:`StitchSpace` - the stitches of a family of anchors, with exact FLOPs and params;
* :class:`StitchedSupernet` - anchors plus stitching layers, ``forward(x, stitch)``;
* :class:`LeastSquaresAccumulator` - streaming least-squares init of stitching layers;
* :func:`load_paper_checkpoint` - SN-Net's released DeiT supernet as a :class:`StitchedSupernet`.

``SpaceConfig(preset="paper")`` (``python -m snnet.space --preset paper``) gives exactly the
stitch space of SN-Net's released code for each family it released (see :mod:`snnet._presets`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._errors import SNNetError, UnknownModelError, UnstitchableError, UnsupportedFamilyError
from ._lazy import lazy_exports

if TYPE_CHECKING:
    from ._space import StitchSpace
    from ._spec import AnchorSpec, check_model_name
    from ._stitch import DIRECTIONS, PRESETS, SpaceConfig, Stitch
    from .anchors import Anchor, check_spec, create_anchor, load_checkpoint
    from .flops import AnchorProfile, flop_count, profile_anchor
    from .least_squares import LeastSquaresAccumulator, least_squares
    from .paper import load_paper_checkpoint
    from .supernet import FixedStitch, StitchedSupernet, StitchingLayer, build_supernet

#: Where each public name lives. Importing ``snnet`` (or ``from snnet import SNNetError``) loads
#: neither torch nor timm; the first use of a name imports its module, so tools that only read a
#: catalog or a search space start without torch's import time.
_LAZY = {
    "_space": ("StitchSpace",),
    "_spec": ("AnchorSpec", "check_model_name"),
    "_stitch": ("DIRECTIONS", "PRESETS", "SpaceConfig", "Stitch"),
    "anchors": ("Anchor", "check_spec", "create_anchor", "load_checkpoint"),
    "flops": ("AnchorProfile", "flop_count", "profile_anchor"),
    "least_squares": ("LeastSquaresAccumulator", "least_squares"),
    "paper": ("load_paper_checkpoint",),
    "supernet": ("FixedStitch", "StitchedSupernet", "StitchingLayer", "build_supernet"),
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "DIRECTIONS",
    "PRESETS",
    "Anchor",
    "AnchorProfile",
    "AnchorSpec",
    "FixedStitch",
    "LeastSquaresAccumulator",
    "SNNetError",
    "SpaceConfig",
    "Stitch",
    "StitchSpace",
    "StitchedSupernet",
    "StitchingLayer",
    "UnknownModelError",
    "UnstitchableError",
    "UnsupportedFamilyError",
    "build_supernet",
    "check_model_name",
    "check_spec",
    "create_anchor",
    "flop_count",
    "least_squares",
    "load_checkpoint",
    "load_paper_checkpoint",
    "profile_anchor",
]
