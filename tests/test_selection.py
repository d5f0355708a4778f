"""Selection apart from report, the early front and the fidelity knobs in the training recipe
(issue 12), without Ray: one CPU worker in this process, randomly initialised demo anchors.

What must hold: the selection split is disjoint from what is trained and the same on every call;
``data_fraction`` shrinks the steps of an epoch exactly as computed from the class counts; every
epoch's report carries ``epoch`` and ``early_hv`` (the hypervolume of the fixed early subset,
computed with the sweep's own :func:`orchestrator.catalog.objectives.hypervolume`); the final report carries
both splits, and the catalog rows get ``top1_selection``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Subset

from orchestrator.catalog.objectives import hypervolume
from orchestrator.data import dataset_labels, get_datasets, split_training_set
from orchestrator.train.config import TrainConfig
from orchestrator.train.launch import catalog_rows
from orchestrator.train.recipe import SupernetRecipe
from orchestrator.train.state import Worker
from snnet import AnchorSpec, SNNetError, StitchSpace, create_anchor, profile_anchor

ANCHORS = ["snnet_demo_vit_tiny", "snnet_demo_vit_small"]


@pytest.fixture(scope="module")
def demo():
    return get_datasets("demo")


@pytest.fixture(scope="module")
def space():
    from orchestrator.data import demo_anchors as _  # noqa: F401 - registers the demo anchors with timm

    config = TrainConfig(anchors=[AnchorSpec(n) for n in ANCHORS])
    return StitchSpace([profile_anchor(create_anchor(AnchorSpec(n))) for n in ANCHORS], config.space_config())


def _config(**changes):
    base = dict(anchors=[AnchorSpec(n) for n in ANCHORS], workers=1, init="kaiming", eval_batch_size=256,
                eval_checkpoint_seconds=3600.0, seed=3)
    return TrainConfig(**{**base, **changes})


def test_the_selection_split_is_disjoint_from_training_and_stable(demo):
    train, _ = demo
    first = split_training_set(train, selection_fraction=0.02, seed=0)
    again = split_training_set(train, selection_fraction=0.02, seed=0)
    trained, held_out = set(first.train.indices), set(first.selection.indices)
    assert not trained & held_out and len(trained | held_out) == len(train) == 1437
    assert len(held_out) == 30  # 3 of each digit's 143-146 training images (round(2%))
    assert np.bincount(dataset_labels(first.selection)).tolist() == [3] * 10
    assert first.train.indices == again.train.indices and first.selection.indices == again.selection.indices
    other = split_training_set(train, selection_fraction=0.02, seed=1)
    assert set(other.selection.indices) != held_out  # seeded by the run's seed
    # the selection images are the training images themselves (the demo's tensors have no transform)
    i = first.selection.indices[0]
    assert torch.equal(first.selection[0][0], train[i][0])
    # off: the training set itself comes back, nothing held out
    off = split_training_set(train, selection_fraction=0.0, seed=0)
    assert off.train is train and off.selection is None and off.note == ""


def test_a_folder_selection_reads_the_training_images_with_the_evaluation_transform(tmp_path):
    from PIL import Image

    for split, n in (("train", 10), ("val", 2)):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (20, 20), (10 * i, 0, 0)).save(tmp_path / split / cls / f"{i}.png")
    train, val = get_datasets(str(tmp_path), image_size=16)
    split = split_training_set(train, selection_fraction=0.2, seed=0, eval_transform=val.transform)
    assert len(split.selection) == 4 and len(split.train) == 16
    assert split.selection.dataset.transform is val.transform and train.transform is not val.transform
    assert not set(split.train.indices) & set(split.selection.indices)


def test_data_fraction_shrinks_the_steps_of_an_epoch_exactly(demo, space):
    train, val = demo
    config = _config(selection_fraction=0.05, data_fraction=0.3, batch_size=16)
    recipe = SupernetRecipe(config, space, Worker(rank=0, world=2), datasets=(train, val))
    recipe.setup()
    # by hand: each class holds round(5%) out (at least one), then keeps round(30%) of the rest (at least one)
    counts = np.bincount(dataset_labels(train))
    held = [max(1, round(0.05 * c)) for c in counts]
    kept = [max(1, round(0.3 * (c - h))) for c, h in zip(counts, held)]
    assert len(recipe.selection_ds) == sum(held) and len(recipe.train_ds) == sum(kept)
    assert recipe.steps_per_epoch == (sum(kept) // 2) // 16 == 12  # DDP shard of rank 0 of 2, full batches
    assert not set(recipe.train_ds.indices) & set(recipe.selection_ds.indices)


def test_the_training_settings_take_the_new_knobs():
    config = TrainConfig()
    assert (config.selection_fraction, config.early_stitches, config.early_images, config.data_fraction,
            config.hv_flops_ref) == (0.02, 8, 512, 1.0, None)
    for bad, message in ((dict(data_fraction=0), "data_fraction must lie in (0, 1]"),
                         (dict(data_fraction=1.5), "data_fraction must lie in (0, 1]"),
                         (dict(selection_fraction=1.0), "selection_fraction must lie in [0, 1)"),
                         (dict(early_stitches=-1), "early_stitches must be an integer >= 0")):
        with pytest.raises(SNNetError, match=message.replace("(", r"\(").replace(")", r"\)")
                           .replace("[", r"\[")):
            TrainConfig(**bad)
    # a search space's training: section is derived from these fields (so are --set on train and sweep)
    from search_spaces.schema import TrainingSection

    assert ({"selection_fraction", "early_stitches", "early_images", "data_fraction"}
            <= set(TrainingSection.model_fields))
    from orchestrator.train.__main__ import config_from_args, parse_args

    config = config_from_args(parse_args(["--set", "selection_fraction=0.1", "--set", "training.early_stitches=4"]))
    assert (config.selection_fraction, config.early_stitches) == (0.1, 4)
    config = config_from_args(parse_args(["--space", "demo", "--set", "training.data_fraction=0.25",
                                          "--set", "training.early_images=64"]))
    assert (config.data_fraction, config.early_images) == (0.25, 64)


class Reports:
    def __init__(self):
        self.calls = []

    def __call__(self, metrics, state):
        self.calls.append(metrics)


def test_every_epoch_reports_early_hv_and_the_end_reports_both_splits(demo, space):
    train, val = demo
    config = _config(epochs=2, batch_size=128, selection_fraction=0.1, early_stitches=3, early_images=16)
    reports = Reports()
    torch.manual_seed(1)
    recipe = SupernetRecipe(config, space, Worker(report=reports), datasets=(Subset(train, range(300)),
                                                                               Subset(val, range(60))))
    results = recipe.run()
    held = sum(max(1, round(0.1 * c)) for c in np.bincount(dataset_labels(Subset(train, range(300)))))
    assert held == 28 and len(recipe.selection_ds) == 28 and len(recipe.train_ds) == 272
    assert recipe.steps_per_epoch == 272 // 128 == 2
    anchors = [s.stitch_id for s in space if s.is_anchor]
    assert set(anchors) < set(recipe.early_ids) and len(recipe.early_ids) == len(anchors) + 3
    epochs = [m for m in reports.calls if m["phase"] == "train" and "epoch_seconds" in m]
    assert [m["epoch"] for m in epochs] == [1, 2] and all(type(m["epoch"]) is int for m in epochs)
    assert all(isinstance(m["early_hv"], float) and 0.0 <= m["early_hv"] <= 1.0 for m in epochs)
    # the same function as the sweep's objective, on the same fixed stitches and images
    flops = {s.stitch_id: s.flops for s in space}
    scores = recipe.early_front()
    assert sorted(scores) == recipe.early_ids
    ref = max(p.flops for p in space.profiles)
    assert epochs[-1]["early_hv"] == hypervolume([(flops[i], t) for i, t in scores.items()], ref)
    final = reports.calls[-1]
    assert final["phase"] == "eval" and final["early_hv"] == epochs[-1]["early_hv"]
    assert sorted(map(int, final["results_selection"])) == sorted(map(int, final["results"])) == sorted(flops)
    assert {int(k): v for k, v in final["results"].items()} == results  # [top1, top5] on the evaluation split
    assert all(round(t * 28 / 100, 6).is_integer() for t in final["results_selection"].values())  # of 28 images
    assert final["hv_selection"] == hypervolume([(flops[int(k)], t) for k, t in final["results_selection"].items()],
                                                ref)
    assert (final["train_images"], final["selection_images"], final["flops_ref"]) == (272, 28, ref)
    rows = catalog_rows(config, space, final["results"], final["r2"], "", selection=final["results_selection"])
    assert [r["top1_selection"] for r in rows] == [final["results_selection"][str(r["stitch_id"])] for r in rows]
    assert [r["top1"] for r in rows] == [final["results"][str(r["stitch_id"])][0] for r in rows]


def test_without_a_selection_split_the_early_front_scores_the_evaluation_split(demo, space):
    train, val = demo
    config = _config(selection_fraction=0.0, early_stitches=2, early_images=50, hv_flops_ref=1e9)
    recipe = SupernetRecipe(config, space, Worker(), datasets=(Subset(train, range(200)), Subset(val, range(40))))
    recipe.setup()
    assert recipe.selection_ds is None and recipe.selection_loader is None and len(recipe.train_ds) == 200
    assert len(recipe.early_loader.dataset) == 40  # every evaluation image (fewer than early_images)
    scores = recipe.early_front()
    flops = {s.stitch_id: s.flops for s in space}
    assert recipe.early_hv == hypervolume([(flops[i], t) for i, t in scores.items()], 1e9)
    recipe.evaluated = {s.stitch_id: [50.0, 90.0] for s in space}
    final = recipe.final_metrics()
    assert final["results_selection"] == {} and final["hv_selection"] is None and final["selection_images"] == 0
    rows = catalog_rows(config, space, final["results"], {}, "", selection=final["results_selection"])
    assert all(r["top1_selection"] is None and r["top1"] == 50.0 for r in rows)


def test_streamed_shards_are_split_by_key(tmp_path):
    import io

    from PIL import Image

    from orchestrator.data import KeySplit, write_shards

    def samples(n):
        for i in range(n):
            buffer = io.BytesIO()
            Image.new("RGB", (12, 12), (i, 0, 0)).save(buffer, format="PNG")
            yield f"{i:06d}.png", buffer.getvalue(), i % 2

    for split in ("train", "val"):
        write_shards(samples(6), str(tmp_path / split / f"{split}-%04d.tar"), shard_size=6)
    train, val = get_datasets(f"wds:{tmp_path}", image_size=8)
    split = split_training_set(train, selection_fraction=0.02, seed=0)
    assert split.note == "" and not split.train.held_out and split.selection.held_out
    assert split.selection.keys == KeySplit(0.02, 0)
    assert split_training_set(train, selection_fraction=0.0).note == ""
