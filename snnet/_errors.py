"""User-facing errors.

Every mistake a user can make (an unknown model, an impossible window, anchors that
cannot be stitched) raises a :class:`SNNetError` whose message is one paragraph that
says what must hold and what came. Command-line entry points catch it, print the
message and exit with status 2 instead of showing a traceback.
"""

from __future__ import annotations

__all__ = ["SNNetError", "UnknownModelError", "UnstitchableError", "UnsupportedFamilyError"]


class SNNetError(ValueError):
    """A mistake in what the user asked for (not a bug in this project)."""


class UnknownModelError(SNNetError):
    """A model name that timm does not know."""


class UnsupportedFamilyError(SNNetError):
    """A timm model whose architecture the anchor adapter does not know."""


class UnstitchableError(SNNetError):
    """Anchors whose widths, resolutions or token layouts cannot be joined."""
