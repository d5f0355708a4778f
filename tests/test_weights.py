"""Weights are explicit: their source is recorded, another class count resets the classifier,
offline hub weights fail at once, and a spec is checked without loading anything.

The network really is unreachable in these tests: the hub endpoint is pointed at a closed port
on this machine (``HF_ENDPOINT``), so no test depends on whether the machine it runs on has
internet access, and none of them waits for download retries.
"""

from __future__ import annotations

import logging
import socket

import pytest
import torch

import snnet._weights as weights
from snnet import AnchorSpec, SNNetError, create_anchor
from snnet.anchors import RANDOM, check_spec


@pytest.fixture
def offline(monkeypatch):
    """The hub endpoint is a closed local port: connecting is refused at once."""
    with socket.socket() as s:  # a free port, closed again: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    for proxy in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    return port


@pytest.fixture
def empty_caches(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch-hub"))
    yield tmp_path
    torch.hub.set_dir(old)


@pytest.fixture
def no_timm_download(monkeypatch):
    """Fail the test if timm builds a model with pretrained=True from the network."""
    import timm

    real = timm.create_model

    def guarded(name, pretrained=False, **kw):
        if pretrained and not (kw.get("pretrained_cfg_overlay") or {}).get("file"):
            pytest.fail(f"timm was asked to download weights for {name}")
        return real(name, pretrained=pretrained, **kw)

    monkeypatch.setattr(timm, "create_model", guarded)


def _resnet18(num_classes: int, seed: int = 0):
    torch.manual_seed(seed)
    return create_anchor("resnet18", num_classes=num_classes)


# -- where weights come from -----------------------------------------------------------------------
def test_each_anchor_records_where_its_weights_came_from(tmp_path):
    anchor = create_anchor("resnet18", num_classes=4)
    assert anchor.weights == RANDOM and anchor.random_weights
    path = tmp_path / "r18.pth"
    torch.save(anchor.model.state_dict(), path)
    loaded = create_anchor(AnchorSpec("resnet18", checkpoint=str(path), kwargs={"num_classes": 4}))
    assert loaded.weights == f"file:{path.resolve()}" and not loaded.random_weights


def test_hub_weights_are_recorded_by_their_hub_id(monkeypatch):
    import timm

    monkeypatch.setattr("snnet.anchors.hub_reachable", lambda *a: True)
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained=False, **kw: _plain(name, **kw))
    anchor = create_anchor(AnchorSpec("resnet18", pretrained=True))
    assert anchor.weights == "hub:timm/resnet18.a1_in1k"


def _plain(name, **kw):
    """What timm builds, without the download (no network here)."""
    from timm.models import model_entrypoint

    return model_entrypoint(name)(pretrained=False, **kw)


# -- another class count ---------------------------------------------------------------------------
def test_a_checkpoint_with_another_class_count_loads_with_the_classifier_reset(tmp_path, caplog):
    src = _resnet18(1000, seed=1)
    path = tmp_path / "in1k.safetensors"
    from safetensors.torch import save_file

    save_file(src.model.state_dict(), str(path))
    with caplog.at_level(logging.INFO, logger="snnet.anchors"):
        anchor = create_anchor(AnchorSpec("resnet18", checkpoint=str(path), kwargs={"num_classes": 7}))
    notes = [r.getMessage() for r in caplog.records if r.name == "snnet.anchors"]
    assert len(notes) == 1 and "1000 classes" in notes[0] and "reset for 7 classes" in notes[0], notes
    assert anchor.num_classes == 7 and anchor.model.fc.weight.shape == (7, 512)
    for k, v in src.model.state_dict().items():  # the backbone is the checkpoint's
        if not k.startswith("fc."):
            assert torch.equal(anchor.model.state_dict()[k], v), k
    # Same class count: no note, the classifier is loaded too.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="snnet.anchors"):
        same = create_anchor(AnchorSpec("resnet18", checkpoint=str(path)))
    assert not [r for r in caplog.records if r.name == "snnet.anchors"]
    assert torch.equal(same.model.fc.weight, src.model.fc.weight)


def test_a_distilled_vit_resets_both_classifiers(tmp_path, caplog):
    torch.manual_seed(0)
    src = create_anchor("deit_tiny_distilled_patch16_224", img_size=32, num_classes=10)
    path = tmp_path / "deit.pth"
    torch.save({"model": src.model.state_dict()}, path)
    with caplog.at_level(logging.WARNING, logger="snnet.anchors"):
        anchor = create_anchor(AnchorSpec("deit_tiny_distilled_patch16_224", checkpoint=str(path),
                                          kwargs={"img_size": 32, "num_classes": 3}))
    assert anchor.model.head.weight.shape[0] == anchor.model.head_dist.weight.shape[0] == 3
    assert len([r for r in caplog.records if r.name == "snnet.anchors"]) == 1


def test_the_rest_of_a_checkpoint_must_still_fit(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(_resnet18(3).model.state_dict(), path)
    with pytest.raises(SNNetError, match="does not fit 'resnet50'"):
        create_anchor(AnchorSpec("resnet50", checkpoint=str(path), kwargs={"num_classes": 3}))


def test_hub_weights_with_another_class_count_say_so(monkeypatch, caplog):
    import timm

    monkeypatch.setattr("snnet.anchors.hub_reachable", lambda *a: True)
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained=False, **kw: _plain(name, **kw))
    with caplog.at_level(logging.WARNING, logger="snnet.anchors"):
        anchor = create_anchor(AnchorSpec("resnet18", pretrained=True, kwargs={"num_classes": 5}))
    notes = [r.getMessage() for r in caplog.records if r.name == "snnet.anchors"]
    assert anchor.num_classes == 5 and len(notes) == 1 and "timm/resnet18.a1_in1k have 1000 classes" in notes[0]


# -- offline -------------------------------------------------------------------------------------------
def test_offline_pretrained_fails_at_once_with_how_to_pass_a_checkpoint(offline, empty_caches, no_timm_download):
    with pytest.raises(SNNetError) as info:
        create_anchor(AnchorSpec("resnet18", pretrained=True))
    message = str(info.value)
    assert "cannot be reached" in message and "timm/resnet18.a1_in1k" in message
    assert "--anchors resnet18=/path/to/" in message and "checkpoint:" in message and "\n" not in message
    assert "leave out --pretrained" in message  # the flag to drop, by its name


def test_unreachable_hub_weights_announce_no_classifier_reset(offline, empty_caches, monkeypatch, caplog):
    """The driver's build without weights logs the note loading would log, only where loading can happen."""
    spec = AnchorSpec("resnet18", pretrained=True, kwargs={"num_classes": 5})
    with caplog.at_level(logging.WARNING, logger="snnet.anchors"):
        create_anchor(spec, load_weights=False)
    assert not [r for r in caplog.records if r.name == "snnet.anchors"]
    monkeypatch.setattr("snnet.anchors.hub_reachable", lambda *a: True)
    with caplog.at_level(logging.WARNING, logger="snnet.anchors"):
        create_anchor(spec, load_weights=False)
    notes = [r.getMessage() for r in caplog.records if r.name == "snnet.anchors"]
    assert len(notes) == 1 and "reset for 5 classes" in notes[0], notes


def test_hf_hub_offline_counts_as_unreachable(monkeypatch, empty_caches, no_timm_download):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SNNetError, match="HF_HUB_OFFLINE is set"):
        create_anchor(AnchorSpec("resnet18", pretrained=True))


def test_offline_pretrained_uses_weights_already_in_the_cache(offline, empty_caches, no_timm_download):
    from safetensors.torch import save_file

    src = _resnet18(1000, seed=3)
    snapshot = empty_caches / "hf" / "models--timm--resnet18.a1_in1k" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file(src.model.state_dict(), str(snapshot / "model.safetensors"))
    refs = snapshot.parent.parent / "refs"
    refs.mkdir()
    (refs / "main").write_text("0" * 40)
    anchor = create_anchor(AnchorSpec("resnet18", pretrained=True))
    assert anchor.weights == "hub:timm/resnet18.a1_in1k"
    assert torch.equal(anchor.model.fc.weight, src.model.fc.weight)


def test_the_real_network_here_is_detected_without_retries(no_timm_download, empty_caches):
    """On a machine without internet (as the CI machines are) the real probe answers quickly."""
    if weights.hub_reachable("hf-hub", "timm/resnet18.a1_in1k"):
        pytest.skip("huggingface.co is reachable from this machine")
    with pytest.raises(SNNetError, match="cannot be reached"):
        create_anchor(AnchorSpec("resnet18", pretrained=True))


# -- checking a spec without loading ----------------------------------------------------------------
@pytest.fixture
def no_loading(monkeypatch):
    """check_spec must read keys and shapes only: loading a state dict fails the test."""
    import timm.models

    def refuse(*a, **k):
        pytest.fail("check_spec loaded weights")

    monkeypatch.setattr(timm.models, "load_state_dict", refuse)
    monkeypatch.setattr(weights, "load_checkpoint", refuse)


def test_check_spec_finds_every_problem_without_loading(tmp_path, no_loading, offline, empty_caches):
    state = _resnet18(3).model.state_dict()
    pth, legacy, st = tmp_path / "r18.pth", tmp_path / "legacy.pth", tmp_path / "r18.safetensors"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, pth)
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    from safetensors.torch import save_file

    save_file(state, str(st))
    for path in (pth, legacy, st):
        assert check_spec(AnchorSpec("resnet18", checkpoint=str(path), kwargs={"num_classes": 3})) == [], path
        # another class count is fine: the classifier is reset
        assert check_spec(AnchorSpec("resnet18", checkpoint=str(path))) == []
    (problem,) = check_spec(AnchorSpec("resnet50", checkpoint=str(st), kwargs={"num_classes": 3}))
    assert "does not fit 'resnet50'" in problem and "shape mismatches" in problem and "missing keys" in problem
    assert "Did you mean 'resnet18'" in check_spec("resnet1")[0]
    assert "does not exist" in check_spec(AnchorSpec("resnet18", checkpoint=str(tmp_path / "gone.pth")))[0]
    assert ("num_classes must be an integer >= 0, got 'ten'"
            in check_spec(AnchorSpec("resnet18", kwargs={"num_classes": "ten"}))[0])
    assert "could not build 'resnet18'" in check_spec(AnchorSpec("resnet18", kwargs={"no_such_option": 1}))[0]
    assert "supports VisionTransformer" in check_spec("efficientnet_b0")[0]
    assert "cannot be reached" in check_spec(AnchorSpec("resnet18", pretrained=True))[0]
    assert check_spec(AnchorSpec("resnet18", pretrained=True), network=False) == []
    assert "no pretrained weights" in check_spec(AnchorSpec("resnet200", pretrained=True))[0]
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    assert "safe weights-only" in check_spec(AnchorSpec("resnet18", checkpoint=str(bad)))[0]
    evil = tmp_path / "evil.pth"
    torch.save({"x": torch.nn.Linear(2, 2)}, evil)
    assert "safe weights-only" in check_spec(AnchorSpec("resnet18", checkpoint=str(evil)))[0]


def test_check_spec_builds_on_the_meta_device(monkeypatch):
    import timm

    devices = []
    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: devices.append(k.get("device")) or real(*a, **k))
    assert check_spec(AnchorSpec("vit_base_patch16_224")) == []
    assert devices == ["meta"]
