"""One stitch as a ``torch.export`` program checked against its supernet, its model card, its ONNX copy.

:func:`verified_program` exports the stitch's standalone module (dynamic batch where the model allows
it) and checks the program against the supernet: the same outputs, the stitch's parameter count.
:func:`model_card` is the JSON card written next to the program (see :mod:`orchestrator.export`).

This module imports torch and the model code; :mod:`orchestrator.export` loads it only once a row has
been chosen and checked.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.export import Dim, ExportedProgram

from orchestrator.data import DEMO_MEAN, DEMO_STD
from orchestrator.export.checkpoint import train_config
from orchestrator.storage import atomic_write
from orchestrator.train.launch import code_version
from snnet import Stitch, StitchedSupernet
from snnet.extract import extract_stitch

__all__ = ["CARD_FORMAT", "export_onnx", "model_card", "save_program", "verified_program"]

#: The card's format version (its ``format`` key).
CARD_FORMAT = 1


def verified_program(net: StitchedSupernet, chosen: Stitch) -> tuple[ExportedProgram, torch.Tensor, bool]:
    """``(program, example input, dynamic batch?)`` of the stitch's standalone module
    (:func:`snnet.extract.extract_stitch`: only the weights the stitch runs), checked against the supernet:
    the same outputs and the stitch's parameter count (a mismatch is a bug here, not the user's)."""
    module = extract_stitch(net, chosen).eval()
    input_size = tuple(net.space.profiles[0].input_size)
    with torch.no_grad():
        program, example, dynamic = _export_program(module, input_size)
        torch.testing.assert_close(program.module()(example), net(example, chosen), rtol=1e-4, atol=1e-5)
    params = sum(v.numel() for k, v in program.state_dict.items() if k in program.graph_signature.parameters)
    if params != chosen.params:
        raise RuntimeError(f"exported program holds {params} parameters, the stitch uses {chosen.params}")
    return program, example, dynamic


def _export_program(module: torch.nn.Module, input_size: Sequence[int]):
    """``torch.export`` with a dynamic batch when the model allows it, else batch 1."""
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
        used = {"mean": list(DEMO_MEAN), "std": list(DEMO_STD),
                "source": "orchestrator.data DEMO_MEAN/DEMO_STD (demo digits)"}
    else:  # orchestrator.data normalises image folders with ImageNet's statistics
        used = {"mean": list(IMAGENET_DEFAULT_MEAN), "std": list(IMAGENET_DEFAULT_STD),
                "source": "ImageNet defaults, as orchestrator.data normalises image folders"}
    return {**used, "anchor_pretrained_cfg": pretrained}


def model_card(catalog: str, out: Path, row: dict[str, Any], source: str, state: dict[str, Any],
          net: StitchedSupernet, chosen: Stitch, dynamic: bool, size_bytes: int) -> dict[str, Any]:
    """The model card written next to the program (``FILE.json``); see the module docstring."""
    config = train_config(state)
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


def export_onnx(program: ExportedProgram, example: torch.Tensor, path: Path,
                progress: Callable[[str], None]) -> Path | None:
    """``program`` as ONNX at ``path`` (written whole or not at all); None, with a note, without the ``onnx``
    package. A failed conversion raises what the converter raised: ONNX support varies by operator and version."""
    if importlib.util.find_spec("onnx") is None:
        progress("--onnx: skipped, the 'onnx' package is not installed (pip install onnx onnxscript); "
                 "the .pt2 program and its card were written.")
        return None
    atomic_write(path, lambda tmp: torch.onnx.export(program, (example,), tmp, dynamo=True), to_path=True)
    return path


def save_program(program: ExportedProgram, path: str | os.PathLike[str]) -> None:
    """``torch.export.save``: ``torch.export.load(path).module()`` runs it with plain PyTorch."""
    torch.export.save(program, path)
