"""Built once (issue 9): the driver validates without loading weights, trials reuse what it found,
each worker builds its supernet once.

The driver's :func:`orchestrator.train.launch.prepare` builds anchors with their random initialisation
(FLOPs, parameters and class counts do not depend on the weights' values), checks checkpoints
from their keys and shapes and derives the weights line from the specs. A sweep's trials get
the anchors' profiles and the dataset's counts in their context (:class:`orchestrator.train.launch.Known`)
and build or open nothing to check. A worker's :class:`~orchestrator.train.recipe.SupernetRecipe`
builds each anchor once and opens the dataset once. All in one process, no Ray, the demo digits
and the small demo ViTs with checkpoints the tests write.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

import orchestrator.train.prepare as run
import snnet.anchors as anchors_module
from orchestrator.train.config import TrainConfig
from snnet import AnchorSpec, StitchSpace, _weights, create_anchor, profile_anchor
from snnet.anchors import RANDOM, weights_source

ANCHORS = ("snnet_demo_vit_tiny", "snnet_demo_vit_small")
#: Every tensor of the written checkpoints holds this value: a model that loaded one shows it.
MARK = 0.375


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One safetensors and one .pth checkpoint of the demo anchors, every value :data:`MARK`."""
    from safetensors.torch import save_file

    from orchestrator.data import demo_anchors as demo  # noqa: F401 - registers the demo anchors with timm

    folder = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for name, suffix in zip(ANCHORS, (".safetensors", ".pth")):
        state = {k: torch.full_like(v, MARK) for k, v in create_anchor(name).model.state_dict().items()}
        path = folder / f"{name}{suffix}"
        save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
        paths[name] = str(path)
    return paths


def _config(tmp_path, paths, **kw) -> TrainConfig:
    specs = [AnchorSpec(n, checkpoint=paths[n]) for n in ANCHORS]
    return TrainConfig(**{"anchors": specs, "dataset": "demo", "catalog": str(tmp_path / "catalog"),
                          "storage_path": str(tmp_path / "runs"), "workers": 1, "batch_size": 32, **kw})


def _holds_mark(anchor) -> bool:
    return any(torch.all(p == MARK).item() for p in anchor.model.parameters())


@pytest.fixture
def refuse_loading(monkeypatch):
    """Loading a weights file anywhere in snnet or timm fails the test."""
    import timm.models

    def refuse(*a, **k):
        pytest.fail("the driver loaded weights")

    monkeypatch.setattr(timm.models, "load_state_dict", refuse)
    monkeypatch.setattr(_weights, "load_checkpoint", refuse)
    monkeypatch.setattr(anchors_module, "load_checkpoint", refuse)
    monkeypatch.setattr(anchors_module, "_load_file", refuse)


@pytest.fixture
def profiled(monkeypatch):
    """The anchors :func:`orchestrator.train.launch.prepare` profiles, in order."""
    seen = []
    real = run.profile_anchor
    monkeypatch.setattr(run, "profile_anchor", lambda anchor: seen.append(anchor) or real(anchor))
    return seen


# -- the driver ---------------------------------------------------------------------------------------


def test_prepare_loads_no_weights_and_its_space_and_weights_line_match_a_loaded_build(
        tmp_path, checkpoints, refuse_loading, profiled):
    lines = []
    prepared = run.prepare(_config(tmp_path, checkpoints), progress=lines.append)
    config, space = prepared
    assert [a.name for a in profiled] == list(ANCHORS)
    assert not any(_holds_mark(a) for a in profiled)  # random initialisation, not the checkpoint's tensors
    expected = {n: f"file:{os.path.abspath(checkpoints[n])}" for n in ANCHORS}
    assert prepared.weights == expected
    assert lines == run.weights_line(expected)
    assert lines[0] == ("[snnet] weights: " + ", ".join(f"{n} <- file:{os.path.abspath(checkpoints[n])}"
                                                      for n in ANCHORS))


def test_the_unloaded_space_has_exactly_the_flops_and_params_of_a_loaded_build(tmp_path, checkpoints):
    prepared = run.prepare(_config(tmp_path, checkpoints), progress=lambda m: None)
    config, space = prepared
    loaded = [create_anchor(s) for s in config.anchors]
    assert all(_holds_mark(a) for a in loaded)  # the loaded build really holds the checkpoint
    assert [a.weights for a in loaded] == list(prepared.weights.values())
    reference = StitchSpace([profile_anchor(a) for a in loaded], config.space_config())
    assert space.to_json() == reference.to_json()
    assert [(s.flops, s.params) for s in space] == [(s.flops, s.params) for s in reference]


@pytest.mark.parametrize("name, kwargs", [("resnet18", {"num_classes": 7}),
                                          ("deit_tiny_patch16_224", {"img_size": 32})])
def test_profiles_do_not_depend_on_the_weights(tmp_path, name, kwargs):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    built = create_anchor(name, **kwargs)
    state = {k: torch.full_like(v, MARK) if v.is_floating_point() else v for k, v in built.model.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    spec = AnchorSpec(name, checkpoint=str(tmp_path / "w.safetensors"), kwargs=kwargs)
    loaded, unloaded = create_anchor(spec), create_anchor(spec, load_weights=False)
    assert _holds_mark(loaded) and not _holds_mark(unloaded) and unloaded.weights == RANDOM
    assert profile_anchor(loaded) == profile_anchor(unloaded)


def test_weights_sources_are_read_from_the_specs():
    assert weights_source(AnchorSpec("resnet18")) == RANDOM
    assert weights_source(AnchorSpec("resnet18", checkpoint="w.pth")) == f"file:{os.path.abspath('w.pth')}"
    assert weights_source(AnchorSpec("resnet18", pretrained=True)) == "hub:timm/resnet18.a1_in1k"
    assert weights_source(AnchorSpec("resnet18.tv_in1k", pretrained=True)) == "hub:timm/resnet18.tv_in1k"
    # the demo anchors' own builder picks their weights file: only a build can tell
    assert weights_source(AnchorSpec("snnet_demo_vit_tiny", pretrained=True)) is None


def test_a_spec_whose_builder_picks_its_weights_gets_the_loaded_builds_source(tmp_path, checkpoints):
    import warnings

    specs = [AnchorSpec(ANCHORS[0], pretrained=True), AnchorSpec(ANCHORS[1], checkpoint=checkpoints[ANCHORS[1]])]
    config = _config(tmp_path, checkpoints).model_copy(update={"anchors": specs})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no cached demo weights here: timm's builder warns and starts random
        prepared = run.prepare(config, progress=lambda m: None)
        assert prepared.weights[ANCHORS[0]] == create_anchor(specs[0]).weights


def test_the_class_count_check_reads_the_unloaded_build(tmp_path, checkpoints, refuse_loading):
    specs = [AnchorSpec(n, checkpoint=checkpoints[n], kwargs={"num_classes": 7}) for n in ANCHORS]
    config = _config(tmp_path, checkpoints).model_copy(update={"anchors": specs})
    with pytest.raises(run.SNNetError) as info:
        run.prepare(config, progress=lambda m: None)
    assert str(info.value) == (
        "Anchors must classify the dataset's 10 classes, but snnet_demo_vit_tiny has 7, snnet_demo_vit_small "
        "has 7 (pass --num-classes N, or set num_classes in the family's kwargs of the YAML: the classifier is "
        "then reset; or fine-tune the anchors on this dataset first).")


def test_the_classifier_reset_note_is_logged_without_loading(tmp_path, caplog, refuse_loading):
    import logging

    from safetensors.torch import save_file

    save_file(create_anchor("resnet18").model.state_dict(), str(tmp_path / "in1k.safetensors"))
    spec = AnchorSpec("resnet18", checkpoint=str(tmp_path / "in1k.safetensors"), kwargs={"num_classes": 7})
    with caplog.at_level(logging.INFO, logger="snnet.anchors"):
        anchor = create_anchor(spec, load_weights=False)
    notes = [r.getMessage() for r in caplog.records if r.name == "snnet.anchors"]
    assert len(notes) == 1 and "1000 classes" in notes[0] and "reset for 7 classes" in notes[0], notes
    assert anchor.num_classes == 7


# -- trials -------------------------------------------------------------------------------------------


def test_a_trial_prepare_with_the_drivers_findings_builds_and_opens_nothing(tmp_path, checkpoints, monkeypatch):
    import orchestrator.data as data

    driver = run.prepare(_config(tmp_path, checkpoints), progress=lambda m: None)

    def refuse(*a, **k):
        pytest.fail("the trial built an anchor, checked weights again or opened the dataset")

    monkeypatch.setattr(run, "create_anchor", refuse)
    monkeypatch.setattr(anchors_module, "check_spec", refuse)
    monkeypatch.setattr(data, "get_datasets", refuse)
    monkeypatch.setattr(data, "dataset_size", refuse)
    trial = _config(tmp_path, checkpoints, kernel_size=3, seed=5, selection_fraction=0.1, data_fraction=0.5)
    lines = []
    prepared = run.prepare(trial, progress=lines.append, known=driver.known)
    assert prepared.weights == driver.weights and lines == run.weights_line(driver.weights)
    assert prepared[1].to_json() != driver[1].to_json()  # the trial's own k
    assert prepared[1].profiles == driver[1].profiles
    images = driver.known.datasets["demo|None"].training_images(trial)
    assert 600 < images < 700  # 1437 digits, 10% held out, half of the rest
    with pytest.raises(run.SNNetError, match=f"needs at least 768 training images for one step, but the "
                                             f"training set of 'demo' has {images}:"):
        run.prepare(trial.model_copy(update={"batch_size": 128, "workers": 6}), progress=lambda m: None,
                    known=driver.known)


@pytest.mark.parametrize("selection, fraction, seed", [(0.0, 1.0, 0), (0.02, 1.0, 0), (0.1, 0.5, 3), (0.0, 0.25, 7),
                                                       (0.5, 0.1, 1)])
def test_the_drivers_counts_give_the_training_sets_size_of_every_split(selection, fraction, seed):
    from orchestrator.data import get_datasets, split_training_set

    config = TrainConfig(dataset="demo", selection_fraction=selection, data_fraction=fraction, seed=seed)
    facts = run.DatasetFacts.read(config)
    train, _ = get_datasets("demo")
    assert (facts.num_classes, facts.train_size) == (10, len(train))
    split = split_training_set(train, selection_fraction=selection, data_fraction=fraction, seed=seed)
    assert facts.training_images(config) == len(split.train)


@pytest.mark.parametrize("selection, fraction", [(0.0, 1.0), (0.25, 1.0), (0.1, 1.0), (0.0, 0.5), (0.25, 0.3)])
def test_the_drivers_counts_give_the_training_sets_size_of_streamed_shards(tmp_path, selection, fraction):
    import io

    from PIL import Image

    from orchestrator.data import get_datasets, split_training_set, write_shards

    def png(value: int) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (12, 12), (value, value, value)).save(buffer, format="PNG")
        return buffer.getvalue()

    for split, n in (("train", 40), ("val", 6)):
        samples = ((f"{split}{i:04d}.png", png(i), i % 3) for i in range(n))
        write_shards(samples, str(tmp_path / split / "shard-0000.tar"), shard_size=n)
    config = TrainConfig(dataset=f"wds:{tmp_path}", image_size=12, selection_fraction=selection,
                         data_fraction=fraction, seed=4)
    facts = run.DatasetFacts.read(config)
    assert (facts.num_classes, facts.train_size, facts.class_counts) == (3, 40, None)
    train, _ = get_datasets(config.dataset, 12)
    split = split_training_set(train, selection_fraction=selection, data_fraction=fraction, seed=4)
    assert facts.training_images(config) == len(split.train)


def test_the_sweep_passes_the_drivers_findings_to_its_trials(tmp_path, monkeypatch):
    import orchestrator.data as data
    from orchestrator.sweep import preflight as sweep_preflight
    from orchestrator.sweep import trial as sweep_trial

    search = _small_search(tmp_path)
    ctx, flops_ref = sweep_preflight.validate_families(search, str(tmp_path / "c"), str(tmp_path / "r"), lambda m: None)
    known = ctx["known"]
    assert flops_ref > 0 and known.datasets["demo|None"].num_classes == 10
    assert len(known.anchors) == len(ctx["demo_specs"]) == len(known.checked)
    assert flops_ref == max(profile.flops for profile, _ in known.anchors.values())
    monkeypatch.setattr(data, "get_datasets", lambda *a, **k: pytest.fail("opened the dataset to count"))
    train = TrainConfig(dataset="demo", selection_fraction=0.1, data_fraction=0.5)
    images = sweep_trial._train_images(train, object(), known)
    assert images == known.datasets["demo|None"].train_size * 0.5 * 0.9


def test_a_demo_family_stitches_its_own_anchors_on_the_driver_and_in_its_trials(tmp_path):
    """A demo family that lists two of the three demo anchors gets those two, not all three."""
    from orchestrator.sweep import preflight as sweep_preflight
    from orchestrator.sweep import space as sweep_space
    from orchestrator.sweep import trial as sweep_trial
    from orchestrator.sweep.trial import SweepContext
    from search_spaces import load_space
    from search_spaces.fingerprint import space_fingerprint

    two = ["snnet_demo_vit_tiny", "snnet_demo_vit_small"]
    search = load_space("demo", overrides=["training.epochs=1", f"families.0.anchors=[{', '.join(two)}]"])
    lines: list[str] = []
    ctx, flops_ref = sweep_preflight.validate_families(search, str(tmp_path / "c"), str(tmp_path / "r"), lines.append)
    assert list(ctx["demo_specs"]) == two and [json.loads(k)[0] for k in ctx["known"].anchors] == two
    assert flops_ref == max(profile.flops for profile, _ in ctx["known"].anchors.values())
    assert any(line.startswith(f"[snnet] family demo_vit: {', '.join(two)} (") for line in lines), lines
    ctx.update(search=search.model_dump(mode="json"), fingerprint=space_fingerprint(search),
               catalog=str(tmp_path / "c"), storage=str(tmp_path / "r"), experiment=str(tmp_path / "r" / "exp"))
    point = {sweep_space.config_key(k): v for k, v in search.first_point().items()}
    train, _ = sweep_trial.trial_settings(SweepContext(**ctx), point, "t1")
    assert train.anchors == [ctx["demo_specs"][name] for name in two]


def _small_search(tmp_path):
    from search_spaces import load_space

    return load_space("demo", overrides=["training.epochs=1"])


# -- the worker ---------------------------------------------------------------------------------------


def test_a_worker_builds_each_anchor_once_and_opens_the_dataset_once(tmp_path, checkpoints, monkeypatch):
    from torch.utils.data import Subset

    import orchestrator.data as data
    import orchestrator.train.recipe as recipe_module
    from orchestrator.train.recipe import SupernetRecipe
    from orchestrator.train.state import Worker

    config, space = run.prepare(_config(tmp_path, checkpoints, epochs=1, ls_samples=32, eval_batch_size=100,
                                        batch_size=64, measure_latency=False, early_stitches=0, kernel_size=3,
                                        selection_fraction=0.0),
                                progress=lambda m: None)
    builds, opens, loads = [], [], []
    real_create, real_open, real_load = recipe_module.create_anchor, data.get_datasets, anchors_module._load_file

    def open_small(*a, **k):  # counted; a few digits keep the run short
        opens.append(a)
        train, val = real_open(*a, **k)
        return Subset(train, range(256)), Subset(val, range(40))

    monkeypatch.setattr(recipe_module, "create_anchor",
                        lambda spec, **k: (builds.append((spec.name, k.get("load_weights", True)))
                                           or real_create(spec, **k)))
    monkeypatch.setattr(data, "get_datasets", open_small)
    monkeypatch.setattr(anchors_module, "_load_file", lambda *a, **k: loads.append(a[1].name) or real_load(*a, **k))
    states = []
    recipe = SupernetRecipe(config, space, Worker(report=lambda metrics, state: states.append(state)))
    recipe.run()
    assert sorted(builds) == sorted((n, True) for n in ANCHORS) and len(opens) == 1
    assert sorted(loads) == sorted(ANCHORS)
    # a resumed worker builds once too, and reads no anchor weights: its checkpoint holds them all
    builds.clear(), opens.clear(), loads.clear()
    resumed = SupernetRecipe(config, space, Worker(report=lambda metrics, state: None))
    resumed.run(next(s for s in states if s is not None and s.optimizer is not None))
    assert sorted(builds) == sorted((n, False) for n in ANCHORS) and len(opens) == 1 and loads == []
    final, reference = resumed.net.state_dict(), recipe.net.state_dict()
    assert final.keys() == reference.keys() and all(torch.equal(final[k], reference[k]) for k in reference)
