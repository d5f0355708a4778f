"""The ``scored`` rule's front focus and its updates from training losses (issue 30, item 3).

Exact answers: the gap of every stitch to the front of (FLOPs, score) on planted values; the floor and each
rank's marginal under ``focus: front``; the loss sums of two ranks gathered, decayed and read back; and a run
of ``update: loss`` resumed from a checkpoint inside either epoch (the second after one rescore, each with
part of an epoch's losses gathered) ends with exactly the weights and the draw probabilities of the uninterrupted run.
"""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest
import torch
from test_recipe import Reports

from orchestrator.train.config import TrainConfig
from orchestrator.train.recipe import SupernetRecipe
from orchestrator.train.state import Worker
from orchestrator.train.stitch_losses import StitchLosses
from snnet import AnchorSpec, SNNetError, StitchSpace, create_anchor, profile_anchor
from snnet.sampling import RULES, ScoredRule, front_gaps

FLOPS = [100, 101, 102, 103, 200, 300, 301, 302]
SCORES = [0.9, 0.1, 0.5, 0.3, 1.0, 0.2, 0.8, 0.4]


def test_front_gaps_are_the_best_value_no_dearer_minus_the_own():
    np.testing.assert_allclose(front_gaps(FLOPS, SCORES), [0.0, 0.8, 0.4, 0.6, 0.0, 0.8, 0.2, 0.6])
    # equal FLOPs: the better one is on the front, the other one is behind it; a cheaper better one shadows
    np.testing.assert_allclose(front_gaps([5, 5, 1], [1.0, 3.0, 2.0]), [2.0, 0.0, 0.0])
    np.testing.assert_allclose(front_gaps([1, 2, 3], [3.0, 2.0, 1.0]), [0.0, 1.0, 2.0])


def test_front_focus_favours_the_front_keeps_the_floor_and_each_rank_draws_exactly_its_probabilities():
    rule = ScoredRule(FLOPS, seed=5, scores=SCORES, focus="front", temperature=0.1, floor=0.3)
    p = rule.probabilities
    assert p.sum() == pytest.approx(1.0) and (p >= 0.3 / len(FLOPS) - 1e-12).all()
    front = [0, 4]  # the cheapest stitch and the best-scored one
    assert set(np.argsort(p)[-2:]) == set(front) and p[0] == pytest.approx(p[4])
    gaps = front_gaps(FLOPS, SCORES)
    assert all(p[i] >= p[j] for i in range(8) for j in range(8) if gaps[i] < gaps[j])
    # pure in (seed, step, rank), one bucket per step, and each rank's marginal is p
    world, steps = 3, 6000
    bucket_of = {i: b for b, bucket in enumerate(rule.buckets) for i in bucket}
    counts = [collections.Counter() for _ in range(world)]
    for t in range(steps):
        drawn = [ids[0] for ids in rule._draw_all(t, world)]
        assert drawn == [rule.draw(t, r, world)[0] for r in range(world)]
        assert len({bucket_of[i] for i in drawn}) == 1
        for r, i in enumerate(drawn):
            counts[r][i] += 1
    for r in range(world):
        for i, q in enumerate(p):
            assert abs(counts[r][i] - steps * q) <= 5 * math.sqrt(steps * q * (1 - q)), (r, i)


def test_rescoring_by_losses_turns_the_order_and_unknown_losses_count_as_the_mean():
    rule = ScoredRule(FLOPS, scores=SCORES, focus="front", temperature=0.1)
    before = rule.probabilities.copy()
    losses = [2.0, 0.5, 1.0, np.nan, 1.0, 3.0, 0.2, 1.0]  # lower is better
    rule.rescore(losses, higher_is_better=False)
    gaps = front_gaps(FLOPS, [-v if v == v else -np.nanmean(losses) for v in losses])
    assert set(np.flatnonzero(gaps == 0)) == {0, 1, 6}  # the cheapest stitch is always on the front
    assert set(np.argsort(rule.probabilities)[-3:]) == {0, 1, 6} and not np.allclose(before, rule.probabilities)
    p = rule.probabilities  # stitch 3 has no loss yet: it counts as the mean loss
    assert all(p[i] > p[j] for i in range(8) for j in range(8) if gaps[i] < gaps[j] - 1e-9)
    assert rule.probabilities.sum() == pytest.approx(1.0)


def test_the_new_options_are_checked_and_only_update_loss_learns_from_losses():
    with pytest.raises(SNNetError, match="focus must be one of bucket, front, got 'frnt'"):
        ScoredRule(FLOPS, focus="frnt")
    with pytest.raises(SNNetError, match="update must be one of none, loss, got 'losses'"):
        ScoredRule(FLOPS, update="losses")
    assert ScoredRule(FLOPS, update="loss").learns_from_losses and not ScoredRule(FLOPS).learns_from_losses
    # a run's settings are checked by the rule before anything starts (orchestrator.train exits 2 with it)
    with pytest.raises(SNNetError, match=r"^Invalid training settings: scored option focus must be one of bucket, "
                                         r"front, got 'frnt'\.$"):
        TrainConfig(sampling="scored", sampling_options={"focus": "frnt"})
    with pytest.raises(SNNetError, match="Sampling rule 'uniform' takes no options; got update='loss'"):
        TrainConfig(sampling="uniform", sampling_options={"update": "loss"})
    # unless given, focus picks score and temperature: init_top1 and 0.1 for a front, cka and 1.0 in buckets
    assert (ScoredRule(FLOPS, focus="front").score, ScoredRule(FLOPS, focus="front").temperature) == ("init_top1", 0.1)
    assert (ScoredRule(FLOPS).score, ScoredRule(FLOPS).temperature) == ("cka", 1.0)
    assert ScoredRule(FLOPS, focus="front", score="kl", temperature=2).temperature == 2.0
    assert ScoredRule.score_of(focus="front") == "init_top1" and ScoredRule.score_of(score="kl") == "kl"
    assert ScoredRule.score_of() == "cka"
    # the catalog's sampling_options: one spelling per rule, defaults (focus's own included) left out
    explicit = ScoredRule.canonical_options(update="loss", focus="front", score="init_top1", temperature=0.1)
    assert explicit == ScoredRule.canonical_options(focus="front", update="loss")
    assert explicit == {"focus": "front", "update": "loss"}
    assert list(explicit) == ["focus", "update"] and ScoredRule.canonical_options(score="cka", scores=[1.0]) == {}
    assert ScoredRule.canonical_options(focus="front", score="cka") == {"focus": "front", "score": "cka"}
    assert RULES["sandwich"].canonical_options(num_random=2) == {} and RULES["uniform"].canonical_options() == {}
    # the default (focus: bucket) draws as before this option existed: balanced's bucket shares
    p = ScoredRule(FLOPS, scores=SCORES).probabilities
    for bucket in ScoredRule(FLOPS).buckets:
        assert p[bucket].sum() == pytest.approx(len(bucket) / len(FLOPS))


def test_stitch_losses_sum_the_ranks_decay_the_old_epochs_and_survive_a_checkpoint():
    ranks = [StitchLosses([4, 7, 9]) for _ in range(2)]
    ranks[0].add([4], 2.0)
    ranks[1].add([4], 4.0)
    ranks[1].add([7], 1.0)
    local = [r.local.copy() for r in ranks]
    total = local[0] + local[1]

    def reduce(values):  # what all_reduce gives each rank: the sum of both ranks' arrays
        return total

    for r in ranks:
        r.gather(reduce)
    assert all(np.array_equal(r.epoch, total) and not r.local.any() for r in ranks)
    restored = StitchLosses([4, 7, 9])
    restored.load(ranks[0].state())
    np.testing.assert_array_equal(restored.epoch, ranks[0].epoch)
    means = restored.end_epoch(lambda v: v)
    np.testing.assert_allclose(means, [3.0, 1.0, np.nan])
    restored.add([9], 5.0)
    restored.add([4], 6.0)
    means = restored.end_epoch(lambda v: v)  # stitch 4: (0.5 * 6 + 6) / (0.5 * 2 + 1)
    np.testing.assert_allclose(means, [4.5, 1.0, 5.0])
    other = StitchLosses([4, 7])
    other.load(restored.state())  # another set of stitches: the checkpoint's sums do not apply
    assert not other.seen()


def _gloo_worker(rank, world_size, port, out):
    import os

    import torch.distributed as dist

    from orchestrator.train.stitch_losses import all_reduce_sum

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        losses = StitchLosses([4, 7, 9])
        losses.add([4, 7] if rank == 0 else [9], 1.0 + rank)  # rank 0: 1.0 on 4 and 7; rank 1: 2.0 on 9
        losses.gather(all_reduce_sum(torch.device("cpu"), world_size))
        losses.add([4], 3.0 * (rank + 1))  # 3.0 and 6.0 on 4
        out[rank] = losses.end_epoch(all_reduce_sum(torch.device("cpu"), world_size)).tolist()
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_hold_the_same_sums_of_both():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_gloo_worker, args=(2, port, out), nprocs=2, join=True)
    assert out[0] == out[1] == [(1.0 + 3.0 + 6.0) / 3, 1.0, 2.0]


@pytest.fixture(scope="module")
def loss_run():
    from torch.utils.data import Subset

    from orchestrator.data import demo_anchors as demo  # noqa: F401 - registers the demo anchors with timm
    from orchestrator.data import get_datasets

    names = ["snnet_demo_vit_tiny", "snnet_demo_vit_small"]
    config = TrainConfig(anchors=[AnchorSpec(n) for n in names], epochs=2, batch_size=128, ls_samples=64,
                         eval_batch_size=200, workers=1, checkpoint_every_steps=2, selection_fraction=0.02,
                         early_stitches=0, sampling="scored", seed=3,
                         sampling_options={"score": "init_top1", "focus": "front", "update": "loss",
                                           "temperature": 0.5})
    torch.manual_seed(0)
    space = StitchSpace([profile_anchor(create_anchor(AnchorSpec(n))) for n in names], config.space_config())
    train, val = get_datasets("demo")
    data = (Subset(train, range(651)), Subset(val, range(100)))

    def run(state=None):
        torch.manual_seed(1)
        reports = Reports()
        recipe = SupernetRecipe(config, space, Worker(report=reports), datasets=data)
        recipe.run(state)
        return recipe, reports

    return run, run()


def test_a_loss_updated_run_rescores_each_epoch_and_resumes_exactly(loss_run):
    run, (recipe, reports) = loss_run
    assert recipe.steps_per_epoch == 5 and recipe.losses is not None and recipe.losses.seen()
    trained = recipe.losses.running[1]
    assert trained.sum() == pytest.approx(0.5 * 5 + 5)  # 5 steps an epoch, the first epoch's weight halved
    by_loss = ScoredRule([recipe.space[i].flops for i in recipe.losses.ids], focus="front", temperature=0.5)
    by_loss.rescore(recipe.losses.means(), higher_is_better=False)
    np.testing.assert_allclose(recipe.rule.probabilities, by_loss.probabilities)
    for step, gathered in ((2, 2), (8, 3)):  # inside the first epoch; inside the second, after one rescore
        state = next(s for m, s in reports.calls if m["phase"] == "train" and m["step"] == step)
        assert sum(state.stitch_losses["epoch"][1]) == gathered
        resumed, more = run(state)
        np.testing.assert_array_equal(resumed.rule.probabilities, recipe.rule.probabilities)
        np.testing.assert_array_equal(resumed.losses.running, recipe.losses.running)
        final, reference = resumed.net.state_dict(), recipe.net.state_dict()
        assert all(torch.equal(final[k], reference[k]) for k in reference)
        assert more.calls[-1][0]["results"] == reports.calls[-1][0]["results"]
