"""Datasets and loaders for joint training: the embedded demo data, ImageNet-style folders and shards.

Three sources, picked by :func:`get_datasets`:

``"demo"``
    scikit-learn's handwritten digits (1797 images of 8x8 grey levels, shipped inside the
    package, so nothing is downloaded), upsampled bilinearly to 16x16, scaled to [0, 1], each
    randomly rotated, scaled and shifted (:data:`DEMO_DISTORTION`, seeded) and normalised with
    the train split's mean and standard deviation (:data:`DEMO_MEAN`, :data:`DEMO_STD`). A
    fixed, seeded, stratified 80/20 split of the digits gives 1437 training images and 360
    validation digits, each of those distorted three ways (1080 validation images); items are
    ``(float32 tensor [1, 16, 16], int64 label)``.

a directory
    ImageNet layout, ``ROOT/train/<class>/*.jpg`` and ``ROOT/val/<class>/*``, read through
    timm's :class:`~timm.data.ImageDataset` with timm's training and evaluation transforms.
    The class index comes from the sorted class folders of ``train/``, so ``val/`` may hold a
    subset of the classes and still gets the same labels.

``wds:LOCATION``
    WebDataset tar shards, local or in object storage, streamed (:class:`WebDatasetShards`) with
    the same transforms; their selection split is drawn by a seeded hash of each sample's key
    (:class:`KeySplit`, :func:`split_training_set`).

:func:`make_loader` shards a dataset over data-parallel workers with
:class:`~torch.utils.data.distributed.DistributedSampler`, given ``rank`` and ``world_size``
explicitly so it works without an initialised process group; call
``loader.sampler.set_epoch(epoch)`` before each epoch for a fresh, reproducible shuffle.
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import json
import math
import os
import random
import re
import sys
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, TensorDataset, get_worker_info
from torch.utils.data.distributed import DistributedSampler

from snnet._errors import SNNetError

__all__ = [
    "DEMO_IMAGE_SIZE",
    "DEMO_NUM_CLASSES",
    "DEMO_MEAN",
    "DEMO_STD",
    "DEMO_DISTORTION",
    "DemoDigits",
    "demo_datasets",
    "demo_train_draw",
    "distort_digits",
    "image_folder_datasets",
    "TransformOptions",
    "ImageFolderSplit",
    "Unreadable",
    "SkipLog",
    "skipped_message",
    "WebDatasetShards",
    "KeySplit",
    "ShardSet",
    "shard_sets",
    "expand_braces",
    "wds_datasets",
    "write_shards",
    "write_info",
    "Loader",
    "make_loader",
    "set_epoch",
    "calibration_batches",
    "get_datasets",
    "dataset_labels",
    "TrainingSplit",
    "split_training_set",
    "dataset_size",
    "dataset_num_classes",
    "num_classes",
]

DEMO_IMAGE_SIZE = 16
DEMO_NUM_CLASSES = 10
#: How every demo image is distorted: a random rotation (degrees, either way), scale (fraction,
#: either way) and shift (pixels at 16x16, each axis), drawn per image from a seeded generator.
#: Clean digits are too easy to tell the anchors apart (every width reaches 92-98% top-1 and
#: their order depends on the machine); distorted ones need capacity.
DEMO_DISTORTION: dict[str, float] = {"rotation": 30.0, "scale": 0.2, "shift": 3.0}
#: Mean and standard deviation of the demo train split after scaling to [0, 1], upsampling and
#: distortion. Fixed numbers (not recomputed at load time) so that the anchors' ``pretrained_cfg``
#: can carry them.
DEMO_MEAN = (0.2724,)
DEMO_STD = (0.3048,)
_DEMO_VAL_FRACTION = 0.2
_DEMO_SPLIT_SEED = 0
#: Distorted copies of each validation digit: 3 x 360 = 1080 images, so one image is 0.09 points.
_DEMO_VAL_COPIES = 3
_DEMO_TRAIN_SEED = 1
_DEMO_VAL_SEED = 2


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


def distort_digits(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``images [N, 1, H, W]`` each rotated, scaled and shifted at random (:data:`DEMO_DISTORTION`).

    Deterministic for a given generator state (CPU ``grid_sample``, parameters drawn in a fixed
    order); pixels moved in from outside the image are 0 (the digits' background).
    """
    import math

    n, _, height, _ = images.shape
    rotation, scale, shift = (DEMO_DISTORTION[k] for k in ("rotation", "scale", "shift"))
    angle = (torch.rand(n, generator=generator) * 2 - 1) * rotation * math.pi / 180
    factor = 1 + (torch.rand(n, generator=generator) * 2 - 1) * scale
    offset = (torch.rand(n, 2, generator=generator) * 2 - 1) * shift * 2 / height
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.cos(angle) / factor
    theta[:, 0, 1] = -torch.sin(angle) / factor
    theta[:, 1, 0] = torch.sin(angle) / factor
    theta[:, 1, 1] = torch.cos(angle) / factor
    theta[:, :, 2] = offset
    grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    return torch.nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def default_cache_dir() -> Path:
    """The demo's cache (its anchors' weights, its clean split): ``$SNNET_CACHE`` if set, else
    ``~/.cache/snnet/demo`` (not created here)."""
    env = os.environ.get("SNNET_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "snnet" / "demo"


_SPLIT_KEYS = ("x_train", "y_train", "x_val", "y_val")


@functools.lru_cache(maxsize=1)
def _demo_clean() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The undistorted split: train and val digits upsampled to 16x16 in [0, 1], with labels.

    Made with scikit-learn once and cached in :func:`default_cache_dir` (keyed by the split's settings
    and scikit-learn's version):
    importing scikit-learn costs every process that opens the demo data, each Ray Train worker
    among them, 3-4 seconds; reading the cached file, a few milliseconds.
    """
    from importlib.metadata import version

    from orchestrator.storage import atomic_write

    key = f"{DEMO_IMAGE_SIZE}px-val{_DEMO_VAL_FRACTION}-seed{_DEMO_SPLIT_SEED}-sklearn{version('scikit-learn')}"
    path = default_cache_dir() / f"digits-split-{key}.pt"
    try:
        saved = torch.load(path, weights_only=True)
        return tuple(saved[k] for k in _SPLIT_KEYS)  # type: ignore[return-value]
    except Exception:  # noqa: BLE001 - a cache: absent, or unreadable in any way (torn, another torch's): make it again
        pass
    split = _demo_split()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: torch.save(dict(zip(_SPLIT_KEYS, split)), f))
    except OSError:  # a read-only cache: make the split each time
        pass
    return split


def _demo_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # grey levels 0..16
    images = torch.nn.functional.interpolate(
        images, size=(DEMO_IMAGE_SIZE, DEMO_IMAGE_SIZE), mode="bilinear", align_corners=False
    )
    labels = torch.tensor(digits.target, dtype=torch.int64)
    train_idx, val_idx = train_test_split(
        torch.arange(len(labels)).numpy(),
        test_size=_DEMO_VAL_FRACTION,
        stratify=digits.target,
        random_state=_DEMO_SPLIT_SEED,
    )
    train_idx, val_idx = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
    return images[train_idx], labels[train_idx], images[val_idx], labels[val_idx]


def _normalise(images: torch.Tensor) -> torch.Tensor:
    return (images - DEMO_MEAN[0]) / DEMO_STD[0]


@functools.lru_cache(maxsize=1)
def _demo_tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # Cached: every worker of a run and every test asks for the same, immutable split.
    x_train, y_train, x_val, y_val = _demo_clean()
    train = _normalise(distort_digits(x_train, torch.Generator().manual_seed(_DEMO_TRAIN_SEED)))
    val = _normalise(distort_digits(x_val.repeat(_DEMO_VAL_COPIES, 1, 1, 1),
                                    torch.Generator().manual_seed(_DEMO_VAL_SEED)))
    # contiguous copies, so that the train and val tensors share no storage
    return (
        train.contiguous(),
        y_train.clone(),
        val.contiguous(),
        y_val.repeat(_DEMO_VAL_COPIES).contiguous(),
    )


def demo_train_draw(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fresh distortion of the 1437 clean training digits (normalised), for pretraining epochs.

    The fixed train split of :func:`demo_datasets` is one such draw; pretraining the anchors
    on a new draw every epoch keeps the larger ones from memorising 1437 images.
    """
    x_train, y_train, _, _ = _demo_clean()
    return _normalise(distort_digits(x_train, torch.Generator().manual_seed(seed))), y_train.clone()


def demo_datasets() -> tuple[DemoDigits, DemoDigits]:
    """The demo's ``(train, val)`` datasets: 1437 and 3 x 360 distorted digits, 16x16, 10 classes."""
    x_train, y_train, x_val, y_val = _demo_tensors()
    return DemoDigits(x_train, y_train, "train"), DemoDigits(x_val, y_val, "val")


# -- unreadable samples -------------------------------------------------------------------


class Unreadable(NamedTuple):
    """Stands in for a sample that could not be decoded; loaders drop it and report its name once."""

    name: str
    reason: str


def _collate(batch: list[Any]) -> tuple[torch.Tensor | None, torch.Tensor | None, list[str]]:
    """Stack the readable samples of a batch; name the unreadable ones (never replaced by a neighbour)."""
    from torch.utils.data import default_collate

    good = [b for b in batch if not isinstance(b, Unreadable)]
    skipped = [b.name for b in batch if isinstance(b, Unreadable)]
    if not good:
        return None, None, skipped
    x, y = default_collate(good)
    return x, y, skipped


def skipped_message(names: Sequence[str], shown: int = 10) -> str:
    """``"skipped 2 unreadable files: a.jpg, b.jpg"`` (the first ``shown`` names, then a count)."""
    names = list(names)
    listed = ", ".join(names[:shown]) + (f", ... ({len(names) - shown} more)" if len(names) > shown else "")
    return f"skipped {len(names)} unreadable file{'' if len(names) == 1 else 's'}: {listed}"


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


class SkipLog:
    """The unreadable files already named, shared by every reader of a run's data, so each is named once.

    :func:`make_loader`'s loaders and :func:`calibration_batches` drop unreadable samples and hand
    their names to a log: :meth:`report` names the ones it has not named before in one line
    through ``on_skip`` (default: a ``warning:`` line on stderr; ``None`` keeps quiet). A run
    passes one log to all of its readers (least-squares images, training, the early front,
    selection, evaluation); a reader made without one gets its own.
    """

    def __init__(self, on_skip: Callable[[str], None] | None = _warn):
        self.on_skip = on_skip
        self.named: dict[str, None] = {}

    def report(self, names: Iterable[str]) -> list[str]:
        """Name the files of ``names`` not named before, in one line; returns them."""
        new = [n for n in dict.fromkeys(names) if n not in self.named]
        self.named.update(dict.fromkeys(new))
        if new and self.on_skip is not None:
            self.on_skip(skipped_message(new))
        return new


def _skip_log(on_skip: Callable[[str], None] | None, skip_log: SkipLog | None) -> SkipLog:
    """``skip_log``, else a log of its own reporting through ``on_skip`` (``None``: quiet)."""
    return skip_log if skip_log is not None else SkipLog(on_skip)


def _decode(data: bytes | IO[bytes], mode: str) -> Any:
    from PIL import Image

    with Image.open(data if not isinstance(data, bytes) else io.BytesIO(data)) as img:
        return img.convert(mode)  # convert() decodes the whole image: truncated files fail here


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


def _check_root(root: str) -> None:
    if not os.path.isdir(root):
        what = "is a file, not a directory" if os.path.exists(root) else "does not exist"
        raise SNNetError(f"{_LAYOUT}; {root!r} {what}.")


@functools.lru_cache(maxsize=32)
def _list_split(root: str, split: str, classes: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    """``(path, label)`` of every image file under ``root/split/<class>/`` (by extension; nothing opened).

    A class folder without any image file is an error naming it: it would be a class that no
    image belongs to. Files are listed with timm's natural sort, so the order is stable.
    """
    from timm.data.readers.img_extensions import get_img_extensions
    from timm.utils.misc import natural_key

    extensions = set(get_img_extensions())
    split_dir = os.path.join(root, split)
    samples: list[tuple[str, int]] = []
    for label, cls in enumerate(classes):
        folder = os.path.join(split_dir, cls)
        if not os.path.isdir(folder):  # val/ may hold a subset of train/'s classes
            continue
        found = []
        others = 0
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if os.path.splitext(name)[1].lower() in extensions and not name.startswith("."):
                    found.append(os.path.join(dirpath, name))
                else:
                    others += 1
        if not found:
            raise SNNetError(
                f"{_LAYOUT}; the class folder {folder!r} has no readable images ({others} other file(s)); "
                "an empty class folder would be a class no image belongs to: remove it or add its images."
            )
        samples += [(p, label) for p in sorted(found, key=lambda p: natural_key(os.path.relpath(p, split_dir)))]
    return tuple(samples)


class ImageFolderSplit(Dataset):
    """One split of an ImageNet-layout folder: ``(image tensor, label)`` per image file.

    An image that cannot be decoded comes back as :class:`Unreadable` (its path relative to
    the dataset's root, ``val/cat/img0.png``) and is dropped by :func:`make_loader`'s loaders
    and :func:`calibration_batches`, which name it once (:class:`SkipLog`);
    it is never replaced by another image, so evaluation counts stay honest.
    """

    def __init__(self, root: str, split: str, classes: Sequence[str], present: Sequence[str],
                 transform: Callable[[Any], Any], input_img_mode: str = "RGB"):
        self.root, self.split = root, split
        self.split_dir = os.path.join(root, split)
        self.samples = _list_split(root, split, tuple(classes))
        self.classes = tuple(classes)
        self.num_classes = len(self.classes)
        self.transform = transform
        self.input_img_mode = input_img_mode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Any:
        path, label = self.samples[index]
        try:
            with open(path, "rb") as f:
                img = _decode(f, self.input_img_mode)
        except Exception as e:  # noqa: BLE001 - any decoding failure makes the file unreadable
            return Unreadable(os.path.relpath(path, self.root), f"{type(e).__name__}: {e}")
        return self.transform(img), label

    def filename(self, index: int) -> str:
        return self.samples[index][0]

    def __repr__(self) -> str:
        return f"ImageFolderSplit({self.split_dir!r}, n={len(self)}, classes={self.num_classes})"


def _transforms(image_size: int, mean: Sequence[float] | None, std: Sequence[float] | None, interpolation: str,
                crop_pct: float | None, auto_augment: str | None, re_prob: float = 0.0,
                re_mode: str = "pixel") -> tuple[Any, Any]:
    """timm's training transform (``auto_augment``, random erasing with ``re_prob``/``re_mode``)
    and evaluation transform; ``interpolation="random"`` trains with a random one and
    evaluates bicubic, as timm's training scripts do."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform

    mean = tuple(mean) if mean is not None else IMAGENET_DEFAULT_MEAN
    std = tuple(std) if std is not None else IMAGENET_DEFAULT_STD
    common: dict[str, Any] = dict(input_size=image_size, mean=mean, std=std)
    train_tf = create_transform(is_training=True, auto_augment=auto_augment, interpolation=interpolation,
                                re_prob=re_prob, re_mode=re_mode, **common)
    val_tf = create_transform(is_training=False, crop_pct=crop_pct,
                              interpolation="bicubic" if interpolation == "random" else interpolation, **common)
    return train_tf, val_tf


@dataclass(frozen=True)
class TransformOptions:
    """How folders and shards read their images: timm's transforms' options and the image mode.

    One object for :func:`image_folder_datasets`, :func:`wds_datasets` and :func:`get_datasets`
    (which also take the fields as keyword arguments, applied over ``options``).
    ``mean``/``std`` default to ImageNet's; ``input_img_mode="L"`` reads grey levels.
    """

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    interpolation: str = "bicubic"
    crop_pct: float | None = None
    auto_augment: str | None = None
    re_prob: float = 0.0
    re_mode: str = "pixel"
    input_img_mode: str = "RGB"

    def __post_init__(self) -> None:
        for name in ("mean", "std"):  # any sequence in, a tuple kept (frozen and hashable)
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))

    @classmethod
    def from_config(cls, config: Any) -> TransformOptions:
        """The options a :class:`~orchestrator.train.config.TrainConfig` asks for (its augmentation fields,
        mapped once by :func:`orchestrator.train.augment.transform_options`)."""
        from orchestrator.train.augment import transform_options

        return cls(**transform_options(config))

    @classmethod
    def of(cls, options: TransformOptions | None = None, **fields: Any) -> TransformOptions:
        """``options`` (default: the defaults) with ``fields`` replaced; an unknown name is a ``TypeError``."""
        base = options if options is not None else cls()
        return replace(base, **fields) if fields else base

    def transforms(self, image_size: int) -> tuple[Any, Any]:
        """timm's ``(training, evaluation)`` transforms at ``image_size``."""
        return _transforms(image_size, self.mean, self.std, self.interpolation, self.crop_pct, self.auto_augment,
                           self.re_prob, self.re_mode)


def _folder_classes(root: str) -> tuple[list[str], list[str]]:
    _check_root(root)
    train_classes = _check_split(root, "train")
    val_classes = _check_split(root, "val")
    unknown = sorted(set(val_classes) - set(train_classes))
    if unknown:
        shown = ", ".join(repr(c) for c in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise SNNetError(
            f"{_LAYOUT}, and every class in val/ must also be a class in train/ (labels come from "
            f"train/); {root!r} has {len(unknown)} class folder(s) in val/ only: {shown}."
        )
    return train_classes, val_classes


def image_folder_datasets(
    root: str | os.PathLike[str],
    image_size: int = 224,
    options: TransformOptions | None = None,
    **fields: Any,
) -> tuple[Dataset, Dataset]:
    """``(train, val)`` :class:`ImageFolderSplit`\\ s of an ImageNet-layout folder.

    Training images get timm's training transform (random resized crop, flip, colour jitter,
    optional ``auto_augment`` such as ``"rand-m9-mstd0.5"``, random erasing with probability
    ``re_prob`` and mode ``re_mode``); validation images get its
    evaluation transform (resize by ``1 / crop_pct``, centre crop): :class:`TransformOptions`,
    given as ``options`` or as its fields by name (``re_prob=0.25``). ``mean``/``std`` default
    to ImageNet's; pass the anchors' own (``timm.data.resolve_data_config``) when they differ.
    ``input_img_mode="L"`` reads grey-level images for one-channel anchors.

    Raises :class:`SNNetError` when ``root``, ``train/`` or ``val/`` is missing, a split has
    no class folders, a class folder has no images, or ``val/`` has classes that ``train/`` lacks.
    Images are only listed here, not opened; one that cannot be decoded is dropped when read.
    """
    root = os.fspath(root)
    options = TransformOptions.of(options, **fields)
    train_classes, val_classes = _folder_classes(root)
    train_tf, val_tf = options.transforms(image_size)
    mode = options.input_img_mode
    train = ImageFolderSplit(root, "train", train_classes, train_classes, train_tf, mode)
    val = ImageFolderSplit(root, "val", train_classes, val_classes, val_tf, mode)
    return train, val


# -- WebDataset tar shards ----------------------------------------------------------------

WDS_PREFIX = "wds:"
_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "ppm", "pgm", "tif", "tiff")
_WDS_LAYOUT = (
    "A WebDataset is 'wds:LOCATION' (a local folder or a URI such as s3://bucket/path): either a folder "
    "with train/ and val/ subfolders of .tar shards, or a train shard pattern such as "
    "wds:s3://bucket/imagenet-train-{0000..1023}.tar whose validation shards sit beside it with 'val' "
    "or 'validation' in place of 'train'; each sample is KEY.jpg/.png plus KEY.cls (the class index)"
)
INFO_FILE = "_info.json"


def is_wds(spec: Any) -> bool:
    return isinstance(spec, str) and spec.startswith(WDS_PREFIX)


def expand_braces(pattern: str) -> list[str]:
    """Expand ``{0000..0003}`` (zero-padded ranges) and ``{a,b}`` (lists), left to right, like a shell."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if m is None:
        return [pattern]
    body = m.group(1)
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = rng.group(1), rng.group(2)
        width = len(lo) if lo.startswith("0") or len(lo) == len(hi) else 0
        step = 1 if int(hi) >= int(lo) else -1
        items = [str(i).zfill(width) for i in range(int(lo), int(hi) + step, step)]
    elif "," in body:
        items = body.split(",")
    else:
        raise SNNetError(f"{_WDS_LAYOUT}; cannot expand '{{{body}}}' in {pattern!r} (use {{0000..0099}} or {{a,b}}).")
    head, tail = pattern[: m.start()], pattern[m.end() :]
    return [out for item in items for out in expand_braces(head + item + tail)]


def _natural(names: Iterable[str]) -> list[str]:
    # timm's natural sort ("2" before "10"), without importing timm for a listing
    return sorted(names, key=lambda s: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s.lower())])


def _resolve_fs(location: str) -> tuple[Any, str, str]:
    """``(filesystem, path, query)`` for a local path or a URI (query parameters such as
    ``?endpoint_override=host:port&scheme=http`` configure pyarrow's S3 filesystem)."""
    import pyarrow.fs as pafs

    if "://" not in location:
        return pafs.LocalFileSystem(), os.path.abspath(location), ""
    base, _, query = location.partition("?")
    try:
        fs, path = pafs.FileSystem.from_uri(base + (f"?{query}" if query else ""))
    except (pa_errors() + (ValueError,)) as e:
        raise SNNetError(f"{_WDS_LAYOUT}; cannot open {location!r}: {e}") from None
    return fs, path.rstrip("/"), query


def pa_errors() -> tuple[type[BaseException], ...]:
    import pyarrow as pa

    return (OSError, pa.ArrowException)


def _list_tars(fs: Any, folder: str) -> list[str]:
    import pyarrow.fs as pafs

    try:
        infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    except pa_errors():
        return []
    return _natural(i.base_name for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".tar"))


@dataclass(frozen=True)
class ShardSet:
    """The shards of one split: where they are, how many samples each holds."""

    spec: str
    split: str
    location: str  # folder or URI prefix (with its query), for re-opening the filesystem in workers
    folder: str  # the filesystem path of the shards' folder
    names: tuple[str, ...]
    lengths: tuple[int, ...]
    num_classes: int

    @property
    def size(self) -> int:
        return sum(self.lengths)

    def filesystem(self) -> Any:
        return _resolve_fs(self.location)[0]


def _split_shards(spec: str) -> dict[str, tuple[str, str, list[str]]]:
    """``{"train": (location, folder, names), "val": ...}`` for a ``wds:`` spec (listing only)."""
    rest = spec[len(WDS_PREFIX) :]
    if not rest:
        raise SNNetError(f"{_WDS_LAYOUT}; {spec!r} names no location.")
    base, _, query = rest.partition("?") if "://" in rest else (rest, "", "")
    base = base.rstrip("/")
    q = f"?{query}" if query else ""
    last = base.rsplit("/", 1)[-1]
    if "{" in last or last.endswith(".tar"):
        parent = base.rsplit("/", 1)[0] if "/" in base else "."
        if "{" in parent:
            raise SNNetError(f"{_WDS_LAYOUT}; braces may only stand in the shard's file name, not in {parent!r}.")
        fs, folder, _ = _resolve_fs(parent + q)
        present = set(_list_tars(fs, folder))
        train = expand_braces(last)
        missing = [n for n in train if n not in present]
        if missing:
            raise SNNetError(
                f"{_WDS_LAYOUT}; {len(missing)} of the {len(train)} shard(s) of {spec!r} are missing in "
                f"{parent!r}: {', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}."
            )
        if "train" not in last:
            raise SNNetError(
                f"{_WDS_LAYOUT}; {last!r} has no 'train' in its name, so its validation shards cannot be found."
            )
        # validation shards: the same name with val/validation for train and any digits for each brace
        parts = re.split(r"\{[^{}]*\}", last)
        regex = r"[^/]+".join(re.escape(p).replace("train", "(?:val|validation)") for p in parts)
        val = _natural(n for n in present if re.fullmatch(regex, n))
        if not val:
            raise SNNetError(
                f"{_WDS_LAYOUT}; found the {len(train)} training shard(s) but no validation shards beside them "
                f"in {parent!r} (looked for {last.replace('train', 'val')!r} or 'validation')."
            )
        return {"train": (parent + q, folder, train), "val": (parent + q, folder, val)}
    out = {}
    for split in ("train", "val"):
        fs, folder, _ = _resolve_fs(f"{base}/{split}{q}")
        names = _list_tars(fs, folder)
        if not names:
            raise SNNetError(f"{_WDS_LAYOUT}; {base + '/' + split!r} holds no .tar shards.")
        out[split] = (f"{base}/{split}{q}", folder, names)
    return out


def _read_info(fs: Any, folder: str) -> dict[str, Any]:
    try:
        with fs.open_input_stream(f"{folder}/{INFO_FILE}") as f:
            return json.loads(f.read())
    except (pa_errors() + (ValueError,)):
        return {}


def _key_ext(member_name: str) -> tuple[str, str]:
    # WebDataset's convention: the key is everything before the first dot of the file name
    folder, _, name = member_name.rpartition("/")
    stem, _, ext = name.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def scan_shard(fs: Any, path: str) -> tuple[int, int]:
    """``(samples, largest label + 1)`` of one shard from its tar headers and ``.cls`` members.

    Reads the headers of a local shard and all of a remote one: index remote shards once
    with :func:`write_info` (``python -m orchestrator.data index wds:...``).
    """
    import pyarrow.fs as pafs

    count, top = 0, 0
    # Local: seek from header to header. Object storage: one streamed GET (a seek is a request).
    local = isinstance(fs, pafs.LocalFileSystem)
    opened = fs.open_input_file(path) if local else fs.open_input_stream(path)
    with opened as f, tarfile.open(fileobj=f, mode="r:" if local else "r|") as tar:
        last = None
        for member in tar:
            if not member.isfile():
                continue
            key, ext = _key_ext(member.name)
            if key != last:
                count, last = count + 1, key
            if ext == "cls":
                try:
                    top = max(top, int(tar.extractfile(member).read().strip()) + 1)  # type: ignore[union-attr]
                except ValueError:
                    pass  # reported as unreadable when read
    return count, top


@functools.lru_cache(maxsize=16)
def shard_sets(spec: str) -> dict[str, ShardSet]:
    """The train and val :class:`ShardSet` of a ``wds:`` spec.

    Sample counts come from an ``_info.json`` beside the shards (timm's format:
    ``{"num_classes": N, "splits": {"train": {"filenames": [...], "shard_lengths": [...]}}}``;
    :func:`write_info` writes one) and otherwise from a scan of each shard's tar headers
    (fast on a local disk, one request per file in object storage: write the index once).
    """
    out = {}
    num_classes = 0
    for split, (location, folder, names) in _split_shards(spec).items():
        fs = _resolve_fs(location)[0]
        info = _read_info(fs, folder)
        known: dict[str, int] = {}
        for entry in (info.get("splits") or {}).values():
            known.update(zip(entry.get("filenames", []), entry.get("shard_lengths", [])))
        lengths = []
        for name in names:
            if name in known:
                lengths.append(int(known[name]))
            else:
                n, top = scan_shard(fs, f"{folder}/{name}")
                lengths.append(n)
                if split == "train":
                    num_classes = max(num_classes, top)
        if split == "train" and info.get("num_classes"):
            num_classes = max(num_classes, int(info["num_classes"]))
        if split == "train" and not num_classes:
            for name in names:  # counts came from the index, classes did not
                num_classes = max(num_classes, scan_shard(fs, f"{folder}/{name}")[1])
        out[split] = ShardSet(spec, split, location, folder, tuple(names), tuple(lengths), 0)
    classes = max(num_classes, 1)
    return {k: replace(v, num_classes=classes) for k, v in out.items()}


def write_info(spec: str) -> list[str]:
    """Scan a ``wds:`` dataset's shards and write ``_info.json`` beside them; returns what was written."""
    shard_sets.cache_clear()
    written = []
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for split, (location, folder, names) in _split_shards(spec).items():
        fs = _resolve_fs(location)[0]
        scans = [scan_shard(fs, f"{folder}/{n}") for n in names]
        entry = groups.setdefault((location, folder), {"splits": {}, "num_classes": 0})
        entry["splits"][split] = {
            "name": split, "num_samples": sum(c for c, _ in scans),
            "filenames": list(names), "shard_lengths": [c for c, _ in scans],
        }
        entry["num_classes"] = max(entry["num_classes"], *(t for _, t in scans))
    for (location, folder), entry in groups.items():
        fs = _resolve_fs(location)[0]
        with fs.open_output_stream(f"{folder}/{INFO_FILE}") as f:
            f.write(json.dumps(entry, indent=1).encode())
        written.append(f"{folder}/{INFO_FILE}")
    shard_sets.cache_clear()
    return written


#: :class:`KeySplit` salt of ``data_fraction``'s training subset of shards (independent of the selection split).
DATA_SALT = "data:"


@dataclass(frozen=True)
class KeySplit:
    """The selection split of WebDataset shards: a sample is held out when a seeded hash of its key
    (WebDataset's ``__key__``: its member names up to the first dot) falls under ``fraction``.

    The key alone decides, so every read, rank, loader worker and node agrees without
    coordination or a listing, and the training stream skips exactly what the selection stream
    keeps. The hash is ``blake2b`` (not Python's salted ``hash()``), so it is the same in every
    process and run; a larger ``fraction`` only adds samples. The held-out count is binomial
    around ``fraction`` of the samples (not stratified: labels come only with the images).
    ``salt`` makes an independent split of the same keys (``data_fraction``'s training subset).
    """

    fraction: float
    seed: int
    salt: str = ""

    def held_out(self, key: str) -> bool:
        digest = hashlib.blake2b(f"{self.salt}{self.seed}:{key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") < self.fraction * 2**64

    def expected(self, size: int) -> int:
        """The expected held-out count of ``size`` samples (what ``len()`` reports; no shard is read)."""
        return round(size * self.fraction)


class WebDatasetShards(IterableDataset):
    """One split of a WebDataset (tar shards, local or in object storage), read as a stream.

    ``len()`` is the sample count (from the index or the tar headers; no image is decoded).
    :func:`make_loader` gives each data-parallel rank its own shards (rank ``r`` of ``w`` reads
    shards ``r::w`` of a per-epoch seeded shuffle, so no node needs a copy of the whole set) and
    splits them further over the loader's worker processes. A sample whose image cannot be
    decoded or whose ``.cls`` is missing or not an integer becomes :class:`Unreadable`.

    With ``keys`` (a :class:`KeySplit`; :meth:`keyed`) the stream yields only the samples the
    split holds out (``held_out=True``: the selection split) or only the others (training);
    with ``subset`` (another :class:`KeySplit`), only those of them that ``subset`` holds out
    (``data_fraction``). ``len()`` is then the expected count, since the exact one is known only
    after a pass.
    """

    def __init__(self, shards: ShardSet, transform: Callable[[Any], Any], input_img_mode: str = "RGB",
                 keys: KeySplit | None = None, held_out: bool = False, subset: KeySplit | None = None):
        self.shards = shards
        self.transform = transform
        self.input_img_mode = input_img_mode
        self.num_classes = shards.num_classes
        self.classes = tuple(str(i) for i in range(shards.num_classes))
        self.split = shards.split
        self.keys, self.held_out, self.subset = keys, held_out, subset

    def keyed(self, keys: KeySplit | None, held_out: bool = False, transform: Callable[[Any], Any] | None = None,
              subset: KeySplit | None = None) -> WebDatasetShards:
        """The same shards keeping one side of ``keys`` and, with ``subset``, the part of it that
        ``subset`` holds out (read through ``transform``, default this one's)."""
        return WebDatasetShards(self.shards, transform or self.transform, self.input_img_mode, keys, held_out, subset)

    def keeps(self, key: str) -> bool:
        """Whether this dataset yields the sample with ``key`` (always, without ``keys`` and ``subset``)."""
        return ((self.keys is None or self.keys.held_out(key) == self.held_out)
                and (self.subset is None or self.subset.held_out(key)))

    def __len__(self) -> int:
        size = self.shards.size
        if self.keys is not None:
            held = self.keys.expected(size)
            size = held if self.held_out else size - held
        return size if self.subset is None else self.subset.expected(size)

    def __getitem__(self, index: int) -> Any:
        raise TypeError("WebDataset shards are read in order: use make_loader() or calibration_batches().")

    def __iter__(self) -> Iterator[Any]:  # every sample once, in shard order (single process)
        fs = self.shards.filesystem()
        for name in self.shards.names:
            yield from map(self.decode, self.read_shard(fs, name))

    def __repr__(self) -> str:
        part = "" if self.keys is None else f", {'held out' if self.held_out else 'kept'} by {self.keys}"
        part += "" if self.subset is None else f", subset {self.subset}"
        return (f"WebDatasetShards({self.shards.spec!r}, split={self.split!r}, shards={len(self.shards.names)}, "
                f"n={len(self)}{part})")

    def read_shard(self, fs: Any, name: str, keep: Callable[[int], bool] | None = None) -> Iterator[Any]:
        """The samples of one shard as encoded records ``(shard, key, {extension: bytes})``, for
        :meth:`decode` (``keep(i)`` picks by position within the shard, counting every sample;
        :meth:`keeps` then picks by key). A sample not taken is not extracted."""
        path = f"{self.shards.folder}/{name}"
        try:
            stream = fs.open_input_stream(path)
        except pa_errors() as e:
            raise SNNetError(f"cannot read the shard {path!r}: {e}") from None
        with stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            index, key, members, taken = -1, None, {}, False
            for member in tar:
                if not member.isfile():
                    continue
                k, ext = _key_ext(member.name)
                if k != key:
                    if taken:
                        yield name, key, members
                    index, key, members = index + 1, k, {}
                    taken = (keep is None or keep(index)) and self.keeps(k)
                if taken:
                    f = tar.extractfile(member)
                    members[ext] = f.read() if f is not None else b""
            if taken:
                yield name, key, members

    def decode(self, record: tuple[str, str, dict[str, bytes]]) -> Any:
        """One record of :meth:`read_shard` as ``(transformed image, label)``, or :class:`Unreadable`."""
        shard, key, members = record
        # in the train/ and val/ layout both splits may hold an s-0000.tar: name the shard by its folder too
        folder = self.shards.folder.rstrip("/").rsplit("/", 1)[-1]
        shard = f"{folder}/{shard}" if folder == self.split else shard
        where = f"{shard}:{key}"
        image_ext = next((e for e in _IMAGE_EXTS if e in members), None)
        if image_ext is None:
            return Unreadable(where, "no image member (.jpg, .png, ...)")
        where = f"{shard}:{key}.{image_ext}"
        try:
            label = int(members["cls"].strip())
        except (KeyError, ValueError):
            return Unreadable(where, "no integer .cls member")
        try:
            img = _decode(members[image_ext], self.input_img_mode)
        except Exception as e:  # noqa: BLE001 - any decoding failure makes the sample unreadable
            return Unreadable(where, f"{type(e).__name__}: {e}")
        return self.transform(img), label


class _RankStream(IterableDataset):
    """This rank's batches of a :class:`WebDatasetShards` (``(x, y, skipped names)`` per batch).

    ``fill=True`` (training): every rank yields exactly ``(size // world) // batch_size`` full
    batches per epoch, so DDP ranks stay in step whatever the shards' lengths: a rank whose
    shards hold fewer samples starts its shards over (reshuffled), one with more stops early.
    ``fill=False`` (evaluation): the rank's shards are read once, every sample exactly once.
    Loader workers split a rank's shards by sample position, counting every sample of them, so
    a keyed stream (:class:`KeySplit`) loses or repeats none; its ``len()`` is then an upper bound.
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
                yield _collate(batch)
                batch, done = [], done + 1
        if batch and done < wanted:
            yield _collate(batch)


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


def wds_datasets(
    spec: str,
    image_size: int = 224,
    options: TransformOptions | None = None,
    **fields: Any,
) -> tuple[WebDatasetShards, WebDatasetShards]:
    """``(train, val)`` of a ``wds:`` dataset, with the same timm transforms (:class:`TransformOptions`,
    as ``options`` or by field name) as :func:`image_folder_datasets`."""
    sets = shard_sets(spec)
    options = TransformOptions.of(options, **fields)
    train_tf, val_tf = options.transforms(image_size)
    mode = options.input_img_mode
    return WebDatasetShards(sets["train"], train_tf, mode), WebDatasetShards(sets["val"], val_tf, mode)


def write_shards(
    samples: Iterable[tuple[str, bytes, int]],
    pattern: str,
    shard_size: int,
) -> list[str]:
    """Write ``(key, image bytes, label)`` samples into tar shards ``pattern % i`` (local paths;
    a pattern without ``%`` is one shard).

    Image bytes keep their format (the key's extension, e.g. ``"img7.jpg"``); each label goes
    into ``<key>.cls``. Returns the shard paths. Use :func:`write_info` afterwards for the index.
    """
    paths: list[str] = []
    tar = None
    count = 0
    try:
        for key, data, label in samples:
            if tar is None or count == shard_size:
                if tar is not None:
                    tar.close()
                if "%" not in pattern and paths:
                    raise ValueError(f"{pattern!r} names one shard but more than {shard_size} samples came.")
                paths.append(pattern % len(paths) if "%" in pattern else pattern)
                os.makedirs(os.path.dirname(os.path.abspath(paths[-1])), exist_ok=True)
                tar, count = tarfile.open(paths[-1], "w"), 0
            stem, _, ext = key.partition(".")
            for name, blob in ((key, data), (f"{stem}.cls", str(int(label)).encode())):
                entry = tarfile.TarInfo(name)
                entry.size, entry.mtime = len(blob), 0
                tar.addfile(entry, io.BytesIO(blob))
            count += 1
    finally:
        if tar is not None:
            tar.close()
    return paths


# -- loaders ------------------------------------------------------------------------------

#: Repeated augmentation keeps ``len(dataset)`` rounded down to a multiple of this per epoch (DeiT's).
REPEAT_ROUND = 256


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

    def __init__(self, *args: Any, on_skip: Callable[[str], None] | None = _warn, strict_batches: bool = False,
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
    on_skip: Callable[[str], None] | None = _warn,
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
        collate_fn=_collate,
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


def calibration_batches(
    dataset: Dataset, samples: int, batch_size: int, rank: int = 0, world: int = 1, seed: int = 1234, *,
    on_skip: Callable[[str], None] | None = _warn, skip_log: SkipLog | None = None,
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


# -- dispatch -----------------------------------------------------------------------------


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
    import numpy as np
    from torch.utils.data import Subset

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


def _with_transform(dataset: Any, transform: Any) -> Any:
    """``dataset`` reading its images through ``transform`` (a shallow copy); tensors stay as they are."""
    import copy

    from torch.utils.data import Subset

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
    from torch.utils.data import Subset

    from orchestrator.data.fidelity import selection_split, training_subset

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
    train_classes, _ = _folder_classes(path)
    return len(_list_split(path, split, tuple(train_classes)))


def dataset_num_classes(name_or_path: str | os.PathLike[str]) -> int:
    """Number of classes (folders of train/, or the largest ``.cls`` + 1 of shards), without decoding images."""
    if isinstance(name_or_path, str) and name_or_path == "demo":
        return DEMO_NUM_CLASSES
    if is_wds(name_or_path):
        return shard_sets(str(name_or_path))["train"].num_classes
    path = os.fspath(name_or_path)
    if not os.path.isdir(path):
        get_datasets(path)
    classes = tuple(_folder_classes(path)[0])
    _list_split(path, "train", classes)  # an empty class folder is an error here too
    return len(classes)


def num_classes(dataset: Dataset) -> int:
    """Number of classes of a dataset made by this module."""
    n = getattr(dataset, "num_classes", None)
    if n is None:
        raise TypeError(f"{type(dataset).__name__} does not record its number of classes.")
    return int(n)


# -- command line: shard a folder, index shards -------------------------------------------


def _folder_samples(root: str, split: str) -> Iterator[tuple[str, bytes, int]]:
    train_classes, _ = _folder_classes(root)
    for i, (path, label) in enumerate(_list_split(root, split, tuple(train_classes))):
        ext = os.path.splitext(path)[1].lower()
        with open(path, "rb") as f:
            yield f"{i:08d}{ext}", f.read(), label


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m orchestrator.data shard ROOT OUT [--shard-size N]`` | ``index wds:LOCATION``."""
    from orchestrator.cli import ArgumentParser

    parser = ArgumentParser(prog="python -m orchestrator.data", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    shard = sub.add_parser("shard", help="write an ImageNet-layout folder as WebDataset shards OUT/{train,val}/")
    shard.add_argument("root")
    shard.add_argument("out")
    shard.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    index = sub.add_parser("index", help="count the samples of wds: shards once and write _info.json beside them")
    index.add_argument("spec", help="wds:FOLDER_OR_URI or wds:PATTERN-train-{0000..0099}.tar")
    args = parser.parse_args(argv)
    from orchestrator.cli import run_cli

    def run(_argv: Sequence[str] | None) -> int:  # a user's mistake: one ``error:`` paragraph, exit 2
        if args.command == "shard":
            if args.shard_size < 1:
                raise SNNetError(f"--shard-size must be at least 1; got {args.shard_size}.")
            for split in ("train", "val"):
                paths = write_shards(_folder_samples(args.root, split),
                                     os.path.join(args.out, split, f"{split}-%06d.tar"), args.shard_size)
                print(f"{split}: {len(paths)} shard(s) in {os.path.join(args.out, split)}")
            args.spec = WDS_PREFIX + os.path.abspath(args.out)
        if not is_wds(args.spec):
            raise SNNetError(f"{_WDS_LAYOUT}; {args.spec!r} does not start with 'wds:'.")
        for path in write_info(args.spec):
            print(f"wrote {path}")
        sets = shard_sets(args.spec)
        print(f"train {sets['train'].size} samples in {len(sets['train'].names)} shard(s), "
              f"val {sets['val'].size} in {len(sets['val'].names)}, {sets['train'].num_classes} classes")
        return 0

    return run_cli(run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
