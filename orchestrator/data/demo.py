"""The embedded demo data: scikit-learn's handwritten digits, distorted, as 16x16 tensors.

scikit-learn's handwritten digits (1797 images of 8x8 grey levels, shipped inside the package,
so nothing is downloaded), upsampled bilinearly to 16x16, scaled to [0, 1], each randomly
rotated, scaled and shifted (:data:`DEMO_DISTORTION`, seeded) and normalised with the train
split's mean and standard deviation (:data:`DEMO_MEAN`, :data:`DEMO_STD`). A fixed, seeded,
stratified 80/20 split of the digits gives 1437 training images and 360 validation digits, each
of those distorted three ways (1080 validation images); items are ``(float32 tensor [1, 16, 16],
int64 label)``. The split's settings (``DEMO_VAL_FRACTION``, the seeds, ``DEMO_VAL_COPIES``) are
public because the demo anchors' weights are keyed by them (:mod:`orchestrator.data.demo_anchors`).
"""

from __future__ import annotations

import functools
import math
import os
from importlib.metadata import version
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from orchestrator.storage import atomic_write

__all__ = [
    "DEMO_IMAGE_SIZE",
    "DEMO_NUM_CLASSES",
    "DEMO_DISTORTION",
    "DEMO_MEAN",
    "DEMO_STD",
    "DEMO_VAL_FRACTION",
    "DEMO_SPLIT_SEED",
    "DEMO_VAL_COPIES",
    "DEMO_TRAIN_SEED",
    "DEMO_VAL_SEED",
    "DemoDigits",
    "distort_digits",
    "default_cache_dir",
    "demo_train_draw",
    "demo_datasets",
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
#: The validation share of the stratified split, and the seed of that split.
DEMO_VAL_FRACTION = 0.2
DEMO_SPLIT_SEED = 0
#: Distorted copies of each validation digit: 3 x 360 = 1080 images, so one image is 0.09 points.
DEMO_VAL_COPIES = 3
#: Seeds of the train split's distortion and of the validation copies' distortions.
DEMO_TRAIN_SEED = 1
DEMO_VAL_SEED = 2


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
    key = f"{DEMO_IMAGE_SIZE}px-val{DEMO_VAL_FRACTION}-seed{DEMO_SPLIT_SEED}-sklearn{version('scikit-learn')}"
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
    # scikit-learn is imported here only: it costs 3-4 s, and the cached split (:func:`_demo_clean`) spares it
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
        test_size=DEMO_VAL_FRACTION,
        stratify=digits.target,
        random_state=DEMO_SPLIT_SEED,
    )
    train_idx, val_idx = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
    return images[train_idx], labels[train_idx], images[val_idx], labels[val_idx]


def _normalise(images: torch.Tensor) -> torch.Tensor:
    return (images - DEMO_MEAN[0]) / DEMO_STD[0]


@functools.lru_cache(maxsize=1)
def _demo_tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # Cached: every worker of a run and every test asks for the same, immutable split.
    x_train, y_train, x_val, y_val = _demo_clean()
    train = _normalise(distort_digits(x_train, torch.Generator().manual_seed(DEMO_TRAIN_SEED)))
    val = _normalise(distort_digits(x_val.repeat(DEMO_VAL_COPIES, 1, 1, 1),
                                    torch.Generator().manual_seed(DEMO_VAL_SEED)))
    # contiguous copies, so that the train and val tensors share no storage
    return (
        train.contiguous(),
        y_train.clone(),
        val.contiguous(),
        y_val.repeat(DEMO_VAL_COPIES).contiguous(),
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
