"""Stitch spaces (see :mod:`snnet._space`); ``python -m snnet.space`` enumerates one."""

from .._space import (
    DIRECTIONS,
    PRESETS,
    Direction,
    Head,
    Junction,
    LayerSpec,
    SpaceConfig,
    Stem,
    Step,
    Stitch,
    StitchSpace,
    Units,
    window_cuts,
)

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
