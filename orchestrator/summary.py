"""The short report printed at the end of a training run (and of each sweep trial)."""

from __future__ import annotations

from typing import Any, Sequence

from snnet import StitchSpace

from ._cli import format_flops

__all__ = ["summarize", "spearman", "interpolation_stats", "best_under"]


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (:func:`scipy.stats.spearmanr`, average ranks for ties); None
    when it is undefined (fewer than two points, or all values of one side equal)."""
    import math

    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    from scipy.stats import spearmanr

    rho = float(spearmanr(x, y).statistic)
    return None if math.isnan(rho) else rho


def interpolation_stats(rows: Sequence[dict[str, Any]], slack: float = 1.0) -> tuple[int, int]:
    """How many stitched rows have top-1 within ``[min, max]`` of their anchors' top-1 (+-slack)."""
    anchor_top1 = {r["anchors"][0]: r["top1"] for r in rows if len(r["anchors"]) == 1}
    inside = total = 0
    for r in rows:
        if len(r["anchors"]) == 1:
            continue
        ends = [anchor_top1[a] for a in set(r["anchors"]) if a in anchor_top1]
        if not ends:
            continue
        total += 1
        inside += min(ends) - slack <= r["top1"] <= max(ends) + slack
    return inside, total


def best_under(rows: Sequence[dict[str, Any]], max_flops: float) -> dict[str, Any] | None:
    fitting = [r for r in rows if r["flops"] <= max_flops]
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
    fmt = lambda v: "n/a" if v is None else f"{v:.2e}"  # noqa: E731
    return "; ".join(f"{fmt(a)} for anchors and stitches" if s is None else f"anchors {fmt(a)}, stitches {fmt(s)}"
                     for a, s in pairs)


def summarize(space: StitchSpace, rows: Sequence[dict[str, Any]], r2: dict[str, float] | None = None,
              catalog: str | None = None) -> str:
    """The end-of-run report; ``catalog`` (the catalog location as given, ``s3://`` kept) adds its line."""
    anchors = [r for r in rows if len(r["anchors"]) == 1]
    stitched = [r for r in rows if len(r["anchors"]) > 1]
    lines = ["", "== summary " + "=" * 60]
    lines.append("anchors:  " + "  <  ".join(f"{r['anchors'][0]} ({_flops(r['flops'])}, top-1 {r['top1']:.1f}%)"
                                         for r in sorted(anchors, key=lambda r: r["flops"])))
    lrs = _lrs(rows)
    lines.append(f"stitches: {len(rows)} ({len(anchors)} anchors + {len(stitched)} stitched), "
                 f"{len(space.layers)} stitching layers" + (f"; lr {lrs}" if lrs else ""))
    if r2:
        vals = list(r2.values())
        lines.append(f"LS init:  R^2 per stitching layer min {min(vals):.3f}, mean {sum(vals) / len(vals):.3f}, "
                     f"max {max(vals):.3f}")
    if stitched:
        tops = [r["top1"] for r in stitched]
        lines.append(f"top-1:    stitched {min(tops):.1f}% .. {max(tops):.1f}% (mean {sum(tops) / len(tops):.1f}%)")
        inside, total = interpolation_stats(rows)
        rho = spearman([r["flops"] for r in stitched], tops)
        lines.append(f"          {inside}/{total} stitches lie between their anchors' top-1 (+-1 point); "
                     f"Spearman(FLOPs, top-1) = {'n/a' if rho is None else f'{rho:.2f}'}")
    largest = max(r["flops"] for r in rows)
    lines.append("best stitch under a FLOPs budget:")
    lines.append(f"  {'budget':>8}  {'FLOPs':>10}  {'top-1':>6}  stitch")
    for fraction in (0.25, 0.5, 0.75, 1.0):
        row = best_under(rows, fraction * largest)
        if row is None:
            lines.append(f"  {fraction:>7.0%}  {_flops(fraction * largest):>10}  {'':>6}  none fits")
        else:
            lines.append(f"  {fraction:>7.0%}  {_flops(row['flops']):>10}  {row['top1']:>5.1f}%  "
                         f"#{row['stitch_id']} {_describe(row)}")
    if catalog is not None:
        lines.append(f"catalog:  {catalog}")
    return "\n".join(lines)
