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

Which accuracy: a search must not select on the images it reports. When every row of a trial
carries ``top1_selection`` (top-1 on the selection split held out of the training set), the
objectives are computed from it; only when selection is off (``training.selection_fraction: 0``)
do they fall back to ``top1``, the evaluation split. :func:`split_values` reports the evaluation
split's hypervolume beside it and says which split the objectives used.

:func:`hypervolumes` is :func:`hypervolume` for many variants of one trial at once (the
bootstrap of ``python -m orchestrator.catalog compare``): same points, same answer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from search_spaces import OBJECTIVES  # name -> "max" | "min": one definition, shared with the schema

__all__ = ["OBJECTIVES", "SELECTION", "EVALUATION", "accuracy_column", "hypervolume", "hypervolumes", "train_cost",
           "objective_values", "split_values", "trained_rows"]

#: The two accuracy columns of a catalog row: held-out selection split, evaluation split.
SELECTION, EVALUATION = "top1_selection", "top1"


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


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def accuracy_column(rows: Sequence[dict]) -> str:
    """``"top1_selection"`` when every row has a finite selection top-1, else ``"top1"``."""
    return SELECTION if rows and all(_finite(r.get(SELECTION)) for r in rows) else EVALUATION


def trained_rows(rows: Sequence[dict]) -> list[dict]:
    """The rows of stitches the trial trained: those a pruned run left untrained (``pruned``, top-1 null)
    take no part in its objectives."""
    return [r for r in rows if not r.get("pruned")]


def objective_values(rows: Sequence[dict], flops_ref: float, *, epochs: int, train_images: int,
                     stitches_per_step: float, column: str | None = None) -> dict[str, float]:
    """The objectives of one trial over its trained rows (:func:`trained_rows`: the cost counts the stitches
    it trained), its accuracies read from ``column`` (default :func:`accuracy_column`)."""
    rows = trained_rows(rows)
    column = column or accuracy_column(rows)
    return {
        "hypervolume": hypervolume(((r["flops"], r[column]) for r in rows), flops_ref),
        "train_cost": train_cost(epochs, train_images, [r["flops"] for r in rows], stitches_per_step),
        "best_top1": max(r[column] for r in rows),
    }


def split_values(rows: Sequence[dict], flops_ref: float) -> dict[str, Any]:
    """Which split the objectives used (``objective_split``: ``"selection"`` or ``"evaluation"``), and
    the front on each: ``hypervolume_selection`` (None when selection is off), ``hypervolume_eval``
    and ``best_top1_eval`` on the evaluation split; over the trained rows (:func:`trained_rows`)."""
    rows = trained_rows(rows)
    column = accuracy_column(rows)
    return {
        "objective_split": "selection" if column == SELECTION else "evaluation",
        "hypervolume_selection": hypervolume(((r["flops"], r[SELECTION]) for r in rows), flops_ref)
        if column == SELECTION else None,
        "hypervolume_eval": hypervolume(((r["flops"], r[EVALUATION]) for r in rows), flops_ref),
        "best_top1_eval": max(r[EVALUATION] for r in rows),
    }
