"""The short report printed at the end of a training run (and of each sweep trial).

:func:`summarize` shows the anchors (their top-1 before -> after joint training, :func:`anchor_changes`),
the stitches' top-1 range, how many lie between their anchors' (:func:`interpolation_stats`), and the best
stitch under a few FLOPs budgets (:func:`best_under`), and what a pruned run left untrained (:func:`pruned_line`;
those rows have no top-1 and take no part in the rest). The sweep's report is :mod:`orchestrator.sweep.report`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from orchestrator.cli import format_flops, render_table
from snnet import StitchSpace

__all__ = ["summarize", "spearman", "interpolation_stats", "best_under", "anchor_changes", "anchor_noise",
           "anchor_line", "pruned_line"]


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (:func:`scipy.stats.spearmanr`, average ranks for ties); None
    when it is undefined (fewer than two points, or all values of one side equal)."""
    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    from scipy.stats import spearmanr

    rho = float(spearmanr(x, y).statistic)
    return None if math.isnan(rho) else rho


def interpolation_stats(rows: Sequence[dict[str, Any]], slack: float = 1.0) -> tuple[int, int]:
    """How many stitched rows have top-1 within ``[min, max]`` of their anchors' top-1 (+-slack); rows
    without a top-1 (pruned) are not counted."""
    anchor_top1 = {r["anchors"][0]: r["top1"] for r in rows if len(r["anchors"]) == 1}
    inside = total = 0
    for r in rows:
        if len(r["anchors"]) == 1 or not _finite(r.get("top1")):
            continue
        ends = [anchor_top1[a] for a in set(r["anchors"]) if a in anchor_top1]
        if not ends:
            continue
        total += 1
        inside += min(ends) - slack <= r["top1"] <= max(ends) + slack
    return inside, total


#: An anchor's top-1 "dropped" when it fell by more than this many binomial standard errors.
NOISE_SE = 2.0


def anchor_noise(top1: float, images: int) -> float:
    """The noise band of a top-1 (percent) measured on ``images`` images: :data:`NOISE_SE` binomial
    standard errors, ``2 * 100 * sqrt(p (1 - p) / n)`` with ``p`` the top-1 before (at least one image's
    worth, so that 100% or 0% on a small split still has a band)."""
    p = min(max(top1 / 100.0, 1.0 / images), 1.0 - 1.0 / images) if images > 1 else 0.5
    return NOISE_SE * 100.0 * math.sqrt(p * (1.0 - p) / max(images, 1))


def anchor_changes(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each anchor's top-1 before and after joint training, per split it was measured on (issue 28).

    One dict per (anchor, split) with ``anchor``, ``split`` (``evaluation`` or ``selection``),
    ``before``, ``after``, ``images`` (None where the row does not say), ``noise`` (:func:`anchor_noise`;
    None without ``images``) and ``dropped``: the anchor lost more than ``noise`` points. Anchors
    measured before nothing (``top1_before`` null: epochs 0, older catalogs) are left out.
    """
    out = []
    for r in sorted((r for r in rows if len(r["anchors"]) == 1), key=lambda r: r["flops"]):
        for split, after, before, images in (
                ("evaluation", r.get("top1"), r.get("top1_before"), r.get("eval_images")),
                ("selection", r.get("top1_selection"), r.get("top1_selection_before"), r.get("selection_images"))):
            if not (_finite(before) and _finite(after)):
                continue
            images = int(images) if _finite(images) and images > 0 else None
            noise = anchor_noise(before, images) if images else None
            out.append({"anchor": r["anchors"][0], "split": split, "before": float(before), "after": float(after),
                        "images": images, "noise": noise,
                        "dropped": noise is not None and before - after > noise})
    return out


def anchor_line(rows: Sequence[dict[str, Any]]) -> str | None:
    """The summary's line under ``anchors:`` (whose top-1 read ``before -> after``): the split, the selection
    split's before -> after, and which anchors fell beyond noise (DROP); None without a before."""
    changes = anchor_changes(rows)
    if not changes:
        return None
    evaluation = [c for c in changes if c["split"] == "evaluation"]
    selection = [c for c in changes if c["split"] == "selection"]

    def images(group: list[dict[str, Any]]) -> str:
        return f"{group[0]['images']} images" if group and group[0]["images"] else "images unknown"

    text = f"          before -> after joint training, evaluation split ({images(evaluation)})"
    if selection:
        text += (f"; selection split ({images(selection)}): "
                 + ", ".join(f"{c['before']:.1f}% -> {c['after']:.1f}%" for c in selection))
    dropped = [c for c in changes if c["dropped"]]
    if not dropped:
        return text + f"; no anchor fell beyond {NOISE_SE:g} binomial standard errors"
    return text + f"; DROP beyond {NOISE_SE:g} binomial standard errors: " + ", ".join(
        f"{c['anchor']} {c['split']} {c['after'] - c['before']:+.1f} (noise +-{c['noise']:.1f})" for c in dropped)


def _anchor_cell(row: dict[str, Any]) -> str:
    before = row.get("top1_before")
    top1 = f"{before:.1f}% -> {row['top1']:.1f}%" if _finite(before) else f"{row['top1']:.1f}%"
    return f"{row['anchors'][0]} ({_flops(row['flops'])}, top-1 {top1})"


def pruned_line(pruned: int, stitched: int, score: str, keep: float) -> str:
    """What a pruned run left untrained: ``pruned 30 of 60 stitched stitches by cka (kept 0.5)``."""
    return f"pruned {pruned} of {stitched} stitched stitches by {score} (kept {keep:g})"


def best_under(rows: Sequence[dict[str, Any]], max_flops: float) -> dict[str, Any] | None:
    """The most accurate row within ``max_flops`` (ties: fewer FLOPs); rows without a top-1 never win."""
    fitting = [r for r in rows if r["flops"] <= max_flops and _finite(r.get("top1"))]
    return max(fitting, key=lambda r: (r["top1"], -r["flops"])) if fitting else None


def _describe(row: dict[str, Any]) -> str:
    if len(row["anchors"]) == 1:
        return row["anchors"][0]
    return " > ".join(f"{a}" for a in row["anchors"]) + " @ " + " ".join(f"[{j},{k}]" for j, k in row["cuts"])


def _flops(f: float) -> str:
    return format_flops(f, "G") if f >= 1e8 else format_flops(f, "M", digits=2)


def _lrs(rows: Sequence[dict[str, Any]]) -> str | None:
    """The configured learning rates of the rows (one pair when all rows share it)."""
    pairs = sorted({(r.get("anchor_lr"), r.get("stitch_lr")) for r in rows} - {(None, None)},
                   key=lambda p: tuple(v if v is not None else -1.0 for v in p))
    if not pairs:
        return None

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2e}"

    return "; ".join(f"{fmt(a)} for anchors and stitches" if s is None else f"anchors {fmt(a)}, stitches {fmt(s)}"
                     for a, s in pairs)


def summarize(space: StitchSpace, rows: Sequence[dict[str, Any]], r2: dict[str, float] | None = None,
              catalog: str | None = None, prune: tuple[str, float] | None = None) -> str:
    """The end-of-run report; ``catalog`` (the catalog location as given, ``s3://`` kept) adds its line, and
    ``prune`` (the run's ``(prune_score, prune_keep)``) the line saying what was pruned (rows marked ``pruned``)."""
    anchors = [r for r in rows if len(r["anchors"]) == 1]
    every_stitched = [r for r in rows if len(r["anchors"]) > 1]
    stitched = [r for r in every_stitched if _finite(r.get("top1"))]
    lines = ["", "== summary " + "=" * 60]
    lines.append("anchors:  " + "  <  ".join(_anchor_cell(r) for r in sorted(anchors, key=lambda r: r["flops"])))
    kept = anchor_line(rows)
    if kept:
        lines.append(kept)
    lrs = _lrs(rows)
    lines.append(f"stitches: {len(rows)} ({len(anchors)} anchors + {len(every_stitched)} stitched), "
                 f"{len(space.layers)} stitching layers" + (f"; lr {lrs}" if lrs else ""))
    if r2:
        vals = list(r2.values())
        lines.append(f"LS init:  R^2 per stitching layer min {min(vals):.3f}, mean {sum(vals) / len(vals):.3f}, "
                     f"max {max(vals):.3f}")
    if prune is not None:
        lines.append("pruning: " + pruned_line(sum(bool(r.get("pruned")) for r in rows), len(every_stitched), *prune)
                     + "; pruned rows are in the catalog without top-1")
    if stitched:
        tops = [r["top1"] for r in stitched]
        lines.append(f"top-1:    stitched {min(tops):.1f}% .. {max(tops):.1f}% (mean {sum(tops) / len(tops):.1f}%)")
        inside, total = interpolation_stats(rows)
        rho = spearman([r["flops"] for r in stitched], tops)
        lines.append(f"          {inside}/{total} stitches lie between their anchors' top-1 (+-1 point); "
                     f"Spearman(FLOPs, top-1) = {'n/a' if rho is None else f'{rho:.2f}'}")
    largest = max(r["flops"] for r in rows)
    lines.append("best stitch under a FLOPs budget:")
    table = []
    for fraction in (0.25, 0.5, 0.75, 1.0):
        row = best_under(rows, fraction * largest)
        table.append([f"{fraction:.0%}", _flops(fraction * largest), "", "none fits"] if row is None else
                     [f"{fraction:.0%}", _flops(row["flops"]), f"{row['top1']:.1f}%",
                      f"#{row['stitch_id']} {_describe(row)}"])
    lines += _indented(render_table(table, header=["budget", "FLOPs", "top-1", "stitch"], right=[True, True, True]))
    if catalog is not None:
        lines.append(f"catalog:  {catalog}")
    return "\n".join(lines)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _indented(table: str, indent: str = "  ") -> list[str]:
    return [indent + line for line in table.splitlines()]
