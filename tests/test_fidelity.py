"""The selection split and the early stitch subset (orchestrator.data.fidelity): exact, seeded answers."""

import numpy as np
import pytest

from orchestrator.data.fidelity import selection_split, stitch_subset


def _labels(counts):
    return np.repeat(np.arange(len(counts)), counts)


def test_split_is_disjoint_complete_and_stratified():
    labels = _labels([100, 200, 50, 3])
    train, sel = selection_split(labels, fraction=0.1, seed=0)
    assert not set(train) & set(sel)
    assert sorted(np.concatenate([train, sel]).tolist()) == list(range(len(labels)))
    per_class = np.bincount(labels[sel], minlength=4).tolist()
    assert per_class == [10, 20, 5, 1]  # round(0.1 * n), at least one where a class has two or more


def test_split_is_stable_under_reordering_and_seeded():
    labels = _labels([40, 60])
    a = selection_split(labels, 0.25, seed=3)
    b = selection_split(labels.tolist(), 0.25, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    c = selection_split(labels, 0.25, seed=4)
    assert not np.array_equal(a[1], c[1])
    # The same class members are chosen whatever other classes exist (per-class seeded draw).
    only_first = selection_split(_labels([40]), 0.25, seed=3)[1]
    assert np.array_equal(only_first, a[1][a[1] < 40])


def test_split_default_two_percent_and_zero():
    labels = _labels([500] * 4)
    train, sel = selection_split(labels)
    assert len(sel) == 40 and len(train) == 1960
    train, sel = selection_split(labels, 0.0)
    assert len(sel) == 0 and len(train) == 2000


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 2])
def test_split_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match="0 <= fraction < 1"):
        selection_split(_labels([10]), fraction)


def test_subset_takes_anchors_and_spreads_over_flops():
    # anchors 0 (cost 0) and 10 (cost 100); stitches 1..9 cost 10..90.
    flops = [0] + [10 * i for i in range(1, 10)] + [100]
    assert stitch_subset(flops, anchors=[0, 10], n=3) == [0, 2, 5, 7, 10]  # targets 25, 50, 75; ties go to the lower id
    assert stitch_subset(flops, anchors=[0, 10], n=0) == [0, 10]
    assert stitch_subset(flops, anchors=[0, 10], n=50) == list(range(11))


def test_subset_on_the_paper_deit_space(deit_tsb_space):
    space = deit_tsb_space
    flops = [s.flops for s in space.stitches]
    anchors = [s.stitch_id for s in space.stitches if s.is_anchor]
    subset = stitch_subset(flops, anchors, n=8)
    assert len(subset) == len(anchors) + 8 and set(anchors) <= set(subset)
    picked = sorted(flops[i] for i in subset if i not in anchors)
    # spread: every eighth of the FLOPs range between the anchors holds at most two picks
    lo, hi = min(flops), max(flops)
    bins = np.histogram(picked, bins=8, range=(lo, hi))[0]
    assert bins.max() <= 2
