"""The stitched supernet: LS initialisation on real activations, parameter groups, loading."""

import pytest
import torch

from snnet import (
    AnchorSpec,
    SNNetError,
    UnknownModelError,
    UnsupportedFamilyError,
    build_supernet,
    create_anchor,
    least_squares,
)
from snnet.least_squares import to_rows


def _batches(n, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(8, *shape, generator=g) for _ in range(n)]


def test_ls_init_matches_pinv_on_real_activations(deit_small_family):
    net = deit_small_family
    shape = net.space.profiles[0].input_size
    batches = _batches(3, shape)
    r2 = net.init_least_squares(batches)
    key, spec = next(iter(net.space.layers.items()))
    acts = [net.collect_activations(x) for x in batches]
    a = torch.cat([to_rows(act[spec.front][j + 1], spec.in_layout) for act in acts for j, _ in spec.cuts])
    b = torch.cat([to_rows(act[spec.back][k], spec.out_layout) for act in acts for _, k in spec.cuts])
    w_ref, b_ref = least_squares(a, b)
    layer = net.stitch_layers[key]
    torch.testing.assert_close(layer.proj.weight.double(), w_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer.proj.bias.double(), b_ref, rtol=1e-4, atol=1e-5)
    assert set(r2) == set(net.space.layers)
    assert all(0.0 < v <= 1.0 for v in r2.values())


def test_joint_fit_of_a_shared_layer_beats_the_average_of_per_cut_fits(deit_small_family):
    net = deit_small_family
    batches = _batches(2, net.space.profiles[0].input_size, seed=5)
    joint = net.init_least_squares(batches, mode="joint")
    average = net.init_least_squares(batches, mode="average")
    for key in joint:
        assert joint[key] >= average[key] - 1e-9
    assert any(joint[k] > average[k] + 1e-6 for k in joint)


def test_ls_positions_and_average_mode_are_the_papers(deit_small_family):
    """Cut [j, k] maps the front's output of block j to the back's input of block k; ``average``
    is the released code's per-cut pseudo-inverse solutions averaged over the window's cuts."""
    net = deit_small_family.eval()
    batches = _batches(8, net.space.profiles[0].input_size, seed=11)  # 8 x 8 images x 5 tokens > 193
    net.init_least_squares(batches, mode="average")
    x = torch.cat(batches)
    front, back = net.anchors
    with torch.no_grad():  # the released extract_block_features, from the timm models directly
        def block_inputs(model):
            h = model._pos_embed(model.patch_embed(x))
            feats = {-1: h}
            for i, blk in enumerate(model.blocks):
                h = blk(h)
                feats[i] = h
            return feats

        f_feats, b_feats = block_inputs(front.model), block_inputs(back.model)
    for key, spec in net.space.layers.items():
        solutions = []
        for j, k in spec.cuts:  # released: ps_inv(front_features[fid], end_features[bid - 1])
            a = f_feats[j].reshape(-1, f_feats[j].shape[-1]).double()
            b = b_feats[k - 1].reshape(-1, b_feats[k - 1].shape[-1]).double()
            ones = torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype)], 1)
            solutions.append((torch.linalg.pinv(ones) @ b).T)
        expected = torch.stack(solutions).mean(0)
        layer = net.stitch_layers[key]
        torch.testing.assert_close(layer.proj.weight.double(), expected[:, :-1], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(layer.proj.bias.double(), expected[:, -1], rtol=1e-4, atol=1e-5)
    assert net.space.layers["0to1_s0_w0"].cuts == ((0, 0), (0, 1), (1, 0), (1, 1))


def test_ls_init_beats_kaiming_on_the_first_stitched_outputs(deit_small_family):
    net = deit_small_family.eval()
    batches = _batches(2, net.space.profiles[0].input_size, seed=7)
    x = torch.randn(4, *net.space.profiles[0].input_size)
    stitch = net.space.find(["deit_tiny_patch16_224", "deit_small_patch16_224"], [[5, 6]])
    with torch.no_grad():
        target = net.anchors[1](x)  # the back anchor alone
        net.reset_stitch_layers()
        kaiming_err = (net(x, stitch) - target).square().mean()
        net.init_least_squares(batches)
        ls_err = (net(x, stitch) - target).square().mean()
    assert ls_err < kaiming_err


def test_param_groups_partition_the_parameters(deit_small_family):
    net = deit_small_family
    groups = net.param_groups(anchor_lr=1e-5, stitch_lr=1e-4, weight_decay=0.05)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(net.parameters()))
    stitch_ids = {id(p) for p in net.stitch_layers.parameters()}
    for g in groups:
        assert g["lr"] == (1e-4 if g["name"].startswith("stitch") else 1e-5)
        assert all((id(p) in stitch_ids) == g["name"].startswith("stitch") for p in g["params"])
        assert g["weight_decay"] == (0.0 if g["name"].endswith("no_decay") else 0.05)
    torch.optim.AdamW(groups)  # groups are valid optimizer input


def test_fixed_stitch_matches_supernet_and_holds_only_used_modules(deit_small_family):
    net = deit_small_family.eval()
    stitch = net.space[4]
    fixed = net.fix(stitch)
    x = torch.randn(2, *net.space.profiles[0].input_size)
    with torch.no_grad():
        assert torch.equal(fixed(x), net(x, stitch))
    assert set(fixed.stitch_layers) == set(stitch.layers)
    anchor_only = net.fix(0)
    assert len(anchor_only.stitch_layers) == 0 and list(anchor_only.anchors) == ["0"]


def test_checkpoint_files_load_safely(tmp_path):
    torch.manual_seed(1)
    src = create_anchor("resnet18", num_classes=7)
    pth, st = tmp_path / "r18.pth", tmp_path / "r18.safetensors"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.model.state_dict().items()}}, pth)
    from safetensors.torch import save_file

    save_file(src.model.state_dict(), str(st))
    x = torch.randn(1, 3, 64, 64)
    for path in (pth, st):
        loaded = create_anchor(AnchorSpec("resnet18", checkpoint=str(path), kwargs={"num_classes": 7}))
        assert torch.equal(loaded.model(x), src.model.eval()(x))


def test_checkpoint_errors(tmp_path):
    with pytest.raises(SNNetError, match="does not exist"):
        create_anchor(AnchorSpec("resnet18", checkpoint=str(tmp_path / "missing.pth")))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SNNetError, match="safe weights-only"):
        create_anchor(AnchorSpec("resnet18", checkpoint=str(bad)))
    other = tmp_path / "other.pth"
    torch.save(create_anchor("resnet18", num_classes=3).model.state_dict(), other)
    with pytest.raises(SNNetError, match="does not fit 'resnet50'"):
        create_anchor(AnchorSpec("resnet50", checkpoint=str(other)))
    # A pickle that would run code is refused by weights_only loading.
    evil = tmp_path / "evil.pth"
    torch.save({"x": torch.nn.Linear(2, 2)}, evil)
    with pytest.raises(SNNetError, match="safe weights-only"):
        create_anchor(AnchorSpec("resnet18", checkpoint=str(evil)))


def test_pretrained_names_reach_timm(monkeypatch):
    import timm

    calls = []
    real = timm.create_model

    def spy(name, pretrained=False, **kw):
        calls.append((name, pretrained))
        return real(name, pretrained=False, **kw)  # no network here: record the request only

    monkeypatch.setattr(timm, "create_model", spy)
    monkeypatch.setattr("snnet.anchors.hub_reachable", lambda *a: True)  # offline here: pretend the hub answers
    create_anchor(AnchorSpec("resnet18", pretrained=True))
    assert calls == [("resnet18", True)]


def test_unknown_and_unsupported_models_fail_before_building(monkeypatch):
    import timm

    built = []
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: built.append(a))
    with pytest.raises(UnknownModelError, match="Did you mean 'deit_small_patch16_224'"):
        build_supernet(["deit_tiny_patch16_224", "deit_smal_patch16_224"])
    assert built == []
    monkeypatch.undo()
    with pytest.raises(UnsupportedFamilyError, match="EfficientNet.*supports VisionTransformer"):
        create_anchor("efficientnet_b0")
