"""The catalog row to export, and whether its checkpoint may be read.

:func:`select_row` picks the row: by trial and stitch id, or the most accurate stitch under a budget as
:func:`orchestrator.catalog.best_under` chooses it (on ``top1_selection`` where every candidate has it,
else on ``top1``, saying so). :func:`check_checkpoint_location` refuses a row's checkpoint outside the
storage that holds the catalog (:func:`storage_root`): a catalog file must not make export read, or
fetch, anything anywhere. Neither needs torch: a wrong flag, catalog or row is answered without it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from orchestrator.catalog import best_under, load, parse_flops, parse_latency, query, sweeps, to_records
from snnet import SNNetError

__all__ = ["check_checkpoint_location", "select_row", "storage_root"]


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
    return {**to_records(pd.DataFrame([best]))[0], "chosen_by": best.attrs["chosen_by"],
            "chosen_note": best.attrs["note"]}


def _split(location: str) -> tuple[str, str, str]:
    """``(scheme, bucket, path)`` of a URI; ``("", "", real path)`` of a local path or ``file://`` URI."""
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
