"""WebDataset tar shards (orchestrator.data): local folders, brace patterns, an S3-compatible server
on localhost (moto), per-rank sharding, unreadable samples, sizes from the index or the tar headers."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from orchestrator.data import (
    calibration_batches,
    dataset_num_classes,
    dataset_size,
    expand_braces,
    get_datasets,
    make_loader,
    shard_sets,
    write_info,
    write_shards,
)
from snnet._errors import SNNetError

CLASSES = 3


def _png(value: int, size: int = 12) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (value, value, value)).save(buf, format="PNG")
    return buf.getvalue()


def _samples(n: int, split: str, start: int = 0):
    # the label is recoverable from the key, so tests can check which samples arrived
    for i in range(start, start + n):
        yield f"{split}{i:04d}.png", _png(i % 250), i % CLASSES


def _write(root: Path, train: list[int], val: list[int], *, pattern: bool = False) -> None:
    """Shards of the given lengths: root/train/*.tar and root/val/*.tar, or root/data-train-NNNN.tar."""
    for split, lengths in (("train", train), ("val", val)):
        start = 0
        for i, n in enumerate(lengths):
            path = root / (f"data-{split}-{i:04d}.tar" if pattern else f"{split}/shard-{i:04d}.tar")
            write_shards(_samples(n, split, start), str(path), shard_size=n)
            start += n


def _keys(loader) -> list[int]:
    return [int(v) for _, y in loader for v in y]


@pytest.fixture(autouse=True)
def _fresh_cache():
    shard_sets.cache_clear()
    yield
    shard_sets.cache_clear()


def test_expand_braces():
    assert expand_braces("a-{0000..0002}.tar") == ["a-0000.tar", "a-0001.tar", "a-0002.tar"]
    assert expand_braces("{a,b}-{8..10}") == ["a-8", "a-9", "a-10", "b-8", "b-9", "b-10"]
    assert expand_braces("plain.tar") == ["plain.tar"]
    with pytest.raises(SNNetError, match="cannot expand"):
        expand_braces("x-{abc}.tar")


def test_folder_layout_sizes_labels_and_transforms(tmp_path: Path):
    _write(tmp_path, [5, 4, 3], [4, 3])
    spec = f"wds:{tmp_path}"
    assert (dataset_size(spec), dataset_size(spec, "val"), dataset_num_classes(spec)) == (12, 7, CLASSES)
    train, val = get_datasets(spec, image_size=16)
    assert (len(train), len(val)) == (12, 7) and train.num_classes == CLASSES
    x, y = next(iter(make_loader(val, 4, shuffle=False)))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.tolist() == [0, 1, 2, 0]
    labels = _keys(make_loader(val, 3, shuffle=False))
    assert labels == [i % CLASSES for i in range(7)]  # every sample once, in order
    assert len(make_loader(val, 3, shuffle=False)) == 3


def test_brace_pattern_finds_validation_shards_beside_it(tmp_path: Path):
    _write(tmp_path, [4, 4, 4, 4], [3, 3], pattern=True)
    spec = f"wds:{tmp_path}/data-train-{{0000..0003}}.tar"
    sets = shard_sets(spec)
    assert sets["train"].names == tuple(f"data-train-{i:04d}.tar" for i in range(4))
    assert sets["val"].names == ("data-val-0000.tar", "data-val-0001.tar")
    assert dataset_size(spec) == 16 and dataset_size(spec, "val") == 6
    # a subset of the shards is a smaller training set
    assert dataset_size(f"wds:{tmp_path}/data-train-{{0000..0001}}.tar") == 8
    with pytest.raises(SNNetError, match="2 of the 6 shard.*missing.*data-train-0004.tar"):
        shard_sets(f"wds:{tmp_path}/data-train-{{0000..0005}}.tar")


def test_training_ranks_read_disjoint_shards_in_equal_steps(tmp_path: Path):
    _write(tmp_path, [6, 5, 4, 3], [2])  # unequal shards
    train, _ = get_datasets(f"wds:{tmp_path}", image_size=16)
    world, batch = 2, 2
    steps, seen = [], []
    for rank in range(world):
        loader = make_loader(train, batch, rank=rank, world_size=world, shuffle=True, seed=0, drop_last=True,
                             shuffle_buffer=4)
        loader.sampler.set_epoch(0)
        batches = list(loader)
        steps.append(len(batches))
        assert len(loader) == len(batches) == (18 // world) // batch
        assert all(len(y) == batch for _, y in batches)
        seen.append(loader)
    assert steps[0] == steps[1] == 4
    # rank r reads shards r::w of the epoch's seeded shard order: the two ranks' shards are disjoint
    orders = [seen[r].sampler.stream._rank_shards() for r in range(world)]
    assert not set(orders[0]) & set(orders[1]) and sorted(orders[0] + orders[1]) == [0, 1, 2, 3]
    # a new epoch shuffles the shard assignment (same on every rank: one seed)
    seen[0].sampler.set_epoch(1)
    assert seen[0].sampler.stream._rank_shards() != orders[0] or seen[0].sampler.stream._rank_shards(1) != orders[0]
    # deterministic: the same seed and epoch give the same batches
    again = make_loader(train, batch, rank=1, world_size=world, shuffle=True, seed=0, drop_last=True, shuffle_buffer=4)
    a = [y.tolist() for _, y in again]
    b = [y.tolist() for _, y in make_loader(train, batch, rank=1, world_size=world, shuffle=True, seed=0,
                                               drop_last=True, shuffle_buffer=4)]
    assert a == b
    with pytest.raises(SNNetError, match="4 train shard.*for 5 data-parallel workers.*at least 5 shards"):
        make_loader(train, 1, rank=0, world_size=5, shuffle=True, drop_last=True)


def test_evaluation_reads_every_sample_once_over_ranks_and_loader_workers(tmp_path: Path):
    _write(tmp_path, [2], [5, 4, 3])
    _, val = get_datasets(f"wds:{tmp_path}", image_size=16)
    labels = []
    for rank in range(2):
        loader = make_loader(val, 2, rank=rank, world_size=2, shuffle=False, pad=False)
        got = _keys(loader)
        assert len(got) == sum(val.shards.lengths[i] for i in range(rank, 3, 2))
        labels += got
    assert sorted(labels) == sorted(i % CLASSES for i in range(12))
    # two loader processes on one rank: still every sample once, and len() is exact
    loader = make_loader(val, 2, shuffle=False, num_workers=2)
    assert sorted(_keys(loader)) == sorted(i % CLASSES for i in range(12))
    assert len(loader) == len(list(loader))


def test_unreadable_samples_are_dropped_and_reported_once(tmp_path: Path):
    samples = list(_samples(4, "val"))
    samples[1] = ("val0001.png", b"not an image", 1)
    samples[3] = ("val0003.jpg", _png(3)[:30], 0)  # truncated
    write_shards(iter(samples), str(tmp_path / "val" / "s-%04d.tar"), shard_size=10)
    write_shards(_samples(2, "train"), str(tmp_path / "train" / "s-%04d.tar"), shard_size=10)
    _, val = get_datasets(f"wds:{tmp_path}", image_size=16)
    lines: list[str] = []
    loader = make_loader(val, 4, shuffle=False, on_skip=lines.append)
    for _ in range(2):
        assert _keys(loader) == [0, 2]  # never replaced by a neighbour
    # train/ and val/ may both hold an s-0000.tar: the shard is named with its folder
    assert lines == ["skipped 2 unreadable files: val/s-0000.tar:val0001.png, val/s-0000.tar:val0003.jpg"]


def test_index_file_gives_sizes_without_a_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import orchestrator.data.shards as data

    _write(tmp_path, [3, 3], [2])
    spec = f"wds:{tmp_path}"
    written = write_info(spec)
    assert sorted(Path(p).parent.name for p in written) == ["train", "val"]
    info = json.loads((tmp_path / "train" / "_info.json").read_text())
    assert info["splits"]["train"]["shard_lengths"] == [3, 3] and info["num_classes"] == CLASSES

    def no_scan(*args, **kwargs):
        raise AssertionError("a shard was scanned although the index lists it")

    monkeypatch.setattr(data, "scan_shard", no_scan)
    shard_sets.cache_clear()
    assert (dataset_size(spec), dataset_size(spec, "val"), dataset_num_classes(spec)) == (6, 2, CLASSES)


def test_calibration_batches_read_the_first_samples(tmp_path: Path):
    _write(tmp_path, [4, 4], [1])
    train, _ = get_datasets(f"wds:{tmp_path}", image_size=16)
    ranks = [[b.shape[0] for b in calibration_batches(train, 5, 2, rank=r, world=2)] for r in range(2)]
    assert ranks == [[2, 1], [2]]  # samples 0, 2, 4 and 1, 3


@pytest.mark.parametrize(
    "layout, match",
    [
        ("empty", "holds no .tar shards"),
        ("no_val", "no validation shards beside them"),
        ("no_train_word", "has no 'train' in its name"),
    ],
)
def test_layout_errors(tmp_path: Path, layout: str, match: str):
    if layout == "empty":
        spec = f"wds:{tmp_path}"
    elif layout == "no_val":
        _write(tmp_path, [2], [], pattern=True)
        spec = f"wds:{tmp_path}/data-train-{{0000..0000}}.tar"
    else:
        write_shards(_samples(2, "x"), str(tmp_path / "shard-%04d.tar"), shard_size=2)
        spec = f"wds:{tmp_path}/shard-{{0000..0000}}.tar"
    with pytest.raises(SNNetError, match=match):
        get_datasets(spec)


# -- an S3-compatible server on localhost ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_server(monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("moto.server", reason="moto[server] is in the test extra")
    boto3 = pytest.importorskip("boto3")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("moto's S3 server did not start")
            time.sleep(0.2)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    try:
        yield client, port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_shards_in_object_storage(tmp_path: Path, s3_server, monkeypatch: pytest.MonkeyPatch):
    import orchestrator.data.shards as data

    client, port = s3_server
    client.create_bucket(Bucket="imagenet")
    _write(tmp_path, [4, 3, 3, 2], [3, 2], pattern=True)
    for path in sorted(tmp_path.glob("*.tar")):
        client.upload_file(str(path), "imagenet", f"shards/{path.name}")
    query = f"?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    spec = f"wds:s3://imagenet/shards/data-train-{{0000..0003}}.tar{query}"
    assert (dataset_size(spec), dataset_size(spec, "val"), dataset_num_classes(spec)) == (12, 5, CLASSES)
    train, val = get_datasets(spec, image_size=16)
    assert sorted(_keys(make_loader(val, 2, shuffle=False))) == sorted(i % CLASSES for i in range(5))
    # A small shuffle buffer: the default (2048 samples) would cycle these 6 samples per rank ~340 times
    # through S3 to fill it; the batch count asserted below does not depend on it.
    per_rank = [list(make_loader(train, 3, rank=r, world_size=2, shuffle=True, seed=1, drop_last=True,
                                 shuffle_buffer=4)) for r in range(2)]
    assert [len(b) for b in per_rank] == [2, 2]
    # the index beside the shards in the bucket is used instead of reading the tar headers
    write_info(f"wds:{tmp_path}/data-train-{{0000..0003}}.tar")
    client.upload_file(str(tmp_path / "_info.json"), "imagenet", "shards/_info.json")
    monkeypatch.setattr(data, "scan_shard", lambda *a: pytest.fail("scanned although indexed"))
    shard_sets.cache_clear()
    assert (dataset_size(spec), dataset_size(spec, "val"), dataset_num_classes(spec)) == (12, 5, CLASSES)
    with pytest.raises(SNNetError, match="missing"):
        shard_sets(f"wds:s3://imagenet/shards/data-train-{{0000..0009}}.tar{query}")


def test_cli_shards_a_folder_and_indexes_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from PIL import Image

    from orchestrator.data.__main__ import main

    for split, n in (("train", 5), ("val", 2)):
        for cls in ("a", "b"):
            d = tmp_path / "img" / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (i, 0, 0)).save(d / f"{i}.png")
    assert main(["shard", str(tmp_path / "img"), str(tmp_path / "wds"), "--shard-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "train: 3 shard(s)" in out and "train 10 samples in 3 shard(s), val 4 in 1, 2 classes" in out
    _, val = get_datasets(f"wds:{tmp_path / 'wds'}", image_size=8)
    assert _keys(make_loader(val, 4, shuffle=False)) == [0, 0, 1, 1]
    assert main(["index", str(tmp_path / "nowds")]) == 2
    assert "error: " in capsys.readouterr().err


def test_transform_options_are_one_object_for_folders_and_shards(tmp_path: Path):
    from PIL import Image

    from orchestrator.data import TransformOptions
    from orchestrator.train.config import TrainConfig

    _write(tmp_path / "wds", [2], [2])
    for split in ("train", "val"):
        (tmp_path / "img" / split / "a").mkdir(parents=True)
        Image.new("L", (12, 12), 7).save(tmp_path / "img" / split / "a" / "0.png")
    options = TransformOptions.from_config(TrainConfig(auto_augment="rand-m9-mstd0.5", random_erasing=0.25))
    assert (options.auto_augment, options.re_prob, options.input_img_mode) == ("rand-m9-mstd0.5", 0.25, "RGB")
    grey = TransformOptions.of(options, input_img_mode="L", mean=[0.5], std=[0.25])
    assert grey.mean == (0.5,) and grey.auto_augment == "rand-m9-mstd0.5" and options.input_img_mode == "RGB"
    for spec in (f"wds:{tmp_path / 'wds'}", str(tmp_path / "img")):
        by_object = get_datasets(spec, 16, grey)
        by_name = get_datasets(spec, 16, input_img_mode="L", mean=(0.5,), std=(0.25,), auto_augment="rand-m9-mstd0.5",
                               re_prob=0.25)
        for a, b in zip(by_object, by_name):
            assert a.input_img_mode == b.input_img_mode == "L" and repr(a.transform) == repr(b.transform)
        names = [type(t).__name__ for t in by_object[0].transform.transforms]
        assert "RandAugment" in names and "RandomErasing" in names
        x, _ = next(iter(make_loader(by_object[1], 1, shuffle=False)))
        assert x.shape == (1, 1, 16, 16)  # one grey channel, normalised with the given mean and std
    with pytest.raises(TypeError):
        get_datasets(str(tmp_path / "img"), 16, no_such_option=1)


def test_the_shard_loaders_sampler_is_a_public_endless_sampler(tmp_path: Path):
    from itertools import islice

    from torch.utils.data import Sampler

    _write(tmp_path, [3, 3], [2])
    train, _ = get_datasets(f"wds:{tmp_path}", image_size=16)
    loader = make_loader(train, 2, shuffle=True, seed=0, drop_last=True, num_workers=2)
    sampler = loader.sampler
    assert isinstance(sampler, Sampler)
    assert all(c.__module__ in ("orchestrator.data", "typing", "builtins") or not c.__name__.startswith("_")
               for c in type(sampler).__mro__[1:])  # no private torch base
    assert list(islice(iter(sampler), 1000)) == [None] * 1000  # never runs out: the stream ends the epoch
    sampler.set_epoch(4)
    assert sampler.stream.epoch == 4
    first = [y.tolist() for _, y in loader]
    assert len(first) == len(loader) == 3 and first == [y.tolist() for _, y in loader]  # two workers, same epoch


def test_the_shuffle_buffer_holds_encoded_records_and_no_more_than_an_epoch(tmp_path: Path, monkeypatch):
    """Only the samples a training epoch batches are decoded (the buffer holds encoded records, not
    transformed images), and a short epoch reads its stream about twice, not until a 2048-sample
    buffer is full."""
    _write(tmp_path, [3, 3], [2])
    train, _ = get_datasets(f"wds:{tmp_path}", image_size=16)
    decoded, read = [], []
    decode, read_shard = type(train).decode, type(train).read_shard
    monkeypatch.setattr(type(train), "decode", lambda self, record: decoded.append(record[1]) or decode(self, record))
    monkeypatch.setattr(type(train), "read_shard",
                        lambda self, *a, **k: (read.append(r[1]) or r for r in read_shard(self, *a, **k)))
    loader = make_loader(train, 2, shuffle=True, seed=0, drop_last=True)  # the default 2048-sample buffer
    batches = [y for _, y in loader]
    assert [len(y) for y in batches] == [2, 2, 2]
    assert len(decoded) == 6 and sorted(int(v) for y in batches for v in y) == sorted(_keys_of(decoded))
    assert 6 < len(read) <= 2 * 6 + 1  # the 6-sample buffer, then one record per sample it lets out


def _keys_of(keys: list[str]) -> list[int]:
    return [int(k.removeprefix("train")) % CLASSES for k in keys]
