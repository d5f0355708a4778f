"""Where a served application comes from: a trial's catalog rows, the stitches asked for, its checkpoint.

:func:`settings_from_catalog` is shared by ``python -m orchestrator.serve`` (which also reads the
checkpoint before Ray starts) and the application builder a Serve config names (which leaves reading it
to the replicas).
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from orchestrator.catalog import load, pareto_front, sweeps, to_records
from orchestrator.export import check_checkpoint_location
from orchestrator.serve.replica import ServeSettings
from snnet import SNNetError, StitchSpace

__all__ = ["check_checkpoint", "pick_policy", "pick_stitches", "settings_from_catalog", "trial_rows"]

#: The catalog columns a replica keeps for each served stitch.
STITCH_COLUMNS = ("stitch_id", "anchors", "cuts", "flops", "params", "top1", "top5", "top1_selection")


def trial_rows(catalog: str, sweep: str | None = None, trial: str | None = None) -> list[dict[str, Any]]:
    df = load(catalog, sweep=sweep)
    where = f"the catalog {catalog}" + (f" (sweep {sweep!r})" if sweep else "")
    if df.empty:
        if sweep is not None and sweep not in sweeps(catalog):
            raise SNNetError(f"The catalog {catalog} has no sweep {sweep!r}; its sweeps are: "
                             f"{', '.join(sweeps(catalog)) or 'none'}.")
        raise SNNetError(f"{where} holds no stitches: train or sweep into it first.")
    trials = sorted(set(zip(df["sweep"], df["trial_id"])))
    if trial is not None:
        chosen = [t for t in trials if t[1] == trial]
        if not chosen:
            raise SNNetError(f"{where} has no trial {trial!r}; its trials are: "
                             f"{', '.join(t for _, t in trials[:12])}" + (" ..." if len(trials) > 12 else "") + ".")
        trials = chosen
    if len(trials) > 1:
        shown = ", ".join(f"{t} (sweep {s})" for s, t in trials[:12])
        raise SNNetError(f"{where} holds {len(trials)} trials; one replica serves one trial's supernet, so name it "
                         f"with --trial (and --sweep if trial ids repeat): {shown}.")
    sweep, trial = trials[0]
    rows = df[(df["sweep"] == sweep) & (df["trial_id"] == trial)]
    return to_records(rows.sort_values("stitch_id"))


def pick_stitches(rows: list[dict[str, Any]], spec: str) -> list[dict[str, Any]]:
    trial = rows[0]["trial_id"]
    if spec == "all":
        return rows
    if spec == "front":
        scored = [r for r in rows if r.get("top1") is not None]
        if not scored:
            raise SNNetError(f"Trial {trial!r} has no top-1 in the catalog, so it has no Pareto front; serve "
                             "--stitches all, or name the stitches: --stitches 0,5,12.")
        front = pareto_front(pd.DataFrame(scored))
        return to_records(front.sort_values("flops"))
    try:
        ids = [int(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise SNNetError(f"--stitches takes front, all, or stitch ids separated by commas, got {spec!r}.") from None
    by_id = {int(r["stitch_id"]): r for r in rows}
    unknown = [i for i in ids if i not in by_id]
    if unknown or not ids:
        known = sorted(by_id)
        raise SNNetError(f"Trial {trial!r} has no stitch {', '.join(map(str, unknown)) or '(none given)'}; its "
                         f"stitch ids run {known[0]}..{known[-1]} ({len(known)} stitches).")
    return [by_id[i] for i in dict.fromkeys(ids)]


def pick_policy(policy: str | None, slo_ms: float | None, stitches: list[dict[str, Any]], spec: str) -> str:
    policy = policy or ("slo" if slo_ms is not None else "fixed" if len(stitches) == 1 else "budget")
    if policy == "slo" and slo_ms is None:
        raise SNNetError("--policy slo needs a latency objective: --slo-ms MS (for example --slo-ms 100).")
    if policy == "fixed" and len(stitches) != 1:
        raise SNNetError(f"--policy fixed serves exactly one stitch, and --stitches {spec} gives "
                         f"{len(stitches)}; name one: --stitches {stitches[-1]['stitch_id']}.")
    if slo_ms is not None and policy != "slo":
        raise SNNetError(f"--slo-ms applies to --policy slo only (this command asks for --policy {policy}).")
    return policy


def check_checkpoint(catalog: str, checkpoint: str | None, rows: list[dict[str, Any]], chosen: list[dict[str, Any]],
                     read: bool = True) -> str:
    """The checkpoint to serve: where export would read it (the rows' own inside the catalog's storage, or
    the one the user names), and with ``read``, read and matched with the rows (the trial, each stitch)."""
    # the checkpoint's reader loads timm and the model code (seconds): only here, once the flags are checked
    from orchestrator.export.checkpoint import load_state, stitch_of

    source = checkpoint or rows[0].get("checkpoint") or ""
    if checkpoint is None and source:
        check_checkpoint_location(source, catalog)
    if not read:
        if not source:
            raise SNNetError("This trial's catalog rows have no checkpoint, so there is no supernet to serve.")
        return source if "://" in source else os.path.abspath(source)
    state = load_state(source)

    try:
        space = StitchSpace.from_json(state["space"])
    except SNNetError as e:
        raise SNNetError(f"The checkpoint's stitch space cannot be read: {e}") from None
    config = state.get("train_config") or {}
    row = rows[0]
    mismatch = [f"{key} {config.get(key)!r} (catalog: {row.get(col)!r})" for key, col in
                (("sweep", "sweep"), ("trial_id", "trial_id")) if config.get(key) not in (None, row.get(col))]
    if mismatch:
        raise SNNetError(f"The checkpoint {source!r} belongs to another trial: its " + ", ".join(mismatch) + ".")
    for r in chosen:
        stitch = stitch_of(space, r)
        if (stitch.flops, stitch.params) != (int(r["flops"]), int(r["params"])):
            raise SNNetError(f"The checkpoint {source!r} holds stitch {r['stitch_id']} with {stitch.flops:,} FLOPs and "
                             f"{stitch.params:,} params, the catalog row says {int(r['flops']):,} and "
                             f"{int(r['params']):,}: they come from different spaces.")
    if "://" not in source:
        source = os.path.abspath(source)
    return source


def settings_from_catalog(
    catalog: str,
    *,
    sweep: str | None = None,
    trial: str | None = None,
    stitches: str = "front",
    checkpoint: str | None = None,
    policy: str | None = None,
    slo_ms: float | None = None,
    max_batch_size: int = 8,
    batch_wait_ms: float = 5.0,
    device: str = "cpu",
    read_checkpoint: bool = True,
) -> ServeSettings:
    """The settings of an application serving one trial of ``catalog`` (SNNetError with the reason)."""
    rows = trial_rows(os.fspath(catalog), sweep, trial)
    chosen = pick_stitches(rows, str(stitches))
    policy = pick_policy(policy, slo_ms, chosen, str(stitches))
    source = check_checkpoint(os.fspath(catalog), checkpoint, rows, chosen, read=read_checkpoint)
    return ServeSettings(
        checkpoint=source, stitches=tuple({k: r.get(k) for k in STITCH_COLUMNS} for r in chosen), policy=policy,
        slo_ms=slo_ms, max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms, catalog=os.fspath(catalog),
        sweep=rows[0]["sweep"], trial=rows[0]["trial_id"], device=device)
