"""Tests of the demo data and anchors (orchestrator.data.demo_anchors) and the folder data path (orchestrator.data)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from orchestrator.data import (
    DEMO_IMAGE_SIZE,
    demo_datasets,
    get_datasets,
    image_folder_datasets,
    make_loader,
    num_classes,
)
from orchestrator.data import demo_anchors as demo
from snnet._errors import SNNetError
from snnet.anchors import AnchorSpec, create_anchor

REPO = Path(__file__).resolve().parents[1]


# -- demo data -------------------------------------------------------------------------------


def test_demo_datasets_shapes_split_and_normalisation():
    train, val = demo_datasets()
    assert (len(train), len(val)) == (1437, 1080)  # 360 validation digits, each distorted 3 ways
    x, y = train[0]
    assert x.shape == (1, DEMO_IMAGE_SIZE, DEMO_IMAGE_SIZE) and x.dtype == torch.float32
    assert y.dtype == torch.int64
    assert num_classes(train) == num_classes(val) == 10
    x_train, y_train = train.tensors
    _, y_val = val.tensors
    # stratified: every class in both splits, in about the 80/20 proportion
    counts_train = torch.bincount(y_train, minlength=10)
    counts_val = torch.bincount(y_val, minlength=10) // 3
    assert (counts_val > 0).all()
    ratio = counts_val.float() / (counts_train + counts_val).float()
    assert ((ratio - 0.2).abs() < 0.02).all()
    # normalised with the train split's statistics
    assert abs(float(x_train.mean())) < 0.01 and abs(float(x_train.std()) - 1.0) < 0.01


def test_demo_split_is_disjoint_and_deterministic():
    from orchestrator.data.demo import _demo_tensors

    train, val = demo_datasets()
    _demo_tensors.cache_clear()  # rebuild from scratch, not from the cache
    train2, val2 = demo_datasets()
    assert torch.equal(train.tensors[0], train2.tensors[0]) and torch.equal(train.tensors[1], train2.tensors[1])
    assert torch.equal(val.tensors[0], val2.tensors[0]) and torch.equal(val.tensors[1], val2.tensors[1])
    # no validation image also occurs in train (the digits set has no exact duplicates across the split)
    flat_train = {tuple(row.tolist()) for row in train.tensors[0].flatten(1)[:, ::7]}
    overlap = sum(tuple(row.tolist()) in flat_train for row in val.tensors[0].flatten(1)[:, ::7])
    assert overlap == 0


def test_the_clean_split_is_cached_and_read_back_without_scikit_learn(tmp_path, monkeypatch):
    from conftest import import_blocker

    from orchestrator.data import demo as data

    monkeypatch.setenv("SNNET_CACHE", str(tmp_path))
    made = data._demo_split()  # scikit-learn's digits and stratified split
    data._demo_clean.cache_clear()
    try:
        assert all(torch.equal(a, b) for a, b in zip(data._demo_clean(), made, strict=True))
        (cached,) = tmp_path.glob("digits-split-*.pt")
        # A fresh process reads the file back and never imports scikit-learn.
        out = tmp_path / "read.pt"
        script = import_blocker("sklearn", "scipy") + (
            f"import torch; from orchestrator.data.demo import _demo_clean; torch.save(_demo_clean(), {str(out)!r})")
        done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stderr[-2000:]
        assert all(torch.equal(a, b) for a, b in zip(torch.load(out), made, strict=True))
        # A damaged file is made again.
        cached.write_bytes(b"not a torch file")
        data._demo_clean.cache_clear()
        assert all(torch.equal(a, b) for a, b in zip(data._demo_clean(), made, strict=True))
        assert torch.load(cached)["y_val"].tolist() == made[3].tolist()
    finally:
        data._demo_clean.cache_clear()


def test_make_loader_single_process_reshuffles_per_epoch():
    train, _ = demo_datasets()
    loader = make_loader(train, 256, shuffle=True, seed=3)
    order0 = list(loader.sampler)
    assert sorted(order0) == list(range(len(train)))
    loader.sampler.set_epoch(1)
    order1 = list(loader.sampler)
    assert order1 != order0 and sorted(order1) == sorted(order0)
    again = make_loader(train, 256, shuffle=True, seed=3)
    again.sampler.set_epoch(1)
    assert list(again.sampler) == order1  # seeded: same order on any run
    x, y = next(iter(loader))
    assert x.shape == (256, 1, 16, 16) and y.shape == (256,)


def test_make_loader_two_ranks_drop_last_on_demo():
    train, _ = demo_datasets()
    shards = [
        list(make_loader(train, 64, rank=r, world_size=2, shuffle=True, seed=0, drop_last=True).sampler)
        for r in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == len(train) // 2
    assert not set(shards[0]) & set(shards[1])
    loader = make_loader(train, 64, rank=1, world_size=2, shuffle=True, seed=0, drop_last=True)
    assert len(loader) == (len(train) // 2) // 64
    with pytest.raises(ValueError):
        make_loader(train, 64, rank=2, world_size=2, shuffle=False)


# -- ImageNet-style folders --------------------------------------------------------------------


def _write_folder(root: Path, layout: dict[str, dict[str, int]], size: int = 20) -> Path:
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split, classes in layout.items():
        for cls, n in classes.items():
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = torch.randint(0, 256, (size, size, 3), generator=g, dtype=torch.uint8).numpy()
                Image.fromarray(pixels, mode="RGB").save(d / f"img{i}.png")
    return root


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    # val/ lacks "bird": its labels must still follow train/'s class index
    return _write_folder(
        tmp_path / "imgs",
        {"train": {"bird": 3, "cat": 3, "dog": 4}, "val": {"cat": 2, "dog": 3}},
    )


def test_image_folder_datasets_share_train_class_index(image_root: Path):
    train, val = image_folder_datasets(image_root, image_size=16)
    assert (len(train), len(val)) == (10, 5)
    assert num_classes(train) == num_classes(val) == 3
    assert train.classes == ("bird", "cat", "dog")
    x, y = train[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    val_labels = sorted(int(val[i][1]) for i in range(len(val)))
    assert val_labels == [1, 1, 2, 2, 2]  # cat=1, dog=2 as in train/, although val/ has no bird
    xv, _ = val[0]
    assert xv.shape == (3, 16, 16)


def test_image_folder_two_ranks_disjoint_and_covering(image_root: Path):
    train, val = get_datasets(str(image_root), image_size=16)
    # train: 10 images, even over 2 ranks -> the padded DistributedSampler repeats nothing
    shards = [list(make_loader(train, 4, rank=r, world_size=2, shuffle=True, seed=1).sampler) for r in range(2)]
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(len(train)))
    batches = list(make_loader(train, 4, rank=0, world_size=2, shuffle=True, seed=1))
    assert [len(b[1]) for b in batches] == [4, 1]
    assert batches[0][0].shape == (4, 3, 16, 16)
    # val: 5 images, odd; pad=False keeps every image exactly once
    shards = [list(make_loader(val, 2, rank=r, world_size=2, shuffle=False, pad=False).sampler) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(len(val)))
    assert not set(shards[0]) & set(shards[1])
    loaders = [make_loader(val, 2, rank=r, world_size=2, shuffle=False, pad=False) for r in range(2)]
    assert sum(len(y) for loader in loaders for _, y in loader) == 5


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing_root", "does not exist"),
        ("root_is_file", "is a file"),
        ("no_train", "no train/ folder"),
        ("no_val", "no val/ folder"),
        ("no_classes", "has no class folders"),
        ("no_images", "no readable images"),
        ("val_only_class", "in val/ only: 'zebra'"),
    ],
)
def test_image_folder_errors(tmp_path: Path, case: str, expected: str):
    root = tmp_path / "data"
    if case == "root_is_file":
        root.write_text("not a folder")
    elif case == "no_train":
        _write_folder(root, {"val": {"a": 1}})
    elif case == "no_val":
        _write_folder(root, {"train": {"a": 1}})
    elif case == "no_classes":
        _write_folder(root, {"val": {"a": 1}})
        (root / "train").mkdir()
        (root / "train" / "stray.png").write_bytes(b"")
    elif case == "no_images":
        _write_folder(root, {"val": {"a": 1}})
        (root / "train" / "a").mkdir(parents=True)
        (root / "train" / "a" / "notes.txt").write_text("no image here")
    elif case == "val_only_class":
        _write_folder(root, {"train": {"a": 1}, "val": {"a": 1, "zebra": 1}})
    with pytest.raises(SNNetError) as info:
        image_folder_datasets(root, image_size=16)
    message = str(info.value)
    assert expected in message
    assert "ImageNet layout" in message and "\n" not in message


def test_get_datasets_dispatch_and_errors(tmp_path: Path):
    train, val = get_datasets("demo")
    assert len(train) == 1437 and len(val) == 1080
    with pytest.raises(SNNetError, match="fixed image size of 16"):
        get_datasets("demo", image_size=32)
    with pytest.raises(SNNetError, match="must be 'demo'.*a local directory.*WebDataset.*is neither"):
        get_datasets("imagenet-please")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(SNNetError, match="it is a file"):
        get_datasets(tmp_path / "f.txt")


# -- demo anchors ------------------------------------------------------------------------------


def test_demo_anchors_build_by_name_with_increasing_width():
    import timm

    assert demo.DEMO_ANCHORS == ("snnet_demo_vit_tiny", "snnet_demo_vit_small", "snnet_demo_vit_base")
    widths, params = [], []
    for name in demo.DEMO_ANCHORS:
        assert timm.is_model(name)
        model = timm.create_model(name)
        assert len(model.blocks) == 6 and model.num_classes == 10
        assert model.patch_embed.proj.in_channels == 1 and tuple(model.patch_embed.img_size) == (16, 16)
        assert model.blocks[0].attn.head_dim == 16
        cfg = model.pretrained_cfg
        assert not cfg.get("url") and not cfg.get("hf_hub_id")
        assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 10)
        widths.append(model.embed_dim)
        params.append(sum(p.numel() for p in model.parameters()))
    assert widths == [32, 64, 96]
    assert params == sorted(params)


def test_pretrained_true_uses_default_cache_or_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import timm

    monkeypatch.setenv("SNNET_CACHE", str(tmp_path))
    name = demo.DEMO_ANCHORS[0]
    with pytest.warns(UserWarning, match="random initialisation"):
        timm.create_model(name, pretrained=True)  # nothing cached: no download, random init
    assert not any(tmp_path.iterdir())
    torch.manual_seed(123)
    reference = timm.create_model(name)
    torch.save(reference.state_dict(), demo.checkpoint_path(name))
    loaded = timm.create_model(name, pretrained=True)
    for (k, a), b in zip(reference.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k


def test_checkpoint_path_hash_covers_recipe(tmp_path: Path):
    name = demo.DEMO_ANCHORS[1]
    base = demo.checkpoint_path(name, demo.DEFAULT_RECIPE, tmp_path)
    assert base == demo.checkpoint_path(name, demo.PretrainRecipe(), tmp_path)
    assert base.parent == tmp_path and base.name.startswith(name + "-") and base.suffix == ".pth"
    assert base != demo.checkpoint_path(name, demo.PretrainRecipe(epochs=1), tmp_path)
    assert base != demo.checkpoint_path(name, demo.PretrainRecipe(lr=3e-3), tmp_path)


def test_demo_anchor_specs_caches_and_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import orchestrator.data.demo_anchors as demo_module

    lines: list[str] = []
    specs = demo.demo_anchor_specs(tmp_path, lines.append, epochs=1)
    assert [s.name for s in specs] == list(demo.DEMO_ANCHORS)
    assert all(isinstance(s, AnchorSpec) and s.checkpoint for s in specs)
    assert sum("epoch 1/1" in line for line in lines) == 3
    assert sum("val top1" in line for line in lines) == 3
    _, val = demo_datasets()
    for spec in specs:
        path = Path(spec.checkpoint)
        assert path.is_file() and path.parent == tmp_path
        meta = json.loads(path.with_suffix(".json").read_text())
        assert meta["recipe"]["epochs"] == 1 and 0 <= meta["val_top1"] <= 100
        anchor = create_anchor(spec)  # loads with weights_only=True and strict key checks
        assert anchor.input_size == (1, 16, 16) and anchor.depth == 6
        assert demo.evaluate_top1(anchor, val) == pytest.approx(meta["val_top1"])
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))

    def no_training(*args, **kwargs):
        raise AssertionError("a cached anchor was pretrained again")

    monkeypatch.setattr(demo_module, "pretrain_anchor", no_training)
    lines.clear()
    again = demo.demo_anchor_specs(tmp_path, lines.append, epochs=1)
    assert again == specs
    assert len(lines) == 1 and lines[0].startswith(f"demo anchors from the cache in {tmp_path}: ")
    assert all(f"{spec.name} (val top1 " in lines[0] for spec in specs)


def test_brief_progress_is_one_line_per_anchor_pretrained(tmp_path: Path):
    """The CLIs' consoles (``brief=True``): a first run says once per anchor why it waits, with no epoch
    lines (a fresh machine's demo console stays under test_console's 30 lines); a cached one is one line."""
    lines: list[str] = []
    names = demo.DEMO_ANCHORS[:2]
    specs = demo.demo_anchor_specs(tmp_path, lines.append, epochs=1, anchors=names, brief=True)
    assert lines == [f"pretraining demo anchor {name}: 1 epoch, on the first run only (cached in {tmp_path})"
                     for name in names]
    assert all(Path(s.checkpoint).is_file() for s in specs)
    lines.clear()
    assert demo.demo_anchor_specs(tmp_path, lines.append, epochs=1, anchors=names, brief=True) == specs
    assert len(lines) == 1 and lines[0].startswith(f"demo anchors from the cache in {tmp_path}: ")


def test_concurrent_pretraining_trains_once(tmp_path: Path):
    script = textwrap.dedent(
        f"""
        from orchestrator.data.demo_anchors import demo_anchor_specs
        demo_anchor_specs({str(tmp_path)!r}, epochs=1, anchors=("snnet_demo_vit_tiny",))
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    trained = sum("epoch 1/1" in out for out, _ in outputs)
    assert trained == 1, outputs
    assert len(list(tmp_path.glob("*.pth"))) == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_demo_distortion_is_seeded_and_changes_the_digits():
    from orchestrator.data.demo import _demo_clean, demo_train_draw

    clean = _demo_clean()[0]
    a, labels = demo_train_draw(5)
    b, _ = demo_train_draw(5)
    c, _ = demo_train_draw(6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(labels, _demo_clean()[1])
    fixed = demo_datasets()[0].tensors[0]
    # the fixed train split is itself a distortion: not the clean digits, normalised
    assert not torch.allclose(fixed, (clean - 0.2724) / 0.3048, atol=0.1)


@pytest.mark.slow
def test_default_pretraining_is_a_family():
    """The demo anchors of the default cache (pretrained on this machine where missing, as a user's first
    run does) order by capacity: tiny < small < base, 3+ points apart. Their recorded top-1 is what their
    weights score, and pretraining again gives it again."""
    specs = demo.demo_anchor_specs(progress=None)
    _, val = demo_datasets()
    top1 = [demo.evaluate_top1(create_anchor(s), val) for s in specs]
    tiny, small, base = top1
    assert tiny > 30.0, top1  # learned something: chance is 10%
    assert small >= tiny + 3.0, top1
    assert base >= small + 3.0, top1
    meta = json.loads(demo.checkpoint_path(demo.DEMO_ANCHORS[0]).with_suffix(".json").read_text())
    assert meta["val_top1"] == pytest.approx(tiny)
    if meta["torch"] == torch.__version__:  # seeded and deterministic for one torch build (a cache may be older)
        again = demo.pretrain_anchor(demo.DEMO_ANCHORS[0], progress=None)[1]
        assert again == pytest.approx(tiny), "pretraining is seeded and deterministic"


# -- unreadable images, empty classes, sizes ---------------------------------------------------


def test_unreadable_images_are_dropped_and_reported_once(image_root: Path):
    from orchestrator.data import dataset_size

    (image_root / "val" / "cat" / "img0.png").write_bytes(b"")  # empty file
    good = (image_root / "val" / "dog" / "img1.png").read_bytes()
    (image_root / "val" / "dog" / "img1.png").write_bytes(good[: len(good) // 2])  # truncated
    assert dataset_size(str(image_root), "val") == 5  # listed, not opened
    _, val = image_folder_datasets(image_root, image_size=16)
    lines: list[str] = []
    loader = make_loader(val, 2, shuffle=False, on_skip=lines.append)
    for _ in range(3):  # three evaluations, one report; the broken files are not replaced
        labels = [int(v) for _, y in loader for v in y]
        assert sorted(labels) == [1, 2, 2]
    assert lines == ["skipped 2 unreadable files: val/cat/img0.png, val/dog/img1.png"]  # named from the root
    assert list(loader.skipped) == ["val/cat/img0.png", "val/dog/img1.png"]


def test_empty_class_folder_is_an_error_naming_it(tmp_path: Path):
    from orchestrator.data import dataset_num_classes, dataset_size

    root = _write_folder(tmp_path / "d", {"train": {"a": 2, "b": 1}, "val": {"a": 1}})
    (root / "train" / "c").mkdir()
    for call in (lambda: image_folder_datasets(root, image_size=16), lambda: dataset_size(str(root)),
                 lambda: dataset_num_classes(str(root))):
        with pytest.raises(SNNetError, match=r"class folder '.*train/c' has no readable images"):
            call()


def test_dataset_size_and_classes_without_opening_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import PIL.Image

    from orchestrator.data import dataset_num_classes, dataset_size

    root = _write_folder(tmp_path / "d", {"train": {"a": 2, "b": 3}, "val": {"a": 1, "b": 1}})

    def no_open(*args, **kwargs):
        raise AssertionError("an image was opened")

    monkeypatch.setattr(PIL.Image, "open", no_open)
    assert (dataset_size(str(root)), dataset_size(str(root), "val"), dataset_num_classes(str(root))) == (5, 2, 2)
    assert (dataset_size("demo"), dataset_size("demo", "val"), dataset_num_classes("demo")) == (1437, 1080, 10)
    with pytest.raises(SNNetError, match="is neither"):
        dataset_size(str(tmp_path / "missing"))
