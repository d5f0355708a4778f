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

from ._errors import SNNetError, UnknownModelError, UnstitchableError, UnsupportedFamilyError
from .anchors import Anchor, AnchorSpec, check_model_name, check_spec, create_anchor, load_checkpoint
from .flops import AnchorProfile, flop_count, profile_anchor
from .least_squares import LeastSquaresAccumulator, least_squares
from ._space import DIRECTIONS, PRESETS, SpaceConfig, Stitch, StitchSpace
from .supernet import FixedStitch, StitchedSupernet, StitchingLayer, build_supernet
from .paper import load_paper_checkpoint

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
