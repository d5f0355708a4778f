"""Loaders: a dataset as this data-parallel rank's batches, with unreadable images left out.

:func:`make_loader` shards a map-style dataset (the demo, a folder) over data-parallel workers
with :class:`~torch.utils.data.distributed.DistributedSampler` (or timm's repeated-augmentation
sampler), given ``rank`` and ``world_size`` explicitly so it works without an initialised process
group; for :class:`~orchestrator.data.shards.WebDatasetShards` each rank streams its own shards
(:class:`_RankStream`). Call ``loader.sampler.set_epoch(epoch)`` (:func:`set_epoch`) before each
epoch for a fresh, reproducible shuffle. :func:`calibration_batches` gives the fixed images of the
least-squares initialisation. Every reader drops unreadable images and names them once
(:mod:`orchestrator.data.unreadable`).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, get_worker_info
from torch.utils.data.distributed import DistributedSampler

from orchestrator.data.shards import WebDatasetShards
from orchestrator.data.unreadable import SkipLog, Unreadable, collate_readable, skipped_message, warn_on_stderr
from snnet import SNNetError

# timm's repeated-augmentation sampler is imported where it is chosen: importing orchestrator.data costs
# torch's import only.

__all__ = ["REPEAT_ROUND", "Loader", "make_loader", "set_epoch", "calibration_batches"]

#: Repeated augmentation keeps ``len(dataset)`` rounded down to a multiple of this per epoch (DeiT's).
REPEAT_ROUND = 256


class _RankStream(IterableDataset):
    """This rank's batches of a :class:`WebDatasetShards` (``(x, y, skipped names)`` per batch).

    ``fill=True`` (training): every rank yields exactly ``(size // world) // batch_size`` full
    batches per epoch, so DDP ranks stay in step whatever the shards' lengths: a rank whose
    shards hold fewer samples starts its shards over (reshuffled), one with more stops early.
    ``fill=False`` (evaluation): the rank's shards are read once, every sample exactly once.
    Loader workers split a rank's shards by sample position, counting every sample of them, so a
    keyed stream (:class:`~orchestrator.data.shards.KeySplit`) loses or repeats none; its ``len()``
    is then an upper bound.
    """

    def __init__(self, data: WebDatasetShards, batch_size: int, rank: int, world: int, *, fill: bool,
                 shuffle: bool, seed: int, shuffle_buffer: int):
        self.data, self.batch_size, self.rank, self.world = data, batch_size, rank, world
        self.fill, self.shuffle, self.seed, self.shuffle_buffer = fill, shuffle, seed, shuffle_buffer
        self.epoch = 0
        self.num_workers = 1  # set by make_loader
        names = data.shards.names
        if fill and len(names) < world:
            raise SNNetError(
                f"{data.shards.spec!r} has {len(names)} {data.split} shard(s) for {world} data-parallel workers; "
                f"every worker reads its own shards (rank r of {world} reads shards r::{world}): write at least "
                f"{world} shards (better: many per worker)."
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rank_shards(self, cycle: int = 0) -> list[int]:
        order = list(range(len(self.data.shards.names)))
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 1_009 + cycle)
            order = torch.randperm(len(order), generator=g).tolist()
        return order[self.rank :: self.world]

    def _worker_part(self, shards: list[int], worker: int, workers: int) -> tuple[list[int], int, int]:
        """``(shards, sample stride, sample offset)`` of one loader worker within this rank's shards."""
        if len(shards) >= workers:
            return shards[worker::workers], 1, 0
        return shards, workers, worker

    def _worker_samples(self, shards: list[int], stride: int, offset: int) -> int:
        lengths = self.data.shards.lengths
        if stride == 1:
            return sum(lengths[i] for i in shards)
        total = sum(lengths[i] for i in shards)
        return len(range(offset, total, stride))

    def _batches_per_worker(self, workers: int) -> list[int]:
        if self.fill:  # from len(): a keyed stream's expected count (the stream cycles if a rank runs short)
            batches = (len(self.data) // self.world) // self.batch_size
            return [batches // workers + (1 if w < batches % workers else 0) for w in range(workers)]
        shards = self._rank_shards()
        return [math.ceil(self._worker_samples(*self._worker_part(shards, w, workers)) / self.batch_size)
                for w in range(workers)]

    def __len__(self) -> int:
        return sum(self._batches_per_worker(max(1, self.num_workers)))

    def _samples(self, shards: list[int], stride: int, offset: int, fs: Any) -> Iterator[Any]:
        names = self.data.shards.names
        position = 0
        for i in shards:
            start = position
            keep = None if stride == 1 else (lambda j, s=start: (s + j) % stride == offset)
            yield from self.data.read_shard(fs, names[i], keep)
            position += self.data.shards.lengths[i]

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        wanted = self._batches_per_worker(workers)[worker]
        fs = self.data.shards.filesystem()  # opened in this process: S3 clients do not survive a fork
        rng = random.Random(f"{self.seed}/{self.epoch}/{self.rank}/{worker}")

        def stream() -> Iterator[Any]:
            cycle = 0
            while True:
                part = self._worker_part(self._rank_shards(cycle), worker, workers)
                produced = False
                for sample in self._samples(*part, fs):
                    produced = True
                    yield sample
                if not self.fill:
                    return
                if not produced:
                    raise SNNetError(f"the {self.data.split} shards of {self.data.shards.spec!r} given to rank "
                                     f"{self.rank} hold no samples.")
                cycle += 1

        source = stream()
        # The buffer holds encoded records (decoded after it, as each leaves): a few hundred KiB of
        # transformed pixels each would take GiBs per loader worker. In training it is no larger than
        # this epoch's samples, so a short epoch does not read its stream over and over to fill it.
        buffer = min(self.shuffle_buffer, wanted * self.batch_size) if self.fill else self.shuffle_buffer
        if self.shuffle and buffer > 1:
            source = _shuffled(source, buffer, rng)
        done = 0
        batch: list[Any] = []
        for record in source:
            if done >= wanted:
                break
            batch.append(self.data.decode(record))
            if len(batch) == self.batch_size:
                yield collate_readable(batch)
                batch, done = [], done + 1
        if batch and done < wanted:
            yield collate_readable(batch)


def _shuffled(source: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    buffer: list[Any] = []
    for item in source:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = rng.randrange(size)
        buffer[j], item = item, buffer[j]
        yield item
    rng.shuffle(buffer)
    yield from buffer


class _UnpaddedDistributedSampler(DistributedSampler):
    """A :class:`DistributedSampler` whose shards are ``indices[rank::world_size]``, never padded.

    :class:`DistributedSampler` repeats samples so that every rank gets the same count, which
    counts them twice in an evaluation. This one keeps every sample exactly once; shard
    lengths differ by at most one, which is safe for forward-only evaluation (no per-batch
    collective) but not for DDP training.
    """

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)  # type: ignore[arg-type]
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            indices = torch.randperm(n, generator=g).tolist()
        else:
            indices = list(range(n))
        return iter(indices[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))  # type: ignore[arg-type]


class _EpochSampler(Sampler[None]):
    """``loader.sampler`` of a shard loader: ``set_epoch`` reshuffles the shards, as for a map dataset.

    For an :class:`IterableDataset` the :class:`DataLoader` draws one "index" from its sampler per
    item it fetches (``batch_size=None``: per batch the stream makes) and the stream ignores it, so
    the sampler must never run out: like torch's own default for iterable datasets, it yields
    ``None`` forever, and the stream alone decides when an epoch ends.
    """

    def __init__(self, stream: _RankStream):
        super().__init__()
        self.stream = stream

    def __iter__(self) -> Iterator[None]:
        return itertools.repeat(None)

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)


class Loader(DataLoader):
    """A :class:`DataLoader` that yields ``(x, y)`` of the readable samples only.

    Unreadable files are dropped (never replaced by a neighbour) and collected in
    ``loader.skipped``; after each pass the ones not seen before go to ``skip_log`` (a
    :class:`SkipLog`, possibly shared with other readers), which names those no reader named
    before in one line (``"skipped 2 unreadable files: val/a/1.jpg, val/b/2.jpg"``). A batch
    with no readable sample is left out when evaluating; in training (``drop_last``) it is an
    error, since DDP ranks must take the same steps.
    """

    def __init__(self, *args: Any, on_skip: Callable[[str], None] | None = warn_on_stderr, strict_batches: bool = False,
                 skip_log: SkipLog | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.skipped: dict[str, None] = {}
        self.skip_log = _skip_log(on_skip, skip_log)
        self.strict_batches = strict_batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # type: ignore[override]
        new: list[str] = []
        try:
            for x, y, skipped in super().__iter__():
                for name in skipped:
                    if name not in self.skipped:
                        self.skipped[name] = None
                        new.append(name)
                if x is None:
                    if self.strict_batches:
                        raise SNNetError("every image of a training batch was unreadable "
                                         f"({skipped_message(skipped)}).")
                    continue
                yield x, y
        finally:
            if new:
                self.skip_log.report(new)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    pad: bool = True,
    pin_memory: bool = False,
    on_skip: Callable[[str], None] | None = warn_on_stderr,
    shuffle_buffer: int = 2048,
    repeats: int = 1,
    skip_log: SkipLog | None = None,
) -> Loader:
    """A :class:`Loader` (a :class:`DataLoader`) over this rank's shard of ``dataset``.

    For map-style datasets the sampler is always a :class:`DistributedSampler` (a
    one-replica one when ``world_size == 1``): one code path, the same seeded order for any
    worker count, and ``loader.sampler.set_epoch(epoch)`` everywhere. ``rank`` and
    ``world_size`` are given explicitly, so no process group is needed.

    ``drop_last`` drops both the sampler's uneven tail and the last incomplete batch (use it
    for training). ``pad=False`` (evaluation) gives each rank ``indices[rank::world_size]``
    with no repeated samples; ranks may then differ by one sample, so use it only where no
    collective runs per batch.

    For :class:`WebDatasetShards` rank ``r`` reads shards ``r::world_size`` (of a seeded
    per-epoch shuffle when ``shuffle``), mixed through a ``shuffle_buffer`` of encoded samples
    (decoded as they leave it; in training no larger than a loader worker's epoch);
    with ``drop_last`` every rank takes ``(len(dataset) // world_size) // batch_size`` full
    batches per epoch, otherwise each of its shards' samples once. ``loader.sampler.set_epoch``
    works here too.

    ``repeats > 1`` (training, map-style datasets) is repeated augmentation: timm's
    :class:`~timm.data.distributed_sampler.RepeatAugSampler` puts each image ``repeats`` times
    in an epoch, its copies on different ranks (so each gets its own random augmentation),
    and keeps an epoch at the dataset's length rounded down to a multiple of 256, as DeiT
    (whole when the dataset is smaller than that); its shuffle is seeded by the epoch alone.

    Unreadable images are dropped and reported once through ``on_skip`` (default: a
    ``warning:`` line on stderr; ``None`` keeps quiet; ``loader.skipped`` lists them), or
    through ``skip_log`` when given: one :class:`SkipLog` shared by every reader of a run
    names each file once, whichever reader met it first.
    """
    _check_loader_args(batch_size, rank, world_size)
    if isinstance(dataset, WebDatasetShards):
        return _shard_loader(dataset, batch_size, rank=rank, world_size=world_size, shuffle=shuffle, seed=seed,
                             num_workers=num_workers, drop_last=drop_last, pin_memory=pin_memory, on_skip=on_skip,
                             shuffle_buffer=shuffle_buffer, repeats=repeats, skip_log=skip_log)
    sampler = _map_sampler(dataset, rank=rank, world_size=world_size, shuffle=shuffle, seed=seed,
                           drop_last=drop_last, pad=pad, repeats=repeats)
    # Seeds the loader's workers (random augmentations) reproducibly and differently per rank.
    generator = torch.Generator()
    generator.manual_seed(seed * 1_000_003 + rank)
    return Loader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        generator=generator,
        collate_fn=collate_readable,
        on_skip=on_skip,
        skip_log=skip_log,
        strict_batches=drop_last,
    )


def _check_loader_args(batch_size: int, rank: int, world_size: int) -> None:
    """:func:`make_loader`'s arguments that no dataset can work with: a ``ValueError`` naming them."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"make_loader needs world_size >= 1 and 0 <= rank < world_size; got rank={rank}, world_size={world_size}."
        )
    if batch_size < 1:
        raise ValueError(f"make_loader needs batch_size >= 1; got {batch_size}.")


def _shard_loader(dataset: WebDatasetShards, batch_size: int, *, rank: int, world_size: int, shuffle: bool,
                  seed: int, num_workers: int, drop_last: bool, pin_memory: bool,
                  on_skip: Callable[[str], None] | None, shuffle_buffer: int, repeats: int,
                  skip_log: SkipLog | None = None) -> Loader:
    """:func:`make_loader` for shards: a :class:`_RankStream` of this rank's batches, made in the
    stream itself (``batch_size=None`` here), with an :class:`_EpochSampler` for ``set_epoch``."""
    if repeats > 1:
        raise SNNetError(f"repeated augmentation (aug_repeats={repeats}) needs an indexable dataset (a folder "
                         "or the demo); WebDataset shards stream each sample once per epoch: set aug_repeats: 1.")
    stream = _RankStream(dataset, batch_size, rank, world_size, fill=drop_last, shuffle=shuffle, seed=seed,
                         shuffle_buffer=shuffle_buffer)
    stream.num_workers = num_workers
    remote = "://" in dataset.shards.location
    loader = Loader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        # fresh workers each epoch carry the epoch; a forked S3 client may hang, so spawn for URIs
        persistent_workers=False,
        multiprocessing_context="spawn" if remote and num_workers > 0 else None,
        on_skip=on_skip,
        skip_log=skip_log,
        strict_batches=drop_last,
    )
    object.__setattr__(loader, "sampler", _EpochSampler(stream))
    return loader


def _map_sampler(dataset: Dataset, *, rank: int, world_size: int, shuffle: bool, seed: int, drop_last: bool,
                 pad: bool, repeats: int) -> DistributedSampler | Any:
    """This rank's sampler of a map-style dataset: timm's :class:`RepeatAugSampler` for
    ``repeats > 1``, else a :class:`DistributedSampler` (padded) or, for ``pad=False``
    evaluation, :class:`_UnpaddedDistributedSampler`."""
    if repeats < 1:
        raise ValueError(f"make_loader needs repeats >= 1; got {repeats}.")
    if repeats > 1:
        from timm.data.distributed_sampler import RepeatAugSampler

        round_to = REPEAT_ROUND if len(dataset) >= REPEAT_ROUND * world_size else 0  # type: ignore[arg-type]
        return RepeatAugSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle,
                                num_repeats=repeats, selected_round=round_to)
    sampler_cls = DistributedSampler if pad or drop_last else _UnpaddedDistributedSampler
    return sampler_cls(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Reshuffle ``loader`` for ``epoch`` (same as ``loader.sampler.set_epoch(epoch)``)."""
    loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]


def _skip_log(on_skip: Callable[[str], None] | None, skip_log: SkipLog | None) -> SkipLog:
    """``skip_log``, else a log of its own reporting through ``on_skip`` (``None``: quiet)."""
    return skip_log if skip_log is not None else SkipLog(on_skip)


def calibration_batches(
    dataset: Dataset, samples: int, batch_size: int, rank: int = 0, world: int = 1, seed: int = 1234, *,
    on_skip: Callable[[str], None] | None = warn_on_stderr, skip_log: SkipLog | None = None,
) -> Iterator[torch.Tensor]:
    """Image batches of this rank's share of a fixed subset of ``samples`` training images
    (the least-squares initialisation's images).

    For a map-style dataset the subset is a seeded random choice (the same on every run);
    for shards it is the first ``samples`` samples in shard order (rank ``r`` keeps every
    ``world``-th), so only the first shards are read. Unreadable images are left out (the
    batches are filled from the next ones) and named once, as :func:`make_loader` does:
    through ``skip_log`` when given, else through ``on_skip``.
    """
    log = _skip_log(on_skip, skip_log)
    if isinstance(dataset, WebDatasetShards):
        def mine() -> Iterator[Any]:
            taken = 0
            for i, item in enumerate(dataset):
                if i >= samples:
                    return
                if i % world == rank:
                    yield item
                    taken += 1
        items: Iterable[Any] = mine()
    else:
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(dataset), generator=g)[: min(samples, len(dataset))]  # type: ignore[arg-type]
        items = (dataset[i] for i in order[rank::world].tolist())
    batch: list[torch.Tensor] = []
    skipped: list[str] = []
    try:
        for item in items:
            if isinstance(item, Unreadable):
                skipped.append(item.name)
                continue
            batch.append(item[0])
            if len(batch) == batch_size:
                yield torch.stack(batch)
                batch = []
        if batch:
            yield torch.stack(batch)
    finally:
        log.report(skipped)
