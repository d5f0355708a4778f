"""Unreadable images in a user's data (issue 28, item 5): every reader of the dataset (the
least-squares images, training, the early front, selection, evaluation) drops them through one
path and the run names each of them once. Folders and shards are written by the test; no Ray."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from orchestrator.data import (
    DEMO_MEAN,
    DEMO_STD,
    SkipLog,
    get_datasets,
    make_loader,
    shard_sets,
    split_training_set,
    write_shards,
)
from orchestrator.train.steps import ls_batches

GREY = {"image_size": 16, "input_img_mode": "L", "mean": DEMO_MEAN, "std": DEMO_STD}  # what the demo anchors take


def _write_folder(root: Path, layout: dict[str, dict[str, int]]) -> Path:
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split, classes in layout.items():
        for cls, n in classes.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = torch.randint(0, 256, (16, 16), generator=g, dtype=torch.uint8).numpy()
                Image.fromarray(pixels, mode="L").save(root / split / cls / f"img{i}.png")
    return root


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (16, 16), 128).save(buf, format="PNG")
    return buf.getvalue()


def _spoil(dataset, index: int) -> str:
    """Overwrite the image at ``index`` with bytes no decoder reads; its name as a log shows it."""
    path = Path(dataset.samples[index][0])
    path.write_bytes(b"not an image")
    return str(path.relative_to(dataset.root))


def test_ls_batches_leave_out_a_bad_image_and_name_it_once(tmp_path: Path):
    """The least-squares images (``--init ls``, the default) read a folder with a bad file: no
    ``TypeError``, the same seeded images as before less that one, and one line naming it, which
    no later reader sharing the run's log repeats."""
    root = _write_folder(tmp_path / "imgs", {"train": {"a": 5, "b": 5}, "val": {"a": 1}})
    train, val = get_datasets(str(root), **GREY)
    train.transform = val.transform  # no random crop: the same tensor on every read
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(1234))[:8].tolist()
    clean = torch.cat(list(ls_batches(train, 8, 3, 0, 1, "cpu")))
    assert torch.equal(clean, torch.stack([train[i][0] for i in order]))  # the seeded subset, as before

    bad = _spoil(train, order[1])
    lines: list[str] = []
    log = SkipLog(lines.append)
    batches = list(ls_batches(train, 8, 3, 0, 1, "cpu", skip_log=log))
    assert [len(x) for x in batches] == [3, 3, 1]  # refilled from the next images, never a neighbour's copy
    assert torch.equal(torch.cat(batches), torch.stack([train[i][0] for i in order if i != order[1]]))
    assert lines == [f"skipped 1 unreadable file: {bad}"] and bad.startswith("train/")
    list(ls_batches(train, 8, 3, 0, 1, "cpu", skip_log=log))  # read again, and by a loader: named once
    assert sum(len(y) for _, y in make_loader(train, 4, shuffle=False, skip_log=log)) == 9
    assert lines == [f"skipped 1 unreadable file: {bad}"]
    # two ranks: disjoint shares of the same images, the bad one left out of its rank's
    shares = [torch.cat(list(ls_batches(train, 8, 2, r, 2, "cpu", skip_log=SkipLog(None)))) for r in (0, 1)]
    assert sorted(len(s) for s in shares) == [3, 4]


def test_ls_batches_read_shards_in_order_and_skip_a_bad_sample(tmp_path: Path):
    """Shards cannot be indexed: the least-squares images are their first samples, a bad one left out."""
    png = _png()
    samples = [(f"k{i}.png", png, i % 2) for i in range(6)]
    samples[1] = ("k1.png", b"not an image", 1)
    write_shards(iter(samples), str(tmp_path / "train" / "s-%04d.tar"), shard_size=10)
    write_shards(iter(samples[:1]), str(tmp_path / "val" / "s-%04d.tar"), shard_size=10)
    shard_sets.cache_clear()
    try:
        train, _ = get_datasets(f"wds:{tmp_path}", **GREY)
        lines: list[str] = []
        batches = list(ls_batches(train, 6, 4, 0, 1, "cpu", skip_log=SkipLog(lines.append)))
    finally:
        shard_sets.cache_clear()
    assert [len(x) for x in batches] == [4, 1]
    assert lines == ["skipped 1 unreadable file: train/s-0000.tar:k1.png"]


def test_a_run_with_ls_init_names_each_bad_image_once(tmp_path: Path, capfd: pytest.CaptureFixture[str]):
    """A whole training run (default ``--init ls``, one epoch, the early front, selection and
    evaluation of every stitch) on a folder with a bad image in each of the training part, the
    selection part and the evaluation split: it finishes, and each file is named exactly once
    although the LS images, training, the early front and 8 evaluations read them. A few seconds."""
    from orchestrator.data import demo_anchors as demo  # noqa: F401 - registers the demo anchors with timm
    from orchestrator.train.config import TrainConfig
    from orchestrator.train.recipe import SupernetRecipe
    from orchestrator.train.state import Worker
    from snnet import AnchorSpec, StitchSpace, create_anchor, profile_anchor

    root = _write_folder(tmp_path / "imgs", {"train": {"a": 8, "b": 8}, "val": {"a": 3, "b": 3}})
    train, val = get_datasets(str(root), **GREY)
    anchors = [AnchorSpec(n) for n in ("snnet_demo_vit_tiny", "snnet_demo_vit_small")]
    config = TrainConfig(anchors=anchors, dataset=str(root), workers=1, epochs=1, batch_size=4, eval_batch_size=8,
                         ls_samples=64, selection_fraction=0.25, early_stitches=2, early_images=64, seed=3,
                         kernel_size=1)  # 8 stitches: 2 anchors and 6 plain cuts
    assert config.init == "ls"  # the default
    split = split_training_set(train, selection_fraction=0.25, seed=3)  # as the recipe will split it
    bad = [_spoil(train, split.train.indices[0]), _spoil(train, split.selection.indices[0]), _spoil(val, 0)]

    torch.manual_seed(0)
    space = StitchSpace([profile_anchor(create_anchor(a)) for a in anchors], config.space_config())
    recipe = SupernetRecipe(config, space, Worker(report=lambda metrics, state: None), datasets=(train, val))
    results = recipe.run()

    assert sorted(results) == sorted(s.stitch_id for s in space)
    assert len(recipe.selection_results()) == len(space) and recipe.early_hv is not None
    assert all(0 < r2 <= 1 for r2 in recipe.r2.values())  # LS init ran on the readable images
    err = capfd.readouterr().err
    assert {name: err.count(name) for name in bad} == dict.fromkeys(bad, 1), err
    assert err.count("unreadable file") == len(bad)  # one line each: LS, the early front, evaluation met them
