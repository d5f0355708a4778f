"""An honest comparison of design choices: ``python -m orchestrator.catalog compare CATALOG --by COLUMN``.

Trials are grouped by the value of one per-trial column (``sampling``, ``kernel_size``,
``init``, ``epochs``, the fidelity knobs ``data_fraction`` and ``image_size``, ...); a null
``image_size`` (each family's own resolution) is the group ``default``. Only trials that
**share a space** are compared: the same anchors
and the same value of every other setting column (``kernel_size``, ``stride``, ``dataset``,
``init``, ``mode``, ``epochs``, learning rates, ``workers``, and any setting column added
later). Outcomes and bookkeeping (``top1``, ``flops``, ``ls_r2``, ``seed``, ``checkpoint``,
``created_at``, ``code_version``, ``experiment``, ``config_fingerprint``, ...) never split a space;
``ignore`` pools over further settings.

**Replicates are seeds.** Within a group of one space, trials that share a ``seed`` (the same
configuration run again: a sweep run twice into one catalog, a re-run) are one replicate, their
top-1 averaged per stitch: they repeat one draw of the training noise, and counting them apart
would narrow the intervals. Only different seeds are independent repeats; the output gives each
group's count of seeds and, in a note, how many trials were merged. A trial without a seed counts
as a replicate of its own.

For each pair of groups ``(a, b)`` in one space (``b - a``):

* **paired top-1 difference**: stitches are matched by ``(anchors, cuts)``; for each stitch
  every trial of both groups evaluated, the mean top-1 of ``b``'s trials minus that of
  ``a``'s; the statistic is the mean over those stitches (the paper's Figure 13 compares
  sampling rules on the same stitches);
* **hypervolume difference**: the mean over ``b``'s trials of
  :func:`orchestrator.catalog.objectives.hypervolume` minus that over ``a``'s, each trial's front
  taken over all its stitches, against ``flops_ref`` = the largest anchor's FLOPs in the
  space (the sweep's objective);
* **bootstrap intervals**: each resample draws stitches with replacement (the matched ones
  for top-1; all of the space's for hypervolume, a stitch left out of a draw is left out of
  every trial's front) and, in a group with several seeds, that group's replicates with
  replacement. The interval is the bias-corrected percentile interval (Efron's BC) of the
  resampled statistic, seeded, so the same catalog gives the same numbers.

An interval that excludes 0 says the difference is larger than what the choice of stitches
and of training seeds explains; one trial per group can only speak to the stitches.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from orchestrator.catalog._parse import name_list
from orchestrator.catalog._query import require_columns
from orchestrator.catalog._read import load, native_value
from orchestrator.catalog._store import SCHEMA, SETTING_COLUMNS
from orchestrator.catalog.objectives import hypervolume, hypervolumes
from orchestrator.cli import render_table
from snnet import SNNetError

__all__ = ["Comparison", "bootstrap_interval", "compare", "format_comparison", "parse_options"]

#: Columns that never define a space: per-stitch outcomes, identities and bookkeeping (every column but the
#: settings; a column this reader does not know counts as a setting).
NOT_SETTINGS = frozenset({"sweep", *SCHEMA.names}) - SETTING_COLUMNS
#: Setting columns whose null is a value of its own (the default), compared as a group of that name:
#: a full-fidelity re-run at the family's own resolution is compared with a cheap one at 128 px.
NULL_GROUPS = {"image_size": "default", "prune_score": "none"}
#: Comparing by ``sampling`` tells a rule's variants apart: ``scored(focus=front, score=init_top1)``.
WITH_OPTIONS = {"sampling": "sampling_options"}
_SPACE = "trials that share a space (same anchors and the same value of every other setting column)"


@dataclass
class Comparison:
    """The result of :func:`compare`: one row per pair of groups per space, plus what was left out."""

    by: str
    confidence: float
    resamples: int
    seed: int
    spaces: list[dict[str, Any]] = field(default_factory=list)  # index -> settings shared by its trials
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def parse_options(confidence: Any = 0.95, resamples: Any = 2000, seed: Any = 0) -> dict[str, Any]:
    """Validated bootstrap options (the CLI passes strings)."""
    try:
        level = float(confidence)
    except (TypeError, ValueError):
        level = math.nan
    if not 0.5 <= level < 1.0:
        raise SNNetError(f"The confidence level (--confidence) must be a number in [0.5, 1) such as 0.95, "
                         f"got {confidence!r}.")
    try:
        count = int(resamples)
    except (TypeError, ValueError):
        count = 0
    if not 100 <= count <= 1_000_000:
        raise SNNetError(f"The number of bootstrap resamples (--resamples) must be a whole number from 100 "
                         f"to 1000000 such as 2000, got {resamples!r}.")
    try:
        number = int(seed)
    except (TypeError, ValueError):
        number = -1
    if number < 0:
        raise SNNetError(f"The bootstrap seed (--seed) must be a non-negative whole number, got {seed!r}.")
    return {"confidence": level, "resamples": count, "seed": number}


def bootstrap_interval(samples: np.ndarray, estimate: float, confidence: float) -> tuple[float, float]:
    """Efron's bias-corrected percentile interval of bootstrap ``samples`` around ``estimate``."""
    from scipy.stats import norm  # half a second to import: only `compare` needs it, not the catalog's other commands

    samples = np.asarray(samples, dtype=float)
    n = samples.size
    below = (np.count_nonzero(samples < estimate) + 0.5 * np.count_nonzero(samples == estimate)) / n
    z0 = norm.ppf(min(max(below, 0.5 / n), 1 - 0.5 / n))
    z = norm.ppf(0.5 + confidence / 2)
    low, high = norm.cdf(2 * z0 - z), norm.cdf(2 * z0 + z)
    return float(np.quantile(samples, low)), float(np.quantile(samples, high))


# ---------------------------------------------------------------------------------------------
# grouping trials into spaces
# ---------------------------------------------------------------------------------------------


def _value(value: Any) -> Any:
    """A hashable, JSON-native cell value (None for missing)."""
    value = native_value(value)
    return tuple(value) if isinstance(value, list) else value


def _order(value: Any) -> tuple:
    return (type(value).__name__ if not isinstance(value, (int, float)) else "", value)


def _trial_columns(df: pd.DataFrame, keys: list[str]) -> set[str]:
    """Columns holding one value per trial."""
    grouped = df.groupby(keys, dropna=False, sort=False)
    constant = set()
    for column in df.columns:
        if column in keys:
            continue
        try:
            counts = grouped[column].nunique(dropna=False)
        except TypeError:  # lists: compare their text
            counts = df[column].map(lambda v: json.dumps(_value(v), default=str)).groupby(
                [df[k] for k in keys], dropna=False).nunique(dropna=False)
        if (counts <= 1).all():
            constant.add(column)
    return constant


def _no_comparable(by: str, catalog: str, trials: list[dict], settings: list[str], notes: list[str]) -> SNNetError:
    left_out = "".join(f" Note: {note}." for note in notes)  # e.g. the trials without a value of ``by``
    values = sorted({t["group"] for t in trials}, key=_order)
    shown = ", ".join(f"{by}={v!r}" for v in values[:6]) + (" ..." if len(values) > 6 else "")
    if len(values) < 2:
        return SNNetError(f"No comparable trials in {catalog}: all {len(trials)} trial(s) with results have "
                          f"{shown}. compare needs {_SPACE} and differ in {by}; add trials with another "
                          f"value of {by} (for instance a sweep that searches it over several seeds).{left_out}")
    differing = []
    for column in ["anchors"] + settings:
        seen = sorted({t["space"][column] for t in trials}, key=_order)
        if len(seen) > 1:
            differing.append(f"{column} ({', '.join(map(repr, seen[:4]))}{' ...' if len(seen) > 4 else ''})")
    hint = (f" Pass --ignore {','.join(d.split(' ')[0] for d in differing if not d.startswith('anchors'))} "
            "to pool over those settings." if any(not d.startswith("anchors") for d in differing) else "")
    return SNNetError(f"No comparable trials in {catalog}: its trials have {shown}, but no two trials with "
                      f"different {by} share a space: they also differ in {'; '.join(differing)}. compare "
                      f"needs {_SPACE}.{hint}{left_out}")


def _with_options(group: Any, options: Any) -> Any:
    """``group`` with its options (a JSON object as text) appended, when there are any."""
    options = _value(options)
    if not options:
        return group
    try:
        pairs = json.loads(options)
    except ValueError:
        return f"{group}({options})"
    return f"{group}({', '.join(f'{k}={v}' for k, v in sorted(pairs.items()))})"


def _trials(df: pd.DataFrame, by: str, ignore: Sequence[str], catalog: str) -> tuple[list[dict], list[str], list[str]]:
    """One dict per trial: its group value, space key and stitches; plus the setting columns and notes."""
    keys = [c for c in ("sweep", "trial_id") if c in df.columns]
    constant = _trial_columns(df, keys) | set(keys)
    if by not in constant:
        per_trial = sorted(c for c in constant - NOT_SETTINGS if c != by) + ["sweep", "seed"]
        raise SNNetError(f"Cannot compare by {by!r}: it varies within a trial, and compare groups whole trials. "
                         f"Compare by a per-trial column such as {', '.join(dict.fromkeys(per_trial))}.")
    options = WITH_OPTIONS.get(by) if WITH_OPTIONS.get(by) in constant else None
    settings = sorted(c for c in constant - NOT_SETTINGS - set(ignore) if c not in (by, options))
    trials, notes, skipped = [], [], 0
    for key, rows in df.groupby(keys, dropna=False, sort=True):
        first = rows.iloc[0]
        group = _value(first[by])
        group = NULL_GROUPS.get(by) if group is None else _with_options(group, first[options] if options else None)
        rows = rows[rows["top1"].notna()]
        if rows.empty:
            continue
        if group is None:
            skipped += 1
            continue
        stitches = {}
        for anchors, cuts, flops, top1 in zip(rows["anchors"], rows["cuts"], rows["flops"], rows["top1"]):
            stitch = (tuple(anchors), tuple(tuple(int(x) for x in c) for c in cuts))
            stitches[stitch] = (float(flops), float(top1))
        names = sorted({a for s in stitches for a in s[0]})
        space = {"anchors": tuple(names), **{c: _value(first[c]) for c in settings}}
        seed = _value(first["seed"]) if "seed" in rows.columns else None
        trials.append({"key": key if isinstance(key, tuple) else (key,), "group": group, "space": space,
                       "stitches": stitches, "seed": seed, "trials": 1})
    if skipped:
        notes.append(f"{skipped} trial(s) without a value of {by} were left out")
    if not trials and skipped:
        raise SNNetError(f"Cannot compare by {by!r}: none of the {skipped} trial(s) with top-1 results in {catalog} "
                         f"has a value of {by} (it is empty in every one). "
                         + _varying(df, keys, sorted(constant - NOT_SETTINGS - {by})))
    if not trials:
        raise SNNetError(f"No comparable trials in {catalog}: it holds no trial with top-1 results.")
    return trials, settings, notes


def _varying(df: pd.DataFrame, keys: list[str], columns: list[str]) -> str:
    """A sentence naming the per-trial ``columns`` whose value differs between the trials with top-1."""
    heads = df[df["top1"].notna()].drop_duplicates(keys)
    differ = [c for c in columns if len({json.dumps(_value(v), default=str) for v in heads[c]}) > 1]
    if not differ:
        return "No other setting column differs between them either."
    return f"Setting columns that differ between them: {', '.join(differ)}; compare by one of those."


def _by_seed(members: list[dict]) -> tuple[list[dict], int]:
    """The replicates of one space: trials of one group that share a seed merged into one (top-1
    averaged per stitch over the trials that evaluated it); and how many trials were merged away."""
    replicates: dict[tuple, list[dict]] = {}
    for i, trial in enumerate(members):
        seed = trial["seed"]
        replicates.setdefault((trial["group"], ("seed", seed) if seed is not None else ("trial", i)), []).append(trial)
    out = []
    for same in replicates.values():
        if len(same) == 1:
            out.append(same[0])
            continue
        stitches = {}
        for stitch in dict.fromkeys(s for t in same for s in t["stitches"]):
            values = [t["stitches"][stitch] for t in same if stitch in t["stitches"]]
            stitches[stitch] = (values[0][0], sum(v[1] for v in values) / len(values))
        out.append({**same[0], "stitches": stitches, "trials": len(same)})
    return out, len(members) - len(out)


def _anchor_order(members: list[dict]) -> list[str]:
    """The space's anchors, smallest first (by their own FLOPs where the catalog has them)."""
    own = {s[0][0]: f for t in members for s, (f, _) in t["stitches"].items() if len(s[0]) == 1}
    return sorted(members[0]["space"]["anchors"], key=lambda name: (own.get(name, math.inf), name))


# ---------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------


#: Resampled values drawn at once (resamples x stitches); a few arrays of this many float64 (about
#: 8 MiB each) bound the memory of :func:`_pair` whatever ``--resamples`` and the catalog's size.
_CHUNK_ELEMENTS = 1 << 20


def _chunks(resamples: int, width: int) -> list[slice]:
    """Consecutive slices of ``range(resamples)``, about ``_CHUNK_ELEMENTS // width`` rows each.

    No slice holds a single row unless ``resamples`` is 1: numpy sums a one-row array in another
    order than a taller one, and the last bit of the hypervolumes would then depend on the chunking.
    """
    step = max(2, _CHUNK_ELEMENTS // max(width, 1))
    starts = list(range(0, resamples, step))
    if len(starts) > 1 and resamples - starts[-1] == 1:
        starts.pop()  # the last row joins the chunk before it
    return [slice(start, end) for start, end in zip(starts, starts[1:] + [resamples])]


def _pair(members: list[dict], a: list[int], b: list[int], rng: np.random.Generator,
          resamples: int, confidence: float) -> dict[str, Any]:
    """Point estimates and bootstrap intervals for groups ``a`` and ``b`` (indices into ``members``)."""
    involved = [members[i] for i in a + b]
    union = sorted({s for t in involved for s in t["stitches"]})
    flops = np.array([next(t["stitches"][s][0] for t in involved if s in t["stitches"]) for s in union])
    anchors = [f for s, f in zip(union, flops) if len(s[0]) == 1]
    flops_ref = float(max(anchors) if anchors else flops.max())
    top1 = np.array([[t["stitches"].get(s, (0.0, math.nan))[1] for s in union] for t in involved])
    na, nb = len(a), len(b)
    matched = np.flatnonzero(~np.isnan(top1).any(axis=0))

    hv = np.array([hypervolume([(f, y) for f, y in zip(flops, row) if not math.isnan(y)], flops_ref)
                   for row in top1])
    estimate = {"hv_a": float(hv[:na].mean()), "hv_b": float(hv[na:].mean())}
    estimate["hv_diff"] = estimate["hv_b"] - estimate["hv_a"]

    # resampled trials of each group (the only trial when a group has one)
    pick_a = rng.integers(0, na, (resamples, na))
    pick_b = na + rng.integers(0, nb, (resamples, nb))

    # hypervolume: a stitch left out of a draw is left out of every trial's front. The draws come in
    # chunks of resamples, so memory stays bounded; one generator drawing chunk after chunk yields
    # the same numbers as one draw of them all, so the intervals do not depend on the chunk size.
    hv_samples = np.empty(resamples)
    for rows in _chunks(resamples, len(union)):
        drawn = np.zeros((rows.stop - rows.start, len(union)), dtype=bool)
        np.put_along_axis(drawn, rng.integers(0, len(union), drawn.shape), True, axis=1)
        fronts = np.stack([hypervolumes(flops, np.where(drawn, row, np.nan), flops_ref) for row in top1], axis=1)
        at = np.arange(drawn.shape[0])[:, None]
        hv_samples[rows] = fronts[at, pick_b[rows]].mean(axis=1) - fronts[at, pick_a[rows]].mean(axis=1)
    estimate["hv_low"], estimate["hv_high"] = bootstrap_interval(hv_samples, estimate["hv_diff"], confidence)

    estimate["stitches"] = int(matched.size)
    if matched.size:
        paired = top1[:, matched]
        per_stitch = paired[na:].mean(axis=0) - paired[:na].mean(axis=0)
        estimate["top1_diff"] = float(per_stitch.mean())
        estimate["b_better"] = float((per_stitch > 0).mean())
        samples = np.empty(resamples)
        for rows in _chunks(resamples, matched.size):
            mean_a = sum(paired[pick_a[rows, k]] for k in range(na)) / na  # (chunk, matched)
            mean_b = sum(paired[pick_b[rows, k]] for k in range(nb)) / nb
            draws = rng.integers(0, matched.size, mean_a.shape)
            samples[rows] = np.take_along_axis(mean_b - mean_a, draws, axis=1).mean(axis=1)
        estimate["top1_low"], estimate["top1_high"] = bootstrap_interval(samples, estimate["top1_diff"], confidence)
    else:
        estimate.update(top1_diff=None, b_better=None, top1_low=None, top1_high=None)
    estimate["flops_ref"] = flops_ref
    return estimate


def _compare_input(df_or_catalog: Any, by: str, sweep: str | Sequence[str] | None,
                   ignore: Sequence[str]) -> tuple[pd.DataFrame, str, list[str]]:
    """``(rows, how the catalog is named, ignored columns)`` of :func:`compare`'s arguments, checked."""
    catalog = os.fspath(df_or_catalog) if isinstance(df_or_catalog, (str, os.PathLike)) else "the table"
    wanted = name_list(sweep, "sweep")
    ignored = name_list(list(ignore), "ignore") if ignore else []
    if isinstance(df_or_catalog, pd.DataFrame):
        df = df_or_catalog
    else:
        df = load(df_or_catalog, sweep=wanted[0] if wanted and len(wanted) == 1 else None)
    if wanted is not None and "sweep" in df.columns:
        df = df[df["sweep"].isin(wanted)]
    require_columns(df, ("trial_id", "anchors", "cuts", "flops", "top1"), "compare")
    if by not in df.columns:
        raise SNNetError(f"Cannot compare by {by!r}: the catalog has no such column. Compare by a per-trial "
                         f"column such as sampling, kernel_size, stride, init, mode, epochs, anchor_lr, "
                         f"data_fraction or image_size.")
    unknown = [c for c in ignored if c not in df.columns]
    if unknown:
        raise SNNetError(f"Cannot ignore {', '.join(map(repr, unknown))}: the catalog has no such column.")
    if df.empty:
        raise SNNetError(f"No comparable trials in {catalog}: it holds no rows"
                         f"{' for sweep ' + ', '.join(wanted) if wanted else ''}.")
    return df, catalog, ignored


def compare(
    df_or_catalog: pd.DataFrame | str | os.PathLike[str],
    by: str,
    *,
    sweep: str | Sequence[str] | None = None,
    ignore: Sequence[str] = (),
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Compare the groups of trials that share a space by the value of column ``by`` (see the module).

    ``df_or_catalog`` is a DataFrame from :func:`~orchestrator.catalog.load` or a catalog
    path/URI; ``sweep`` keeps only those sweeps; ``ignore`` names setting columns to pool
    over. Raises SNNetError with one paragraph when ``by`` is not a per-trial column or when
    no two groups share a space.
    """
    df, catalog, ignored = _compare_input(df_or_catalog, by, sweep, ignore)
    trials, settings, notes = _trials(df, by, ignored, catalog)

    spaces: dict[tuple, list[dict]] = {}
    for trial in trials:
        spaces.setdefault(tuple(sorted(trial["space"].items(), key=str)), []).append(trial)
    result = Comparison(by, confidence, resamples, seed, notes=notes)
    merged = 0
    for members in spaces.values():
        groups: dict[Any, list[int]] = {}
        for trial in members:
            groups.setdefault(trial["group"], [])
        if len(groups) < 2:
            continue
        members, repeats = _by_seed(members)
        merged += repeats
        for i, trial in enumerate(members):
            groups[trial["group"]].append(i)
        index = len(result.spaces)
        space = {k: v for k, v in members[0]["space"].items() if v is not None}
        space["anchors"] = _anchor_order(members)
        result.spaces.append(space)
        values = sorted(groups, key=_order)
        for i, first in enumerate(values):
            for j, second in enumerate(values[i + 1:], start=i + 1):
                rng = np.random.default_rng([seed, index, i, j])
                stats = _pair(members, groups[first], groups[second], rng, resamples, confidence)
                if not stats["stitches"]:
                    notes.append(f"space {index + 1}: {by}={first!r} and {by}={second!r} share no stitch "
                                 "that all their trials evaluated; only their hypervolumes are compared")
                result.rows.append({"space": index + 1, "by": by, "a": first, "b": second,
                                    "trials_a": sum(members[k]["trials"] for k in groups[first]),
                                    "trials_b": sum(members[k]["trials"] for k in groups[second]),
                                    "seeds_a": len(groups[first]), "seeds_b": len(groups[second]), **stats})
    if not result.rows:
        raise _no_comparable(by, catalog, trials, settings, notes)
    if merged:
        notes.append(f"{merged} trial(s) repeat the seed of another trial of their group and space (the same "
                     "configuration run again, e.g. a sweep run twice into one catalog): trials of one seed count "
                     "as one replicate, their top-1 averaged per stitch, since only different seeds are "
                     "independent repeats")
    return result


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------


def _signed(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:+.{digits}f}"


def format_comparison(result: Comparison, fmt: str = "table") -> str:
    """The comparison as an aligned table (one block per space), CSV or JSON."""
    columns = ["space", "by", "a", "b", "trials_a", "trials_b", "seeds_a", "seeds_b", "stitches", "top1_diff",
               "top1_low", "top1_high", "b_better", "hv_a", "hv_b", "hv_diff", "hv_low", "hv_high", "flops_ref"]
    if fmt == "json":
        return json.dumps({"by": result.by, "confidence": result.confidence, "resamples": result.resamples,
                           "seed": result.seed, "spaces": result.spaces,
                           "pairs": [{c: r[c] for c in columns} for r in result.rows], "notes": result.notes},
                          indent=1) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for r in result.rows:
            writer.writerow(["" if r[c] is None else r[c] for c in columns])
        return out.getvalue()
    level = f"{result.confidence:.0%}"
    lines = [f"compare by {result.by}: differences are b - a; {level} bootstrap intervals over stitches and, "
             f"where a group has several seeds, seeds (trials of one seed count once) ({result.resamples} "
             f"resamples, seed {result.seed}); * marks an interval that excludes 0."]
    header = ["a", "b", "seeds", "stitches", "top1 b-a", f"{level} interval", "b better",
              "HV a", "HV b", "HV b-a", f"{level} interval"]
    for index, space in enumerate(result.spaces, start=1):
        settings = ", ".join(f"{k}={v}" for k, v in space.items() if k != "anchors")
        lines.append("")
        lines.append(f"space {index}: anchors {', '.join(space['anchors'])}" + (f"; {settings}" if settings else ""))
        table = []
        for r in (r for r in result.rows if r["space"] == index):
            def interval(low, high, digits):
                if low is None:
                    return "-"
                star = "*" if low > 0 or high < 0 else ""
                return f"[{low:+.{digits}f}, {high:+.{digits}f}]{star}"
            table.append([str(r["a"]), str(r["b"]), f"{r['seeds_a']}/{r['seeds_b']}", str(r["stitches"]),
                          _signed(r["top1_diff"], 2), interval(r["top1_low"], r["top1_high"], 2),
                          "-" if r["b_better"] is None else f"{r['b_better']:.0%}",
                          f"{r['hv_a']:.4f}", f"{r['hv_b']:.4f}", _signed(r["hv_diff"], 4),
                          interval(r["hv_low"], r["hv_high"], 4)])
        text = render_table(table, header=header, right=lambda i: i >= 2, rule=True)
        lines += ["  " + line for line in text.splitlines()]
    lines += [f"note: {note}" for note in result.notes]
    return "\n".join(lines) + "\n"
