"""Stitch-space enumeration: SN-Net's windows, counts, ids, directions, two-way stitches."""

import pytest
from conftest import paper_paired_stitching

from snnet import SNNetError, SpaceConfig, StitchSpace, UnstitchableError
from snnet.space import Head, Junction, Stem, Units, window_cuts


@pytest.mark.parametrize("depth,k,s",
                         [(12, 2, 1), (12, 3, 2), (12, 4, 4), (6, 2, 1), (12, 1, 1), (5, 5, 1), (24, 3, 1)])
def test_equal_depth_windows_match_paper(depth, k, s):
    cfgs, mapping = paper_paired_stitching(depth, k, s)
    windows = window_cuts(depth, depth, k, s)
    ours = [(cut, w) for w, cuts in enumerate(windows) for cut in cuts]
    # The paper's (fid, bid): front runs blocks[:fid + 1], back blocks[bid:]. Our cut is [fid, bid].
    assert ours == [((j, b), m) for (j, b), m in zip(cfgs, mapping)]


def test_deit_window_count_is_34():
    assert sum(len(w) for w in window_cuts(12, 12, 2, 1)) == 34
    assert len(window_cuts(12, 12, 2, 1)) == 11  # one shared stitching layer per window position


def test_unequal_depths_map_to_relative_depth():
    windows = window_cuts(6, 18, 2, 1)
    cuts = [c for w in windows for c in w]
    # the window's "back from t" maps to back block round(t * 18 / 6) = 3t
    assert cuts[:4] == [(0, 0), (0, 3), (1, 0), (1, 3)]
    assert all(0 <= j < 6 and k % 3 == 0 and 0 <= k < 18 for j, k in cuts)
    assert len(set(cuts)) == len(cuts)
    # Stages whose first unit downsamples (shift=1): the back resumes at 1..depth, at round((t+1)*3).
    shifted = [c for w in window_cuts(6, 18, 2, 1, shift=1) for c in w]
    assert shifted[:4] == [(0, 3), (0, 6), (1, 3), (1, 6)]
    assert all(3 <= k <= 18 for _, k in shifted)


def test_deit_ti_s_b_has_71_stitches(deit_tsb_space):
    space = deit_tsb_space
    assert len(space) == 71
    assert len(space.layers) == 22
    assert [space.names(s) for s in space.stitches[:3]] == [
        ("deit_tiny_patch16_224",), ("deit_small_patch16_224",), ("deit_base_patch16_224",)
    ]
    assert [s.stitch_id for s in space] == list(range(71))
    flops = [p.flops for p in space.profiles]
    assert flops == sorted(flops)
    # Plain cuts and skips cost less than the larger anchor; repeats (j >= k) may cost more.
    for s in space:
        if not s.is_anchor:
            hi = max(space.profiles[a].flops for a in s.anchors)
            (j, k), = s.cuts
            if j < k:
                assert s.flops < hi, s
    assert sum(s.flops > max(space.profiles[a].flops for a in s.anchors) for s in space if not s.is_anchor) > 0


def test_ids_stable_and_order_independent(deit_tsb_space):
    shuffled = StitchSpace(list(reversed(deit_tsb_space.profiles)), deit_tsb_space.config)
    assert [deit_tsb_space.record(s) for s in deit_tsb_space] == [shuffled.record(s) for s in shuffled]


def test_directions_and_nearest(deit_tsb_space):
    profiles = deit_tsb_space.profiles

    def count(**kw):
        return len(StitchSpace(profiles, SpaceConfig(**kw)))

    assert count(direction="slow-to-fast") == 71
    assert count(direction="both") == 3 + 4 * 34
    # Without nearest stitching: every pair plus the chains Ti -> S -> B, as the released code (732).
    assert count(nearest=False) == 3 + 3 * 34 + 627 == 732
    s2f = StitchSpace(profiles, SpaceConfig(direction="slow-to-fast"))
    for s in s2f:
        if not s.is_anchor:
            assert s.anchors[0] > s.anchors[1]


def test_two_way_stitches(deit_tsb_space):
    space = StitchSpace(deit_tsb_space.profiles, SpaceConfig(two_way=True))
    two_way = [s for s in space if len(s.anchors) == 3]
    assert two_way and len(space) == 71 + len(two_way)
    kinds = {s.anchors for s in two_way}
    assert kinds == {(0, 1, 0), (1, 0, 1), (1, 2, 1), (2, 1, 2)}  # nearest pairs only, never three anchors
    for s in two_way:
        (j1, k1), (j2, k2) = s.cuts
        assert k1 <= j2 and j1 < k2 < 12
        steps = s.path
        assert isinstance(steps[0], Stem) and isinstance(steps[-1], Head)
        assert [type(x) for x in steps] == [Stem, Units, Junction, Units, Junction, Units, Head]
        assert steps[-1].anchor == s.anchors[0]


def test_path_of_plain_and_repeating_cuts(deit_tsb_space):
    space = deit_tsb_space
    s = space.find(["deit_tiny_patch16_224", "deit_small_patch16_224"], [[3, 3]])
    assert s.path == (Stem(0), Units(0, 0, 4), Junction(s.layers[0]), Units(1, 3, 12), Head(1))
    # The released (0, 0): DeiT-Ti's block 0, then all twelve DeiT-S blocks (stitch id 3 there and here).
    first = space[3]
    assert space.names(first) == ("deit_tiny_patch16_224", "deit_small_patch16_224") and first.cuts == ((0, 0),)
    assert first.path == (Stem(0), Units(0, 0, 1), Junction("0to1_s0_w0"), Units(1, 0, 12), Head(1))
    assert first.flops > space.profiles[1].flops  # 4.696 GFLOPs against DeiT-S's 4.608
    last = space.find(["deit_small_patch16_224", "deit_base_patch16_224"], [[11, 11]])
    assert last.path == (Stem(1), Units(1, 0, 12), Junction(last.layers[0]), Units(2, 11, 12), Head(2))


def test_json_roundtrip(deit_tsb_space):
    again = StitchSpace.from_json(deit_tsb_space.to_json())
    assert [again.record(s) for s in again] == [deit_tsb_space.record(s) for s in deit_tsb_space]


@pytest.mark.parametrize(
    "config,message",
    [
        (SpaceConfig(kernel_size=0), "kernel_size must be an integer >= 1, got 0"),
        (SpaceConfig(stride=0), "stride must be an integer >= 1, got 0"),
        (SpaceConfig(stride=-2, kernel_size=-1), "kernel_size must be an integer >= 1, got -1; stride"),
        (SpaceConfig(direction="sideways"),
         "direction must be one of fast-to-slow, slow-to-fast, both, got 'sideways'"),
        (SpaceConfig(kernel_size=13), "kernel_size <= 12 (the depth of deit_tiny_patch16_224), got kernel_size=13"),
        (SpaceConfig(preset="papers"), "preset must be None or one of 'paper', got 'papers'"),
    ],
)
def test_invalid_configs(deit_tsb_space, config, message):
    with pytest.raises(SNNetError, match="^.*" + __import__("re").escape(message)):
        StitchSpace(deit_tsb_space.profiles, config)


def test_token_count_mismatch_is_unstitchable(deit_small_family, deit_tsb_space):
    # 32x32 DeiT-Ti (5 tokens) against 224x224 DeiT-B (197 tokens): different input sizes.
    with pytest.raises(UnstitchableError, match="input size"):
        StitchSpace([deit_small_family.space.profiles[0], deit_tsb_space.profiles[2]])


def test_empty_and_duplicate_anchors(deit_tsb_space):
    with pytest.raises(SNNetError, match="at least one anchor"):
        StitchSpace([])
    with pytest.raises(SNNetError, match="distinct"):
        StitchSpace([deit_tsb_space.profiles[0]] * 2)


def test_a_pretrained_tag_does_not_make_another_anchor(deit_tsb_space):
    from dataclasses import replace

    tagged = replace(deit_tsb_space.profiles[0], name="deit_tiny_patch16_224.fb_in1k")
    with pytest.raises(SNNetError, match=r"distinct.*deit_tiny_patch16_224 appears twice \(a pretrained tag"):
        StitchSpace([deit_tsb_space.profiles[0], tagged])


@pytest.mark.parametrize("text", [
    "not json", "[]", '{"profiles": []}', '{"config": {}}', '{"config": {"kernel_sizes": 2}, "profiles": []}',
    '{"config": {}, "profiles": [{"name": "x"}]}',
])
def test_from_json_of_something_else_is_an_snnet_error(text):
    with pytest.raises(SNNetError, match="^Not a stitch space as StitchSpace.to_json writes it"):
        StitchSpace.from_json(text)
    with pytest.raises(SNNetError, match="must be str, bytes or bytearray, not dict"):
        StitchSpace.from_json({"config": {}, "profiles": []})
