"""Cheap, honest signals for a search: a held-out selection split and an early front.

A sweep must not pick its winners on the images it reports (AutoFormer and OFA select on a split
held out of the training set), and it cannot afford to train every trial to the end. Two pure
functions serve both needs; the training recipe and the sweep wire them in.

:func:`selection_split`
    A seeded, stratified fraction of the training set (default 2%) that is removed from training
    and scores stitches during the search. Stable: the same labels, fraction and seed give the
    same split on every worker and every resume, whatever the order the question is asked in.
:func:`stitch_subset`
    A fixed, FLOPs-stratified subset of a space's stitches (the anchors plus ``n`` stitches spread
    over the FLOPs range), evaluated after every epoch on a fixed part of the selection split. Its
    hypervolume is the early metric schedulers and pruners act on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["selection_split", "training_subset", "fixed_images", "stitch_subset"]


def selection_split(labels: Sequence[int], fraction: float = 0.02, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, selection)`` of a seeded, stratified split of a labelled training set.

    Every class keeps ``round(fraction * count)`` of its images for selection (at least one where
    the class has two or more and ``fraction > 0``), chosen by a per-class seeded permutation, so
    the split depends only on the labels, the fraction and the seed. Both index arrays are sorted.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the selection fraction must hold 0 <= fraction < 1, but got {fraction!r}")
    labels = np.asarray(labels, dtype=np.int64)
    chosen: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        take = int(round(fraction * len(members)))
        if fraction > 0 and len(members) >= 2:
            take = min(max(take, 1), len(members) - 1)
        if take == 0:
            continue
        rng = np.random.default_rng([seed, int(cls)])
        chosen.append(np.sort(rng.permutation(members)[:take]))
    selection = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    keep = np.ones(len(labels), dtype=bool)
    keep[selection] = False
    return np.flatnonzero(keep), selection


def training_subset(labels: Sequence[int], fraction: float = 1.0, seed: int = 0) -> np.ndarray:
    """Sorted positions of a seeded, stratified ``fraction`` of a labelled set (the ``data_fraction`` knob).

    Every class keeps ``max(1, round(fraction * count))`` of its images, chosen by a per-class seeded
    permutation drawn apart from :func:`selection_split`'s; ``fraction == 1`` keeps everything.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"the data fraction must hold 0 < fraction <= 1, but got {fraction!r}")
    labels = np.asarray(labels, dtype=np.int64)
    if fraction == 1.0:
        return np.arange(len(labels))
    chosen: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        take = max(1, int(round(fraction * len(members))))
        rng = np.random.default_rng([seed, int(cls), 1])
        chosen.append(rng.permutation(members)[:take])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def fixed_images(n: int, count: int, seed: int = 0) -> np.ndarray:
    """Sorted positions of ``min(count, n)`` of ``n`` images, a seeded choice (the early front's images)."""
    if count >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 2]).permutation(n)[:count])


def stitch_subset(flops: Sequence[int], anchors: Sequence[int], n: int = 8) -> list[int]:
    """Ids of a FLOPs-stratified subset: every anchor plus ``n`` stitches spread over the FLOPs range.

    ``flops[i]`` is stitch ``i``'s cost and ``anchors`` the ids of the anchor stitches. The ``n``
    others are the non-anchor stitches nearest to ``n`` evenly spaced FLOPs targets between the
    cheapest and the dearest stitch (ties to the lower id); with ``n`` at least the number of
    non-anchor stitches, every stitch is taken. Returns sorted ids.
    """
    if n < 0:
        raise ValueError(f"the subset size must hold n >= 0, but got {n!r}")
    anchor_ids = set(int(a) for a in anchors)
    others = [i for i in range(len(flops)) if i not in anchor_ids]
    if n >= len(others):
        return sorted(anchor_ids | set(others))
    costs = np.asarray(flops, dtype=np.float64)
    lo, hi = costs.min(), costs.max()
    picked: set[int] = set()
    for target in np.linspace(lo, hi, n + 2)[1:-1] if n else []:
        free = [i for i in others if i not in picked]
        picked.add(min(free, key=lambda i: (abs(costs[i] - target), i)))
    return sorted(anchor_ids | picked)
