"""What a sweep optimises: the quality of a trial's accuracy-FLOPs front, and its cost.

``hypervolume``
    The area dominated by a trial's stitches in the plane of normalised FLOPs
    ``x = flops / flops_ref`` (minimised) and accuracy ``y = top1 / 100`` (maximised), bounded
    by the fixed reference point ``(1, 0)``. ``flops_ref`` is the largest anchor's FLOPs over
    every family of the search space, fixed before the sweep starts, so trials of different
    families, kernel sizes and steps are compared on one scale. It grows when any stitch gets
    more accurate or a cheaper stitch reaches the same accuracy, and lies in ``[0, 1]``.
``train_cost``
    Expected training compute in PFLOPs: ``3 x epochs x training images x E[FLOPs of the
    stitches one image passes per step]`` (forward plus backward is about three forwards).
    Deterministic, so NSGA-II can trade front quality against cost without timing noise.
``best_top1``
    The best top-1 of any stitch of the trial.

:func:`hypervolumes` is :func:`hypervolume` for many variants of one trial at once (the
bootstrap of ``python -m orchestrator.catalog compare``): same points, same answer.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from search_spaces import OBJECTIVES  # name -> "max" | "min": one definition, shared with the schema

__all__ = ["OBJECTIVES", "hypervolume", "hypervolumes", "train_cost", "objective_values"]


def hypervolume(points: Iterable[tuple[float, float]], flops_ref: float) -> float:
    """Area dominated by ``(flops, top1)`` points w.r.t. ``(flops_ref, 0)``, normalised to [0, 1]."""
    if flops_ref <= 0:
        raise ValueError(f"flops_ref must be > 0, got {flops_ref}")
    pts = sorted((f / flops_ref, t / 100.0) for f, t in points if f < flops_ref and t > 0)
    area, best = 0.0, 0.0
    for i, (x, y) in enumerate(pts):
        best = max(best, y)
        right = pts[i + 1][0] if i + 1 < len(pts) else 1.0
        area += (right - x) * best
    return area


def hypervolumes(flops: Sequence[float], top1: Any, flops_ref: float) -> Any:
    """:func:`hypervolume` of many point sets sharing their FLOPs, as a numpy array.

    ``top1`` has shape ``(..., n)`` for the ``n`` entries of ``flops``; a NaN leaves that
    point out of that set. A point left out adds nothing, exactly as a point at top-1 0 does,
    so each set's area is a cumulative maximum over the points sorted by FLOPs.
    """
    import numpy as np

    if flops_ref <= 0:
        raise ValueError(f"flops_ref must be > 0, got {flops_ref}")
    x = np.asarray(flops, dtype=float) / flops_ref
    y = np.asarray(top1, dtype=float) / 100.0
    if y.shape[-1:] != x.shape:
        raise ValueError(f"top1 must end in the {x.shape[0]} points of flops, got shape {y.shape}")
    order = np.argsort(x, kind="stable")
    x = np.minimum(x[order], 1.0)  # points at or beyond the reference span no width
    y = y[..., order]
    y = np.where(np.isnan(y) | (y <= 0) | (x >= 1.0), 0.0, y)
    width = np.diff(np.append(x, 1.0))
    return (np.maximum.accumulate(y, axis=-1) * width).sum(axis=-1) if x.size else np.zeros(y.shape[:-1])


def train_cost(epochs: int, train_images: int, stitch_flops: Sequence[int], stitches_per_step: float = 1.0) -> float:
    mean = sum(stitch_flops) / max(len(stitch_flops), 1)
    return 3.0 * epochs * train_images * mean * stitches_per_step / 1e15


def objective_values(rows: Sequence[dict], flops_ref: float, *, epochs: int, train_images: int,
                     stitches_per_step: float) -> dict[str, float]:
    return {
        "hypervolume": hypervolume(((r["flops"], r["top1"]) for r in rows), flops_ref),
        "train_cost": train_cost(epochs, train_images, [r["flops"] for r in rows], stitches_per_step),
        "best_top1": max(r["top1"] for r in rows),
    }
