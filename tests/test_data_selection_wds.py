"""The selection split of WebDataset shards (orchestrator.data, issue 12): a seeded hash of each
sample's key decides, so the split is the same on every read, rank and loader worker, disjoint from
training, and close to the asked fraction. Shards are written by the test; no Ray."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from orchestrator.data import (
    KeySplit,
    WebDatasetShards,
    get_datasets,
    make_loader,
    shard_sets,
    split_training_set,
    write_shards,
)

N = 400  # training samples, in 8 shards of 50


def _png(value: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (4, 4), value).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def shards(tmp_path: Path) -> str:
    """``wds:`` shards whose label is the sample's number, so a batch tells which samples came."""
    shard_sets.cache_clear()
    image = _png(128)
    write_shards(((f"s{i:05d}.png", image, i) for i in range(N)), str(tmp_path / "train" / "t-%04d.tar"), 50)
    write_shards(((f"v{i:05d}.png", image, i) for i in range(10)), str(tmp_path / "val" / "v-%04d.tar"), 10)
    yield f"wds:{tmp_path}"
    shard_sets.cache_clear()


def _numbers(dataset, batch: int = 16, **loader) -> list[int]:
    return [int(v) for _, y in make_loader(dataset, batch, shuffle=False, on_skip=None, **loader) for v in y]


def _split(spec: str, fraction: float = 0.1, seed: int = 0):
    train, val = get_datasets(spec, image_size=4, input_img_mode="L", mean=(0.5,), std=(0.5,))
    return split_training_set(train, selection_fraction=fraction, seed=seed, eval_transform=val.transform), val


def test_selection_and_training_are_disjoint_by_key_and_cover_the_shards(shards):
    split, val = _split(shards)
    assert isinstance(split.selection, WebDatasetShards) and split.note == ""
    chosen, trained = _numbers(split.selection), _numbers(split.train)
    assert not set(chosen) & set(trained)
    assert sorted(chosen + trained) == list(range(N))  # every sample in exactly one of the two
    assert split.selection.transform is val.transform and split.train.transform is not val.transform
    # the same rule decides from the key alone: s00007 is held out iff the hash says so
    rule = KeySplit(0.1, 0)
    assert sorted(chosen) == [i for i in range(N) if rule.held_out(f"s{i:05d}")]


def test_the_fraction_is_close_and_the_seed_changes_the_split(shards):
    split, _ = _split(shards, fraction=0.1, seed=0)
    chosen = _numbers(split.selection)
    assert 0.05 * N <= len(chosen) <= 0.15 * N  # binomial(400, 0.1): sd 6, bounds at about 3.3 sd
    assert len(split.selection) == 40 and len(split.train) == N - 40  # expected sizes, no shard read
    other = _numbers(_split(shards, fraction=0.1, seed=1)[0].selection)
    assert set(other) != set(chosen)
    wider = _numbers(_split(shards, fraction=0.3, seed=0)[0].selection)
    assert set(chosen) <= set(wider)  # a larger fraction only adds samples (one hash, one threshold)


def test_the_split_is_the_same_on_every_read_rank_and_loader_worker(shards):
    split, _ = _split(shards)
    once = _numbers(split.selection)
    assert _numbers(split.selection) == once  # read twice
    assert [int(item[1]) for item in split.selection] == once  # iterated directly (the early front)
    assert _numbers(_split(shards)[0].selection) == once  # split anew, as another run or node would
    two_workers = _numbers(split.selection, num_workers=2)
    assert sorted(two_workers) == sorted(once)
    per_rank = [_numbers(split.selection, rank=r, world_size=3, pad=False) for r in range(3)]
    assert sorted(n for part in per_rank for n in part) == sorted(once)
    held = set(once)
    for rank in range(2):  # training ranks: full batches, never a held-out sample
        loader = make_loader(split.train, 8, rank=rank, world_size=2, shuffle=True, seed=3, drop_last=True,
                             shuffle_buffer=16, num_workers=2 if rank else 0, on_skip=None)
        got = [int(v) for _, y in loader for v in y]
        assert len(got) == len(loader) * 8 == ((N - 40) // 2 // 8) * 8
        assert not held & set(got)


def test_fraction_zero_holds_nothing_out(shards):
    train, _ = get_datasets(shards, image_size=4, input_img_mode="L", mean=(0.5,), std=(0.5,))
    split = split_training_set(train, selection_fraction=0.0, seed=0)
    assert split.train is train and split.selection is None and split.note == ""
    assert len(_numbers(split.train)) == N
    nothing = KeySplit(0.0, 0)
    assert not any(nothing.held_out(f"s{i:05d}") for i in range(N))


def test_data_fraction_keeps_a_stable_part_of_the_training_keys_apart_from_the_selection(shards):
    """``data_fraction`` on shards: an independent key split of what training keeps, about the
    fraction, the same on every read, growing with the fraction, never a held-out sample."""
    train, _ = get_datasets(shards, image_size=4, input_img_mode="L", mean=(0.5,), std=(0.5,))
    full = set(_numbers(split_training_set(train, selection_fraction=0.1, seed=0).train))
    held = set(_numbers(split_training_set(train, selection_fraction=0.1, seed=0).selection))
    half = split_training_set(train, selection_fraction=0.1, data_fraction=0.5, seed=0)
    kept = _numbers(half.train)
    assert half.note == "" and len(kept) == len(set(kept))
    assert set(kept) < full and not set(kept) & held and set(_numbers(half.selection)) == held
    assert abs(len(kept) - 0.5 * len(full)) <= 40 and len(half.train) == round(0.5 * (N - round(0.1 * N)))
    assert _numbers(split_training_set(train, selection_fraction=0.1, data_fraction=0.5, seed=0).train) == kept
    more = set(_numbers(split_training_set(train, selection_fraction=0.1, data_fraction=0.8, seed=0).train))
    assert set(kept) < more < full
    alone = split_training_set(train, selection_fraction=0.0, data_fraction=0.5, seed=0)
    assert alone.selection is None and abs(len(_numbers(alone.train)) - N // 2) <= 40


def test_the_recipe_scores_stitches_on_the_held_out_shard_samples(tmp_path: Path):
    """The training recipe takes the shards' split through the same interface as a folder's."""
    from orchestrator.data import DEMO_MEAN, DEMO_STD
    from orchestrator.data import demo_anchors as demo  # noqa: F401 - registers the demo anchors with timm
    from orchestrator.train.config import TrainConfig
    from orchestrator.train.evaluate import evaluate_stitch
    from orchestrator.train.recipe import SupernetRecipe
    from orchestrator.train.state import Worker
    from snnet import AnchorSpec, StitchSpace, create_anchor, profile_anchor

    shard_sets.cache_clear()
    images = [_png(25 * c) for c in range(10)]
    for split, n in (("train", 200), ("val", 20)):
        write_shards(((f"{split}{i:04d}.png", images[i % 10], i % 10) for i in range(n)),
                     str(tmp_path / split / f"{split}-%04d.tar"), 50)
    spec = f"wds:{tmp_path}"
    train, val = get_datasets(spec, image_size=16, input_img_mode="L", mean=DEMO_MEAN, std=DEMO_STD)
    anchors = [AnchorSpec(n) for n in ("snnet_demo_vit_tiny", "snnet_demo_vit_small")]
    config = TrainConfig(anchors=anchors, dataset=spec, workers=1, init="kaiming", batch_size=16, eval_batch_size=64,
                         selection_fraction=0.1, early_stitches=1, early_images=4, seed=5)
    space = StitchSpace([profile_anchor(create_anchor(a)) for a in anchors], config.space_config())
    recipe = SupernetRecipe(config, space, Worker(), datasets=(train, val))
    recipe.setup()
    held = {f"train{i:04d}" for i in range(200) if KeySplit(0.1, 5).held_out(f"train{i:04d}")}
    assert recipe.selection_ds.held_out and recipe.selection_ds.transform is val.transform
    assert len(recipe.selection_ds) == 20 and len(recipe.train_ds) == 180
    assert recipe.steps_per_epoch == 180 // 16
    assert len(recipe.early_loader.dataset) == 4  # the first held-out samples, in shard order
    first = sorted(held)[:4]
    assert [int(v) for _, y in recipe.early_loader for v in y] == [int(k[5:]) % 10 for k in first]
    stitch = next(iter(space)).stitch_id
    assert evaluate_stitch(recipe.net, stitch, recipe.selection_loader, "cpu", recipe.autocast)[2] == len(held)
