"""Datasets and loaders for joint training: the embedded demo data and ImageNet-style folders.

Two sources, picked by :func:`get_datasets`:

``"demo"``
    scikit-learn's handwritten digits (1797 images of 8x8 grey levels, shipped inside the
    package, so nothing is downloaded), upsampled bilinearly to 16x16, scaled to [0, 1] and
    normalised with the train split's mean and standard deviation (:data:`DEMO_MEAN`,
    :data:`DEMO_STD`). A fixed, seeded, stratified 80/20 split gives 1437 training and 360
    validation images; items are ``(float32 tensor [1, 16, 16], int64 label)``.

a directory
    ImageNet layout, ``ROOT/train/<class>/*.jpg`` and ``ROOT/val/<class>/*``, read through
    timm's :class:`~timm.data.ImageDataset` with timm's training and evaluation transforms.
    The class index comes from the sorted class folders of ``train/``, so ``val/`` may hold a
    subset of the classes and still gets the same labels.

:func:`make_loader` shards a dataset over data-parallel workers with
:class:`~torch.utils.data.distributed.DistributedSampler`, given ``rank`` and ``world_size``
explicitly so it works without an initialised process group; call
``loader.sampler.set_epoch(epoch)`` before each epoch for a fresh, reproducible shuffle.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from snnet._errors import SNNetError

__all__ = [
    "DEMO_IMAGE_SIZE",
    "DEMO_NUM_CLASSES",
    "DEMO_MEAN",
    "DEMO_STD",
    "DemoDigits",
    "demo_datasets",
    "image_folder_datasets",
    "make_loader",
    "get_datasets",
    "num_classes",
]

DEMO_IMAGE_SIZE = 16
DEMO_NUM_CLASSES = 10
#: Mean and standard deviation of the demo train split after scaling to [0, 1] and upsampling.
#: Fixed numbers (not recomputed at load time) so that the anchors' ``pretrained_cfg`` can carry them.
DEMO_MEAN = (0.3054,)
DEMO_STD = (0.3190,)
_DEMO_VAL_FRACTION = 0.2
_DEMO_SPLIT_SEED = 0


class DemoDigits(TensorDataset):
    """A :class:`~torch.utils.data.TensorDataset` of ``(image [1, 16, 16], label)`` with class info."""

    num_classes = DEMO_NUM_CLASSES
    classes = tuple(str(d) for d in range(DEMO_NUM_CLASSES))

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, split: str):
        super().__init__(images, labels)
        self.split = split
        self.images, self.labels = images, labels

    def __repr__(self) -> str:
        return f"DemoDigits(split={self.split!r}, n={len(self)})"


@functools.lru_cache(maxsize=1)
def _demo_tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # Cached: every worker of a run and every test asks for the same, immutable split.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # grey levels 0..16
    images = torch.nn.functional.interpolate(
        images, size=(DEMO_IMAGE_SIZE, DEMO_IMAGE_SIZE), mode="bilinear", align_corners=False
    )
    images = (images - DEMO_MEAN[0]) / DEMO_STD[0]
    labels = torch.tensor(digits.target, dtype=torch.int64)
    train_idx, val_idx = train_test_split(
        torch.arange(len(labels)).numpy(),
        test_size=_DEMO_VAL_FRACTION,
        stratify=digits.target,
        random_state=_DEMO_SPLIT_SEED,
    )
    train_idx, val_idx = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
    # contiguous copies, so that the train and val tensors share no storage
    return (
        images[train_idx].contiguous(),
        labels[train_idx].contiguous(),
        images[val_idx].contiguous(),
        labels[val_idx].contiguous(),
    )


def demo_datasets() -> tuple[DemoDigits, DemoDigits]:
    """The demo's ``(train, val)`` datasets: 1437 and 360 digits, 16x16, one channel, 10 classes."""
    x_train, y_train, x_val, y_val = _demo_tensors()
    return DemoDigits(x_train, y_train, "train"), DemoDigits(x_val, y_val, "val")


# -- ImageNet-style folders ---------------------------------------------------------------

_LAYOUT = (
    "An image folder dataset must be a directory ROOT in ImageNet layout: ROOT/train/<class>/<image> "
    "and ROOT/val/<class>/<image>, one subfolder per class (the folder name is the class)"
)


def _class_folders(split_dir: str) -> list[str]:
    """Sorted class folder names of one split, with timm's natural sort (``2`` before ``10``)."""
    from timm.utils.misc import natural_key

    names = [e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith(".")]
    return sorted(names, key=natural_key)


def _check_split(root: str, split: str) -> list[str]:
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
        present = sorted(e.name for e in os.scandir(root) if not e.name.startswith("."))
        found = ", ".join(present[:10]) + (", ..." if len(present) > 10 else "") if present else "nothing"
        raise SNNetError(f"{_LAYOUT}; {root!r} has no {split}/ folder (it holds: {found}).")
    classes = _class_folders(split_dir)
    if not classes:
        n_files = sum(1 for e in os.scandir(split_dir) if e.is_file())
        raise SNNetError(
            f"{_LAYOUT}; {split_dir!r} has no class folders "
            f"({n_files} file(s) directly inside it; move them into one subfolder per class)."
        )
    return classes


def image_folder_datasets(
    root: str | os.PathLike[str],
    image_size: int = 224,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    interpolation: str = "bicubic",
    crop_pct: float | None = None,
    auto_augment: str | None = None,
    input_img_mode: str = "RGB",
) -> tuple[Dataset, Dataset]:
    """``(train, val)`` timm :class:`~timm.data.ImageDataset`\\ s of an ImageNet-layout folder.

    Training images get timm's training transform (random resized crop, flip, colour jitter,
    optional ``auto_augment`` such as ``"rand-m9-mstd0.5"``); validation images get its
    evaluation transform (resize by ``1 / crop_pct``, centre crop). ``mean``/``std`` default
    to ImageNet's; pass the anchors' own (``timm.data.resolve_data_config``) when they differ.
    ``input_img_mode="L"`` reads grey-level images for one-channel anchors.

    Raises :class:`SNNetError` when ``root``, ``train/`` or ``val/`` is missing, a split has
    no class folders or no images, or ``val/`` has classes that ``train/`` lacks.
    """
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, ImageDataset, create_transform

    root = os.fspath(root)
    if not os.path.isdir(root):
        what = "is a file, not a directory" if os.path.exists(root) else "does not exist"
        raise SNNetError(f"{_LAYOUT}; {root!r} {what}.")
    train_classes = _check_split(root, "train")
    val_classes = _check_split(root, "val")
    unknown = sorted(set(val_classes) - set(train_classes))
    if unknown:
        shown = ", ".join(repr(c) for c in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise SNNetError(
            f"{_LAYOUT}, and every class in val/ must also be a class in train/ (labels come from "
            f"train/); {root!r} has {len(unknown)} class folder(s) in val/ only: {shown}."
        )
    # One class map for both splits: timm would otherwise index each split's folders on its own.
    class_map = {c: i for i, c in enumerate(train_classes)}
    mean = tuple(mean) if mean is not None else IMAGENET_DEFAULT_MEAN
    std = tuple(std) if std is not None else IMAGENET_DEFAULT_STD
    common: dict[str, Any] = dict(input_size=image_size, interpolation=interpolation, mean=mean, std=std)
    train_tf = create_transform(is_training=True, auto_augment=auto_augment, **common)
    val_tf = create_transform(is_training=False, crop_pct=crop_pct, **common)

    datasets = []
    for split, transform in (("train", train_tf), ("val", val_tf)):
        split_dir = os.path.join(root, split)
        try:
            ds = ImageDataset(split_dir, class_map=class_map, transform=transform, input_img_mode=input_img_mode)
        except RuntimeError as e:  # timm's "Found 0 images in subfolders of ..."
            raise SNNetError(f"{_LAYOUT}; {split_dir!r} has class folders but no readable images: {e}") from None
        ds.num_classes = len(class_map)
        ds.classes = tuple(train_classes)
        datasets.append(ds)
    return datasets[0], datasets[1]


# -- loaders ------------------------------------------------------------------------------


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
) -> DataLoader:
    """A :class:`DataLoader` over this rank's shard of ``dataset``.

    The sampler is always a :class:`DistributedSampler` (a one-replica one when
    ``world_size == 1``): one code path, the same seeded order for any worker count, and
    ``loader.sampler.set_epoch(epoch)`` everywhere. ``rank`` and ``world_size`` are given
    explicitly, so no process group is needed.

    ``drop_last`` drops both the sampler's uneven tail and the last incomplete batch (use it
    for training). ``pad=False`` (evaluation) gives each rank ``indices[rank::world_size]``
    with no repeated samples; ranks may then differ by one sample, so use it only where no
    collective runs per batch.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"make_loader needs world_size >= 1 and 0 <= rank < world_size; got rank={rank}, world_size={world_size}."
        )
    if batch_size < 1:
        raise ValueError(f"make_loader needs batch_size >= 1; got {batch_size}.")
    sampler_cls = DistributedSampler if pad or drop_last else _UnpaddedDistributedSampler
    sampler = sampler_cls(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
    # Seeds the loader's workers (random augmentations) reproducibly and differently per rank.
    generator = torch.Generator()
    generator.manual_seed(seed * 1_000_003 + rank)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        generator=generator,
    )


def get_datasets(name_or_path: str | os.PathLike[str], image_size: int | None = None) -> tuple[Dataset, Dataset]:
    """``(train, val)`` for ``"demo"`` or an ImageNet-layout directory (``image_size`` defaults to 224)."""
    if isinstance(name_or_path, str) and name_or_path == "demo":
        if image_size not in (None, DEMO_IMAGE_SIZE):
            raise SNNetError(
                f"The demo dataset has a fixed image size of {DEMO_IMAGE_SIZE} (its anchors are built "
                f"for it); image_size={image_size} was asked for."
            )
        return demo_datasets()
    path = os.fspath(name_or_path)
    if os.path.isdir(path):
        return image_folder_datasets(path, image_size or 224)
    raise SNNetError(
        "A dataset must be 'demo' (the embedded handwritten digits) or a local directory in ImageNet "
        f"layout (ROOT/train/<class>/<image>, ROOT/val/<class>/<image>); {path!r} is neither"
        + (" (it is a file)." if os.path.exists(path) else " (no such directory).")
    )


def num_classes(dataset: Dataset) -> int:
    """Number of classes of a dataset made by this module."""
    n = getattr(dataset, "num_classes", None)
    if n is None:
        raise TypeError(f"{type(dataset).__name__} does not record its number of classes.")
    return int(n)
