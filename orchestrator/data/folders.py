"""ImageNet-layout folders: ``ROOT/train/<class>/<image>`` and ``ROOT/val/<class>/<image>``.

Each split is an :class:`ImageFolderSplit` (an image file per item, decoded with PIL and timm's
transforms, :class:`~orchestrator.data.transforms.TransformOptions`). The class index comes from
the sorted class folders of ``train/``, so ``val/`` may hold a subset of the classes and still
gets the same labels. A folder is checked and listed (by extension, nothing opened) when the
datasets are made, and a layout mistake is an :class:`~snnet.SNNetError` that says what is
expected and what was found; an image that cannot be decoded is dropped when read
(:mod:`orchestrator.data.unreadable`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

from torch.utils.data import Dataset

from orchestrator.data.transforms import TransformOptions
from orchestrator.data.unreadable import Unreadable, decode_image
from snnet import SNNetError

# timm (its natural sort and image extensions) is imported inside the functions that list a folder:
# importing orchestrator.data costs torch's import only.

__all__ = ["ImageFolderSplit", "image_folder_datasets", "folder_classes", "list_images"]

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
def list_images(root: str, split: str, classes: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
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
    the dataset's root, ``val/cat/img0.png``) and is dropped by the loaders of
    :mod:`orchestrator.data.loaders`, which name it once (:class:`~orchestrator.data.unreadable.SkipLog`);
    it is never replaced by another image, so evaluation counts stay honest.
    """

    def __init__(self, root: str, split: str, classes: Sequence[str], present: Sequence[str],
                 transform: Callable[[Any], Any], input_img_mode: str = "RGB"):
        self.root, self.split = root, split
        self.split_dir = os.path.join(root, split)
        self.samples = list_images(root, split, tuple(classes))
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
                img = decode_image(f, self.input_img_mode)
        except Exception as e:  # noqa: BLE001 - any decoding failure makes the file unreadable
            return Unreadable(os.path.relpath(path, self.root), f"{type(e).__name__}: {e}")
        return self.transform(img), label

    def filename(self, index: int) -> str:
        return self.samples[index][0]

    def __repr__(self) -> str:
        return f"ImageFolderSplit({self.split_dir!r}, n={len(self)}, classes={self.num_classes})"


def folder_classes(root: str) -> tuple[list[str], list[str]]:
    """``(train classes, val classes)`` of an ImageNet-layout folder, checked: an :class:`SNNetError` names a
    missing ``root``, ``train/`` or ``val/``, a split without class folders or a class of ``val/`` only."""
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
    train_classes, val_classes = folder_classes(root)
    train_tf, val_tf = options.transforms(image_size)
    mode = options.input_img_mode
    train = ImageFolderSplit(root, "train", train_classes, train_classes, train_tf, mode)
    val = ImageFolderSplit(root, "val", train_classes, val_classes, val_tf, mode)
    return train, val
