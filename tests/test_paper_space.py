"""The paper's stitch spaces: tables written from running SN-Net's released enumeration.

The tables below were produced by running the pure-Python enumeration functions of
github.com/ziplab/SN-Net side by side (``stitching_deit/utils.py: get_stitch_configs``,
``stitching_swin/models/snnet.py``, ``stitching_resnet_swin/timm/models/snnet.py`` and
``stitching_levit/utils.py``:
``get_stitch_configs`` per stage) and from its results files (``stitches_res*.txt``, FLOPs per
config id). Released cuts are local to a stage: ``(j, k)`` with the front running through its
block ``j`` and the back resuming at block ``k``.

Enumeration tests use hand-written anchor profiles with the real models' stage depths and
widths (no tracing); FLOPs tests use real timm models at 224x224.
"""

from collections import Counter

import pytest

from snnet import AnchorProfile, SNNetError, SpaceConfig, StitchSpace, UnstitchableError, build_supernet
from snnet._presets import paired_stitching, unpaired_stitching
from snnet.space import Head, Junction, Stem, Units

# -- released tables ------------------------------------------------------------------------
# stitching_deit, DeiT-Ti/S/B, k=2, s=1: the 34 (fid, bid) of each pair and their layer ids.
DEIT_K2S1 = [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 1), (2, 2), (2, 3), (3, 2), (3, 3), (3, 4), (4, 3),
             (4, 4), (4, 5), (5, 4), (5, 5), (5, 6), (6, 5), (6, 6), (6, 7), (7, 6), (7, 7), (7, 8), (8, 7),
             (8, 8), (8, 9), (9, 8), (9, 9), (9, 10), (10, 9), (10, 10), (10, 11), (11, 10), (11, 11)]
DEIT_K2S1_LAYERS = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6, 7, 7, 7, 8, 8, 8, 9, 9,
                    9, 10, 10, 10]
DEIT_COUNTS = {(2, 1): 71, (1, 1): 27, (3, 1): 111, (2, 2): 51, (4, 2): 131}
# (pair, stage, released local cut, released layer id), in config-id order after the anchors.
SWIN_TSB = [((0, 1), 0, (0, 1), 0), ((1, 2), 0, (0, 1), 0), ((0, 1), 1, (0, 1), 0), ((1, 2), 1, (0, 1), 0),
            ((0, 1), 2, (0, 1), 0), ((0, 1), 2, (0, 2), 0), ((0, 1), 2, (1, 3), 0), ((0, 1), 2, (1, 4), 1),
            ((0, 1), 2, (1, 5), 1), ((0, 1), 2, (2, 6), 1), ((0, 1), 2, (2, 7), 2), ((0, 1), 2, (2, 8), 2),
            ((0, 1), 2, (3, 9), 2), ((0, 1), 2, (3, 10), 3), ((0, 1), 2, (3, 11), 3), ((0, 1), 2, (4, 12), 3),
            ((0, 1), 2, (4, 13), 4), ((0, 1), 2, (4, 14), 4), ((0, 1), 2, (5, 15), 4), ((0, 1), 2, (5, 16), 5),
            ((0, 1), 2, (5, 17), 5)] + [((1, 2), 2, (j, j + 1), j) for j in range(17)]
RESNET_18_50 = [((0, 1), 1, (0, 1), 0), ((0, 1), 1, (1, 2), 0), ((0, 1), 1, (1, 3), 1), ((0, 1), 2, (0, 1), 0),
                ((0, 1), 2, (0, 2), 0), ((0, 1), 2, (1, 3), 0), ((0, 1), 2, (1, 4), 1), ((0, 1), 2, (1, 5), 1)]
RESNET_18_SWIN_T = [((0, 1), 1, (0, 1), 0), ((0, 1), 2, (0, 1), 0), ((0, 1), 2, (0, 2), 0),
                    ((0, 1), 2, (1, 3), 0), ((0, 1), 2, (1, 4), 1), ((0, 1), 2, (1, 5), 1)]
LEVIT_192_256 = [((0, 1), stage, (j, j + 1), j) for stage in (0, 1) for j in range(3)]
# FLOPs per config id in the released results files (fvcore, one 224x224 image).
RELEASED_DEIT_FLOPS = [
    1258411200, 4608338304, 17582740224, 4696010496, 4316862720, 4798437888, 4419290112, 4040142336, 4521717504,
    4142569728, 3763421952, 4244997120, 3865849344, 3486701568, 3968276736, 3589128960, 3209981184, 3691556352,
    3312408576, 2933260800, 3414835968, 3035688192, 2656540416, 3138115584, 2758967808, 2379820032, 2861395200,
    2482247424, 2103099648, 2584674816, 2205527040, 1826379264, 2307954432, 1928806656, 1549658880, 2031234048,
    1652086272, 17961426432, 16505958912, 18340574208, 16885106688, 15429639168, 17264254464, 15808786944,
    14353319424, 16187934720, 14732467200, 13276999680, 15111614976, 13656147456, 12200679936, 14035295232,
    12579827712, 11124360192, 12958975488, 11503507968, 10048040448, 11882655744, 10427188224, 8971720704,
    10806336000, 9350868480, 7895400960, 9730016256, 8274548736, 6819081216, 8653696512, 7198228992, 5742761472,
    7577376768, 6121909248,
]
RELEASED_DEIT_PARAMS_HEAD = [5717416, 22050664, 86567656, 22345960, 20571496, 22790824]
RELEASED_RESNET_18_50_FLOPS = [1819065856, 4111512576, 3755463680, 3767505920, 3547935744, 3134686208, 2915718144,
                               2928161792, 2709193728, 2490225664]
RELEASED_RESNET_18_SWIN_T_FLOPS = [1819065856, 4509194496, 4095543552, 3730713856, 3375768832, 3252235520,
                                   2897290496, 2542345472]
RELEASED_LEVIT_192_256_FLOPS = [661663808, 1133412864, 1020918272, 977741824, 934565376, 812300576, 791247040,
                                770193504]


# -- hand-written profiles ----------------------------------------------------------------------
def profile(name, family, depths, dims, scale):
    grids = [56 // 2**s for s in range(len(depths))]
    if family == "vit":
        shapes = [(197, dims[0])] * depths[0]
        stem = (197, dims[0])
    elif family == "levit":
        shapes = [(196 // 4**s, dims[s]) for s, d in enumerate(depths) for _ in range(d)]
        stem = (196, dims[0])
    elif family == "swin":
        shapes = [(grids[s], grids[s], dims[s]) for s, d in enumerate(depths) for _ in range(d)]
        stem = (56, 56, dims[0])
    else:
        shapes = [(dims[s], grids[s], grids[s]) for s, d in enumerate(depths) for _ in range(d)]
        stem = (64, 56, 56)
    n = len(shapes)
    return AnchorProfile(
        name=name, family=family,
        layout={"vit": "tokens", "levit": "tokens", "swin": "nhwc", "resnet": "nchw"}[family],
        input_size=(3, 224, 224), num_classes=1000,
        stage_of=tuple(s for s, d in enumerate(depths) for _ in range(d)), stem_shape=stem,
        unit_shapes=tuple(shapes), stem_flops=scale, unit_flops=(scale,) * n, head_flops=scale,
        stem_params=scale, unit_params=(scale,) * n, head_params=scale,
    )


DEIT = [profile(f"deit_{n}", "vit", [12], [d], s) for n, d, s in (("t", 192, 1), ("s", 384, 4), ("b", 768, 16))]
SWIN = [profile("swin_t", "swin", [2, 2, 6, 2], [96, 192, 384, 768], 4),
        profile("swin_s", "swin", [2, 2, 18, 2], [96, 192, 384, 768], 8),
        profile("swin_b", "swin", [2, 2, 18, 2], [128, 256, 512, 1024], 15)]
RESNET = [profile("resnet18", "resnet", [2, 2, 2, 2], [64, 128, 256, 512], 2),
          profile("resnet50", "resnet", [3, 4, 6, 3], [256, 512, 1024, 2048], 4)]
RESNET_SWIN = [RESNET[0], SWIN[0]]
LEVIT = [profile("levit_192", "levit", [4, 4, 4], [192, 288, 384], 2),
         profile("levit_256", "levit", [4, 4, 4], [256, 384, 512], 3)]

PAPER = SpaceConfig(preset="paper")


def stage_offsets(p):
    offsets = {}
    for unit, stage in enumerate(p.stage_of):
        offsets.setdefault(stage, unit)
    return offsets


def as_released(space):
    """(pair, stage, local cut, layer id) for every stitched network, back in the released terms."""
    rows = []
    for s in space:
        if s.is_anchor:
            continue
        spec = space.layers[s.layers[0]]
        (j, k), = s.cuts
        front, back = (stage_offsets(space.profiles[a])[spec.stage] for a in s.anchors)
        rows.append((s.anchors, spec.stage, (j - front, k - back), spec.window))
    return rows


# -- ViT / DeiT -----------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", [None, "paper"])
def test_deit_space_is_the_released_one(preset):
    space = StitchSpace(DEIT, SpaceConfig(preset=preset))
    assert [s.anchors for s in space][:3] == [(0,), (1,), (2,)]
    expected = [((a, a + 1), 0, cut, layer) for a in (0, 1) for cut, layer in zip(DEIT_K2S1, DEIT_K2S1_LAYERS)]
    assert as_released(space) == expected
    assert len(space.layers) == 2 * 11


@pytest.mark.parametrize("k,s", sorted(DEIT_COUNTS))
def test_deit_window_counts(k, s):
    assert len(StitchSpace(DEIT, SpaceConfig(kernel_size=k, stride=s))) == DEIT_COUNTS[(k, s)]
    assert len(StitchSpace(DEIT, SpaceConfig(kernel_size=k, stride=s, preset="paper"))) == DEIT_COUNTS[(k, s)]


def test_deit_without_nearest_has_the_released_chains():
    space = StitchSpace(DEIT, SpaceConfig(nearest=False))
    assert len(space) == 732
    assert Counter(s.anchors for s in space) == {
        (0,): 1, (1,): 1, (2,): 1, (0, 1): 34, (0, 2): 34, (1, 2): 34, (0, 1, 2): 627}
    assert [s.anchors for s in space][3:105] == [(0, 1)] * 34 + [(0, 2)] * 34 + [(1, 2)] * 34
    # released config ids -> (cuts, layer ids), from its get_stitch_configs(nearest_stitching=False)
    released = {105: ([(0, 0), (0, 0)], [0, 0]), 106: ([(0, 0), (0, 1)], [0, 0]),
                107: ([(0, 0), (1, 0)], [0, 0]), 400: ([(3, 3), (9, 8)], [2, 8]), 731: ([(11, 11), (11, 11)], [10, 10])}
    for sid, (cuts, layers) in released.items():
        s = space[sid]
        assert s.anchors == (0, 1, 2) and [list(c) for c in s.cuts] == [list(c) for c in cuts]
        assert [space.layers[k].window for k in s.layers] == layers
        assert [(space.layers[k].front, space.layers[k].back) for k in s.layers] == [(0, 1), (1, 2)]
    # One path per chain: the middle anchor runs its blocks k1..j2 (at least one).
    s = space[400]
    assert s.path == (Stem(0), Units(0, 0, 4), Junction(s.layers[0]), Units(1, 3, 10), Junction(s.layers[1]),
                      Units(2, 8, 12), Head(2))
    for s in space:
        if len(s.anchors) == 3:
            (_, k1), (j2, _) = s.cuts
            assert j2 >= k1


def test_chain_path_costs():
    space = StitchSpace(DEIT, SpaceConfig(nearest=False))
    s = space[400]  # Ti blocks 0..3, S blocks 3..9, B blocks 8..11
    layers = sum(space.layers[k].flops for k in s.layers)
    assert s.flops == 1 + 4 * 1 + 7 * 4 + 4 * 16 + 16 + layers
    assert s.params == 1 + 4 * 1 + 7 * 4 + 4 * 16 + 16 + sum(space.layers[k].params for k in s.layers)


# -- hierarchical families ----------------------------------------------------------------------
@pytest.mark.parametrize("anchors,table,wide", [
    (SWIN, SWIN_TSB, 95), (RESNET, RESNET_18_50, 18), (RESNET_SWIN, RESNET_18_SWIN_T, 18),
    (LEVIT, LEVIT_192_256, 32)],
    ids=["swin_t_s_b", "resnet18_50", "resnet18_swin_t", "levit_192_256"])
def test_hierarchical_paper_spaces_are_the_released_ones(anchors, table, wide):
    space = StitchSpace(anchors, PAPER)
    assert len(space) == len(anchors) + len(table)
    assert [s.anchors for s in space][: len(anchors)] == [(a,) for a in range(len(anchors))]
    assert as_released(space) == table
    for s in space:
        if not s.is_anchor:
            (j, k), = s.cuts
            spec = space.layers[s.layers[0]]
            assert s.path == (Stem(s.anchors[0]), Units(s.anchors[0], 0, j + 1), Junction(s.layers[0]),
                              Units(s.anchors[1], k, space.profiles[s.anchors[1]].depth), Head(s.anchors[1]))
            assert k > stage_offsets(space.profiles[s.anchors[1]])[spec.stage]  # never a stage's first unit
    # Without the preset the space is this project's wider one, documented as such.
    assert len(StitchSpace(anchors, SpaceConfig())) == wide


def test_swin_layers_follow_the_released_sharing():
    space = StitchSpace(SWIN, PAPER)
    # stage 2, Swin-T (6 blocks) -> Swin-S (18): six layers, cut n uses layer floor(n / 3)
    t_to_s = sorted((spec.window, spec.cuts) for spec in space.layers.values() if spec.stage == 2 and spec.front == 0)
    assert [w for w, _ in t_to_s] == list(range(6))
    assert [len(c) for _, c in t_to_s] == [3, 3, 3, 3, 3, 2]
    assert t_to_s[0][1] == ((4, 5), (4, 6), (5, 7))  # global ids: stage 2 starts at unit 4 in both
    assert sum(len(spec.cuts) for spec in space.layers.values()) == 38


def test_released_helpers():
    assert paired_stitching(2, plain_only=True) == ([(0, 1)], [0], 1)
    assert paired_stitching(12, 2, 1)[0] == DEIT_K2S1
    cuts, layers, n = unpaired_stitching(6, 18)
    assert (len(cuts), n) == (17, 6) and cuts[:3] == [(0, 1), (0, 2), (1, 3)]
    assert unpaired_stitching(2, 4) == ([(0, 1), (1, 2), (1, 3)], [0, 0, 1], 2)


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("anchors,config,error,message", [
    (DEIT, SpaceConfig(preset="Paper"), SNNetError, "preset must be None or one of 'paper', got 'Paper'"),
    (SWIN, SpaceConfig(preset="paper", kernel_size=3), SNNetError, "fixes kernel_size=2, stride=1"),
    (RESNET, SpaceConfig(preset="paper", nearest=False), SNNetError, "got kernel_size=2, stride=1, nearest=False"),
    (DEIT, SpaceConfig(preset="paper", direction="both"), SNNetError, "fast-to-slow only"),
    (DEIT, SpaceConfig(preset="paper", two_way=True), SNNetError, "no two-way stitches"),
    ([DEIT[0], profile("vit_24", "vit", [24], [384], 4)], PAPER, SNNetError, "equal depth; got depths [12, 24]"),
    ([SWIN[0], profile("resnet_big", "resnet", [3, 4, 6, 3], [256, 512, 1024, 2048], 40)], PAPER, SNNetError,
     "preset 'paper' knows the families"),
    (SWIN, SpaceConfig(released_deit_head=True), SNNetError, "ViT anchors only"),
])
def test_preset_errors(anchors, config, error, message):
    with pytest.raises(error, match="^.*" + __import__("re").escape(message)):
        StitchSpace(anchors, config)


def test_unequal_stage_resolutions_are_unstitchable_under_the_preset():
    odd = profile("swin_odd", "swin", [2, 2, 18, 2], [96, 192, 384, 768], 8)
    odd = AnchorProfile(**{**odd.__dict__, "unit_shapes": tuple((h // 2, w // 2, c) for h, w, c in odd.unit_shapes)})
    with pytest.raises(UnstitchableError, match="feature maps differ"):
        StitchSpace([SWIN[0], odd], PAPER)


# -- FLOPs against the released results files ------------------------------------------------------
def test_deit_flops_equal_the_released_results(deit_tsb_space):
    released = StitchSpace(deit_tsb_space.profiles, SpaceConfig(released_deit_head=True))
    assert [s.flops for s in released] == RELEASED_DEIT_FLOPS
    # Stitch (0, 0) of DeiT-Ti -> DeiT-S runs every DeiT-S block: more than DeiT-S alone.
    assert RELEASED_DEIT_FLOPS[3] == 4696010496 > RELEASED_DEIT_FLOPS[1] == 4608338304
    # This project's forward keeps the back anchor's final norm: 197 tokens x 384 x 5 more FLOPs.
    assert deit_tsb_space[3].flops == RELEASED_DEIT_FLOPS[3] + 197 * 384 * 5
    assert [s.flops for s in deit_tsb_space][:3] == RELEASED_DEIT_FLOPS[:3]
    # Params differ by the released counter's omissions: it skips the front anchor's class token and
    # position embedding, and counts the back anchor's final norm that its forward does not run.
    ti = deit_tsb_space.profiles[0]
    ti_tokens = 192 + 197 * 192
    for sid, count in enumerate(RELEASED_DEIT_PARAMS_HEAD):
        extra = 0 if sid < 3 else ti_tokens - 2 * 384
        assert released[sid].params == count + extra, sid
    assert ti.norm_params == 2 * 192 and ti.norm_flops == 197 * 192 * 5


@pytest.mark.slow
def test_resnet_flops_equal_the_released_results():
    r18_50 = build_supernet(["resnet18", "resnet50"], PAPER).space
    assert [s.flops for s in r18_50] == RELEASED_RESNET_18_50_FLOPS
    r18_swin = build_supernet(["resnet18", "swin_tiny_patch4_window7_224"], PAPER).space
    assert [s.flops for s in r18_swin] == RELEASED_RESNET_18_SWIN_T_FLOPS


@pytest.mark.slow
def test_levit_flops_equal_the_released_results():
    levit = build_supernet(["levit_192", "levit_256"], PAPER).space
    assert [s.flops for s in levit] == RELEASED_LEVIT_192_256_FLOPS
