"""Serving under a bursty load: does the ``slo`` policy hold a latency objective where fixed stitches cannot?

One supernet is served on a local Ray Serve (one replica, ``SNNET_SERVE_REPLICA_CPUS`` CPUs, default 1)
and an open-loop load generator replays one seeded bursty arrival trace against four policies, one
after another, in the same run:

* ``fixed_largest``: the largest anchor alone; ``fixed_smallest``: the smallest anchor alone;
* ``fixed_best``: the most accurate served stitch that keeps up with the trace's *mean* rate (utilisation
  at most 0.7 at the largest batch, and two batches within the SLO);
* ``slo``: every served stitch, the replica's ``slo`` policy.

The trace: Poisson arrivals at a base rate of half what the largest anchor sustains alone (images per
second at the largest batch), with ``SNNET_SERVE_BURSTS`` bursts (default 3) of
``SNNET_SERVE_BURST_S`` seconds (default 8) at 4x that rate (twice what the largest anchor sustains),
over ``SNNET_SERVE_DURATION_S`` seconds (default 60). The SLO is ``SNNET_SERVE_SLO_MS`` or, by default,
2.5x the largest anchor's measured time for a full batch. Latency is measured by the client, from each
request's scheduled arrival to its answer.

The family. The demo's anchors (16x16 grey digits) cost about a millisecond per batch, far below what a
request costs Ray Serve's HTTP path on a CPU, so switching stitches could not matter there: the benchmark
measures that first (``serve_slo_demo_cost_ratio``: the largest demo stitch's time per batch over the
smallest's) and then runs on DeiT-Ti/S/B at 224x224 with *random weights* (latency does not depend on the
weights). Each stitch's top-1 is taken from the paper's released per-stitch results for the same space
(github.com/ziplab/SN-Net, ``stitching_deit/results/stitches_res.txt``, ``acc1`` per config id; this
project's DeiT stitch ids equal those config ids, see ``tests/test_paper_space.py``). The served stitches
are ``SNNET_SERVE_STITCHES`` (default 8) points of that table's Pareto front, both ends included.

Printed per policy P: ``serve_P_attainment`` (fraction of requests answered within the SLO),
``serve_P_mean_top1``, ``serve_P_throughput`` (answers per second), ``serve_P_p50_ms``, ``serve_P_p99_ms``,
``serve_P_stitches`` (the mix); and ``serve_slo_attainment``, ``serve_fixed_largest_attainment`` (the
headline pair), ``serve_slo_ms``, the trace's request count and rates, and the memory figures:
``serve_model_bytes`` (tensor bytes one replica holds), ``serve_param_bytes`` (the anchors' and stitching
layers' parameters), ``serve_exported_bytes`` (the served stitches as separately exported programs),
``serve_replica_rss_mb`` (the resident memory of the replica that serves them all).

Targets (benchmarks/RESULTS.md): ``serve_slo_attainment >= 0.99`` where ``serve_fixed_largest_attainment <
0.6``; among policies at 99% attainment, ``slo`` has the highest mean top-1;
``serve_model_bytes <= 1.1 x serve_param_bytes``.

``SNNET_BENCH_TINY=1``: the demo family, two stitches, a 4-second trace at 5 requests per second (a smoke
test; figures not meaningful: the demo's rates would be set by its tiny compute, far above what HTTP carries).
Needs Ray Serve (``ray[serve]``) and a free local port.
"""

from __future__ import annotations

import asyncio
import base64
import io
import math
import os
import random
import socket
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from ._common import DEIT_TSB, env_int, log, tiny

__all__ = ["RELEASED_DEIT_TOP1", "bursty_trace", "run", "summarize"]

#: A burst's arrival rate over the base rate.
BURST = 4.0

# acc1 (ImageNet-1k top-1, %) per config id of the released DeiT-Ti/S/B SN-Net, k=2 s=1 (71 stitches),
# from github.com/ziplab/SN-Net stitching_deit/results/stitches_res.txt, rounded to 3 decimals.
RELEASED_DEIT_TOP1 = (
    70.564, 79.464, 81.934, 79.018, 79.052, 79.106, 79.142, 78.370, 78.876, 78.840, 78.200, 78.606, 78.432, 77.880,
    78.458, 78.230, 77.488, 78.056, 77.648, 76.480, 77.260, 76.798, 74.840, 76.488, 75.628, 73.424, 75.170, 74.066,
    72.600, 73.756, 73.042, 71.776, 72.946, 72.190, 71.094, 72.142, 71.362, 81.918, 81.904, 82.042, 81.998, 81.984,
    81.976, 82.034, 81.962, 81.978, 82.032, 81.864, 81.970, 81.912, 81.616, 81.786, 81.650, 81.502, 81.672, 81.492,
    81.250, 81.346, 81.184, 80.674, 81.124, 80.810, 79.960, 79.970, 80.532, 79.058, 79.994, 79.302, 78.958, 79.216,
    79.098,
)


def bursty_trace(seed: int, duration_s: float, base_rate: float, burst_rate: float, burst_s: float,
                 bursts: int) -> tuple[list[float], list[tuple[float, float]]]:
    """Arrival times (seconds from 0) of a Poisson process at ``base_rate`` with ``bursts`` windows of
    ``burst_s`` seconds at ``burst_rate``, spread over the trace (seeded: the same trace every run)."""
    rng = random.Random(seed)
    windows = []
    for i in range(bursts):
        centre = duration_s * (i + 0.5) / bursts + rng.uniform(-0.1, 0.1) * duration_s / bursts
        start = min(max(centre - burst_s / 2, 0.0), max(duration_s - burst_s, 0.0))
        windows.append((start, start + burst_s))
    top = max(base_rate, burst_rate)
    arrivals, t = [], 0.0
    while True:  # thinning: candidates at the top rate, kept with probability rate(t) / top
        t += rng.expovariate(top)
        if t >= duration_s:
            return arrivals, windows
        rate = burst_rate if any(a <= t < b for a, b in windows) else base_rate
        if rng.random() < rate / top:
            arrivals.append(t)


def summarize(latencies_ms: list[float | None], top1: list[float], slo_ms: float, duration_s: float,
              stitches: list[int]) -> dict[str, Any]:
    """One policy's figures; a ``None`` latency is a request that got no answer (counts as a miss)."""
    answered = sorted(v for v in latencies_ms if v is not None)
    met = sum(1 for v in answered if v <= slo_ms)

    def pct(q: float) -> float:
        return answered[min(len(answered) - 1, max(0, math.ceil(q * len(answered)) - 1))] if answered else math.nan

    mix: dict[int, int] = {}
    for s in stitches:
        mix[s] = mix.get(s, 0) + 1
    return {
        "attainment": met / len(latencies_ms) if latencies_ms else math.nan,
        "mean_top1": statistics.fmean(top1) if top1 else math.nan,
        "throughput": len(answered) / duration_s,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "stitches": " ".join(f"{k}:{v}" for k, v in sorted(mix.items(), key=lambda kv: -kv[1])),
    }


def _front(flops: list[int], top1: list[float], count: int) -> list[int]:
    """``count`` stitch ids along the (FLOPs, top-1) Pareto front, its two ends included."""
    order = sorted(range(len(flops)), key=lambda i: (flops[i], -top1[i]))
    front, best = [], -math.inf
    for i in order:
        if top1[i] > best:
            front.append(i)
            best = top1[i]
    if len(front) <= count:
        return front
    picks = sorted({round(k * (len(front) - 1) / (count - 1)) for k in range(count)})
    return [front[p] for p in picks]


def _jpeg(size: int, channels: int) -> str:
    """A smooth synthetic image as base64 JPEG (small on the wire; decoded and resized by the replica)."""
    import numpy as np
    from PIL import Image

    ramp = np.linspace(0, 255, size, dtype=np.float32)
    grid = (ramp[None, :] * 0.6 + ramp[:, None] * 0.4).astype(np.uint8)
    image = Image.fromarray(grid if channels == 1 else np.stack([grid, grid[::-1], grid.T], axis=-1))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return base64.b64encode(buffer.getvalue()).decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _trial(root: Path, anchors: tuple[str, ...], image_size: int | None, top1: list[float] | None):
    """A checkpoint folder and catalog rows of a random-weight supernet of ``anchors``; returns (catalog, net)."""
    import torch

    from orchestrator.catalog import CatalogWriter
    from orchestrator.train.config import TrainConfig
    from orchestrator.train.launch import catalog_rows
    from snnet import AnchorSpec, build_supernet

    torch.manual_seed(0)
    specs = [AnchorSpec(n) for n in anchors]
    net = build_supernet(specs, **({"img_size": image_size} if image_size else {})).eval()
    config = TrainConfig(anchors=specs, dataset="demo" if anchors[0].startswith("snnet_demo") else "imagenet",
                         sweep="bench", trial_id="serve", image_size=image_size)
    if top1 is None:  # the demo's smoke test: an accuracy that rises with FLOPs
        top = max(s.flops for s in net.space)
        top1 = [50 + 40 * s.flops / top for s in net.space]
    results = {str(s.stitch_id): [float(top1[s.stitch_id]), None] for s in net.space}
    folder = root / "runs" / "serve" / "checkpoint_000001"
    folder.mkdir(parents=True)
    torch.save({"model": net.state_dict(), "optimizer": None, "scheduler": None, "step": 0, "epoch": 0, "r2": {},
                "evaluated": results, "train_config": config.model_dump(), "space": net.space.to_json()},
               folder / "state.pt")
    catalog = root / "catalog"
    CatalogWriter(str(catalog), "bench").write_trial("serve", catalog_rows(config, net.space, results, {}, str(folder)))
    return str(catalog), net


def _demo_cost_ratio(max_batch: int) -> float:
    """The largest demo stitch's time per batch of ``max_batch`` over the smallest's (random weights)."""
    import torch

    import orchestrator.data.demo_anchors  # noqa: F401 - registers the demo anchors
    from orchestrator.data.demo_anchors import DEMO_ANCHORS
    from snnet import build_supernet
    from snnet.latency import measure_latency

    net = build_supernet(list(DEMO_ANCHORS)).eval()
    shape = tuple(net.space.profiles[0].input_size)
    ids = sorted((s.stitch_id for s in net.space), key=lambda i: net.space[i].flops)
    with torch.no_grad():
        small, large = (measure_latency(net.fix(i), shape, batch_size=max_batch, warmup=3, repeats=15)
                        for i in (ids[0], ids[-1]))
    return large / small


async def _replay(url: str, arrivals: list[float], body: bytes, timeout_s: float) -> tuple[list, list, list]:
    import aiohttp

    latencies: list[float | None] = [None] * len(arrivals)
    top1: list[float] = []
    stitches: list[int] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        start = time.perf_counter() + 0.2

        async def one(i: int, at: float) -> None:
            delay = start + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                    answer = await r.json()
                    if r.status == 200:
                        latencies[i] = (time.perf_counter() - start - at) * 1000
                        top1.append(float(answer["top1"]))
                        stitches.append(int(answer["stitch"]))
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass

        await asyncio.gather(*(one(i, at) for i, at in enumerate(arrivals)))
    return latencies, top1, stitches


def _best_fixed(stitches, mean_rate: float, slo_ms: float, max_batch: int):
    """The most accurate stitch that keeps up with ``mean_rate`` (utilisation <= 0.7 at the largest batch,
    two full batches within the SLO); the fastest if none does."""
    ok = [s for s in stitches if mean_rate * s.latency_ms(max_batch) / max_batch / 1000 <= 0.7
          and 2 * s.latency_ms(max_batch) <= slo_ms]
    return max(ok, key=lambda s: s.accuracy) if ok else min(stitches, key=lambda s: s.latency_ms(max_batch))


def run() -> dict[str, Any]:
    import json

    import ray
    import torch
    from ray import serve
    from ray.serve.config import HTTPOptions

    from orchestrator.serve.app import StitchServer
    from orchestrator.serve.replica import ServedModel, tensor_bytes
    from orchestrator.serve.source import settings_from_catalog
    from snnet.extract import extract_stitch

    small = tiny()
    max_batch = env_int("SNNET_SERVE_MAX_BATCH", 8, tiny_default=4)
    cpus = env_int("SNNET_SERVE_REPLICA_CPUS", 1)
    duration = float(env_int("SNNET_SERVE_DURATION_S", 60, tiny_default=4))
    bursts = env_int("SNNET_SERVE_BURSTS", 3, tiny_default=1)
    burst_s = float(env_int("SNNET_SERVE_BURST_S", 8, tiny_default=1))
    count = env_int("SNNET_SERVE_STITCHES", 8, tiny_default=2)
    out: dict[str, Any] = {}
    torch.set_num_threads(cpus)  # as a replica with `cpus` CPUs runs (Ray sets OMP_NUM_THREADS)

    out["serve_slo_demo_cost_ratio"] = round(_demo_cost_ratio(max_batch), 3)
    log(f"serve_slo: the largest demo stitch costs {out['serve_slo_demo_cost_ratio']:.2f}x the smallest per batch "
        f"of {max_batch}: " + ("smoke test on the demo" if small else "too little to matter behind Ray Serve's "
                               "HTTP path on a CPU; DeiT-Ti/S/B at 224 with random weights instead"))
    with tempfile.TemporaryDirectory(prefix="snnet-serve-slo-") as folder:
        if small:
            import orchestrator.data.demo_anchors  # noqa: F401
            from orchestrator.data.demo_anchors import DEMO_ANCHORS

            catalog, net = _trial(Path(folder), tuple(DEMO_ANCHORS[:2]), None, None)
            top1 = None
        else:
            log("serve_slo: building DeiT-Ti/S/B (random weights) and writing its checkpoint")
            catalog, net = _trial(Path(folder), DEIT_TSB, None, list(RELEASED_DEIT_TOP1))
            top1 = list(RELEASED_DEIT_TOP1)
        flops = [s.flops for s in net.space]
        accuracy = top1 or [50 + 40 * f / max(flops) for f in flops]
        served_ids = _front(flops, accuracy, count)
        settings = settings_from_catalog(catalog, stitches=",".join(map(str, served_ids)), max_batch_size=max_batch,
                                         batch_wait_ms=5.0, read_checkpoint=False)
        log(f"serve_slo: measuring {len(served_ids)} stitches {served_ids} at batch sizes up to {max_batch} "
            f"with {cpus} thread(s)")
        model = ServedModel(settings, log=log)
        stitches = model.stitches
        profile = {str(s.stitch_id): {str(n): ms for n, ms in s.latency.ms.items()} for s in stitches}
        out["serve_model_bytes"] = model.model_bytes
        out["serve_param_bytes"] = sum(p.numel() * p.element_size() for p in net.parameters())
        out["serve_exported_bytes"] = sum(tensor_bytes(extract_stitch(net, net.space[i])) for i in served_ids)
        out["serve_memory_ratio"] = round(out["serve_model_bytes"] / out["serve_param_bytes"], 4)
        image_size = model.input_size
        body = json.dumps({"image_b64": _jpeg(image_size[-1] + 24, image_size[0])}).encode()
        del model

        largest = max(stitches, key=lambda s: s.flops)
        smallest = min(stitches, key=lambda s: s.flops)
        capacity = max_batch / largest.latency_ms(max_batch) * 1000  # images per second, largest alone
        base = min(0.5 * capacity, 5.0) if small else 0.5 * capacity
        slo_ms = float(os.environ.get("SNNET_SERVE_SLO_MS") or 2.5 * largest.latency_ms(max_batch))
        arrivals, windows = bursty_trace(0, duration, base, BURST * base, burst_s, bursts)
        mean_rate = len(arrivals) / duration
        best = _best_fixed(stitches, mean_rate, slo_ms, max_batch)
        out.update(serve_slo_ms=round(slo_ms, 2), serve_trace_requests=len(arrivals),
                   serve_trace_base_rate=round(base, 3), serve_trace_burst_rate=round(BURST * base, 3),
                   serve_largest_capacity=round(capacity, 3),
                   serve_smallest_capacity=round(max_batch / smallest.latency_ms(max_batch) * 1000, 3),
                   serve_stitches_served=" ".join(map(str, served_ids)), serve_fixed_best_stitch=best.stitch_id,
                   serve_family="demo (smoke test)" if small else "DeiT-Ti/S/B 224px, random weights, released top-1")
        log(f"serve_slo: SLO {slo_ms:.0f} ms; trace of {len(arrivals)} requests over {duration:.0f} s, base "
            f"{base:.2f}/s, bursts {BURST * base:.2f}/s at {[(round(a, 1), round(b, 1)) for a, b in windows]}")

        policies = [
            ("fixed_largest", "fixed", [largest.stitch_id], None),
            ("fixed_smallest", "fixed", [smallest.stitch_id], None),
            ("fixed_best", "fixed", [best.stitch_id], None),
            ("slo", "slo", served_ids, slo_ms),
        ]
        ray.init(num_cpus=max(os.cpu_count() or 2, cpus + 1), include_dashboard=False, logging_level="ERROR",
                 log_to_driver=False)
        try:
            port = _free_port()
            serve.start(http_options=HTTPOptions(host="127.0.0.1", port=port),
                        logging_config={"enable_access_log": False, "log_level": "WARNING"})
            for name, policy, ids, slo in policies:
                rows = [r for r in settings.stitches if int(r["stitch_id"]) in ids]
                app_settings = {**settings.to_dict(), "stitches": rows, "policy": policy, "slo_ms": slo,
                                "latency_profile": {str(i): profile[str(i)] for i in ids}}
                app = StitchServer.options(num_replicas=1, ray_actor_options={"num_cpus": cpus}).bind(app_settings)
                serve.run(app, name="bench", route_prefix="/",
                          logging_config={"enable_access_log": False, "log_level": "WARNING"})
                url = f"http://127.0.0.1:{port}/"
                asyncio.run(_replay(url, [0.0, 0.05, 0.1], body, 600))  # warm-up
                if name == "slo":  # the replica serving every stitch: its resident memory
                    with urllib.request.urlopen(url + "stitches", timeout=60) as r:
                        out["serve_replica_rss_mb"] = round(json.loads(r.read())["replicas"][0]["rss_bytes"] / 2**20, 1)
                log(f"serve_slo: {name}: replaying {len(arrivals)} requests")
                latencies, answered_top1, served = asyncio.run(_replay(url, arrivals, body, 600))
                figures = summarize(latencies, answered_top1, slo_ms, duration, served)
                for key, value in figures.items():
                    out[f"serve_{name}_{key}"] = round(value, 4) if isinstance(value, float) else value
                log(f"serve_slo: {name}: attainment {figures['attainment']:.3f}, mean top-1 "
                    f"{figures['mean_top1']:.2f}, p99 {figures['p99_ms']:.0f} ms, mix {figures['stitches']}")
                serve.delete("bench")
        finally:
            serve.shutdown()
            ray.shutdown()
    return out
