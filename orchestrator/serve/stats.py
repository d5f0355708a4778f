"""Serving statistics: a replica's counters and their merge over replicas (no Ray, no torch).

Each replica counts, per stitch, the requests and images it answered, the requests that missed the
latency objective, and keeps its most recent latencies (:data:`RECENT`) for percentiles; errors are
counted by HTTP status, and a *switch* is a batch whose main stitch differs from the previous batch's.
``GET /stats`` and the console merge every replica's :meth:`ReplicaStats.snapshot` with :func:`merge_stats`.
"""

from __future__ import annotations

import collections
import math
import os
import time
from typing import Any

__all__ = ["RECENT", "ReplicaStats", "merge_stats"]

#: Recent requests a replica remembers for percentiles and the console.
RECENT = 4096


class ReplicaStats:
    """A replica's counters: per stitch requests, images, SLO misses and recent latencies; errors by status;
    batches and stitch switches."""

    def __init__(self, slo_ms: float | None):
        self.slo_ms = slo_ms
        self.requests: collections.Counter[int] = collections.Counter()
        self.images: collections.Counter[int] = collections.Counter()
        self.misses: collections.Counter[int] = collections.Counter()
        self.errors: collections.Counter[int] = collections.Counter()
        self.recent: collections.deque[tuple[float, int, float]] = collections.deque(maxlen=RECENT)
        self.batches = self.switches = 0
        self.last_stitch: int | None = None

    def answered(self, stitch: int, images: int, latency_ms: float) -> None:
        self.requests[stitch] += 1
        self.images[stitch] += images
        if self.slo_ms is not None and latency_ms > self.slo_ms:
            self.misses[stitch] += 1
        self.recent.append((time.time(), stitch, latency_ms))

    def batch(self, main_stitch: int) -> None:
        self.batches += 1
        if self.last_stitch is not None and main_stitch != self.last_stitch:
            self.switches += 1
        self.last_stitch = main_stitch

    def snapshot(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(), "slo_ms": self.slo_ms, "requests": dict(self.requests), "images": dict(self.images),
            "slo_misses": dict(self.misses), "errors": dict(self.errors), "batches": self.batches,
            "switches": self.switches, "recent": list(self.recent),
        }


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 4)


def merge_stats(snapshots: list[dict[str, Any]], since: float | None = None) -> dict[str, Any]:
    """One view of several replicas' snapshots; ``since`` (epoch seconds) limits latencies to newer requests."""
    per: dict[int, dict[str, Any]] = {}
    total = {"requests": 0, "images": 0, "slo_misses": 0}
    errors: collections.Counter[str] = collections.Counter()
    latencies: list[float] = []
    def entry(stitch: Any) -> dict[str, Any]:
        return per.setdefault(int(stitch), {"requests": 0, "images": 0, "slo_misses": 0, "_lat": []})

    for snap in snapshots:
        for key in ("requests", "images", "slo_misses"):
            for stitch, count in snap[key].items():
                entry(stitch)[key] += count
                total[key] += count
        errors.update({str(k): v for k, v in snap["errors"].items()})
        for t, stitch, ms in snap["recent"]:
            if since is None or t > since:
                entry(stitch)["_lat"].append(ms)
                latencies.append(ms)
    stitches = {}
    for stitch, counts in sorted(per.items()):
        lat = counts.pop("_lat")
        stitches[str(stitch)] = {**counts, "p50_ms": _percentile(lat, 0.5), "p99_ms": _percentile(lat, 0.99)}
    return {
        "replicas": len(snapshots), "slo_ms": snapshots[0]["slo_ms"] if snapshots else None, **total,
        "errors": dict(errors), "batches": sum(s["batches"] for s in snapshots),
        "switches": sum(s["switches"] for s in snapshots), "p50_ms": _percentile(latencies, 0.5),
        "p99_ms": _percentile(latencies, 0.99), "window_requests": len(latencies), "stitches": stitches,
    }
