"""Loading SN-Net's released DeiT checkpoint layout, against an independent released forward.

The test writes a checkpoint the way ``stitching_deit/main.py`` does (``{'model':
SNNet.state_dict(), 'epoch': ..., 'args': Namespace}``, keys ``anchors.{i}.<timm key>`` and
``stitch_layers.{pair}.{window}.transform.{weight,bias}``) for small DeiTs (twelve blocks, as the
released code needs, but 32x32 inputs, 10 classes and an eighth of their widths),
and compares :func:`snnet.load_paper_checkpoint` with a re-implementation, written here from the
released ``SNNet.forward``, of what the released code computes for config id ``i``.
"""

import argparse
import itertools
import random

import pytest
import torch
import torch.nn.functional as F
from conftest import paper_paired_stitching

from snnet import AnchorSpec, SNNetError, flop_count, load_paper_checkpoint

NAMES = ["deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224"]
KWARGS = [{"img_size": 32, "num_classes": 10, "embed_dim": width, "num_heads": heads}
          for width, heads in ((24, 3), (48, 6), (96, 12))]


def released_configs(depth, kernel_size, stride, nearest):
    """``get_stitch_configs`` of stitching_deit/utils.py, written out: [(combo, cfgs, layer ids)]."""
    cfgs, layers = paper_paired_stitching(depth, kernel_size, stride)
    combos = [c for n in (1, 2, 3) for c in itertools.combinations(range(3), n)]
    if nearest:
        combos = [c for c in combos if c not in ((0, 2), (0, 1, 2))]
    out = []
    for combo in combos:
        if len(combo) == 1:
            out.append((combo, [], []))
        for cfg, lay in zip(cfgs, layers):
            if len(combo) == 2:
                out.append((combo, [cfg], [lay]))
            elif len(combo) == 3:
                out.extend((combo, [cfg, c2], [lay, l2]) for c2, l2 in zip(cfgs, layers) if c2[0] >= cfg[1])
    return out, layers[-1] + 1


def released_forward(models, state, pairs, config, x):
    """The released ``SNNet.forward`` in eval mode for one config (no final norm when stitched)."""
    combo, cfgs, layer_ids = config
    if len(combo) == 1:
        return models[combo[0]](x)
    x = models[combo[0]].patch_embed(x)
    x = models[combo[0]]._pos_embed(x)
    start = 0
    for i, (cfg, layer) in enumerate(zip(cfgs, layer_ids)):
        for blk in models[combo[i]].blocks[start : cfg[0] + 1]:
            x = blk(x)
        start = cfg[1]
        p = pairs.index((combo[i], combo[i + 1]))
        x = F.linear(x, state[f"stitch_layers.{p}.{layer}.transform.weight"],
                     state[f"stitch_layers.{p}.{layer}.transform.bias"])
    for blk in models[combo[-1]].blocks[start:]:
        x = blk(x)
    return models[combo[-1]].forward_head(x)


def write_released(path, kernel_size=2, stride=1, nearest=True, seed=0):
    import timm

    torch.manual_seed(seed)
    models = [timm.create_model(n, **kw).eval() for n, kw in zip(NAMES, KWARGS)]
    configs, num_layers = released_configs(12, kernel_size, stride, nearest)
    pairs = [(0, 1), (1, 2)] if nearest else [(0, 1), (0, 2), (1, 2)]
    state = {f"anchors.{i}.{k}": v for i, m in enumerate(models) for k, v in m.state_dict().items()}
    for p, (a, b) in enumerate(pairs):
        for w in range(num_layers):
            lin = torch.nn.Linear(models[a].embed_dim, models[b].embed_dim)
            state[f"stitch_layers.{p}.{w}.transform.weight"] = lin.weight.detach()
            state[f"stitch_layers.{p}.{w}.transform.bias"] = lin.bias.detach()
    torch.save({"model": state, "epoch": 49, "args": argparse.Namespace(lr=5e-5, nearest_stitching=nearest)}, path)
    return models, state, pairs, configs


SPECS = [AnchorSpec(n, kwargs=kw) for n, kw in zip(NAMES, KWARGS)]


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    path = tmp_path_factory.mktemp("paper") / "snnet_deit.pth"
    models, state, pairs, configs = write_released(path)
    return path, models, state, pairs, configs, load_paper_checkpoint(path, SPECS)


def test_forward_equals_the_released_forward(released):
    path, models, state, pairs, configs, net = released
    assert len(net.space) == len(configs) == 71 and net.released_deit_head
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for i in [0, 1, 2, 3, 4, 5, 20, 36, 37, 38, 55, 70]:
            torch.testing.assert_close(net(x, i), released_forward(models, state, pairs, configs[i], x), msg=str(i))


def test_compatibility_option_is_counted_on_one_path(released):
    net = released[-1]
    x = torch.randn(1, 3, 32, 32)
    rng = random.Random(0)
    for stitch in [net.space[0], net.space[3]] + rng.sample(list(net.space)[3:], 3):
        assert stitch.path[-1].norm == stitch.is_anchor
        assert stitch.flops == flop_count(net.fix(stitch).eval(), x).total(), stitch
        net.zero_grad(set_to_none=True)
        net(x, stitch).sum().backward()
        used = sum(p.numel() for p in net.parameters() if p.grad is not None)
        assert stitch.params == used, stitch
    # Off (this project's forward): the norm comes back, on the stitched networks only.
    on = [(s.flops, s.params) for s in net.space]
    net.set_released_deit_head(False)
    try:
        off = [(s.flops, s.params) for s in net.space]
        assert off[:3] == on[:3]
        assert off[3] == (on[3][0] + 5 * 48 * 5, on[3][1] + 2 * 48)  # 5 tokens x 48 channels; weight, bias
        with torch.no_grad():
            x = torch.randn(2, 3, 32, 32)
            assert not torch.allclose(net(x, 3), released_forward(*released[1:4], released[4][3], x))
    finally:
        net.set_released_deit_head(True)


def test_chains_without_nearest(tmp_path):
    path = tmp_path / "nn.pth"
    models, state, pairs, configs = write_released(path, nearest=False, seed=3)
    net = load_paper_checkpoint(path, SPECS, nearest=False)
    assert len(net.space) == len(configs) == 732
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for i in [3, 40, 80, 104, 105, 400, 731]:
            torch.testing.assert_close(net(x, i), released_forward(models, state, pairs, configs[i], x), msg=str(i))


def test_other_windows(tmp_path):
    path = tmp_path / "k3.pth"
    models, state, pairs, configs = write_released(path, kernel_size=3, stride=2, seed=4)
    net = load_paper_checkpoint(path, SPECS, kernel_size=3, stride=2)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        for i in range(0, len(configs), 7):
            torch.testing.assert_close(net(x, i), released_forward(models, state, pairs, configs[i], x))


def test_bad_checkpoints(released, tmp_path):
    path = released[0]
    with pytest.raises(SNNetError, match="does not fit SN-Net's DeiT supernet.*missing keys"):
        load_paper_checkpoint(path, SPECS, kernel_size=1)
    with pytest.raises(SNNetError, match="does not exist"):
        load_paper_checkpoint(tmp_path / "nope.pth", SPECS)
    with pytest.raises(SNNetError, match="small to large"):
        load_paper_checkpoint(path, list(reversed(SPECS)))
    evil = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.nn.Linear(2, 2)}}, evil)
    with pytest.raises(SNNetError, match="weights-only"):
        load_paper_checkpoint(evil, SPECS)
    with pytest.raises(SNNetError, match="fast-to-slow only"):
        load_paper_checkpoint(path, SPECS, direction="both")
