"""What a run's inputs must be before it trains: its storage, its batch size, its anchors' weights.

Each check raises one :class:`~snnet.SNNetError` paragraph that says what must hold, what came
and what to change; :func:`orchestrator.train.prepare.prepare` runs them before Ray starts (the
cluster's resources are :mod:`orchestrator.train.cluster`'s). :func:`anchor_key` names what an
anchor's build depends on: the checks and :class:`~orchestrator.train.prepare.Known` key by it.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pyarrow.fs as pafs

import snnet.anchors as anchors  # by module: tests replace anchors.check_spec to count the checks
from orchestrator.storage import check_outside_ray_runtime, filesystem, is_remote, local_path
from orchestrator.train.config import TrainConfig
from orchestrator.train.teacher import teacher_problems
from snnet import AnchorSpec, SNNetError

__all__ = ["PROBE_PREFIX", "check_storage", "check_writable", "check_batch", "check_weights", "weights_line",
           "anchor_key"]

def check_storage(path: str) -> None:
    """Ray's run storage must be a URI or a folder that exists or can be made (not below a file), and
    not inside Ray's runtime folder (:func:`orchestrator.storage.check_outside_ray_runtime`)."""
    if "://" in path:
        return
    check_outside_ray_runtime(path)
    current = _nearest_existing(os.path.abspath(path))
    if os.path.exists(current) and not os.path.isdir(current):
        where = "is a file" if current == os.path.abspath(path) else f"lies below the file {current!r}"
        raise SNNetError(f"Ray's run storage (--storage) must be a folder or URI, but {path!r} {where}.")


def _nearest_existing(path: str) -> str:
    """``path`` or its nearest existing parent (the root when none exists)."""
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


PROBE_PREFIX = ".snnet-write-probe-"


def check_writable(location: str, what: str = "The catalog", flag: str = "--catalog") -> None:
    """Write and remove a probe file where ``location`` (a folder or a URI pyarrow reaches) will be
    written: the folder itself, or the nearest existing parent of a folder still to be made
    (nothing is created). Raises one :class:`SNNetError` paragraph when that fails."""
    name = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    try:
        if is_remote(location):
            fs, path = filesystem(location)
            _probe_remote(fs, path.rstrip("/"), name)
            return
        folder = _nearest_existing(local_path(location))
        if not os.path.isdir(folder):
            return  # check_storage and CatalogWriter say "is a file" with the path
        probe = os.path.join(folder, name)
        with open(probe, "wb"):
            pass
        os.unlink(probe)
    except Exception as e:  # noqa: BLE001 - any failure to write is the location's
        reason = " ".join(str(e).split()) or type(e).__name__
        raise SNNetError(
            f"{what} location {location!r} is not writable ({reason}). Check that the folder or bucket exists "
            f"and that this machine may write there (credentials for object storage), or pass another {flag}; "
            "nothing was trained."
        ) from None


def _probe_remote(fs: Any, path: str, name: str) -> None:
    """Write and delete ``path/name``; where ``path`` does not exist yet on a filesystem with real
    folders, in its nearest existing parent instead (the first error is the one raised)."""
    def probe(folder: str) -> None:
        target = f"{folder}/{name}" if folder else name
        with fs.open_output_stream(target) as out:
            out.write(b"")
        fs.delete_file(target)

    try:
        probe(path)
    except Exception as first:
        folder = path
        while folder:
            folder = folder.rsplit("/", 1)[0] if "/" in folder else ""
            try:
                kind = fs.get_file_info(folder).type
            except Exception:  # noqa: BLE001 - the parent cannot be looked at: the probe's own error says more
                raise first from None
            if kind == pafs.FileType.Directory:
                try:
                    probe(folder)
                    return
                except Exception:  # noqa: BLE001 - any failure here: the first error, on path itself, is the one raised
                    raise first from None
            if kind == pafs.FileType.File:
                break
        raise first from None


def check_batch(config: TrainConfig, train_size: int) -> None:
    """Every worker must get at least one full batch per epoch (``drop_last``), else training
    would run 0 steps and the catalog would hold untrained rows."""
    if config.epochs == 0:
        return
    if (train_size // config.workers) // config.batch_size >= 1:
        return
    raise SNNetError(
        f"The batch size {config.batch_size} per worker x {config.workers} workers needs at least "
        f"{config.batch_size * config.workers} training images for one step, but the training set of "
        f"{config.dataset!r} has {train_size}: lower --batch-size (at most {max(1, train_size // config.workers)}) "
        "or --workers, or use --epochs 0 to only initialise and evaluate."
    )


def anchor_key(spec: AnchorSpec, image_size: int | None) -> str:
    """What an anchor's build depends on (name, weights, kwargs, the run's image size), as one string."""
    return json.dumps([spec.name, spec.pretrained, spec.checkpoint, spec.kwargs, image_size], sort_keys=True,
                      default=repr)


def check_weights(config: TrainConfig, *, models: dict[str, Any] | None = None,
                  checked: frozenset[str] | set[str] = frozenset()) -> None:
    """Every anchor's (and the teacher's) weights are reachable: :func:`snnet.anchors.check_spec`,
    without loading them; all problems in one paragraph.

    ``models``: :func:`anchor_key` -> the timm model already built without weights for that
    spec, read instead of a meta build. ``checked``: keys of specs a driver checked already
    (:attr:`orchestrator.train.prepare.Known.checked`), skipped.
    """
    extra = {"img_size": config.image_size} if config.image_size else {}
    problems = []
    for spec in config.anchors or []:
        key = anchor_key(spec, config.image_size)
        if key not in checked:
            problems += anchors.check_spec(spec, model=(models or {}).get(key), **extra)
    if config.teacher is not None and anchor_key(config.teacher, None) not in checked:
        problems += teacher_problems(config.teacher)  # a plain timm classifier, never stitched: no family check
    if problems:
        raise SNNetError(" ".join(dict.fromkeys(problems)))


def weights_line(weights: dict[str, str]) -> list[str]:
    """Console lines saying where each anchor's weights came from (a warning for random ones)."""
    lines = ["[snnet] weights: " + ", ".join(f"{name} <- {source}" for name, source in weights.items())]
    random_ones = [name for name, source in weights.items() if source == anchors.RANDOM]
    if random_ones:
        lines.append(f"warning: {', '.join(random_ones)} start from random weights (no --pretrained and no "
                     "NAME=PATH checkpoint): stitching assumes trained anchors, so expect low accuracy.")
    return lines

