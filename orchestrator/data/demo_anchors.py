"""The embedded demo's anchor family: three tiny ViTs, pretrained once on the demo digits and cached.

Importing this module registers :data:`DEMO_ANCHORS` with timm's own model registry, so
``timm.create_model("snnet_demo_vit_small")`` and everything built on it (``snnet.anchors``,
the space CLI, the supernet) treat them like any timm model. Registration is all the import
does; nothing is trained, read or created until :func:`demo_anchor_specs` is called. Any
process that builds demo anchors by name (Ray workers included) must import this module first.

The three anchors share one family, as SN-Net requires: 16x16 one-channel inputs, 4x4
patches (16 tokens plus a class token), 6 blocks, 10 classes; only the width grows
(32/64/96 with 2/4/6 heads of 16 channels).

:func:`demo_anchor_specs` pretrains each anchor on the demo train split the first time
(AdamW with a one-cycle schedule, a fresh random distortion of the digits every epoch, seeded;
about a minute for all three on two CPU cores) and
stores its state dict as ``<cache_dir>/<name>-<hash>.pth``, the hash covering the
architecture, the data and the training recipe, so a changed recipe never reuses stale
weights. A lock file serialises concurrent pretraining of one anchor and every file is
written under a temporary name and renamed into place, so readers never see half a file.
``timm.create_model(name, pretrained=True)`` loads the default recipe's cached weights from
the default cache directory when they exist, and otherwise warns and initialises randomly;
it never downloads anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from orchestrator.cli import plural
from orchestrator.data.demo import (
    DEMO_DISTORTION,
    DEMO_IMAGE_SIZE,
    DEMO_MEAN,
    DEMO_NUM_CLASSES,
    DEMO_SPLIT_SEED,
    DEMO_STD,
    DEMO_TRAIN_SEED,
    DEMO_VAL_COPIES,
    DEMO_VAL_FRACTION,
    DEMO_VAL_SEED,
    default_cache_dir,
    demo_datasets,
    demo_train_draw,
)
from orchestrator.storage import atomic_write
from snnet.anchors import AnchorSpec

# A list, not a tuple: timm's register_model appends each entrypoint's name to __all__.
__all__ = [
    "DEMO_ANCHORS",
    "DEMO_ARCH",
    "PretrainRecipe",
    "DEFAULT_RECIPE",
    "default_cache_dir",
    "checkpoint_path",
    "pretrain_anchor",
    "demo_anchor_specs",
    "evaluate_top1",
]

#: The demo anchors, in increasing size (and FLOPs).
DEMO_ANCHORS: tuple[str, ...] = ("snnet_demo_vit_tiny", "snnet_demo_vit_small", "snnet_demo_vit_base")

_WIDTH_HEADS: dict[str, tuple[int, int]] = {
    "snnet_demo_vit_tiny": (32, 2),
    "snnet_demo_vit_small": (64, 4),
    "snnet_demo_vit_base": (96, 6),
}

#: ``VisionTransformer`` arguments shared by all demo anchors (plus ``embed_dim``/``num_heads``).
DEMO_ARCH: dict[str, Any] = dict(
    img_size=DEMO_IMAGE_SIZE,
    patch_size=4,
    in_chans=1,
    num_classes=DEMO_NUM_CLASSES,
    depth=6,
    mlp_ratio=2.0,
    class_token=True,
    global_pool="token",
)

# Version of the cache file format and of this module's training code; bump it to invalidate caches.
# 2: distorted digits, a fresh distortion every pretraining epoch, recipe of 21 epochs at lr 1e-3.
_CACHE_FORMAT = 2


def _arch(name: str) -> dict[str, Any]:
    width, heads = _WIDTH_HEADS[name]
    return dict(DEMO_ARCH, embed_dim=width, num_heads=heads)


# -- timm registration ----------------------------------------------------------------------

# No url, file or hf_hub_id: timm has nowhere to download from (see _create for pretrained=True).
default_cfgs = generate_default_cfgs(
    {
        name: dict(
            url="",
            num_classes=DEMO_NUM_CLASSES,
            input_size=(1, DEMO_IMAGE_SIZE, DEMO_IMAGE_SIZE),
            pool_size=None,
            crop_pct=1.0,
            interpolation="bilinear",
            mean=DEMO_MEAN,
            std=DEMO_STD,
            first_conv="patch_embed.proj",
            classifier="head",
        )
        for name in DEMO_ANCHORS
    }
)


def _create(name: str, pretrained: bool, **kwargs: Any) -> VisionTransformer:
    # timm.create_model passes these as None when unset; a caller's own weight source wins.
    if pretrained and not kwargs.get("pretrained_cfg_overlay") and kwargs.get("pretrained_cfg") is None:
        # "Pretrained" for a demo anchor means the default recipe's cached checkpoint.
        path = checkpoint_path(name)
        if path.is_file():
            kwargs["pretrained_cfg_overlay"] = dict(file=str(path))
        else:  # timm would raise "No pretrained weights exist"; never download, fall back instead
            warnings.warn(
                f"{name}: no pretrained demo weights at {path} (run orchestrator.data.demo_anchors.demo_anchor_specs() "
                "to pretrain them); using random initialisation.",
                stacklevel=3,
            )
            pretrained = False
    return build_model_with_cfg(
        VisionTransformer,
        name,
        pretrained=pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,  # resamples position embeddings for another img_size
        **{**_arch(name), **kwargs},
    )


@register_model
def snnet_demo_vit_tiny(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """Demo anchor: ViT, width 32, 2 heads, 6 blocks, 16x16x1 input, 4x4 patches, 10 classes."""
    return _create("snnet_demo_vit_tiny", pretrained, **kwargs)


@register_model
def snnet_demo_vit_small(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """Demo anchor: ViT, width 64, 4 heads, 6 blocks, 16x16x1 input, 4x4 patches, 10 classes."""
    return _create("snnet_demo_vit_small", pretrained, **kwargs)


@register_model
def snnet_demo_vit_base(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """Demo anchor: ViT, width 96, 6 heads, 6 blocks, 16x16x1 input, 4x4 patches, 10 classes."""
    return _create("snnet_demo_vit_base", pretrained, **kwargs)


# -- pretraining --------------------------------------------------------------------------


@dataclass(frozen=True)
class PretrainRecipe:
    """How a demo anchor is pretrained; every field is part of the cache key.

    Each epoch sees a fresh random distortion of the 1437 training digits
    (:func:`orchestrator.data.demo.demo_train_draw`), so the wider anchors do not memorise the
    small training set and the family orders by capacity: on the default recipe tiny, small
    and base reach roughly 50, 75 and 85% top-1 on the distorted validation images.
    """

    epochs: int = 21
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    label_smoothing: float = 0.1
    seed: int = 0


DEFAULT_RECIPE = PretrainRecipe()


def _cache_key(name: str, recipe: PretrainRecipe) -> str:
    blob = json.dumps(
        {
            "format": _CACHE_FORMAT,
            "arch": _arch(name),
            "recipe": asdict(recipe),
            "data": {
                "source": "sklearn.load_digits",
                "image_size": DEMO_IMAGE_SIZE,
                "mean": DEMO_MEAN,
                "std": DEMO_STD,
                "val_fraction": DEMO_VAL_FRACTION,
                "split_seed": DEMO_SPLIT_SEED,
                "distortion": DEMO_DISTORTION,
                "train_seed": DEMO_TRAIN_SEED,
                "val_seed": DEMO_VAL_SEED,
                "val_copies": DEMO_VAL_COPIES,
            },
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def checkpoint_path(
    name: str, recipe: PretrainRecipe = DEFAULT_RECIPE, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Where the pretrained state dict of demo anchor ``name`` under ``recipe`` is cached."""
    if name not in _WIDTH_HEADS:
        raise ValueError(f"{name!r} is not a demo anchor; the demo anchors are {', '.join(DEMO_ANCHORS)}.")
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / f"{name}-{_cache_key(name, recipe)}.pth"


@torch.no_grad()
def evaluate_top1(model: torch.nn.Module, dataset: Any, batch_size: int = 512) -> float:
    """Top-1 accuracy in percent of ``model`` on a dataset of ``(image, label)`` pairs."""
    was_training = model.training
    model.eval()
    correct = total = 0
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for x, y in loader:
        correct += int((model(x).argmax(dim=1) == y).sum())
        total += len(y)
    model.train(was_training)
    return 100.0 * correct / max(total, 1)


@contextlib.contextmanager
def _intra_op_threads(n: int) -> Iterator[None]:
    # Tiny matrices gain little from intra-op threads, and spinning OpenMP threads collapse
    # when the cores are shared (measured ~70x slower with 2 threads on 2 busy cores).
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def pretrain_anchor(
    name: str,
    recipe: PretrainRecipe = DEFAULT_RECIPE,
    progress: Callable[[str], None] | None = print,
) -> tuple[dict[str, torch.Tensor], float]:
    """Train demo anchor ``name`` from scratch on the demo train split (CPU, seeded).

    Returns its state dict and its top-1 accuracy (percent) on the demo val split. The
    caller's global RNG state and thread count are left as they were.
    """
    _, val = demo_datasets()
    n = len(demo_train_draw(0)[1])
    steps_per_epoch = max(n // recipe.batch_size, 1)
    say = progress or (lambda _msg: None)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]), _intra_op_threads(1):
        torch.manual_seed(recipe.seed)
        model = timm.create_model(name, pretrained=False)
        opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch, pct_start=recipe.warmup_fraction
        )
        gen = torch.Generator().manual_seed(recipe.seed)
        model.train()
        for epoch in range(recipe.epochs):
            # a fresh distortion of the training digits every epoch (seeded by recipe and epoch)
            x_all, y_all = demo_train_draw(1_000 * (recipe.seed + 1) + epoch)
            perm = torch.randperm(n, generator=gen)
            loss_sum = 0.0
            correct = 0
            for step in range(steps_per_epoch):
                idx = perm[step * recipe.batch_size : (step + 1) * recipe.batch_size]
                x, y = x_all[idx], y_all[idx]
                logits = model(x)
                loss = torch.nn.functional.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                loss_sum += float(loss.detach()) * len(y)
                correct += int((logits.argmax(dim=1) == y).sum())
            seen = min(steps_per_epoch * recipe.batch_size, n)
            say(
                f"pretraining {name}: epoch {epoch + 1}/{recipe.epochs} loss {loss_sum / seen:.3f} "
                f"train top1 {100.0 * correct / seen:.1f}% ({time.perf_counter() - start:.1f}s)"
            )
        top1 = evaluate_top1(model, val)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, top1


@contextlib.contextmanager
def _exclusive(lock_path: Path, on_wait: Callable[[], None]) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``lock_path`` (no-op where fcntl is unavailable)."""
    try:
        import fcntl
    except ImportError:  # Windows: the atomic rename alone still keeps the cache whole
        yield
        return
    with open(lock_path, "a+b") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait()
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
    # The lock file stays: deleting it would race with a process that just opened it.


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return {}


def demo_anchor_specs(
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = print,
    *,
    epochs: int | None = None,
    recipe: PretrainRecipe | None = None,
    anchors: Sequence[str] = DEMO_ANCHORS,
    brief: bool = False,
) -> list[AnchorSpec]:
    """Specs of the pretrained demo anchors, pretraining and caching those not cached yet.

    Args:
        cache_dir: where checkpoints live; default :func:`default_cache_dir`.
        progress: called with one line per anchor per epoch and one summary line per anchor
            (``None``: silent).
        epochs: shortcut to override ``recipe.epochs`` (a different cache entry).
        recipe: the training recipe; default :data:`DEFAULT_RECIPE`.
        anchors: which demo anchors, in order.
        brief: one line per anchor pretrained, when it starts, instead of the epoch and result
            lines (the CLIs' consoles: a first run's three anchors cost three lines, not 66).

    Returns:
        ``AnchorSpec(name, checkpoint=<path>)`` per anchor, in the order of ``anchors``.
    """
    recipe = recipe or DEFAULT_RECIPE
    if epochs is not None:
        recipe = replace(recipe, epochs=epochs)
    if recipe.epochs < 1:
        raise ValueError(f"Demo anchors need at least one pretraining epoch; got epochs={recipe.epochs}.")
    say = progress or (lambda _msg: None)
    specs, cached = [], []
    for name in anchors:
        path = checkpoint_path(name, recipe, cache_dir)
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = path.with_name(path.name + ".lock")
            with _exclusive(lock, lambda name=name: say(f"{name}: waiting for another process pretraining it")):
                if not path.is_file():  # another process may have finished it while we waited
                    if brief:
                        say(f"pretraining demo anchor {name}: {plural(recipe.epochs, 'epoch')}, on the first run only "
                            f"(cached in {path.parent})")
                    start = time.perf_counter()
                    state, top1 = pretrain_anchor(name, recipe, None if brief else progress)
                    seconds = time.perf_counter() - start
                    meta = {
                        "name": name,
                        "val_top1": top1,
                        "train_seconds": round(seconds, 2),
                        "arch": _arch(name),
                        "recipe": asdict(recipe),
                        "torch": torch.__version__,
                        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    }
                    # Metadata first: a present .pth always has its .json next to it.
                    atomic_write(path.with_suffix(".json"),
                                 lambda f, meta=meta: f.write(json.dumps(meta, indent=2).encode()))
                    atomic_write(path, lambda f, state=state: torch.save(state, f))
                    if not brief:
                        say(f"{name}: val top1 {top1:.1f}% after {recipe.epochs} epochs in {seconds:.1f}s -> {path}")
                    specs.append(AnchorSpec(name, checkpoint=str(path)))
                    continue
        top1 = _read_meta(path).get("val_top1")
        cached.append(f"{name} (val top1 {top1:.1f}%)" if isinstance(top1, (int, float)) else name)
        specs.append(AnchorSpec(name, checkpoint=str(path)))
    if cached:  # one line: the run's weights line names each file
        say(f"demo anchors from the cache in {path.parent}: {', '.join(cached)}")
    return specs
