"""``python -m snnet.space ... --score --dataset DIR``: init scores of every stitch, before training.

The images come from an image folder (one subfolder per class, as ImageNet's ``val``; a ``val``
subfolder of ``DIR`` is used when there is one), read with each family's own evaluation transform
(timm's ``resolve_data_config`` of the first anchor, at
the space's input size). A seeded permutation gives the first
``ls_samples`` images to the least-squares init of the stitching layers and the next ``images`` to
the scores (:func:`snnet.scores.score_stitches`), so the two never share an image. ``init_top1``
counts a prediction right when it equals the image's folder index, which is the model's class
index when the folders sort as its classes do (ImageNet's synset folders do).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from .._errors import SNNetError


def image_folder(path: str):
    """A torchvision ``ImageFolder`` at ``path`` (or ``path/val``); a clear error where there is none."""
    from torchvision.datasets import ImageFolder

    root = os.path.join(path, "val") if os.path.isdir(os.path.join(path, "val")) else path
    if not os.path.isdir(root):
        raise SNNetError(f"--dataset must be an image folder (one subfolder per class), but {path!r} is not a "
                         "folder.")
    try:
        return ImageFolder(root)
    except (FileNotFoundError, RuntimeError) as e:  # no class folders / no images in them
        raise SNNetError(f"--dataset {path!r} holds no images in class subfolders ({e}).") from None


def _batches(dataset, positions, transform, batch_size: int) -> Iterator[tuple]:
    import torch

    for start in range(0, len(positions), batch_size):
        items = [dataset[int(i)] for i in positions[start:start + batch_size]]
        yield (torch.stack([transform(img) for img, _ in items]), torch.tensor([y for _, y in items]))


def score_space(net, path: str, *, images: int, ls_samples: int, batch_size: int = 64, seed: int = 0) -> dict:
    """LS-initialise ``net``'s stitching layers and score every stitch; ``{stitch_id: record}``
    with ``ls_r2``, ``cka``, ``kl``, ``init_top1`` and ``images``."""
    from timm.data import create_transform, resolve_data_config

    from ..scores import score_stitches, stitch_r2

    dataset = image_folder(path)
    order = np.random.default_rng([seed, 30]).permutation(len(dataset))
    if len(order) <= ls_samples:
        raise SNNetError(f"--dataset {path!r} has {len(order)} images: more than --ls-samples ({ls_samples}) are "
                         "needed, the rest score the stitches.")
    config = resolve_data_config({"input_size": tuple(net.space.profiles[0].input_size)}, model=net.anchors[0].model)
    transform = create_transform(**config)
    r2 = net.init_least_squares(x for x, _ in _batches(dataset, order[:ls_samples], transform, batch_size))
    scored = score_stitches(net, _batches(dataset, order[ls_samples:ls_samples + images], transform, batch_size))
    per_stitch = stitch_r2(net.space, r2)
    return {i: {"ls_r2": per_stitch[i], **{k: v for k, v in s.to_dict().items() if k != "stitch_id"}}
            for i, s in scored.items()}
