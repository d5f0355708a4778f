"""Stitch sampling rules: targets on the DeiT-Ti/S/B space, marginals, determinism, errors.

Every draw here is a fixed function of its seed, so these tests are deterministic. The
statistical thresholds are still chosen so that a correct sampler passes for *any* seed with
probability above 1 - 1e-6 (chi-square quantile at 1 - 1e-6, each count within 5 binomial
standard deviations), while a stitch over- or under-drawn by ~20% or more fails.
"""

from __future__ import annotations

import ast
import collections
import math
from pathlib import Path

import numpy as np
import pytest

from snnet._errors import SNNetError
from snnet.sampling import RULES, SamplingRule, balance_report, flops_buckets, make_rule

Z = 4.75  # standard normal quantile at 1 - 1e-6


@pytest.fixture(scope="module")
def deit_flops() -> list[int]:
    from snnet.supernet import build_supernet

    space = build_supernet(["deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224"]).space
    assert len(space) == 71
    return [s.flops for s in space]


def chi2_quantile(df: int, z: float = Z) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile (good to ~1% for df >= 10)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def assert_matches(counts: collections.Counter, probs: dict[int, float]) -> None:
    """Counts from independent draws agree with ``probs`` (chi-square and per-stitch)."""
    total = sum(counts.values())
    assert set(counts) <= set(probs), f"drew stitches outside the support: {set(counts) - set(probs)}"
    chi2 = 0.0
    for i, p in probs.items():
        expected, sd = total * p, math.sqrt(total * p * (1 - p))
        assert abs(counts[i] - expected) <= Z * sd + 1, f"stitch {i}: {counts[i]} draws, expected {expected:.0f}"
        chi2 += (counts[i] - expected) ** 2 / expected
    assert chi2 <= chi2_quantile(len(probs) - 1), f"chi2 {chi2:.1f} over {len(probs) - 1} dof"


def count(rule: SamplingRule, steps: range, ranks: range, world_size: int) -> collections.Counter:
    return collections.Counter(i for t in steps for r in ranks for i in rule.draw(t, r, world_size))


# -- buckets ---------------------------------------------------------------------------------
def test_equal_width_buckets_skip_empty_and_keep_the_maximum():
    flops = [0, 1, 2, 10, 50, 100, 100, 99]
    assert flops_buckets(flops, num_buckets=4) == [[0, 1, 2, 3], [4], [7, 5, 6]]
    assert flops_buckets(flops, num_buckets=1) == [[0, 1, 2, 3, 4, 7, 5, 6]]
    assert flops_buckets([7, 7, 7], num_buckets=10) == [[0, 1, 2]]


def test_tolerance_buckets_are_narrow_and_fewest(deit_flops):
    tol = 0.05
    buckets = flops_buckets(deit_flops, tolerance=tol)
    assert sorted(i for b in buckets for i in b) == list(range(len(deit_flops)))
    for b in buckets:
        assert max(deit_flops[i] for i in b) <= (1 + tol) * min(deit_flops[i] for i in b)
    for prev, nxt in zip(buckets, buckets[1:]):  # greedy: each new bucket was forced open
        assert deit_flops[nxt[0]] > (1 + tol) * deit_flops[prev[0]]
    assert flops_buckets([5, 1, 3], tolerance=10.0) == [[1, 2, 0]]


# -- balance targets on the DeiT-Ti/S/B space --------------------------------------------
def test_uniform_balance_is_about_half_at_8_ranks(deit_flops):
    assert 0.44 <= make_rule("uniform", deit_flops).expected_balance(8) <= 0.54


@pytest.mark.parametrize("world_size", [8, 64])
def test_balanced_rule_keeps_ranks_in_step(deit_flops, world_size):
    assert make_rule("balanced", deit_flops).expected_balance(world_size) >= 0.95


def test_balance_report_covers_every_rule_and_size(deit_flops):
    report = balance_report(deit_flops, world_sizes=(2, 8), steps=100)
    assert set(report) == set(RULES)
    for name, by_size in report.items():
        assert set(by_size) == {2, 8}
        assert all(0 < v <= 1 for v in by_size.values()), (name, by_size)
    assert report["balanced"][8] > report["sandwich"][8] > report["uniform"][8]
    assert make_rule("uniform", deit_flops).expected_balance(1, steps=10) == 1.0


# -- marginals ---------------------------------------------------------------------------------
def test_uniform_marginal_is_uniform(deit_flops):
    counts = count(make_rule("uniform", deit_flops, seed=3), range(5000), range(8), 8)
    assert_matches(counts, {i: 1 / len(deit_flops) for i in range(len(deit_flops))})


@pytest.mark.parametrize("rank, world_size", [(0, 8), (5, 8), (63, 64)])
def test_balanced_marginal_is_uniform_for_each_rank(deit_flops, rank, world_size):
    # Ranks of one step are dependent by design; one rank across steps draws independently.
    counts = count(make_rule("balanced", deit_flops, seed=1), range(8000), range(rank, rank + 1), world_size)
    assert_matches(counts, {i: 1 / len(deit_flops) for i in range(len(deit_flops))})


def test_balanced_ranks_share_a_bucket_and_differ_inside_it(deit_flops):
    rule = make_rule("balanced", deit_flops, seed=2)
    bucket_of = {i: b for b, bucket in enumerate(rule.buckets) for i in bucket}
    for step in range(200):
        ids = [rule.draw(step, r, 16)[0] for r in range(16)]
        size = len(rule.buckets[bucket_of[ids[0]]])
        assert {bucket_of[i] for i in ids} == {bucket_of[ids[0]]}
        assert len(set(ids[:size])) == size  # the first len(bucket) ranks all differ
        assert all(ids[r] == ids[r % size] for r in range(16))


def test_flops_bucket_marginal(deit_flops):
    rule = make_rule("flops-bucket", deit_flops, seed=4, num_buckets=10)
    buckets = flops_buckets(deit_flops, num_buckets=10)
    assert rule.buckets == buckets and len(buckets) <= 10
    probs = {i: 1 / len(buckets) / len(b) for b in buckets for i in b}
    assert_matches(count(rule, range(5000), range(8), 8), probs)


@pytest.mark.parametrize("num_random", [0, 2, 5])
def test_sandwich_has_largest_first_then_smallest(deit_flops, num_random):
    rule = make_rule("sandwich", deit_flops, seed=5, num_random=num_random)
    largest, smallest = int(np.argmax(deit_flops)), int(np.argmin(deit_flops))
    picks = collections.Counter()
    for step in range(1500):
        for rank in range(2):
            ids = rule.draw(step, rank, 2)
            assert len(ids) == 2 + num_random
            assert ids[:2] == [largest, smallest]
            assert len(set(ids)) == len(ids)  # the random ones are distinct, and not extremes
            picks.update(ids[2:])
    if num_random:  # without replacement, each of the others is in the draw w.p. n / (N - 2)
        others = len(deit_flops) - 2
        draws = 3000 * num_random
        for i in set(range(len(deit_flops))) - {largest, smallest}:
            p = 1 / others
            assert abs(picks[i] - draws * p) <= Z * math.sqrt(draws * p * (1 - p)), i


def test_sandwich_on_tiny_spaces():
    assert make_rule("sandwich", [5], num_random=1).draw(0, 0, 1) == [0, 0, 0]
    ids = make_rule("sandwich", [1, 2, 3], num_random=3).draw(0, 0, 1)
    assert ids[:2] == [2, 0] and ids[2:] == [1, 1, 1]


# -- determinism -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(RULES))
def test_draws_are_pure_functions_of_seed_step_rank(deit_flops, name):
    keys = [(step, rank, 8) for step in (0, 1, 7, 10**6, 2**40) for rank in range(8)]
    first = make_rule(name, deit_flops, seed=11)
    forward = [first.draw(*k) for k in keys]
    again = make_rule(name, deit_flops, seed=11)  # e.g. after a restart from a checkpoint
    assert [again.draw(*k) for k in reversed(keys)] == forward[::-1]
    assert [first.draw(*k) for k in keys] == forward
    assert [first._draw_all(step, 8) for step, _, _ in keys[::8]] == [forward[i : i + 8] for i in range(0, 40, 8)]
    other = make_rule(name, deit_flops, seed=12)
    assert [other.draw(*k) for k in keys] != forward
    assert first.expected_balance(8, steps=20) == again.expected_balance(8, steps=20)


def test_ranks_and_steps_get_different_streams(deit_flops):
    rule = make_rule("uniform", deit_flops)
    by_rank = [rule.draw(0, r, 64)[0] for r in range(64)]
    by_step = [rule.draw(t, 0, 1)[0] for t in range(64)]
    assert len(set(by_rank)) > 20 and len(set(by_step)) > 20
    assert rule.draw(5, 3, 4) == rule.draw(5, 3, 64)  # a rank's stream ignores how many ranks run


# -- errors ------------------------------------------------------------------------------------
def test_unknown_rule_lists_valid_names_and_suggests(deit_flops):
    with pytest.raises(SNNetError) as err:
        make_rule("unifrom", deit_flops)
    message = str(err.value)
    assert "'unifrom'" in message and "Did you mean 'uniform'" in message
    assert all(name in message for name in RULES) and "\n" not in message
    with pytest.raises(SNNetError, match="Did you mean 'flops-bucket'"):
        make_rule("flops_bucket", deit_flops)


@pytest.mark.parametrize(
    "name, flops, options, needles",
    [
        ("sandwich", [1, 2, 3], {"num_random": -1}, ["num_random", ">= 0", "-1"]),
        ("sandwich", [1, 2, 3], {"num_random": 1.5}, ["num_random", "integer", "1.5"]),
        ("flops-bucket", [1, 2, 3], {"num_buckets": 0}, ["num_buckets", ">= 1", "0"]),
        ("balanced", [1, 2, 3], {"tolerance": -0.1}, ["tolerance", ">= 0", "-0.1"]),
        ("uniform", [], {}, ["non-empty", "empty"]),
        ("uniform", [1, -2], {}, ["flops[1]", ">= 0", "-2"]),
        ("uniform", [1, 2], {"seed": -1}, ["seed", ">= 0", "-1"]),
        ("uniform", [1, 2], {"num_random": 2}, ["'uniform'", "no options", "num_random=2"]),
        ("sandwich", [1, 2], {"num_buckets": 2}, ["num_random", "num_buckets=2"]),
    ],
)
def test_bad_options_say_what_must_hold_and_what_came(name, flops, options, needles):
    with pytest.raises(SNNetError) as err:
        make_rule(name, flops, **options)
    assert all(n in str(err.value) for n in needles), str(err.value)


def test_bad_draw_arguments():
    rule = make_rule("uniform", [1, 2, 3])
    for args, needle in [((0, 4, 4), "rank"), ((0, 0, 0), "world_size"), ((-1, 0, 1), "step")]:
        with pytest.raises(SNNetError, match=needle):
            rule.draw(*args)


def test_module_stays_free_of_ray_optuna_pyarrow():
    import snnet.sampling

    tree = ast.parse(Path(snnet.sampling.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"ray", "optuna", "pyarrow"}


# -- what the loss and the cost model read from a rule ---------------------------------------------
def test_rules_carry_their_defaults_and_their_cost_per_step():
    from snnet.sampling import SandwichRule, rule_class

    assert {name: rule.default_options() for name, rule in RULES.items()} == {
        "uniform": {}, "sandwich": {"num_random": 2}, "flops-bucket": {"num_buckets": 10},
        "balanced": {"tolerance": 0.05},
        "scored": {"score": None, "floor": 0.5, "temperature": None, "tolerance": 0.1, "focus": "bucket",
                   "update": "none", "scores": None},
    }
    assert {name: rule.stitches_per_step() for name, rule in RULES.items()} == {
        "uniform": 1, "sandwich": 4, "flops-bucket": 1, "balanced": 1, "scored": 1,
    }
    assert rule_class("sandwich") is SandwichRule and SandwichRule.stitches_per_step(num_random=5) == 7
    assert [n for n, rule in RULES.items() if rule.distils_from_first] == ["sandwich"]
    for name, rule in RULES.items():  # the count matches what a draw returns
        options = {"num_random": 3} if name == "sandwich" else {}
        drawn = make_rule(name, [1, 2, 3, 4, 5, 6], **options)
        assert len(drawn.draw(0, 0, 1)) == rule.stitches_per_step(**options)
    with pytest.raises(SNNetError, match="Did you mean 'sandwich'"):
        rule_class("sandwhich")
