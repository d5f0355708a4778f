"""Init scores of stitches (snnet.scores) and the ``scored`` sampling rule (issue 30).

Planted cases with exact answers: two copies of one ViT stitched by an identity layer are the
back anchor itself (CKA 1, KL 0, the same top-1); a Kaiming-initialised stitching layer scores
below its least-squares init on every stitch; the rule is a pure function of (seed, step, rank),
keeps every stitch above its floor and gives each rank exactly its probabilities.
"""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest
import torch

from snnet._errors import SNNetError
from snnet.sampling import ScoredRule, make_rule
from snnet.scores import linear_cka, score_stitches, stitch_r2


@pytest.fixture(scope="module")
def twins():
    """DeiT-Ti and ViT-Ti (one architecture, two names) at 32x32, 3 blocks, the second a copy of
    the first; labelled random images."""
    from snnet import build_supernet

    torch.manual_seed(0)
    net = build_supernet(["deit_tiny_patch16_224", "vit_tiny_patch16_224"], img_size=32, depth=3, num_classes=10)
    net.anchors[1].model.load_state_dict(net.anchors[0].model.state_dict())
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g))
               for _ in range(3)]
    return net.eval(), batches


def _plain_cut(net):
    return next(s for s in net.space if not s.is_anchor and s.cuts[0][1] == s.cuts[0][0] + 1)


def test_linear_cka_is_one_under_rotation_and_scaling_and_lower_for_unrelated():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 12, generator=g)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g))
    assert linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x + 5.0) == pytest.approx(1.0, abs=1e-12)  # centring removes a shift
    assert linear_cka(x, torch.randn(40, 12, generator=g)) < 0.6
    assert math.isnan(linear_cka(x, torch.ones(40, 3)))
    with pytest.raises(ValueError, match="same examples"):
        linear_cka(x, x[:5])


def test_an_identity_stitch_between_copies_is_its_back_anchor(twins):
    net, batches = twins
    stitch = _plain_cut(net)
    layer = net.stitch_layers[stitch.layers[0]]
    width = layer.in_dim
    layer.set_affine(torch.eye(width), torch.zeros(width))
    scores = score_stitches(net, batches)
    back = next(s for s in net.space if s.is_anchor and s.anchors == (stitch.anchors[-1],))
    got = scores[stitch.stitch_id]
    assert got.cka == pytest.approx(1.0, abs=1e-6) and got.kl == pytest.approx(0.0, abs=1e-6)
    assert got.init_top1 == scores[back.stitch_id].init_top1 and got.images == 48
    for s in net.space:  # an anchor alone is its own back anchor
        if s.is_anchor:
            assert scores[s.stitch_id].cka == pytest.approx(1.0, abs=1e-9) and scores[s.stitch_id].kl == 0.0
    # without labels there is no top-1; only the asked stitches are scored
    unlabelled = score_stitches(net, [x for x, _ in batches], stitch_ids=[stitch.stitch_id])
    assert list(unlabelled) == [stitch.stitch_id] and unlabelled[stitch.stitch_id].init_top1 is None


def test_a_random_stitching_layer_scores_below_its_least_squares_init(twins):
    net, batches = twins
    r2 = net.init_least_squares([x for x, _ in batches])
    fitted = score_stitches(net, batches)
    torch.manual_seed(0)
    net.reset_stitch_layers()
    random = score_stitches(net, batches)
    stitched = [s.stitch_id for s in net.space if not s.is_anchor]
    assert stitched
    for i in stitched:
        assert fitted[i].cka > random[i].cka and fitted[i].kl < random[i].kl
    per_stitch = stitch_r2(net.space, r2)
    assert all(per_stitch[s.stitch_id] == 1.0 for s in net.space if s.is_anchor)
    assert all(per_stitch[i] == min(r2[k] for k in net.space[i].layers) for i in stitched)
    assert stitch_r2(net.space, {})[stitched[0]] is None  # Kaiming init: no fit


# -- the scored rule ----------------------------------------------------------------------------------
FLOPS = [100, 101, 102, 103, 200, 300, 301, 302]
SCORES = [0.9, 0.1, 0.5, 0.3, 1.0, 0.2, 0.8, 0.4]


def test_scored_draws_are_pure_functions_of_seed_step_rank():
    rule = make_rule("scored", FLOPS, seed=7, scores=SCORES)
    again = make_rule("scored", FLOPS, seed=7, scores=SCORES)
    draws = [rule.draw(t, r, 4) for t in range(300) for r in range(4)]
    assert draws == [again.draw(t, r, 4) for t in range(300) for r in range(4)]
    assert draws == [d for t in range(300) for d in rule._draw_all(t, 4)]
    assert draws != [make_rule("scored", FLOPS, seed=8, scores=SCORES).draw(t, r, 4) for t in range(300)
                     for r in range(4)]


def test_scored_keeps_every_stitch_above_its_floor_and_favours_high_scores():
    extreme = [1e6 if i % 2 else -1e6 for i in range(len(FLOPS))]
    for floor in (0.0, 0.2, 1.0):
        p = ScoredRule(FLOPS, scores=extreme, floor=floor).probabilities
        assert p.sum() == pytest.approx(1.0) and (p >= floor / len(FLOPS) - 1e-12).all()
    balanced = ScoredRule(FLOPS, scores=SCORES, floor=1.0).probabilities
    np.testing.assert_allclose(balanced, 1 / len(FLOPS))  # floor 1: balanced's marginal
    p = ScoredRule(FLOPS, scores=SCORES).probabilities
    buckets = ScoredRule(FLOPS).buckets
    assert buckets == [[0, 1, 2, 3], [4], [5, 6, 7]]
    for bucket in buckets:  # a bucket keeps its share; inside it, a higher score gets more steps
        assert p[bucket].sum() == pytest.approx(len(bucket) / len(FLOPS))
        by_score = sorted(bucket, key=lambda i: SCORES[i])
        assert list(np.argsort(p[bucket])) == [bucket.index(i) for i in by_score]
    kl = ScoredRule(FLOPS, scores=SCORES, score="kl").probabilities  # a divergence: lower is better
    assert kl[1] > kl[0]
    missing = ScoredRule(FLOPS, scores=[None] * len(FLOPS)).probabilities
    np.testing.assert_allclose(missing, 1 / len(FLOPS))


def test_scored_ranks_share_a_bucket_and_each_rank_has_exactly_the_probabilities():
    rule = ScoredRule(FLOPS, seed=3, scores=SCORES, floor=0.3)
    world, steps = 4, 6000
    bucket_of = {i: b for b, bucket in enumerate(rule.buckets) for i in bucket}
    counts = [collections.Counter() for _ in range(world)]
    for t in range(steps):
        drawn = [ids[0] for ids in rule._draw_all(t, world)]
        assert len({bucket_of[i] for i in drawn}) == 1  # one bucket per step: balanced work
        in_bucket = rule.buckets[bucket_of[drawn[0]]]
        if len(in_bucket) > 1 and max(rule.probabilities[in_bucket]) * len(FLOPS) / len(in_bucket) < 1 / world:
            assert len(set(drawn)) == world
        for r, i in enumerate(drawn):
            counts[r][i] += 1
    for r in range(world):
        for i, p in enumerate(rule.probabilities):
            sd = math.sqrt(steps * p * (1 - p))
            assert abs(counts[r][i] - steps * p) <= 5 * sd, (r, i, counts[r][i], steps * p)


def test_scored_rejects_bad_options():
    with pytest.raises(SNNetError, match="score must be one of ls_r2, cka, kl, init_top1"):
        ScoredRule(FLOPS, score="synflow")
    with pytest.raises(SNNetError, match=r"floor must be a number in \[0, 1\], got 1.5"):
        ScoredRule(FLOPS, floor=1.5)
    with pytest.raises(SNNetError, match="temperature must be a number > 0"):
        ScoredRule(FLOPS, temperature=0)
    with pytest.raises(SNNetError, match="one score per stitch \\(8\\), got 3"):
        ScoredRule(FLOPS, scores=[1, 2, 3])


# -- in the training recipe and the catalog -------------------------------------------------------------
def test_a_scored_run_scores_at_init_and_the_catalog_keeps_them(tmp_path):
    """Epoch 0, in this process: the init scores cover every stitch, the anchors score CKA 1 and KL 0,
    each stitch's init top-1 is its top-1 on the (whole) selection split, the rule draws by them and a
    resumed recipe gets them back from the checkpoint; the catalog stores them (schema 8) and reads a
    schema-7 file with nulls."""
    import pyarrow.parquet as pq
    from torch.utils.data import Subset

    from orchestrator.catalog import CatalogWriter, load
    from orchestrator.data import demo_anchors as demo  # noqa: F401 - registers the demo anchors with timm
    from orchestrator.data import get_datasets
    from orchestrator.train.config import TrainConfig
    from orchestrator.train.launch import catalog_rows
    from orchestrator.train.recipe import SupernetRecipe
    from orchestrator.train.state import TrainState, Worker
    from snnet import AnchorSpec, StitchSpace, create_anchor, profile_anchor

    names = ["snnet_demo_vit_tiny", "snnet_demo_vit_small"]
    config = TrainConfig(anchors=[AnchorSpec(n) for n in names], epochs=0, workers=1, kernel_size=1, ls_samples=64,
                         eval_batch_size=100, sampling="scored", selection_fraction=0.1, early_stitches=0, seed=2)
    space = StitchSpace([profile_anchor(create_anchor(AnchorSpec(n))) for n in names], config.space_config())
    train, val = get_datasets("demo")
    torch.manual_seed(0)
    states = []
    recipe = SupernetRecipe(config, space, Worker(report=lambda m, s: states.append((m, s))),
                            datasets=(Subset(train, range(300)), Subset(val, range(50))))
    recipe.run()
    final, state = states[-1]
    scores = final["init_scores"]
    assert sorted(map(int, scores)) == [s.stitch_id for s in space] and recipe.score_images() == 256
    assert final["selection_images"] == 28  # 10% of 300, stratified by class
    assert all(v["images"] == 28 for v in scores.values())  # the whole selection split
    for s in space:
        got = scores[str(s.stitch_id)]
        assert got["init_top1"] == pytest.approx(final["results_selection"][str(s.stitch_id)])
        assert (got["cka"], got["kl"], got["ls_r2"]) == ((1.0, 0.0, 1.0) if s.is_anchor else
                                                         (got["cka"], got["kl"], got["ls_r2"]))
        assert 0.0 < got["ls_r2"] <= 1.0
    assert list(recipe.rule.scores) == [scores[str(s.stitch_id)]["cka"] for s in space]

    again = SupernetRecipe(config, space, datasets=(Subset(train, range(300)), Subset(val, range(50))))
    again.setup(load_weights=False)
    again.load(TrainState.from_dict(state.to_dict()))
    assert again.init_scores == scores
    np.testing.assert_array_equal(again.rule.probabilities, recipe.rule.probabilities)

    root = tmp_path / "catalog"
    rows = catalog_rows(config, space, final["results"], final["r2"], "", scores=scores)
    path = CatalogWriter(root, "s").write_trial("t", rows)
    df = load(root).sort_values("stitch_id")
    assert list(df["init_cka"]) == pytest.approx([scores[str(i)]["cka"] for i in df["stitch_id"]])
    assert list(df["init_top1"]) == pytest.approx([scores[str(i)]["init_top1"] for i in df["stitch_id"]])
    assert (df["score_images"] == 28).all() and str(df["score_images"].dtype) == "Int64"
    old = pq.read_table(path).drop_columns(["init_cka", "init_kl", "init_top1", "score_images"])
    pq.write_table(old.replace_schema_metadata({b"snnet.catalog.schema_version": b"7"}), path,
                   write_page_checksum=True)
    df = load(root)
    assert df["init_cka"].isna().all() and df["score_images"].isna().all() and len(df) == len(space)
