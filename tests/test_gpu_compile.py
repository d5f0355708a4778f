"""Regional compilation (``snnet.compile``): each unit compiled in place, one graph per distinct
unit shape shared by every stitch, outputs equal to eager. CPU tests use Dynamo's ``eager``
backend (the graph capture and caching under test, without a C++ toolchain); the ``gpu`` test
uses inductor under bf16 autocast, as training does."""

import pytest
import torch

from snnet.compile import compile_counts, compile_units, uncompile_units, unit_modules

TI_S = ("deit_tiny_patch16_224", "deit_small_patch16_224")


@pytest.fixture
def compiled_family(deit_small_family):
    """The shared DeiT-Ti/S family (32x32), restored to eager afterwards."""
    torch._dynamo.reset()
    try:
        yield deit_small_family
    finally:
        uncompile_units(deit_small_family)
        torch._dynamo.reset()


def _some_stitches(space):
    ids = [space.find([n], []).stitch_id for n in space.anchor_names]
    stitched = [s.stitch_id for s in space if s.cuts]
    return ids + stitched[:: max(1, len(stitched) // 5)]


def test_unit_modules_are_the_blocks(deit_small_family):
    net = deit_small_family
    modules = unit_modules(net)
    blocks = [b for a in net.anchors for b in a.model.blocks]
    assert len(modules) == len(blocks) == 24
    assert all(m is b for m, b in zip(modules, blocks))


def test_each_unit_shape_compiles_once_and_stitches_match_eager(compiled_family):
    net = compiled_family.eval()
    space = net.space
    ids = _some_stitches(space)
    x = torch.randn(2, *space.profiles[0].input_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = {i: net(x, i) for i in ids}
        keys = set(net.state_dict())
        modules = compile_units(net, backend="eager")
        assert len(modules) == 24
        assert set(net.state_dict()) == keys  # in place: no "_orig_mod" prefixes
        before = compile_counts()
        got = {i: net(x, i) for i in ids[:2]}  # the two anchors: one graph per width
        warm = compile_counts()
        got.update({i: net(x, i) for i in ids[2:]})  # stitched paths reuse them
        after = compile_counts()
    assert warm["graphs"] - before["graphs"] == 2
    assert after["graphs"] == warm["graphs"]
    for i in ids:
        torch.testing.assert_close(got[i], expected[i], rtol=1e-5, atol=1e-5)


def test_training_steps_over_stitches_do_not_recompile(compiled_family):
    net = compiled_family.train()
    space = net.space
    ids = _some_stitches(space)
    x = torch.randn(2, *space.profiles[0].input_size, generator=torch.Generator().manual_seed(4))
    compile_units(net, backend="eager")
    for i in ids[:2]:
        net(x, i).sum().backward()
    warm = compile_counts()
    for i in ids[2:]:
        net(x, i).sum().backward()
    assert compile_counts()["graphs"] == warm["graphs"]
    assert all(p.grad is not None for p in net.anchors[1].model.blocks[-1].parameters())
    net.zero_grad(set_to_none=True)


def test_uncompile_restores_eager(compiled_family):
    net = compiled_family
    compile_units(net, backend="eager")
    assert all(m._compiled_call_impl is not None for m in unit_modules(net))
    uncompile_units(net)
    assert all(m._compiled_call_impl is None for m in unit_modules(net))


@pytest.mark.gpu
def test_inductor_bf16_training_on_gpu_compiles_once_per_unit_kind():
    from snnet import build_supernet

    torch.manual_seed(0)
    net = build_supernet(list(TI_S), img_size=64).cuda().train()
    space = net.space
    torch._dynamo.reset()
    compile_units(net)
    x = torch.randn(8, *space.profiles[0].input_size, device="cuda")
    ids = _some_stitches(space)
    warm_ids = ids[:2] + [next(s.stitch_id for s in space if s.cuts)]
    try:
        for i in warm_ids:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = net(x, i)
            out.float().sum().backward()
        warm = compile_counts()
        for i in ids[2:]:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = net(x, i)
            out.float().sum().backward()
        assert compile_counts()["graphs"] == warm["graphs"]
    finally:
        uncompile_units(net)
        torch._dynamo.reset()
