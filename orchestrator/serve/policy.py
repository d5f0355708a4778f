"""Which stitch answers a request: the served stitches, a request's budget, and the three policies.

Pure Python (no torch, no Ray), so the switching rule is tested with a fake clock and queue:

``fixed``
    one stitch answers everything (a request may still name it, or a budget it meets).
``budget``
    per request, the most accurate served stitch within the request's budget (no budget: the most
    accurate served stitch).
``slo``
    per batch, the most accurate stitch whose predicted finish time for the requests already queued
    meets the latency objective: the oldest request of the batch has waited ``waited_ms``; the batch
    itself takes ``latency(batch)``; the requests queued behind it follow in ``ceil(queued / B)``
    batches of at most ``B`` (the maximum batch size), each taking ``latency(B)``; every batch also
    pays the replica's measured per-batch overhead (a running average of what a batch took beyond its
    profiled forward pass). When no stitch
    meets it, the fastest one runs (the queue drains quickest). As the queue drains the predicted
    finish shrinks and the choice moves back up to more accurate stitches. A request's own budget
    still bounds the choice: only stitches inside it are candidates.

"Most accurate" ranks by the top-1 on the selection split when the catalog has it (what a sweep
selects on) and by the evaluation top-1 otherwise; responses report the catalog's evaluation top-1.
Latencies come from the replica's own measurements, per batch size (:class:`LatencyProfile`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "POLICIES", "Budget", "LatencyProfile", "RequestError", "StitchInfo", "choose", "candidates", "parse_budget",
    "predicted_finish_ms",
]

POLICIES: tuple[str, ...] = ("fixed", "budget", "slo")
_BUDGET_KEYS = ("stitch", "max_flops", "max_latency_ms", "min_top1")


class RequestError(Exception):
    """A request that cannot be answered: ``status`` is its HTTP status (400, 404, 422)."""

    def __init__(self, status: int, message: str, **detail: Any):
        super().__init__(message)
        self.status, self.message, self.detail = status, message, detail

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "status": self.status, **self.detail}


@dataclass(frozen=True)
class LatencyProfile:
    """Measured milliseconds per batch, by batch size; other sizes are interpolated linearly between
    the two nearest measured sizes (and extrapolated from the last two beyond the largest)."""

    ms: Mapping[int, float]

    def __post_init__(self) -> None:
        if not self.ms or any(int(n) < 1 or not math.isfinite(v) or v < 0 for n, v in self.ms.items()):
            raise ValueError(f"a latency profile needs batch sizes >= 1 with finite times, got {dict(self.ms)}")

    def __call__(self, batch: int) -> float:
        sizes = sorted(int(n) for n in self.ms)
        ms = {int(n): float(v) for n, v in self.ms.items()}
        batch = max(1, int(batch))
        if batch in ms:
            return ms[batch]
        if len(sizes) == 1:
            return ms[sizes[0]] * batch / sizes[0]
        if batch < sizes[0]:
            return ms[sizes[0]]
        lo, hi = (sizes[-2], sizes[-1]) if batch > sizes[-1] else next(
            (a, b) for a, b in zip(sizes, sizes[1:]) if a < batch < b)
        slope = (ms[hi] - ms[lo]) / (hi - lo)
        return max(ms[lo] + slope * (batch - lo), 0.0)

    def to_json(self) -> dict[str, float]:
        return {str(n): round(float(v), 4) for n, v in sorted(self.ms.items())}


@dataclass(frozen=True)
class StitchInfo:
    """A served stitch as the catalog describes it, with the replica's latency profile once measured."""

    stitch_id: int
    flops: int
    params: int
    top1: float | None = None
    top5: float | None = None
    top1_selection: float | None = None
    anchors: tuple[str, ...] = ()
    cuts: tuple[tuple[int, int], ...] = ()
    latency: LatencyProfile | None = field(default=None, compare=False)

    @property
    def accuracy(self) -> float:
        """What "most accurate" ranks by: selection top-1, else evaluation top-1 (unknown ranks last)."""
        value = self.top1_selection if self.top1_selection is not None else self.top1
        return -math.inf if value is None or math.isnan(value) else float(value)

    def latency_ms(self, batch: int = 1) -> float:
        if self.latency is None:
            raise ValueError(f"stitch {self.stitch_id} has no measured latency")
        return self.latency(batch)

    def describe(self) -> dict[str, Any]:
        out = {"stitch": self.stitch_id, "flops": self.flops, "params": self.params, "top1": self.top1}
        if self.latency is not None:
            out["latency_ms"] = round(self.latency(1), 4)
        return out


@dataclass(frozen=True)
class Budget:
    """At most one of: a stitch id, a FLOPs budget, a latency budget (ms), a minimum top-1 (percent)."""

    stitch: int | None = None
    max_flops: float | None = None
    max_latency_ms: float | None = None
    min_top1: float | None = None

    @property
    def empty(self) -> bool:
        return all(getattr(self, k) is None for k in _BUDGET_KEYS)


def _number(body: Mapping[str, Any], key: str, low: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
        raise RequestError(400, f"{key!r} must be a number >= {low:g}, got {value!r}.")
    return float(value)


def parse_budget(body: Mapping[str, Any]) -> Budget:
    """The budget of a request body (RequestError 400 when malformed or when more than one is given)."""
    given = [k for k in _BUDGET_KEYS if body.get(k) is not None]
    if len(given) > 1:
        raise RequestError(400, f"Give at most one of {', '.join(_BUDGET_KEYS)}; this request gave "
                                f"{', '.join(given)}.")
    stitch = body.get("stitch")
    if stitch is not None and (isinstance(stitch, bool) or not isinstance(stitch, int) or stitch < 0):
        raise RequestError(400, f"'stitch' must be a stitch id (an integer >= 0), got {stitch!r}.")
    return Budget(stitch=stitch, max_flops=_number(body, "max_flops", 0), max_latency_ms=_number(
        body, "max_latency_ms", 0), min_top1=_number(body, "min_top1", 0))


def _cheapest(stitches: Sequence[StitchInfo], images: int) -> dict[str, Any]:
    low = min(stitches, key=lambda s: (s.flops, s.stitch_id))
    out = {"cheapest_stitch": low.stitch_id, "cheapest_flops": low.flops, "cheapest_top1": low.top1}
    fast = [s for s in stitches if s.latency is not None]
    if fast:
        quick = min(fast, key=lambda s: s.latency_ms(images))
        out.update(fastest_stitch=quick.stitch_id, fastest_latency_ms=round(quick.latency_ms(images), 4))
    best = max(stitches, key=lambda s: s.accuracy)
    out.update(most_accurate_stitch=best.stitch_id, most_accurate_top1=best.top1)
    return out


def candidates(stitches: Sequence[StitchInfo], budget: Budget, images: int = 1) -> list[StitchInfo]:
    """The served stitches a request may run on, most accurate first (RequestError 404/422 if none)."""
    if budget.stitch is not None:
        hit = [s for s in stitches if s.stitch_id == budget.stitch]
        if not hit:
            ids = sorted(s.stitch_id for s in stitches)
            raise RequestError(404, f"Stitch {budget.stitch} is not served here; the served stitches are "
                                    f"{', '.join(map(str, ids))} (GET /stitches lists them).", served=ids)
        return hit
    fits = list(stitches)
    what = ""
    if budget.max_flops is not None:
        fits = [s for s in fits if s.flops <= budget.max_flops]
        what = f"max_flops {budget.max_flops:,.0f}"
    elif budget.max_latency_ms is not None:
        fits = [s for s in fits if s.latency is not None and s.latency_ms(images) <= budget.max_latency_ms]
        what = f"max_latency_ms {budget.max_latency_ms:g} (for {images} image{'s' if images > 1 else ''})"
    elif budget.min_top1 is not None:
        fits = [s for s in fits if s.top1 is not None and s.top1 >= budget.min_top1]
        what = f"min_top1 {budget.min_top1:g}"
    if not fits:
        detail = _cheapest(stitches, images)
        parts = [f"the cheapest served stitch ({detail['cheapest_stitch']}) costs {detail['cheapest_flops']:,} "
                 f"FLOPs"]
        if "fastest_stitch" in detail:
            parts.append(f"the fastest ({detail['fastest_stitch']}) takes {detail['fastest_latency_ms']:.3g} ms")
        top = detail["most_accurate_top1"]
        parts.append(f"the most accurate ({detail['most_accurate_stitch']}) has top-1 "
                     + (f"{top:.2f}%" if top is not None else "unknown"))
        raise RequestError(422, f"No served stitch meets {what}: " + "; ".join(parts) + ".", **detail)
    return sorted(fits, key=lambda s: (-s.accuracy, s.flops, s.stitch_id))


def predicted_finish_ms(stitch: StitchInfo, *, waited_ms: float, batch: int, queued: int, max_batch: int,
                        overhead_ms: float = 0.0) -> float:
    """When the last request queued now would finish if ``stitch`` served this batch and the queue behind it,
    measured from the arrival of the batch's oldest request (see the module docstring). ``overhead_ms`` is
    what a batch costs beyond its measured forward pass (the replica's running estimate)."""
    behind = math.ceil(max(queued, 0) / max(max_batch, 1))
    return waited_ms + stitch.latency_ms(batch) + behind * stitch.latency_ms(max_batch) + (1 + behind) * overhead_ms


def choose(
    policy: str,
    options: Sequence[StitchInfo],
    *,
    slo_ms: float | None = None,
    waited_ms: float = 0.0,
    batch: int = 1,
    queued: int = 0,
    max_batch: int = 1,
    overhead_ms: float = 0.0,
) -> StitchInfo:
    """The stitch a batch runs on, from ``options`` (:func:`candidates`, most accurate first)."""
    if not options:
        raise ValueError("no stitch to choose from")
    if policy in ("fixed", "budget") or slo_ms is None:
        return options[0]
    if policy != "slo":
        raise ValueError(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")
    for stitch in options:
        finish = predicted_finish_ms(stitch, waited_ms=waited_ms, batch=batch, queued=queued, max_batch=max_batch,
                                     overhead_ms=overhead_ms)
        if finish <= slo_ms:
            return stitch
    return min(options, key=lambda s: (s.latency_ms(batch), -s.accuracy))

