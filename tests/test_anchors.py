"""Family adapters: one class per timm model class in one table, public pieces only, pruning."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snnet import StitchSpace, UnsupportedFamilyError, create_anchor, profile_anchor
from snnet._adapters import ADAPTERS, FamilyAdapter, Pruned, adapter_for, register_adapter
from snnet.anchors import Anchor


@pytest.fixture(autouse=True)
def _few_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _same_as_timm(anchor: Anchor, x: torch.Tensor) -> None:
    anchor.eval()
    with torch.no_grad():
        torch.testing.assert_close(anchor(x), anchor.model(x), rtol=0, atol=0)


@pytest.mark.parametrize("name, kwargs, family", [
    ("deit_tiny_patch16_224", {}, "vit"),  # position embedding covers the class token
    ("deit3_small_patch16_224", {}, "vit"),  # DeiT III: no_embed_class, add then concat
    ("deit_tiny_distilled_patch16_224", {}, "vit"),  # VisionTransformerDistilled: cls + dist tokens, two heads
    ("vit_tiny_patch16_224", {"reg_tokens": 2}, "vit"),  # register tokens
    ("vit_tiny_patch16_224", {"class_token": False, "global_pool": "avg"}, "vit"),  # no prefix tokens
    ("vit_tiny_patch16_224", {"dynamic_img_size": True}, "vit"),  # resampled position embedding
    ("vit_tiny_patch16_224", {"no_embed_class": True, "reg_tokens": 1}, "vit"),
    ("swin_tiny_patch4_window7_224", {"window_size": 4}, "swin"),
    ("resnet18", {}, "resnet"),
])
def test_anchor_equals_the_timm_model_without_private_calls(name, kwargs, family, monkeypatch):
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    anchor = create_anchor(name, img_size=32 if family != "swin" else 64, **kwargs)
    assert anchor.family == family
    x = torch.randn(2, *anchor.input_size)
    with torch.no_grad():
        want = anchor.model(x)
    # The adapter must not reach timm's private _pos_embed (of any ViT class).
    monkeypatch.setattr(VisionTransformer, "_pos_embed", lambda *a: pytest.fail("private _pos_embed called"))
    monkeypatch.setattr(type(anchor.model), "_pos_embed", lambda *a: pytest.fail("private _pos_embed called"),
                        raising=False)
    with torch.no_grad():
        torch.testing.assert_close(anchor(x), want, rtol=0, atol=0)


def test_levit_is_a_family_with_stages():
    torch.manual_seed(0)
    small, large = create_anchor("levit_128s"), create_anchor("levit_128")
    assert (small.family, small.layout) == ("levit", "tokens")
    assert small.stage_of == (0,) * 2 + (1,) * 3 + (2,) * 4 and large.depth == 12
    x = torch.randn(1, *small.input_size)
    _same_as_timm(small, x)
    assert small.unit_modules(2)[0] is small.model.stages[1].downsample  # the downsample opens its stage
    space = StitchSpace([profile_anchor(small), profile_anchor(large)])
    assert len(space) > 2 and all(j < len(small.stage_of) for s in space for j, _ in s.cuts)


def test_adapters_are_one_table_keyed_by_timm_class():
    from timm.models.deit import VisionTransformerDistilled
    from timm.models.levit import Levit, LevitDistilled
    from timm.models.resnet import ResNet
    from timm.models.swin_transformer import SwinTransformer
    from timm.models.vision_transformer import VisionTransformer

    for cls in (VisionTransformer, SwinTransformer, ResNet, Levit):
        assert f"{cls.__module__}.{cls.__qualname__}" in ADAPTERS

    # subclasses are served through their MRO
    def key(c):
        return f"{c.__module__}.{c.__qualname__}"

    assert key(VisionTransformerDistilled) not in ADAPTERS and key(LevitDistilled) not in ADAPTERS
    assert type(create_anchor("deit_tiny_distilled_patch16_224", img_size=32).adapter) is \
        ADAPTERS[key(VisionTransformer)]
    with pytest.raises(UnsupportedFamilyError, match="EfficientNet.*supports VisionTransformer"):
        create_anchor("efficientnet_b0")


def test_a_new_family_is_one_registered_class():
    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(4, 8)
            self.blocks = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
            self.head = nn.Linear(8, 3)
            self.num_classes = 3
            self.pretrained_cfg = {"input_size": (1, 2, 2)}

    @register_adapter(Toy)
    class ToyAdapter(FamilyAdapter):
        family, layout = "toy", "tokens"

        def stages(self):
            return [[[b] for b in self.model.blocks]]

        def head_modules(self):
            return [self.model.head]

        def forward_stem(self, x):
            return self.model.embed(x.flatten(1)).unsqueeze(1)

        def forward_head(self, x):
            return self.model.head(x[:, 0])

        def in_chans(self):
            return 1

    try:
        anchor = Anchor(Toy(), "toy")
        assert isinstance(anchor.adapter, ToyAdapter) and anchor.depth == 2 and anchor.input_size == (1, 2, 2)
        assert anchor(torch.randn(5, 1, 2, 2)).shape == (5, 3)
    finally:
        ADAPTERS.pop(f"{Toy.__module__}.{Toy.__qualname__}")
    with pytest.raises(UnsupportedFamilyError):
        adapter_for(Toy(), "toy")


def test_public_accessors():
    anchor = create_anchor("swin_tiny_patch4_window7_224", img_size=64, window_size=4)
    layers = anchor.model.layers
    assert anchor.unit_modules(0) == [layers[0].downsample, layers[0].blocks[0]]
    assert anchor.unit_modules(2) == [layers[1].downsample, layers[1].blocks[0]]
    assert anchor.head_modules() == [anchor.model.norm, anchor.model.head]
    assert not hasattr(anchor, "_units") and not hasattr(anchor, "_run_unit")  # one public way in
    x = anchor.stem(torch.randn(1, *anchor.input_size))
    assert torch.equal(anchor.run_unit(0, x), layers[0].blocks[0](layers[0].downsample(x)))


def test_prune_keeps_what_is_asked_and_replaces_the_rest():
    torch.manual_seed(0)
    anchor = create_anchor("deit_tiny_patch16_224", img_size=32).eval()
    keep = [p for u in range(6, anchor.depth) for p in anchor.unit_parameters(u)] + anchor.head_parameters()
    x = anchor.forward_units(anchor.stem(torch.randn(2, *anchor.input_size)), 0, 6)
    with torch.no_grad():
        want = anchor.head(anchor.forward_units(x, 6, anchor.depth))
    anchor.prune(keep)
    assert {id(p) for p in anchor.parameters()} == {id(p) for p in keep}
    assert isinstance(anchor.model.blocks[0], Pruned) and isinstance(anchor.model.patch_embed, Pruned)
    assert anchor.model.cls_token is None and anchor.model.pos_embed is None  # unregistered, not deleted
    assert "cls_token" in anchor.model._parameters
    with torch.no_grad():
        torch.testing.assert_close(anchor.head(anchor.forward_units(x, 6, anchor.depth)), want, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="pruned from this stitch"):
        anchor.forward_units(x, 0, 1)


def test_standalone_stitch_binds_a_supernets_own_modules():
    from orchestrator.data.demo_anchors import DEMO_ANCHORS
    from snnet import build_supernet
    from snnet.supernet import StandaloneStitch

    net = build_supernet(list(DEMO_ANCHORS[:2])).eval()
    stitch = [s for s in net.space if not s.is_anchor][0]
    bound = StandaloneStitch.bind(net, stitch)
    fixed = net.fix(stitch)
    x = torch.randn(2, *net.space.profiles[0].input_size)
    with torch.no_grad():
        assert torch.equal(bound(x), net(x, stitch)) and torch.equal(bound(x), fixed(x))
    assert bound.stitch is stitch and set(bound.state_dict()) == set(fixed.state_dict())
    assert all(any(p is q for q in net.parameters()) for p in bound.parameters())  # shared, not copied
    assert StandaloneStitch.bind(net, 0).path == net.space[0].path


@pytest.mark.parametrize("name, kwargs, kept_units", [
    ("resnet18", {}, range(0, 4)),  # layer3 and layer4 go entirely: their containers stay, blocks pruned
    ("swin_tiny_patch4_window7_224", {"img_size": 64, "window_size": 4}, range(4, 12)),  # stages 0-1 go
])
def test_pruned_stages_keep_their_containers(name, kwargs, kept_units):
    torch.manual_seed(0)
    anchor = create_anchor(name, **kwargs).eval()
    keep = [p for u in kept_units for p in anchor.unit_parameters(u)]
    anchor.prune(keep)
    assert {id(p) for p in anchor.parameters()} == {id(p) for p in keep}
    for i in range(anchor.depth):  # every unit is still found; the dropped ones are placeholders
        modules = anchor.unit_modules(i)
        assert (i in kept_units) == any(not isinstance(m, Pruned) and list(m.parameters()) for m in modules)
    assert anchor.stem_parameters() == [] and anchor.head_parameters() == []


def test_a_pretrained_tag_must_be_one_timm_has():
    from snnet import UnknownModelError, check_model_name

    check_model_name("resnet18.tv_in1k")
    check_model_name("deit_tiny_patch16_224.fb_in1k")
    with pytest.raises(UnknownModelError, match=r"Unknown pretrained tag 'tv_in1kk' in 'resnet18.tv_in1kk' "
                                                r"\(did you mean 'tv_in1k'\?\): timm's weights for 'resnet18' are"):
        check_model_name("resnet18.tv_in1kk")
    with pytest.raises(UnknownModelError, match="'deit_tiny_patch16_224.fb_in1k'; or name the architecture alone"):
        check_model_name("deit_tiny_patch16_224.nonexistent_tag")


def test_a_model_that_cannot_run_at_the_image_size_is_named():
    from snnet import SNNetError

    anchor = create_anchor("deit_tiny_patch16_224", img_size=8).train()
    with pytest.raises(SNNetError, match=r"^deit_tiny_patch16_224 cannot run at image size 8: .*Kernel size"):
        profile_anchor(anchor)
    assert anchor.training  # the mode is restored after the failure too


def test_a_failure_at_the_models_own_size_is_not_blamed_on_the_size(monkeypatch):
    anchor = create_anchor("resnet18")  # 224, timm's own input size: a failure there is ours, kept whole

    def broken(x):
        raise RuntimeError("something else broke")

    monkeypatch.setattr(anchor, "forward_stem", broken)
    with pytest.raises(RuntimeError, match="^something else broke$"):
        profile_anchor(anchor)
