"""The sweep's objectives against hand-computed answers."""

import pytest

from orchestrator.catalog.objectives import OBJECTIVES, hypervolume, objective_values, train_cost


def test_hypervolume_of_a_staircase():
    # Points (x = flops / 100, y = top1 / 100): (0.2, 0.5), (0.5, 0.8); reference (1, 0).
    # Area = 0.5 * (0.5 - 0.2) + 0.8 * (1 - 0.5) = 0.15 + 0.4 = 0.55
    assert hypervolume([(20, 50), (50, 80)], 100) == pytest.approx(0.55)


def test_dominated_points_and_points_beyond_the_reference_add_nothing():
    base = hypervolume([(20, 50), (50, 80)], 100)
    assert hypervolume([(20, 50), (50, 80), (60, 70), (30, 40)], 100) == pytest.approx(base)
    assert hypervolume([(20, 50), (50, 80), (100, 99), (150, 99)], 100) == pytest.approx(base)
    assert hypervolume([], 100) == 0.0


def test_hypervolume_rises_with_a_better_stitch_and_lies_in_the_unit_square():
    worse = hypervolume([(20, 50), (50, 80)], 100)
    better = hypervolume([(20, 60), (50, 80)], 100)
    assert 0.0 <= worse < better <= 1.0
    assert hypervolume([(0, 100)], 100) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="flops_ref must be > 0"):
        hypervolume([(1, 1)], 0)


def test_train_cost_and_values():
    # 3 x epochs x images x mean FLOPs x stitches per step, in PFLOPs
    assert train_cost(2, 1000, [1e9, 3e9], 1.0) == pytest.approx(3 * 2 * 1000 * 2e9 / 1e15)
    assert train_cost(2, 1000, [1e9, 3e9], 4.0) == pytest.approx(4 * train_cost(2, 1000, [1e9, 3e9], 1.0))
    rows = [{"flops": 20, "top1": 50.0}, {"flops": 50, "top1": 80.0}]
    values = objective_values(rows, 100, epochs=1, train_images=10, stitches_per_step=1.0)
    assert values["hypervolume"] == pytest.approx(0.55) and values["best_top1"] == 80.0
    assert set(values) == set(OBJECTIVES)


def test_hypervolumes_equals_hypervolume_on_every_variant():
    import numpy as np

    from orchestrator.catalog.objectives import hypervolumes

    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(0, 12))
        flops = rng.integers(0, 150, n).astype(float)  # some at or beyond the reference
        top1 = rng.uniform(-5, 100, (3, n))
        top1[rng.random((3, n)) < 0.25] = np.nan  # left out of that variant
        got = hypervolumes(flops, top1, 100)
        for row, value in zip(top1, got):
            kept = [(f, t) for f, t in zip(flops, row) if not np.isnan(t)]
            assert value == pytest.approx(hypervolume(kept, 100), abs=1e-12)
    assert hypervolumes([20, 50], [[50, 80], [60, 80]], 100).tolist() == pytest.approx([0.55, 0.58])
    with pytest.raises(ValueError, match="flops_ref must be > 0"):
        hypervolumes([1], [1], 0)
