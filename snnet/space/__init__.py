"""Stitch spaces (see :mod:`snnet._space`, and :mod:`snnet._stitch` for a stitch's path);
``python -m snnet.space`` enumerates one."""

from .._space import StitchSpace, window_cuts
from .._stitch import DIRECTIONS, PRESETS, Direction, Head, Junction, LayerSpec, SpaceConfig, Stem, Step, Stitch, Units

__all__ = [
    "DIRECTIONS",
    "PRESETS",
    "Direction",
    "Head",
    "Junction",
    "LayerSpec",
    "SpaceConfig",
    "Stem",
    "Step",
    "Stitch",
    "StitchSpace",
    "Units",
    "window_cuts",
]
