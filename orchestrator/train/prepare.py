"""The driver's preparation of one run: settle the settings, check everything, build the stitch space.

:func:`prepare` is what :func:`orchestrator.train.launch.run_training` starts from, before any Ray
resource is requested; a sweep's driver prepares each family's first point once and its trials
prepare again, from what the driver found.

The driver loads no weights: anchors are built with their random initialisation for their class
counts, FLOPs and parameters, checkpoints are checked from their keys and shapes. What it found
(:class:`Known`: anchor profiles, checked weights, the dataset's counts) travels to a sweep's
trials, which then build and open nothing to check; each Ray Train worker builds its supernet
once, with the weights, and opens the dataset once, to train.
"""

from __future__ import annotations

import datetime as _dt
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from orchestrator import data  # its functions by module: tests replace data.get_datasets to count the opens
from orchestrator.catalog import CatalogWriter, validate_name
from orchestrator.data.demo_anchors import demo_anchor_specs  # importing it registers the demo anchors with timm
from orchestrator.data.fidelity import selection_split, training_subset
from orchestrator.storage import check_outside_ray_runtime
from orchestrator.train.checks import (
    anchor_key,
    check_batch,
    check_storage,
    check_weights,
    check_writable,
    weights_line,
)
from orchestrator.train.config import TrainConfig
from snnet import AnchorProfile, AnchorSpec, SNNetError, StitchSpace, create_anchor, profile_anchor
from snnet.anchors import Anchor, check_model_name, weights_source

__all__ = ["DatasetFacts", "Known", "dataset_key", "Prepared", "prepare"]


@dataclass(frozen=True)
class DatasetFacts:
    """What the driver learns of a training set by opening it once: its class count, its size and,
    for a labelled (map-style) set, how many images each class has. The sizes of the selection
    split and of ``data_fraction``'s subset depend on those counts alone (per class, a rounded
    fraction), so a trial checks its batch size from them without opening the dataset."""

    num_classes: int
    train_size: int
    class_counts: tuple[int, ...] | None = None  # None for streamed shards (split by key, not by label)

    @classmethod
    def read(cls, config: TrainConfig) -> DatasetFacts:
        """Open ``config.dataset``'s training split (the usual errors for a bad dataset) and count."""
        train_ds, _ = data.get_datasets(config.dataset, config.image_size)
        try:
            labels = data.dataset_labels(train_ds)
        except TypeError:  # a dataset that does not tell its labels is not split either
            labels = None
        try:
            size = len(train_ds)
        except TypeError:  # a streamed dataset without a length
            size = data.dataset_size(config.dataset, "train")
        counts = None if labels is None else tuple(int(c) for c in np.unique(labels, return_counts=True)[1])
        return cls(data.num_classes(train_ds), size, counts)

    def training_images(self, config: TrainConfig) -> int:
        """Images one epoch trains on: the length of :func:`orchestrator.data.split_training_set`'s
        ``train`` under ``config``'s selection split and ``data_fraction``, from the class counts
        (streamed shards: the training set less :class:`orchestrator.data.KeySplit`'s expected
        held-out count, then the expected ``data_fraction`` of that, as the stream's ``len()``)."""
        if self.class_counts is None:
            size = self.train_size
            if config.selection_fraction > 0:
                size -= data.KeySplit(config.selection_fraction, config.seed).expected(size)
            if config.data_fraction < 1:
                size = data.KeySplit(config.data_fraction, config.seed, salt=data.DATA_SALT).expected(size)
            return size
        if config.selection_fraction <= 0 and config.data_fraction >= 1:
            return self.train_size
        labels = np.repeat(np.arange(len(self.class_counts)), self.class_counts)
        rest, _ = selection_split(labels, config.selection_fraction, config.seed)
        return len(training_subset(labels[rest], config.data_fraction, config.seed))


@dataclass
class Known:
    """What one driver-side :func:`prepare` found, for the later prepares of the same anchors and
    data (a sweep's trials get it in their context): each anchor's profile and weights source by
    :func:`anchor_key`, the keys whose weights were checked (:func:`check_weights`), and the
    dataset's :class:`DatasetFacts` by :func:`dataset_key`. A later prepare builds and opens only
    what is not here."""

    anchors: dict[str, tuple[AnchorProfile, str]] = field(default_factory=dict)
    checked: set[str] = field(default_factory=set)
    datasets: dict[str, DatasetFacts] = field(default_factory=dict)

    def update(self, other: Known) -> Known:
        self.anchors.update(other.anchors)
        self.checked.update(other.checked)
        self.datasets.update(other.datasets)
        return self


def dataset_key(config: TrainConfig) -> str:
    return f"{config.dataset}|{config.image_size}"



@dataclass(frozen=True)
class Prepared:
    """What :func:`prepare` hands to :func:`~orchestrator.train.launch.run_training`: the settled
    ``config`` (validated, demo anchors and trial id filled in), its checked stitch ``space``,
    ``weights``: where each anchor's weights came from (``{name: "hub:<id>" | "file:<path>" | "random"}``),
    and ``known``: what the prepare found (:class:`Known`), for later prepares of the same anchors and data."""

    config: TrainConfig
    space: StitchSpace
    weights: dict[str, str] = field(default_factory=dict)
    known: Known = field(default_factory=Known)

    def __iter__(self) -> Iterator[TrainConfig | StitchSpace]:
        """``config, space = prepare(...)``, as when this was a ``(config, space)`` tuple."""
        return iter((self.config, self.space))

    def __getitem__(self, index: int) -> TrainConfig | StitchSpace:
        return (self.config, self.space)[index]


def prepare(config: TrainConfig, progress: Callable[[str], None] = print, *, known: Known | None = None,
            probed: set[str] | None = None) -> Prepared:
    """Validate ``config``, resolve the demo anchors, build and check the stitch space.

    Everything that can fail before training fails here, before Ray starts, as one
    :class:`SNNetError`: settings, model names and weights (:func:`check_weights`), the dataset
    and its class count, the batch size against the training set (:func:`check_batch`), the
    catalog and the run storage (written to, :func:`check_writable`). The cluster's resources
    are checked by :func:`~orchestrator.train.cluster.preflight` (the sweep checks its own). Prints where each anchor's
    weights came from.

    No weights are loaded: anchors are built with their random initialisation
    (``create_anchor(load_weights=False)``: class counts, FLOPs and parameters do not depend on
    the values; fvcore cannot trace on the meta device), checkpoints are checked from their keys
    and shapes, and the weights line is derived from the specs (:func:`snnet.anchors.weights_source`).
    ``known`` (a sweep driver's :attr:`Prepared.known`) holds anchors, checks and dataset facts
    found before: those are not built, checked or opened again. ``probed`` (a driver's own set, never
    a trial's) holds the catalog and storage locations written to already: they are not probed again,
    and the ones probed here are added.
    """
    progress = progress or (lambda message: None)
    config = _settled(config, progress, probed)
    known = known or Known()
    found = Known(checked=set(known.checked))
    todo = [s for s in config.anchors if anchor_key(s, config.image_size) not in known.anchors]
    built = _unloaded_anchors(todo, config.image_size)
    check_weights(config, models={k: a.model for k, a in built.items() if a is not None}, checked=known.checked)
    found.checked.update(anchor_key(s, config.image_size) for s in config.anchors)
    if config.teacher is not None:
        found.checked.add(anchor_key(config.teacher, None))
    facts = known.datasets.get(dataset_key(config)) or DatasetFacts.read(config)
    found.datasets[dataset_key(config)] = facts
    for spec in config.anchors:
        key = anchor_key(spec, config.image_size)
        found.anchors[key] = known.anchors.get(key) or _profile(spec, built.get(key), config.image_size)
    profiles = [found.anchors[anchor_key(s, config.image_size)][0] for s in config.anchors]
    _check_classes(profiles, facts.num_classes)
    space = StitchSpace(profiles, config.space_config())
    check_batch(config, facts.training_images(config))
    weights = {s.name: found.anchors[anchor_key(s, config.image_size)][1] for s in config.anchors}
    for line in weights_line(weights):
        progress(line)
    return Prepared(config, space, weights, found)


def _settled(config: TrainConfig, progress: Callable[[str], None], probed: set[str] | None = None) -> TrainConfig:
    """``config`` validated, with the demo anchors and a trial id filled in; the catalog and the
    run storage checked (writable, not files) unless both are in ``probed``."""
    config.validate()
    if config.anchors is None:
        if config.dataset != "demo":
            raise SNNetError(
                f"The embedded demo anchors are trained on the 'demo' dataset; dataset {config.dataset!r} "
                "needs its own anchors (give them with --anchors)."
            )
        config = config.model_copy(update={"anchors": demo_anchor_specs(progress=progress, brief=True)})
    config.space_config().validate()
    for spec in config.anchors:
        check_model_name(spec.name)
    if config.teacher is not None:
        check_model_name(config.teacher.name)
    if config.trial_id is None:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        config = config.model_copy(update={"trial_id": f"{stamp}-{uuid.uuid4().hex[:6]}"})
    validate_name("trial", config.trial_id)
    locations = {f"catalog:{config.catalog}|{config.sweep}", f"storage:{config.storage_path}"}
    if probed is not None and locations <= probed:
        return config  # written to by this driver already (and the sweep name checked by its CatalogWriter)
    check_outside_ray_runtime(config.catalog, "The catalog", "--catalog")  # before a probe writes there
    check_outside_ray_runtime(config.storage_path)
    check_writable(config.catalog, "The catalog", "--catalog")
    check_writable(config.storage_path, "Ray's run storage", "--storage")
    CatalogWriter(config.catalog, config.sweep)  # a folder or URI, not a file
    check_storage(config.storage_path)
    if probed is not None:
        probed.update(locations)
    return config


def _unloaded_anchors(specs: list[AnchorSpec], image_size: int | None) -> dict[str, Anchor | None]:
    """:func:`anchor_key` -> the anchor built without weights (``None`` where it does not build:
    :func:`check_weights` then says why, in its paragraph)."""
    extra = {"img_size": image_size} if image_size else {}
    built: dict[str, Anchor | None] = {}
    for spec in specs:
        try:
            built[anchor_key(spec, image_size)] = create_anchor(spec, load_weights=False, **extra)
        except Exception:  # noqa: BLE001 - check_spec reports it with the other problems
            built[anchor_key(spec, image_size)] = None
    return built


def _profile(spec: AnchorSpec, anchor: Anchor | None, image_size: int | None) -> tuple[AnchorProfile, str]:
    """An anchor's profile and weights source (:func:`snnet.anchors.weights_source`). Only where the
    spec cannot tell its source (``pretrained`` on a model whose own builder picks a weights file)
    is the anchor built with its weights, to read :attr:`~snnet.anchors.Anchor.weights`."""
    extra = {"img_size": image_size} if image_size else {}
    source = weights_source(spec)
    if source is None:
        anchor = create_anchor(spec, **extra)
        source = anchor.weights
    if anchor is None:  # it did not build without weights: this raises the build's own error
        anchor = create_anchor(spec, load_weights=False, **extra)
    return profile_anchor(anchor), source


def _check_classes(profiles: list[AnchorProfile], classes: int) -> None:
    wrong = [f"{p.name} has {p.num_classes}" for p in profiles if p.num_classes != classes]
    if wrong:
        raise SNNetError(
            f"Anchors must classify the dataset's {classes} classes, but {', '.join(wrong)} "
            "(pass --num-classes N, or set num_classes in the family's kwargs of the YAML: the classifier "
            "is then reset; or fine-tune the anchors on this dataset first)."
        )

