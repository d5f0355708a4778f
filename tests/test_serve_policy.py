"""The serving policies, with a fake clock and queue: no Ray, no torch, no timed assertions.

Three stitches with known latency profiles (ms per batch of 1 / 4 / 8 images) and accuracies; the
tests move the queue and the wait of a batch's oldest request and check which stitch runs.
"""

from __future__ import annotations

import math

import pytest

from orchestrator.serve import Budget, LatencyProfile, RequestError, StitchInfo, candidates, choose, parse_budget
from orchestrator.serve.policy import predicted_finish_ms
from orchestrator.serve.stats import merge_stats

SMALL = StitchInfo(0, flops=1_000, params=10, top1=60.0, latency=LatencyProfile({1: 2.0, 4: 4.0, 8: 6.0}))
MID = StitchInfo(7, flops=4_000, params=40, top1=70.0, latency=LatencyProfile({1: 5.0, 4: 10.0, 8: 16.0}))
LARGE = StitchInfo(9, flops=9_000, params=90, top1=80.0, latency=LatencyProfile({1: 10.0, 4: 25.0, 8: 40.0}))
SERVED = [SMALL, LARGE, MID]  # order does not matter


def test_latency_profile_interpolates_between_and_extrapolates_beyond_measured_sizes():
    p = LatencyProfile({1: 2.0, 4: 8.0, 8: 10.0})
    assert p(1) == 2.0 and p(4) == 8.0 and p(8) == 10.0
    assert p(2) == pytest.approx(4.0)  # on the line from (1, 2) to (4, 8)
    assert p(6) == pytest.approx(9.0)
    assert p(16) == pytest.approx(14.0)  # the last segment's slope, 0.5 ms per image
    assert LatencyProfile({8: 16.0})(4) == pytest.approx(8.0)  # one size: proportional
    with pytest.raises(ValueError):
        LatencyProfile({})
    with pytest.raises(ValueError):
        LatencyProfile({0: 1.0})


def test_candidates_are_ranked_most_accurate_first_and_bounded_by_the_budget():
    assert [s.stitch_id for s in candidates(SERVED, Budget())] == [9, 7, 0]
    assert [s.stitch_id for s in candidates(SERVED, Budget(max_flops=4_000))] == [7, 0]
    assert [s.stitch_id for s in candidates(SERVED, Budget(min_top1=65))] == [9, 7]
    # a latency budget is judged at the request's own batch of images: 4 images on MID take 10 ms
    assert [s.stitch_id for s in candidates(SERVED, Budget(max_latency_ms=9.0), images=1)] == [7, 0]
    assert [s.stitch_id for s in candidates(SERVED, Budget(max_latency_ms=9.0), images=4)] == [0]
    assert [s.stitch_id for s in candidates(SERVED, Budget(stitch=7))] == [7]


def test_selection_top1_ranks_before_the_evaluation_top1_when_the_catalog_has_it():
    a = StitchInfo(1, 10, 1, top1=75.0, top1_selection=70.0)
    b = StitchInfo(2, 10, 1, top1=74.0, top1_selection=72.0)
    assert [s.stitch_id for s in candidates([a, b], Budget())] == [2, 1]


def test_an_unknown_stitch_is_404_listing_the_served_ones():
    with pytest.raises(RequestError) as e:
        candidates(SERVED, Budget(stitch=3))
    assert e.value.status == 404 and e.value.detail["served"] == [0, 7, 9]
    assert "0, 7, 9" in e.value.message


def test_a_budget_nothing_meets_is_422_naming_the_cheapest_stitch():
    with pytest.raises(RequestError) as e:
        candidates(SERVED, Budget(max_flops=500))
    body = e.value.body()
    assert e.value.status == 422 and body["status"] == 422
    assert body["cheapest_stitch"] == 0 and body["cheapest_flops"] == 1_000 and body["cheapest_top1"] == 60.0
    assert body["fastest_latency_ms"] == 2.0
    assert "1,000 FLOPs" in body["error"]
    with pytest.raises(RequestError) as e:
        candidates(SERVED, Budget(min_top1=95))
    assert e.value.status == 422 and "80.00%" in e.value.message


@pytest.mark.parametrize("body, message", [
    ({"stitch": 1, "max_flops": 5}, "at most one of"),
    ({"stitch": "3"}, "'stitch' must be a stitch id"),
    ({"stitch": True}, "'stitch' must be a stitch id"),
    ({"stitch": -1}, "'stitch' must be a stitch id"),
    ({"max_flops": "1G"}, "'max_flops' must be a number"),
    ({"max_latency_ms": -2}, "'max_latency_ms' must be a number"),
    ({"min_top1": math.nan}, "'min_top1' must be a number"),
])
def test_malformed_budgets_are_400(body, message):
    with pytest.raises(RequestError) as e:
        parse_budget(body)
    assert e.value.status == 400 and message in e.value.message


def test_fixed_and_budget_policies_take_the_most_accurate_candidate_whatever_the_queue():
    for policy in ("fixed", "budget"):
        options = candidates(SERVED, Budget())
        assert choose(policy, options, waited_ms=500, batch=8, queued=100, max_batch=8) is LARGE


def test_slo_policy_steps_down_as_the_queue_grows_and_back_up_as_it_drains():
    options = candidates(SERVED, Budget())

    def pick(queued: int, waited: float = 0.0, batch: int = 1) -> int:
        return choose("slo", options, slo_ms=50.0, waited_ms=waited, batch=batch, queued=queued, max_batch=8).stitch_id

    # an idle server: the most accurate stitch meets the SLO (10 ms)
    assert pick(0) == 9
    # 8 queued behind a batch of 1: LARGE finishes the queue at 10 + 40 = 50 ms (meets), 9 queued: 10 + 80 (misses)
    assert pick(8) == 9
    assert pick(9) == 7  # MID: 5 + 2 * 16 = 37 ms
    # a burst: 40 queued, 5 batches behind; MID needs 5 + 5 * 16 = 85 ms, SMALL 2 + 5 * 6 = 32 ms
    assert pick(40) == 0
    # the oldest request has already waited 25 ms: MID's 37 ms turns into 62 ms, SMALL's 32 into 57 (both miss):
    # nothing meets the SLO, so the fastest runs to drain the queue
    assert pick(9, waited=25) == 0 and pick(40, waited=25) == 0
    # the queue drains: back up
    assert [pick(q) for q in (40, 16, 9, 4, 0)] == [0, 7, 7, 9, 9]


def test_slo_policy_keeps_within_the_requests_own_budget():
    capped = candidates(SERVED, Budget(max_flops=4_000))
    assert choose("slo", capped, slo_ms=1000.0, queued=0, max_batch=8).stitch_id == 7  # LARGE is over the budget
    pinned = candidates(SERVED, Budget(stitch=9))
    assert choose("slo", pinned, slo_ms=1.0, queued=100, max_batch=8).stitch_id == 9  # a named stitch is honoured


def test_predicted_finish_counts_the_batch_and_the_batches_queued_behind_it():
    assert predicted_finish_ms(MID, waited_ms=3, batch=4, queued=0, max_batch=8) == pytest.approx(13.0)
    assert predicted_finish_ms(MID, waited_ms=3, batch=4, queued=1, max_batch=8) == pytest.approx(29.0)
    assert predicted_finish_ms(MID, waited_ms=3, batch=4, queued=17, max_batch=8) == pytest.approx(61.0)


def test_merged_stats_sum_replicas_and_take_percentiles_over_recent_requests():
    a = {"pid": 1, "slo_ms": 20.0, "requests": {0: 2, 9: 1}, "images": {0: 2, 9: 4}, "slo_misses": {9: 1},
         "errors": {400: 1}, "batches": 3, "switches": 1, "recent": [(10.0, 0, 5.0), (11.0, 0, 7.0), (12.0, 9, 30.0)]}
    b = {"pid": 2, "slo_ms": 20.0, "requests": {9: 1}, "images": {9: 1}, "slo_misses": {}, "errors": {404: 2},
         "batches": 1, "switches": 0, "recent": [(13.0, 9, 15.0)]}
    stats = merge_stats([a, b])
    assert stats["replicas"] == 2 and stats["requests"] == 4 and stats["images"] == 7
    assert stats["slo_misses"] == 1 and stats["errors"] == {"400": 1, "404": 2} and stats["switches"] == 1
    assert stats["stitches"]["9"] == {"requests": 2, "images": 5, "slo_misses": 1, "p50_ms": 15.0, "p99_ms": 30.0}
    assert stats["p50_ms"] == 7.0 and stats["p99_ms"] == 30.0
    recent = merge_stats([a, b], since=11.5)
    assert recent["window_requests"] == 2 and recent["p50_ms"] == 15.0


def test_the_measured_batch_overhead_moves_the_choice_down():
    options = candidates(SERVED, Budget())
    # idle: LARGE's 10 ms meets a 12 ms SLO, but not with 5 ms of overhead per batch on top
    assert choose("slo", options, slo_ms=12.0, queued=0, max_batch=8).stitch_id == 9
    assert choose("slo", options, slo_ms=12.0, queued=0, max_batch=8, overhead_ms=5.0).stitch_id == 7
    assert predicted_finish_ms(MID, waited_ms=0, batch=1, queued=9, max_batch=8, overhead_ms=2.0) == pytest.approx(
        5.0 + 2 * 16.0 + 3 * 2.0)


def test_served_stitches_rank_on_the_selection_split_only_when_every_one_has_it():
    from orchestrator.serve.replica import ServeSettings

    def row(sid: int, top1: float, selection: float | None) -> dict:
        return {"stitch_id": sid, "flops": 10 * (sid + 1), "params": 1, "top1": top1, "top5": None,
                "top1_selection": selection, "anchors": ["a"], "cuts": []}

    both = ServeSettings("ckpt", (row(0, 75.0, 70.0), row(1, 74.0, 72.0))).infos()
    assert [s.stitch_id for s in candidates(both, Budget())] == [1, 0]
    mixed = ServeSettings("ckpt", (row(0, 75.0, 70.0), row(1, 74.0, None))).infos()
    assert [s.stitch_id for s in candidates(mixed, Budget())] == [0, 1]
    assert all(s.top1_selection is None for s in mixed)
