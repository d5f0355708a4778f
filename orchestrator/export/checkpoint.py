"""A trial's checkpoint read back: its state, its supernet rebuilt, a catalog row's stitch found in it.

Export and serving both start here. :func:`load_state` reads ``<checkpoint>/state.pt`` (a local folder
or a URI pyarrow reads) with ``weights_only=True``; :func:`rebuild_supernet` rebuilds the trained supernet
from the training settings and stitch space stored in it (anchor weights come from the checkpoint, never
from a hub or the anchors' original files) and merges LoRA updates of the stitching layers;
:func:`stitch_of` finds a catalog row's stitch in it. Nothing read is trusted: anchors are built from
timm model names and the allow-listed options of :data:`ANCHOR_OPTIONS` only.

This module imports torch and the model code; :mod:`orchestrator.export` loads it only once a row has
been chosen and checked.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import torch

from orchestrator import storage
from orchestrator.data import demo_anchors as demo  # noqa: F401 - registers the demo anchors with timm
from orchestrator.train.config import TrainConfig
from orchestrator.train.worker import CHECKPOINT_FILE
from snnet import AnchorSpec, SNNetError, Stitch, StitchedSupernet, StitchSpace, create_anchor
from snnet.anchors import check_model_name

__all__ = ["ANCHOR_OPTIONS", "load_state", "rebuild_supernet", "stitch_of", "train_config"]


def load_state(checkpoint: str) -> dict[str, Any]:
    """``<checkpoint>/state.pt`` of a Ray checkpoint folder (local path or URI), weights only."""
    if not checkpoint:
        raise SNNetError("This catalog row has no checkpoint: the trial did not keep its trained "
                         "supernet, so it cannot be exported.")
    if "://" in checkpoint:
        with tempfile.TemporaryDirectory(prefix="snnet-export-") as folder:
            local = os.path.join(folder, CHECKPOINT_FILE)
            _download(checkpoint.rstrip("/") + "/" + CHECKPOINT_FILE, local, checkpoint)
            return _torch_load(local, checkpoint)
    if not os.path.isdir(checkpoint):
        if os.path.exists(checkpoint):
            parent = os.path.dirname(os.path.abspath(checkpoint))
            hint = (f"name the folder that holds it instead: {parent}"
                    if os.path.basename(checkpoint) == CHECKPOINT_FILE
                    else f"a checkpoint is the folder that holds {CHECKPOINT_FILE}")
            raise SNNetError(f"The trial's checkpoint {checkpoint!r} is a file, not a folder; {hint}.")
        raise SNNetError(f"The trial's checkpoint folder {checkpoint!r} does not exist; it may have been moved or "
                         "deleted (Ray keeps the last checkpoints of a run under its --storage folder).")
    path = os.path.join(checkpoint, CHECKPOINT_FILE)
    if not os.path.isfile(path):
        raise SNNetError(f"The checkpoint folder {checkpoint!r} has no {CHECKPOINT_FILE}; it is not a "
                         "checkpoint written by orchestrator.train.")
    return _torch_load(path, checkpoint)


def _download(uri: str, local: str, shown: str) -> None:
    try:
        filesystem, path = storage.filesystem(uri)
        with filesystem.open_input_stream(path) as src, open(local, "wb") as dst:
            while chunk := src.read(1 << 24):
                dst.write(chunk)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise SNNetError(f"Could not read the trial's checkpoint {uri!r} ({e}); the checkpoint folder "
                         f"{shown!r} may have been moved or deleted, or the storage is unreachable.") from None


def _torch_load(path: str, shown: str) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any parse failure is the file's, not ours
        raise SNNetError(f"Could not read the checkpoint {shown!r} as a weights-only file (tensors and plain data "
                         f"only; nothing in it is executed): {_load_failure(e, path)}") from None
    missing = [k for k in ("model", "train_config", "space") if not isinstance(state, dict) or k not in state]
    if missing:
        raise SNNetError(f"The checkpoint {shown!r} lacks {', '.join(missing)}: it was written by an older "
                         "version of orchestrator.train that did not store its settings and stitch space, "
                         "so the supernet cannot be rebuilt from it. Train the trial again to export it.")
    return state


def _load_failure(error: Exception, path: str) -> str:
    """Why ``torch.load`` refused a file, in words. A file that is no checkpoint at all makes the
    unpickler say only ``Unsupported operand 105``, ``KeyError: 105`` or an empty ``EOFError`` (105 is
    the file's first byte read as an opcode): for it, say so and show how the file starts."""
    text = str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    foreign = (isinstance(error, (KeyError, EOFError)) or not lines
               or any(m in text for m in ("Unsupported operand", "invalid load key")))
    if not foreign:
        hit = next((i for i, line in enumerate(lines) if "Unsupported global" in line or "WeightsUnpickler" in line),
                   None)
        if hit is None:
            return lines[0]
        if lines[hit].endswith("WeightsUnpickler error:") and hit + 1 < len(lines):  # the reason is on the next line
            return lines[hit + 1]
        return lines[hit]
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        head = b""
    start = f"it starts with {head!r}" if head else "it is empty"
    return (f"it is not a file written by torch.save ({start}; a checkpoint is a zip archive or a pickle), "
            "or it is truncated.")


def _count(low: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _size(v: Any) -> bool:
    return _count(1)(v) or (isinstance(v, (list, tuple)) and len(v) == 2 and all(map(_count(1), v)))


def _rate(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1


#: The anchor options (``timm.create_model`` kwargs) export accepts from a checkpoint, each with
#: the check its value must pass. Anything else stored there (``checkpoint_path``,
#: ``pretrained_cfg_overlay``, an unknown key) is refused: export never hands timm a file or a
#: source of weights named by the checkpoint.
ANCHOR_OPTIONS: dict[str, Callable[[Any], bool]] = {
    "img_size": _size,
    "num_classes": _count(0),
    "in_chans": _count(1),
    "patch_size": _size,
    "window_size": _size,
    "global_pool": lambda v: v in ("", "avg", "token", "map", "max", "avgmax", "catavgmax", "fast"),
    "class_token": lambda v: isinstance(v, bool),
    "reg_tokens": _count(0),
    "no_embed_class": lambda v: isinstance(v, bool),
    "dynamic_img_size": lambda v: isinstance(v, bool),
    "init_values": lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)),
    **{rate: _rate for rate in ("drop_rate", "drop_path_rate", "attn_drop_rate", "proj_drop_rate",
                                 "pos_drop_rate", "patch_drop_rate")},
}


def _anchor_options(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(k for k in kwargs if k not in ANCHOR_OPTIONS)
    if unknown:
        raise SNNetError(
            f"The checkpoint's options for anchor {name!r} include {', '.join(map(repr, unknown))}, which export "
            f"does not pass to timm: it builds anchors only from known options ({', '.join(sorted(ANCHOR_OPTIONS))}) "
            "and takes every weight from the checkpoint. The checkpoint was not written by orchestrator.train, or "
            "was edited; re-train the trial to export it.")
    bad = [f"{k}={v!r}" for k, v in kwargs.items() if not ANCHOR_OPTIONS[k](v)]
    if bad:
        raise SNNetError(f"The checkpoint's options for anchor {name!r} have invalid values: {', '.join(bad)}.")
    return dict(kwargs)


def rebuild_supernet(state: dict[str, Any]) -> StitchedSupernet:
    """The trained supernet of a checkpoint, with LoRA updates merged into the stitching layers.

    Anchors are built with random weights from their timm names and the allow-listed options
    of :data:`ANCHOR_OPTIONS` only (no hub download, no anchor checkpoint files, no other kwargs:
    the trained weights of every anchor are in the checkpoint), and then loaded strictly.
    """
    config = train_config(state)
    try:
        space = StitchSpace.from_json(state["space"])
    except SNNetError as e:
        raise SNNetError(f"The checkpoint's stitch space cannot be read: {e} The checkpoint was not written by "
                         "orchestrator.train, or is damaged; re-train the trial to export it.") from None
    specs = {s.name: s for s in config.anchors or []}
    if config.image_size is not None and not _count(1)(config.image_size):
        raise SNNetError(f"The checkpoint's image_size must be an integer >= 1, got {config.image_size!r}.")
    extra = {"img_size": config.image_size} if config.image_size else {}
    anchors = []
    for name in space.anchor_names:
        check_model_name(name)
        options = _anchor_options(name, specs[name].kwargs if name in specs else {})
        anchors.append(create_anchor(AnchorSpec(name, kwargs=options), **extra))
    net = StitchedSupernet(space, anchors)
    weights = state["model"]
    for key, layer in net.stitch_layers.items():
        lora_a = weights.get(f"stitch_layers.{key}.lora_a")
        if lora_a is not None:
            layer.enable_lora(int(lora_a.shape[0]))
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:
        first = str(e).split("\n\t")[1:2] or [str(e)]
        raise SNNetError(f"The checkpoint's weights do not fit the supernet rebuilt from its own settings "
                         f"({', '.join(space.anchor_names)}): {first[0].strip()}") from None
    for layer in net.stitch_layers.values():
        layer.merge_lora()
    for anchor in net.anchors:
        anchor.weights = "supernet-checkpoint"  # trained weights, loaded from the trial's state.pt
    return net.eval()


def train_config(state: dict[str, Any]) -> TrainConfig:
    """The checkpoint's :class:`~orchestrator.train.config.TrainConfig` (SNNetError naming the checkpoint if bad)."""
    try:
        return TrainConfig.model_validate(state["train_config"])
    except SNNetError as e:
        raise SNNetError(f"The checkpoint's training settings do not load. {e} The checkpoint was not written by "
                         "orchestrator.train, or is damaged; re-train the trial to export it.") from None


def stitch_of(space: StitchSpace, row: dict[str, Any]) -> Stitch:
    """The stitch of ``space`` that a catalog row names (by id, checked against its anchors and cuts, else
    found by them); SNNetError when the checkpoint's space does not hold it."""
    sid = int(row["stitch_id"])
    if 0 <= sid < len(space):
        s = space[sid]
        if list(space.names(s)) == list(row["anchors"]) and [list(c) for c in s.cuts] == list(row["cuts"]):
            return s
    try:
        return space.find(row["anchors"], row["cuts"])
    except SNNetError:
        raise SNNetError(f"The trial's checkpoint does not hold stitch {sid} ({' > '.join(row['anchors'])}, "
                         f"cuts {row['cuts']}) of the catalog row: the checkpoint belongs to another space.") from None
