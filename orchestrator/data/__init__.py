"""Datasets and loaders for joint training: the embedded demo data, ImageNet-style folders and shards.

Three sources, picked by name (:func:`get_datasets`, :mod:`~orchestrator.data.sources`):

``"demo"``
    scikit-learn's handwritten digits, upsampled to 16x16, distorted (seeded) and normalised:
    1437 training and 3 x 360 validation images, nothing downloaded (:mod:`~orchestrator.data.demo`;
    its tiny anchor family is :mod:`~orchestrator.data.demo_anchors`).
a directory
    ImageNet layout, ``ROOT/train/<class>/*.jpg`` and ``ROOT/val/<class>/*``, read with timm's
    training and evaluation transforms (:mod:`~orchestrator.data.folders`,
    :mod:`~orchestrator.data.transforms`).
``wds:LOCATION``
    WebDataset tar shards, local or in object storage, streamed with the same transforms
    (:mod:`~orchestrator.data.shards`; ``python -m orchestrator.data shard|index`` writes and
    indexes them).

:func:`split_training_set` (:mod:`~orchestrator.data.splits`) holds the selection split out of a
training set and keeps ``data_fraction`` of the rest (:mod:`~orchestrator.data.fidelity` draws
them); :func:`make_loader` and :func:`calibration_batches` (:mod:`~orchestrator.data.loaders`) read
a dataset as this data-parallel rank's batches. An image that cannot be decoded is dropped and
named once (:class:`SkipLog`, :mod:`~orchestrator.data.unreadable`).

Importing this package costs torch's import: timm, PIL, pyarrow and scikit-learn are imported by
the functions that need them.
"""

from __future__ import annotations

from orchestrator.data.demo import (
    DEMO_DISTORTION,
    DEMO_IMAGE_SIZE,
    DEMO_MEAN,
    DEMO_NUM_CLASSES,
    DEMO_STD,
    demo_datasets,
    demo_train_draw,
)
from orchestrator.data.folders import image_folder_datasets
from orchestrator.data.loaders import calibration_batches, make_loader
from orchestrator.data.shards import (
    DATA_SALT,
    KeySplit,
    WebDatasetShards,
    expand_braces,
    shard_sets,
    write_info,
    write_shards,
)
from orchestrator.data.sources import dataset_labels, dataset_num_classes, dataset_size, get_datasets, num_classes
from orchestrator.data.splits import TrainingSplit, split_training_set
from orchestrator.data.transforms import TransformOptions
from orchestrator.data.unreadable import SkipLog, Unreadable

__all__ = [
    # the demo
    "DEMO_IMAGE_SIZE",
    "DEMO_NUM_CLASSES",
    "DEMO_MEAN",
    "DEMO_STD",
    "DEMO_DISTORTION",
    "demo_datasets",
    "demo_train_draw",
    # a source by name
    "get_datasets",
    "dataset_size",
    "dataset_num_classes",
    "dataset_labels",
    "num_classes",
    "TransformOptions",
    "image_folder_datasets",
    # shards
    "WebDatasetShards",
    "KeySplit",
    "DATA_SALT",
    "shard_sets",
    "expand_braces",
    "write_shards",
    "write_info",
    # the selection split
    "TrainingSplit",
    "split_training_set",
    # reading
    "make_loader",
    "calibration_batches",
    "Unreadable",
    "SkipLog",
]
