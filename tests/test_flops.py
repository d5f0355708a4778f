"""FLOPs and params of every family: sums over a stitch's path equal a full fvcore trace."""

import random

import pytest
import torch

from snnet import AnchorSpec, build_supernet, create_anchor, flop_count, profile_anchor

FAMILIES = {
    "deit": (["deit_tiny_patch16_224", "deit_small_patch16_224"], {"img_size": 64}),
    "deit3": (["deit3_small_patch16_224", "deit3_medium_patch16_224"], {"img_size": 32}),
    # Swin needs every stage's resolution divisible by its window: 128 px with window 4.
    "swin": (["swin_tiny_patch4_window7_224", "swin_small_patch4_window7_224"], {"img_size": 128, "window_size": 4}),
    "resnet": (["resnet18", "resnet50"], {"img_size": 64}),
    "resnet_to_swin": (
        ["resnet18", AnchorSpec("swin_tiny_patch4_window7_224", kwargs={"window_size": 4})],
        {"img_size": 128},
    ),
}


def _build(name):
    names, kwargs = FAMILIES[name]
    torch.manual_seed(0)
    return build_supernet(names, **kwargs)


@pytest.fixture(scope="module")
def swin_supernet():
    """The Swin-T/S supernet, built once: a ``family`` and the paper-preset check both use it."""
    return _build("swin")


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    return request.getfixturevalue("swin_supernet") if request.param == "swin" else _build(request.param)


def _sample(space, n=5, seed=0):
    rng = random.Random(seed)
    stitched = [s for s in space if not s.is_anchor]
    return [s for s in space if s.is_anchor] + rng.sample(stitched, min(n, len(stitched)))


def test_stitch_flops_equal_full_trace(family):
    space = family.space
    x = torch.randn(1, *space.profiles[0].input_size)
    for stitch in _sample(space):
        traced = flop_count(family.fix(stitch).eval(), x).total()
        assert stitch.flops == traced, (space.names(stitch), stitch.cuts)


def test_stitch_params_equal_parameters_reached_by_backward(family):
    space = family.space
    x = torch.randn(1, *space.profiles[0].input_size)
    family.eval()
    for stitch in _sample(space, n=3, seed=1):
        family.zero_grad(set_to_none=True)
        family(x, stitch).sum().backward()
        used = sum(p.numel() for p in family.parameters() if p.grad is not None)
        assert stitch.params == used == sum(p.numel() for p in family.stitch_parameters(stitch))


def test_anchor_stitch_is_the_plain_timm_model(family):
    x = torch.randn(2, *family.space.profiles[0].input_size)
    family.eval()
    with torch.no_grad():
        for i, anchor in enumerate(family.anchors):
            assert torch.equal(family(x, i), anchor.model(x))


def test_chains_and_paper_presets_equal_full_trace(swin_supernet):
    """Three-anchor chains (no nearest), the released DeiT head and the paper presets walk one path."""
    from snnet import SpaceConfig, StitchedSupernet, StitchSpace

    torch.manual_seed(0)
    narrow = [AnchorSpec("deit_tiny_patch16_224", kwargs={"embed_dim": w, "num_heads": h})
              for w, h in ((24, 3), (48, 6), (96, 12))]
    narrow[1] = AnchorSpec("deit_small_patch16_224", kwargs=narrow[1].kwargs)
    narrow[2] = AnchorSpec("deit_base_patch16_224", kwargs=narrow[2].kwargs)
    net = build_supernet(narrow, SpaceConfig(nearest=False, released_deit_head=True), img_size=32).eval()
    chains = [s for s in net.space if len(s.anchors) == 3]
    assert len(net.space) == 732 and len(chains) == 627
    x = torch.randn(1, 3, 32, 32)
    for stitch in random.Random(0).sample(chains, 4) + [net.space[3]]:
        assert stitch.flops == flop_count(net.fix(stitch), x).total(), stitch
        net.zero_grad(set_to_none=True)
        net(x, stitch).sum().backward()
        assert stitch.params == sum(p.numel() for p in net.parameters() if p.grad is not None), stitch
    swin = swin_supernet  # FLOPs do not depend on the weights' values
    space = StitchSpace(swin.space.profiles, SpaceConfig(preset="paper"))
    paper = StitchedSupernet(space, list(swin.anchors)).eval()
    x = torch.randn(1, *space.profiles[0].input_size)
    for stitch in _sample(space, n=4, seed=2):
        assert stitch.flops == flop_count(paper.fix(stitch), x).total(), stitch


def test_profile_pieces_sum_to_the_whole_model():
    anchor = create_anchor("swin_tiny_patch4_window7_224", img_size=128, window_size=4)
    p = profile_anchor(anchor)
    assert p.flops == flop_count(anchor.model, torch.zeros(1, *anchor.input_size)).total()
    assert p.params == sum(q.numel() for q in anchor.model.parameters())
    assert p.stage_of == (0, 0, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3)


def test_fused_attention_counted_like_unfused_matmuls():
    anchor = create_anchor("deit_tiny_patch16_224", img_size=64)
    x = torch.zeros(1, *anchor.input_size)
    fused = flop_count(anchor.model, x).total()
    for blk in anchor.model.blocks:
        blk.attn.fused_attn = False
    unfused = flop_count(anchor.model, x).total()
    assert fused == unfused
    # 12 blocks x (QK^T + AV) = 12 * 2 * N^2 * C with N = 17 tokens, C = 192
    for blk in anchor.model.blocks:
        blk.attn.fused_attn = True
    from fvcore.nn import FlopCountAnalysis

    plain = FlopCountAnalysis(anchor.model, x)
    plain.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    assert fused - plain.total() == 12 * 2 * 17 * 17 * 192


def test_flops_are_counted_in_eval_mode_whatever_the_mode():
    anchor = create_anchor("resnet18", img_size=64).train()
    assert profile_anchor(anchor).flops == profile_anchor(anchor.eval()).flops
    assert anchor.training is False
