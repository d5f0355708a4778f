"""A training set split for a search: the held-out selection split and ``data_fraction``'s subset.

:func:`split_training_set` carves both out of a training set, stratified by label for the demo
and folders (:func:`~orchestrator.data.fidelity.selection_split`,
:func:`~orchestrator.data.fidelity.training_subset`) and by a seeded hash of each sample's key for
streamed shards (:class:`~orchestrator.data.shards.KeySplit`), the same on every rank and resume.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

from torch.utils.data import Subset

from orchestrator.data.fidelity import selection_split, training_subset
from orchestrator.data.shards import DATA_SALT, KeySplit, WebDatasetShards
from orchestrator.data.sources import dataset_labels

__all__ = ["TrainingSplit", "split_training_set"]


def _with_transform(dataset: Any, transform: Any) -> Any:
    """``dataset`` reading its images through ``transform`` (a shallow copy); tensors stay as they are."""
    if isinstance(dataset, Subset):
        return Subset(_with_transform(dataset.dataset, transform), dataset.indices)
    if transform is None or getattr(dataset, "transform", None) is None:
        return dataset
    other = copy.copy(dataset)
    other.transform = transform
    return other


class TrainingSplit(NamedTuple):
    """What :func:`split_training_set` makes of a training set."""

    train: Any  # what the run trains on
    selection: Any  # held-out images that score stitches for the search, evaluation transform; None when off
    note: str  # one line for the console when the split could not be made as asked, else ""


def split_training_set(train: Any, *, selection_fraction: float = 0.0, data_fraction: float = 1.0, seed: int = 0,
                       eval_transform: Any = None) -> TrainingSplit:
    """Carve the selection split out of ``train`` and keep a fraction of the rest for training.

    The selection split is :func:`orchestrator.data.fidelity.selection_split` of the training labels
    (seeded by ``seed``, stratified), read through ``eval_transform`` (the evaluation split's
    transform: no random crops or erasing); training then uses
    :func:`orchestrator.data.fidelity.training_subset` (``data_fraction``) of what is left. The same
    labels, fractions and seed give the same split on every rank and every resume. With both knobs
    off, ``train`` itself comes back (no wrapper). Streamed ``wds:`` shards are split by key
    (:func:`_split_stream`).
    """
    labels = dataset_labels(train)
    if labels is None:
        return _split_stream(train, selection_fraction, data_fraction, seed, eval_transform)
    if selection_fraction <= 0 and data_fraction >= 1:
        return TrainingSplit(train, None, "")
    rest, held_out = selection_split(labels, selection_fraction, seed)
    keep = rest[training_subset(labels[rest], data_fraction, seed)]
    selection = Subset(_with_transform(train, eval_transform), held_out.tolist()) if len(held_out) else None
    return TrainingSplit(Subset(train, keep.tolist()), selection, "")


def _split_stream(train: WebDatasetShards, selection_fraction: float, data_fraction: float, seed: int,
                  eval_transform: Any) -> TrainingSplit:
    """:func:`split_training_set` for shards, whose labels come only with their images: a
    :class:`KeySplit` (seeded by ``seed``) holds out about ``selection_fraction`` of the samples by
    key, not stratified; the selection stream reads them through ``eval_transform`` and the
    training stream skips them. Scoring a stitch on it reads the training shards once (only the
    held-out samples are decoded). ``data_fraction`` keeps the training samples that an
    independent :class:`KeySplit` (salt ``"data:"``) holds out: about that fraction of the rest,
    the same on every rank, and a larger fraction only adds samples."""
    subset = KeySplit(data_fraction, seed, salt=DATA_SALT) if data_fraction < 1 else None
    if selection_fraction <= 0:
        return TrainingSplit(train if subset is None else train.keyed(None, subset=subset), None, "")
    keys = KeySplit(selection_fraction, seed)
    return TrainingSplit(train.keyed(keys, held_out=False, subset=subset),
                         train.keyed(keys, held_out=True, transform=eval_transform), "")
