"""``python -m orchestrator.export``: one stitch of the catalog as a standalone ``torch.export`` program.

Usage (design brief, section 4)::

    python -m orchestrator.export CATALOG --out FILE.pt2 [--sweep S] --trial T --stitch N
    python -m orchestrator.export CATALOG --out FILE.pt2 [--sweep S] [--trial T] --max-flops 1.5G
    python -m orchestrator.export CATALOG --out FILE.pt2 --max-latency-ms 5 [--onnx] [--checkpoint URI]

The stitch is picked by its catalog row: ``--trial``/``--stitch`` name it (``--trial`` may be
left out when the selection holds one trial), a budget (``--max-flops``, ``--max-latency-ms``)
takes the most accurate stitch under it, as ``orchestrator.catalog.best_under`` does: on
``top1_selection``, the split held out of training, where every candidate row has it, else on
``top1``, the evaluation split (an older catalog, or trials run without a selection split), and
the summary and the card say which. The card reports both top-1s. The trial's
checkpoint (``<checkpoint>/state.pt``, a local folder or a URI pyarrow reads) is loaded with
``weights_only=True``; the supernet is rebuilt from the training settings and stitch space
stored in it (anchor weights come from the checkpoint, never from a hub or the anchors'
original files), LoRA updates of stitching layers are merged, and
:func:`snnet.extract.extract_stitch` keeps only the weights the stitch runs.

Export trusts nothing it reads: anchors are built from timm model names and the allow-listed
options of :data:`ANCHOR_OPTIONS` only; a row's checkpoint outside the storage that holds the
catalog (the catalog's parent folder or bucket prefix, where ``runs/`` lies beside
``catalog/``) is refused unless the user names it with ``--checkpoint URI``.

Written files:

``FILE.pt2``
    ``torch.export.save`` of the program; ``torch.export.load(FILE).module()(x)`` runs it with
    plain PyTorch, without this project or timm. The batch dimension is dynamic when the model
    allows it. Inputs are normalised images, ``float32 [N, C, H, W]``.
``FILE.json``
    the model card: anchors, cuts, FLOPs, params, top-1/top-5 on the evaluation split,
    ``top1_selection`` (the held-out selection split; null without one), ``chosen_by`` (the column
    a budget chose on, null for a stitch named by id) and ``chosen_note`` (why not the selection
    split), latency, the source (catalog, sweep, trial, stitch, checkpoint), the input shape and
    normalisation, the code version.
``FILE.onnx``
    with ``--onnx``, when the ``onnx`` package is installed (skipped with a note otherwise).

A user's mistake (no such trial or stitch, nothing under the budget, a missing checkpoint, a
path that is not a catalog) prints ``error: <paragraph>`` and exits 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.cli import ArgumentParser, cli, format_flops
from orchestrator.storage import atomic_write
from snnet import SNNetError

if TYPE_CHECKING:  # torch and the model code load where a stitch is rebuilt: a bad flag is answered without them
    import torch

    from snnet import Stitch, StitchedSupernet, StitchSpace

__all__ = [
    "ANCHOR_OPTIONS", "ExportError", "ExportResult", "check_checkpoint_location", "export_from_catalog", "load_state",
    "rebuild_supernet", "select_row", "main",
]

PROG = "python -m orchestrator.export"
CARD_FORMAT = 1


class ExportError(RuntimeError):
    """The export itself failed (not a user's mistake): exit status 1, still without a traceback."""


@dataclass
class ExportResult:
    program: Path
    card: Path
    onnx: Path | None
    row: dict[str, Any]
    stitch: Stitch
    card_data: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# choosing the row
# ---------------------------------------------------------------------------------------------


def _listing(values: Sequence[Any], limit: int = 8) -> str:
    shown = ", ".join(map(str, values[:limit]))
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def select_row(
    catalog: str,
    *,
    sweep: str | None = None,
    trial: str | None = None,
    stitch: int | None = None,
    max_flops: str | int | float | None = None,
    max_latency_ms: str | int | float | None = None,
) -> dict[str, Any]:
    """The catalog row to export, as a JSON-native dict (raises SNNetError with the reason), with
    ``chosen_by`` (the accuracy column a budget chose on; None for a stitch named by id) and
    ``chosen_note`` (why a budget chose on ``top1`` instead of ``top1_selection``, else None)."""
    from orchestrator.catalog import best_under, load, parse_flops, query, sweeps, to_records
    from orchestrator.catalog._query import parse_latency

    budget = max_flops is not None or max_latency_ms is not None
    if stitch is not None and budget:
        raise SNNetError("Pick the stitch either by id (--stitch N) or by a budget (--max-flops, "
                         "--max-latency-ms), not both.")
    if stitch is None and not budget:
        raise SNNetError("Say which stitch to export: --trial T --stitch N, or a budget such as "
                         "--max-flops 1.5G or --max-latency-ms 5 (the best top-1 under it is taken).")
    flops = parse_flops(max_flops) if max_flops is not None else None  # fail before reading
    latency = parse_latency(max_latency_ms) if max_latency_ms is not None else None

    df = load(catalog, sweep=sweep)
    where = f"the catalog {catalog}" + (f" (sweep {sweep!r})" if sweep else "")
    if df.empty:
        if sweep is not None:
            present = sweeps(catalog)
            if sweep not in present:
                raise SNNetError(f"The catalog {catalog} has no sweep {sweep!r}; its sweeps are: "
                                 f"{_listing(present) or 'none'}.")
        raise SNNetError(f"{where} holds no stitches: it has no readable trial files "
                         "(sweep=<name>/trial-<id>.parquet). Train or sweep into it first.")
    if trial is not None:
        known = sorted(set(df["trial_id"]))
        df = query(df, trial=trial)
        if df.empty:
            raise SNNetError(f"{where} has no trial {trial!r}; its trials are: {_listing(known)}.")
    trials = sorted(set(zip(df["sweep"], df["trial_id"])))

    if stitch is not None:
        if len(trials) > 1:
            shown = _listing([f"{t} (sweep {s})" for s, t in trials])
            raise SNNetError(f"--stitch {stitch} is ambiguous: {where} holds {len(trials)} trials; "
                             f"name one with --trial (and --sweep if trial ids repeat): {shown}.")
        rows = df[df["stitch_id"] == stitch]
        if rows.empty:
            ids = sorted(int(i) for i in df["stitch_id"])
            raise SNNetError(f"Trial {trials[0][1]!r} has no stitch {stitch}; its stitch ids run "
                             f"{ids[0]}..{ids[-1]} ({len(ids)} stitches).")
        return {**to_records(rows.head(1))[0], "chosen_by": None, "chosen_note": None}

    best = best_under(df, max_flops=flops, max_latency_ms=latency)
    if best is None:
        parts = []
        if flops is not None:
            parts.append(f"--max-flops {max_flops} ({flops:,} FLOPs; the cheapest stitch here has "
                         f"{int(df['flops'].min()):,})")
        if latency is not None:
            measured = df["latency_ms"].dropna() if "latency_ms" in df.columns else []
            parts.append(f"--max-latency-ms {max_latency_ms} (" + (
                f"the fastest measured stitch takes {float(min(measured)):.3g} ms)" if len(measured)
                else "no stitch here has a measured latency: `python -m orchestrator.train --latency` measures "
                     "every stitch's, `--set training.measure_latency=true` a sweep's)"))
        raise SNNetError(f"No stitch with a top-1 accuracy in {where} fits the budget " + " and ".join(parts) + ".")
    import pandas as pd

    return {**to_records(pd.DataFrame([best]))[0], "chosen_by": best.attrs["chosen_by"],
            "chosen_note": best.attrs["note"]}


# ---------------------------------------------------------------------------------------------
# loading the trial's supernet
# ---------------------------------------------------------------------------------------------


def _split(location: str) -> tuple[str, str, str]:
    """``(scheme, bucket, path)`` of a URI; ``("", "", real path)`` of a local path or ``file://`` URI."""
    from urllib.parse import urlsplit

    if location.startswith("file://"):
        location = urlsplit(location).path
    if "://" not in location:
        return "", "", os.path.realpath(location)
    parts = urlsplit(location)
    return parts.scheme.lower(), parts.netloc, "/" + parts.path.strip("/")


def storage_root(catalog: str) -> str:
    """Where a catalog's checkpoints are trusted to live: the folder or bucket prefix that holds it
    (``runs/`` beside ``catalog/``, as ``orchestrator.train`` and ``orchestrator.sweep`` write them)."""
    scheme, bucket, path = _split(os.fspath(catalog).rstrip("/") or "/")
    parent = os.path.dirname(path) if not scheme else (path.rsplit("/", 1)[0] or "/")
    return f"{scheme}://{bucket}{parent}" if scheme else parent


def check_checkpoint_location(checkpoint: str, catalog: str) -> None:
    """Refuse a row's checkpoint outside :func:`storage_root` of its catalog (a URI with ``..``
    segments too): a catalog file must not make export read, or fetch, anything anywhere."""
    root = storage_root(catalog)
    r_scheme, r_bucket, r_path = _split(root)
    c_scheme, c_bucket, c_path = _split(checkpoint)
    escapes = bool(c_scheme) and ".." in checkpoint.split("://", 1)[1].split("/")
    inside = (c_scheme, c_bucket) == (r_scheme, r_bucket) and not escapes and (
        c_path == r_path or c_path.startswith(r_path.rstrip("/") + "/"))
    if not inside:
        raise SNNetError(
            f"The catalog row's checkpoint {checkpoint!r} lies outside {root!r}, the storage that holds the "
            f"catalog {os.fspath(catalog)!r}; export reads only checkpoints stored beside their catalog. If you "
            f"trust that checkpoint, name it on the command line: --checkpoint {checkpoint}")


def load_state(checkpoint: str) -> dict[str, Any]:
    """``<checkpoint>/state.pt`` of a Ray checkpoint folder (local path or URI), weights only."""
    from orchestrator.train.worker import CHECKPOINT_FILE

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
    import pyarrow as pa
    from pyarrow import fs as pafs

    try:
        filesystem, path = pafs.FileSystem.from_uri(uri)
        with filesystem.open_input_stream(path) as src, open(local, "wb") as dst:
            while chunk := src.read(1 << 24):
                dst.write(chunk)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise SNNetError(f"Could not read the trial's checkpoint {uri!r} ({e}); the checkpoint folder "
                         f"{shown!r} may have been moved or deleted, or the storage is unreachable.") from None


def _torch_load(path: str, shown: str) -> dict[str, Any]:
    import torch

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
    from orchestrator.data import demo_anchors as demo  # noqa: F401 - registers the demo anchors with timm
    from snnet import AnchorSpec, StitchedSupernet, StitchSpace, create_anchor
    from snnet.anchors import check_model_name

    config = _train_config(state)
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


def _train_config(state: dict[str, Any]):
    """The checkpoint's :class:`~orchestrator.train.config.TrainConfig` (SNNetError naming the checkpoint if bad)."""
    from orchestrator.train.config import TrainConfig

    try:
        return TrainConfig.model_validate(state["train_config"])
    except SNNetError as e:
        raise SNNetError(f"The checkpoint's training settings do not load. {e} The checkpoint was not written by "
                         "orchestrator.train, or is damaged; re-train the trial to export it.") from None


def _stitch_of(space: StitchSpace, row: dict[str, Any]) -> Stitch:
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


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------


def _export_program(module: torch.nn.Module, input_size: Sequence[int]):
    """``torch.export`` with a dynamic batch when the model allows it, else batch 1."""
    import torch
    from torch.export import Dim

    example = torch.randn(2, *input_size, generator=torch.Generator().manual_seed(0))
    program = torch.export.export(module, (example,), dynamic_shapes=({0: Dim.AUTO},))
    x_node = next(n for n in program.graph.nodes
                  if n.op == "placeholder" and n.name in program.graph_signature.user_inputs)
    if isinstance(x_node.meta["val"].shape[0], torch.SymInt):
        return program, example, True
    example = example[:1]
    return torch.export.export(module, (example,)), example, False


def _normalization(config_dataset: str, anchor) -> dict[str, Any]:
    cfg = getattr(anchor.model, "pretrained_cfg", None) or {}
    pretrained = {"mean": list(cfg["mean"]), "std": list(cfg["std"])} if "mean" in cfg and "std" in cfg else None
    if config_dataset == "demo":
        from orchestrator.data import DEMO_MEAN, DEMO_STD

        used = {"mean": list(DEMO_MEAN), "std": list(DEMO_STD),
                "source": "orchestrator.data DEMO_MEAN/DEMO_STD (demo digits)"}
    else:  # orchestrator.data normalises image folders with ImageNet's statistics
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        used = {"mean": list(IMAGENET_DEFAULT_MEAN), "std": list(IMAGENET_DEFAULT_STD),
                "source": "ImageNet defaults, as orchestrator.data normalises image folders"}
    return {**used, "anchor_pretrained_cfg": pretrained}


def export_from_catalog(
    catalog: str,
    out: str | os.PathLike[str],
    *,
    sweep: str | None = None,
    trial: str | None = None,
    stitch: int | None = None,
    max_flops: str | int | float | None = None,
    max_latency_ms: str | int | float | None = None,
    onnx: bool = False,
    checkpoint: str | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> ExportResult:
    """Select a row, rebuild its trial's supernet, export the stitch; see the module docstring.

    The row's checkpoint is read only when it lies in the catalog's storage
    (:func:`check_checkpoint_location`); ``checkpoint`` names another one the user trusts.
    """
    out = _check_out(out, onnx)  # before the catalog and the ~20 s rebuild: a wrong --out costs nothing
    row = select_row(catalog, sweep=sweep, trial=trial, stitch=stitch, max_flops=max_flops,
                     max_latency_ms=max_latency_ms)
    if checkpoint is None and row.get("checkpoint"):
        check_checkpoint_location(row["checkpoint"], catalog)
    import torch  # after the checks above: a wrong flag, catalog or row is answered without torch's import

    from snnet.extract import extract_stitch

    source = checkpoint if checkpoint is not None else row["checkpoint"]
    progress(f"exporting stitch {row['stitch_id']} of trial {row['trial_id']} (sweep {row['sweep']}) "
             f"from {source}")
    state = load_state(source)
    net = rebuild_supernet(state)
    chosen = _stitch_of(net.space, row)
    program, example, dynamic = _verified_program(net, chosen, extract_stitch(net, chosen).eval())

    card_path = out.with_suffix(".json")
    done: dict[str, Any] = {}

    def save(staged: str) -> None:  # the program is renamed into place only after its card is written
        torch.export.save(program, staged)
        card = _card(catalog, out, row, source, state, net, chosen, dynamic, os.path.getsize(staged))
        if onnx:
            try:
                done["onnx"] = _export_onnx(program, example, out.with_suffix(".onnx"), progress)  # None: no onnx
            except ExportError as e:
                done["onnx_error"] = e
            card["onnx"] = done["onnx"].name if done.get("onnx") else None
        text = json.dumps(card, indent=2) + "\n"
        atomic_write(card_path, lambda f: f.write(text.encode()))
        done["card"] = card

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, save, to_path=True)
    except OSError as e:
        for path in ([card_path] if "card" in done else []) + ([done["onnx"]] if done.get("onnx") else []):
            path.unlink(missing_ok=True)  # a card without its program describes nothing
        raise SNNetError(f"Could not write the exported stitch to {str(out)!r} ({e.strerror or e}); neither "
                         f"{out.name} nor its card {card_path.name} was written. Choose another --out, or make "
                         "room on the disk.") from None
    onnx_path, onnx_error, card = done.get("onnx"), done.get("onnx_error"), done["card"]
    if onnx_error is not None:
        raise onnx_error
    return ExportResult(out, card_path, onnx_path, row, chosen, card)


def _check_out(out: str | os.PathLike[str], onnx: bool) -> Path:
    """``--out`` as a Path that can be written: a ``.pt2`` name whose folder exists or can be created and is
    writable, where neither the program nor its card (nor, with ``--onnx``, the ONNX file) is a folder.
    Creates nothing: the folder is made when the export is written."""
    out = _program_path(out)
    targets = [out, out.with_suffix(".json")] + ([out.with_suffix(".onnx")] if onnx else [])
    for target in targets[1:]:
        if target.is_dir():
            raise SNNetError(f"--out {str(out)!r}: {str(target)!r} is a folder, and the export writes "
                             f"{', '.join(t.name for t in targets)} side by side; choose another --out name.")
    folder = Path(os.path.abspath(out.parent))
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        made = "" if existing == folder else f", so the folder {str(folder)!r} cannot be made"
        raise SNNetError(f"--out {str(out)!r}: {str(existing)!r} is a file, not a folder{made}; choose another "
                         "--out.")
    try:
        tempfile.TemporaryFile(dir=existing).close()  # the one honest test of "may I write here"
    except OSError as e:
        made = "" if existing == folder else f", so the folder {str(folder)!r} cannot be made"
        raise SNNetError(f"--out {str(out)!r}: cannot write in {str(existing)!r} ({e.strerror or e}){made}; "
                         "choose a folder you can write to.") from None
    return out


def _program_path(out: str | os.PathLike[str]) -> Path:
    """``out`` as a Path; it must name a ``.pt2`` file (SNNetError otherwise)."""
    out = Path(out)
    if out.is_dir() or out.suffix != ".pt2":
        example = out / "stitch.pt2" if out.is_dir() else out.with_suffix(".pt2")
        raise SNNetError(f"--out must name a .pt2 file (the card goes next to it as .json), got {str(out)!r}; "
                         f"for example {str(example)!r}.")
    return out


def _verified_program(net: StitchedSupernet, chosen: Stitch, module: torch.nn.Module):
    """``(program, example input, dynamic batch?)`` of the stitch, checked against the supernet:
    the same outputs and the stitch's parameter count (a mismatch is a bug here, not the user's)."""
    import torch

    input_size = tuple(net.space.profiles[0].input_size)
    with torch.no_grad():
        program, example, dynamic = _export_program(module, input_size)
        torch.testing.assert_close(program.module()(example), net(example, chosen), rtol=1e-4, atol=1e-5)
    params = sum(v.numel() for k, v in program.state_dict.items() if k in program.graph_signature.parameters)
    if params != chosen.params:
        raise RuntimeError(f"exported program holds {params} parameters, the stitch uses {chosen.params}")
    return program, example, dynamic


def _card(catalog: str, out: Path, row: dict[str, Any], source: str, state: dict[str, Any],
          net: StitchedSupernet, chosen: Stitch, dynamic: bool, size_bytes: int) -> dict[str, Any]:
    """The model card written next to the program (``FILE.json``); see the module docstring."""
    import torch

    from orchestrator.train.launch import code_version

    config = _train_config(state)
    input_size = tuple(net.space.profiles[0].input_size)
    num_classes = net.space.profiles[-1].num_classes
    return {
        "format": CARD_FORMAT,
        "program": out.name,
        "anchors": list(net.space.names(chosen)),
        "cuts": [list(c) for c in chosen.cuts],
        "stitching_layers": list(chosen.layers),
        "flops": chosen.flops,
        "params": chosen.params,
        "top1": row.get("top1"),
        "top5": row.get("top5"),
        "top1_selection": row.get("top1_selection"),
        "chosen_by": row.get("chosen_by"),
        "chosen_note": row.get("chosen_note"),
        "latency_ms": row.get("latency_ms"),
        "latency_device": row.get("device"),
        "dataset": row.get("dataset"),
        "num_classes": num_classes,
        "input": {
            "shape": ["batch" if dynamic else 1, *input_size],
            "dynamic_batch": dynamic,
            "dtype": "float32",
            "layout": "NCHW",
            "normalization": _normalization(config.dataset, net.anchors[chosen.anchors[0]]),
        },
        "output": {"shape": ["batch" if dynamic else 1, num_classes], "kind": "logits"},
        "source": {
            "catalog": os.fspath(catalog),
            "sweep": row.get("sweep"),
            "trial_id": row.get("trial_id"),
            "stitch_id": int(row["stitch_id"]),
            "checkpoint": source,
            "epoch": state.get("epoch"),
            "step": state.get("step"),
            "sampling": row.get("sampling"),
            "mode": config.mode,
        },
        "code_version": code_version(),
        "torch_version": torch.__version__,
        "size_bytes": size_bytes,
    }


def _export_onnx(program, example: torch.Tensor, path: Path, progress: Callable[[str], None]) -> Path | None:
    import torch

    if importlib.util.find_spec("onnx") is None:
        progress("--onnx: skipped, the 'onnx' package is not installed (pip install onnx onnxscript); "
                 "the .pt2 program and its card were written.")
        return None
    try:
        atomic_write(path, lambda tmp: torch.onnx.export(program, (example,), tmp, dynamo=True), to_path=True)
    except Exception as e:  # noqa: BLE001 - ONNX support varies by operator and version
        raise ExportError(f"ONNX export failed ({type(e).__name__}: {e}); the .pt2 program and its card "
                         "were written and are unaffected.") from None
    return path


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=PROG,
        description="Export one stitch of the catalog as a standalone torch.export program (.pt2) "
                    "with a JSON model card next to it.",
    )
    p.add_argument("catalog", metavar="CATALOG", help="catalog folder or URI (s3://, gs://)")
    p.add_argument("--out", required=True, metavar="FILE.pt2", help="where to write the program (card: FILE.json)")
    p.add_argument("--sweep", metavar="S", help="only rows of this sweep")
    p.add_argument("--trial", metavar="T", help="the trial id (optional when the selection holds one trial)")
    p.add_argument("--stitch", type=int, metavar="N", help="the stitch id within the trial")
    p.add_argument("--max-flops", metavar="F", help="FLOPs budget (1.5G, 500M, 2e9): the best top-1 under it, on "
                   "the held-out selection split where the catalog has it (top1_selection), else on top1")
    p.add_argument("--max-latency-ms", metavar="L", help="latency budget in ms: the best top-1 under it (see above)")
    p.add_argument("--onnx", action="store_true", help="also write FILE.onnx (needs the onnx package)")
    p.add_argument("--checkpoint", metavar="URI",
                   help="read the trial's supernet from this checkpoint folder (local or URI) instead of the "
                        "row's; needed when the row's lies outside the storage that holds the catalog")
    return p


def _summary(result: ExportResult) -> str:
    card, row = result.card_data, result.row
    path = " > ".join(card["anchors"])
    cuts = " ".join(f"[{j},{k}]" for j, k in card["cuts"]) or "-"
    top1 = f"{card['top1']:.2f}%" if card["top1"] is not None else "-"
    if card.get("top1_selection") is not None:
        top1 += f" (selection split {card['top1_selection']:.2f}%)"
    latency = (f"  latency {card['latency_ms']:.3g} ms ({card['latency_device']})"
               if card["latency_ms"] is not None else "")
    if card.get("chosen_by") == "top1_selection":
        chosen = ["  chosen on top1_selection, the split held out of training; top-1 above is the evaluation split's"]
    elif card.get("chosen_by"):
        chosen = [f"  {card.get('chosen_note') or 'chosen on top1, the evaluation split'}"]
    else:
        chosen = []
    lines = [
        f"exported stitch {row['stitch_id']} of trial {row['trial_id']} (sweep {row['sweep']}): {path}, cuts {cuts}",
        f"  {result.program} ({card['size_bytes'] / 2**20:.2f} MB), card {result.card}"
        + (f", {result.onnx}" if result.onnx else ""),
        f"  params {card['params'] / 1e6:.3f} M  FLOPs {format_flops(card['flops'])}  top-1 {top1}{latency}",
        *chosen,
        f"  input [{', '.join(map(str, card['input']['shape']))}] float32, normalised with mean "
        f"{card['input']['normalization']['mean']} std {card['input']['normalization']['std']}",
    ]
    return "\n".join(lines)


@cli(exit_codes={ExportError: 1})
def main(argv: Sequence[str] | None = None) -> int:
    """Export; a user's mistake is one ``error:`` paragraph and exit 2, a failed export exit 1
    (:func:`orchestrator.cli.run_cli`)."""
    args = build_parser().parse_args(argv)
    from orchestrator.catalog import catalog_warnings_to_stderr

    with catalog_warnings_to_stderr():
        result = export_from_catalog(
            args.catalog, args.out, sweep=args.sweep, trial=args.trial, stitch=args.stitch,
            max_flops=args.max_flops, max_latency_ms=args.max_latency_ms, onnx=args.onnx,
            checkpoint=args.checkpoint, progress=lambda m: print(m, file=sys.stderr),
        )
    print(_summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
