"""The export of one catalog row, step by step: check ``--out``, choose the row, check where its checkpoint
lies, rebuild the trial's supernet, export the stitch, write the program and its card (see
:mod:`orchestrator.export` for what is written). The program and its card are written whole or not at all.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.export._row import check_checkpoint_location, select_row
from orchestrator.storage import atomic_write
from snnet import SNNetError

if TYPE_CHECKING:
    from snnet import Stitch

__all__ = ["ExportError", "ExportResult", "export_from_catalog"]


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
    # torch and the model code load only here, after the checks above: a wrong --out, flag, catalog or row is
    # answered without torch's seconds of import (the package's one deferred import)
    from orchestrator.export._program import export_onnx, model_card, save_program, verified_program
    from orchestrator.export.checkpoint import load_state, rebuild_supernet, stitch_of

    source = checkpoint if checkpoint is not None else row["checkpoint"]
    progress(f"exporting stitch {row['stitch_id']} of trial {row['trial_id']} (sweep {row['sweep']}) "
             f"from {source}")
    state = load_state(source)
    net = rebuild_supernet(state)
    chosen = stitch_of(net.space, row)
    program, example, dynamic = verified_program(net, chosen)

    card_path = out.with_suffix(".json")
    done: dict[str, Any] = {}

    def save(staged: str) -> None:  # the program is renamed into place only after its card is written
        save_program(program, staged)
        card = model_card(catalog, out, row, source, state, net, chosen, dynamic, os.path.getsize(staged))
        if onnx:
            try:  # None: no onnx package
                done["onnx"] = export_onnx(program, example, out.with_suffix(".onnx"), progress)
            except Exception as e:  # noqa: BLE001 - ONNX support varies by operator and version
                done["onnx_error"] = ExportError(f"ONNX export failed ({type(e).__name__}: {e}); the .pt2 program "
                                                 "and its card were written and are unaffected.")
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
