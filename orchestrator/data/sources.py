"""The three sources of a run's data, picked by name: ``"demo"``, a folder or ``wds:`` shards.

:func:`get_datasets` opens a source's ``(train, val)`` datasets; :func:`dataset_size`,
:func:`dataset_num_classes` and :func:`dataset_labels` tell its size, classes and labels without
decoding an image (what a sweep's driver checks before it starts trials).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Subset, TensorDataset

from orchestrator.data.demo import DEMO_IMAGE_SIZE, DEMO_NUM_CLASSES, demo_datasets
from orchestrator.data.folders import ImageFolderSplit, folder_classes, image_folder_datasets, list_images
from orchestrator.data.shards import WebDatasetShards, is_wds, shard_sets, wds_datasets
from orchestrator.data.transforms import TransformOptions
from snnet import SNNetError

__all__ = ["get_datasets", "dataset_size", "dataset_num_classes", "dataset_labels", "num_classes"]


def get_datasets(name_or_path: str | os.PathLike[str], image_size: int | None = None,
                 options: TransformOptions | None = None, **transform: Any) -> tuple[Dataset, Dataset]:
    """``(train, val)`` for ``"demo"``, an ImageNet-layout directory or ``wds:LOCATION`` shards.

    ``image_size`` defaults to 224 for folders and shards. ``options`` (a :class:`TransformOptions`,
    e.g. ``TransformOptions.from_config(config)``) and ``transform`` (its fields by name, such as
    :func:`orchestrator.train.augment.transform_options` gives) set timm's transforms for folders and
    shards; the demo's tensors keep their own fixed recipe and ignore them.
    """
    if isinstance(name_or_path, str) and name_or_path == "demo":
        if image_size not in (None, DEMO_IMAGE_SIZE):
            raise SNNetError(
                f"The demo dataset has a fixed image size of {DEMO_IMAGE_SIZE} (its anchors are built "
                f"for it); image_size={image_size} was asked for."
            )
        return demo_datasets()
    if is_wds(name_or_path):
        return wds_datasets(str(name_or_path), image_size or 224, options, **transform)
    path = os.fspath(name_or_path)
    if os.path.isdir(path):
        return image_folder_datasets(path, image_size or 224, options, **transform)
    raise SNNetError(
        "A dataset must be 'demo' (the embedded handwritten digits), a local directory in ImageNet "
        "layout (ROOT/train/<class>/<image>, ROOT/val/<class>/<image>) or WebDataset shards "
        f"(wds:FOLDER_OR_URI or wds:PATTERN-train-{{0000..0099}}.tar); {path!r} is neither"
        + (" (it is a file)." if os.path.exists(path) else " (no such directory).")
    )


def dataset_labels(dataset: Any) -> Any | None:
    """The class index of every item of a map-style dataset, as a numpy array, without decoding an
    image (the demo's tensors, a folder's listing, a :class:`~torch.utils.data.Subset` of either,
    anything with ``targets``); ``None`` for streamed shards, whose labels come only with their images."""
    if isinstance(dataset, WebDatasetShards):
        return None
    if isinstance(dataset, Subset):
        parent = dataset_labels(dataset.dataset)
        return None if parent is None else parent[np.asarray(dataset.indices, dtype=np.int64)]
    if isinstance(dataset, ImageFolderSplit):
        return np.asarray([label for _, label in dataset.samples], dtype=np.int64)
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) >= 2:
        return dataset.tensors[1].numpy().astype(np.int64)
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return np.asarray(targets, dtype=np.int64)
    raise TypeError(f"{type(dataset).__name__} does not tell its labels (a 'targets' attribute would).")


def dataset_size(name_or_path: str | os.PathLike[str], split: str = "train") -> int:
    """Number of samples in ``split`` (``"train"`` or ``"val"``) without opening any image.

    Folders are listed (files with an image extension), shards counted from their index or
    tar headers; the same errors as :func:`get_datasets` for a bad dataset.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val'; got {split!r}.")
    if isinstance(name_or_path, str) and name_or_path == "demo":
        train, val = demo_datasets()
        return len(train if split == "train" else val)
    if is_wds(name_or_path):
        return shard_sets(str(name_or_path))[split].size
    path = os.fspath(name_or_path)
    if not os.path.isdir(path):
        get_datasets(path)  # raises the usual error
    train_classes, _ = folder_classes(path)
    return len(list_images(path, split, tuple(train_classes)))


def dataset_num_classes(name_or_path: str | os.PathLike[str]) -> int:
    """Number of classes (folders of train/, or the largest ``.cls`` + 1 of shards), without decoding images."""
    if isinstance(name_or_path, str) and name_or_path == "demo":
        return DEMO_NUM_CLASSES
    if is_wds(name_or_path):
        return shard_sets(str(name_or_path))["train"].num_classes
    path = os.fspath(name_or_path)
    if not os.path.isdir(path):
        get_datasets(path)
    classes = tuple(folder_classes(path)[0])
    list_images(path, "train", classes)  # an empty class folder is an error here too
    return len(classes)


def num_classes(dataset: Dataset) -> int:
    """Number of classes of a dataset made by :func:`get_datasets`."""
    n = getattr(dataset, "num_classes", None)
    if n is None:
        raise TypeError(f"{type(dataset).__name__} does not record its number of classes.")
    return int(n)
