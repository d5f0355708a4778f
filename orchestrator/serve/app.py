"""The Ray Serve application: ``StitchServer`` replicas, each holding the trial's supernet once.

:func:`build_app` is the application builder that ``python -m orchestrator.serve`` runs and that a
Serve config names (``import_path: orchestrator.serve.app:build_app``, its ``args`` the
:class:`~orchestrator.serve.replica.ServeSettings`), so ``serve run FILE`` / ``serve deploy FILE`` and a
KubeRay RayService start the same application.

HTTP (JSON):

``POST /``
    ``{"image": [[[...]]]}``, ``{"image_b64": "..."}`` or ``{"images": [...]}`` plus at most one of
    ``"stitch"``, ``"max_flops"``, ``"max_latency_ms"``, ``"min_top1"`` (and ``"logits": true`` to get
    the logits too). Answer: ``{"stitch", "flops", "top1", "latency_ms", "top5"}``; for ``images``,
    ``top5`` (and ``logits``) hold one entry per image. Errors: 400 (malformed), 404 (unknown stitch),
    422 (no served stitch meets the budget), each ``{"error": ..., "status": ...}`` with details.
``GET /stitches``
    the served stitches (FLOPs, params, catalog top-1, this replica's latency per batch size).
``GET /stats``
    per-stitch counts, p50/p99 latency, SLO misses and stitch switches, over every replica.

From Python, ``serve.get_app_handle(name).remote(body)`` takes the same dict and returns the same
answer (an error answer carries ``"error"`` and ``"status"``).

Requests are batched with ``@serve.batch`` (``max_batch_size`` counts images); each batch is split by
the stitch the policy picks for each request and run in a worker thread, so the replica keeps accepting
(and counting) queued requests while it computes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from ray import serve
from starlette.responses import JSONResponse

from orchestrator.serve.policy import RequestError, StitchInfo, candidates, choose, parse_budget
from orchestrator.serve.replica import ServedModel, ServeSettings, top5
from orchestrator.serve.source import settings_from_catalog
from orchestrator.serve.stats import ReplicaStats, merge_stats

__all__ = ["BUILDER_ARGS", "StitchServer", "build_app"]

logger = logging.getLogger("ray.serve")

#: Weight of the newest batch in the running average of the per-batch overhead.
_OVERHEAD_WEIGHT = 0.2

@dataclass
class _Item:
    images: Any  # torch.Tensor [N, C, H, W]
    options: list[StitchInfo]
    arrival: float
    logits: bool

    @property
    def n(self) -> int:
        return int(self.images.shape[0])


def _rss_bytes() -> int:
    """This process's resident memory (Linux: /proc/self/statm; elsewhere its peak, from getrusage)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _images_in(items: list[_Item]) -> int:
    return sum(item.n for item in items)


@serve.deployment(name="StitchServer", max_ongoing_requests=512)
class StitchServer:
    """One replica: the trial's supernet once, its served stitches, a policy, a batch queue."""

    def __init__(self, settings: dict[str, Any]):
        self.settings = ServeSettings.from_dict(settings)
        self.model = ServedModel(self.settings, log=logger.info)
        self.stitches: list[StitchInfo] = self.model.stitches
        self.stats = ReplicaStats(self.settings.slo_ms)
        self.pending = 0  # images waiting in the batch queue (the SLO rule's "queued")
        self.overhead_ms = 0.0  # running average of a batch's time beyond its profiled forward pass
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stitch-forward")
        self._batch.set_max_batch_size(self.settings.max_batch_size)
        self._batch.set_batch_wait_timeout_s(self.settings.batch_wait_ms / 1000)

    # -- entry points ---------------------------------------------------------------------------

    async def __call__(self, request: Any) -> Any:
        """An HTTP request (Starlette) or, through a DeploymentHandle, the request body as a dict."""
        if isinstance(request, dict):
            return (await self.answer(request))[1]  # an error answer carries its "status" in the dict
        path = request.url.path.rstrip("/")
        if request.method == "GET" and path.endswith("/stitches"):
            return JSONResponse(await self.describe_all())
        if request.method == "GET" and path.endswith("/stats"):
            return JSONResponse(await self.all_stats())
        if request.method != "POST":
            return JSONResponse({"error": "POST a JSON body to / (GET /stitches, GET /stats)", "status": 405}, 405)
        try:
            body = await request.json()
        except Exception:  # noqa: BLE001 - any undecodable body is the client's mistake
            body = None
        status, answer = await self.answer(body)
        return JSONResponse(answer, status_code=status)

    async def answer(self, body: Any) -> tuple[int, dict[str, Any]]:
        """``(HTTP status, JSON answer)`` of one request body."""
        arrival = time.perf_counter()
        try:
            if not isinstance(body, dict):
                raise RequestError(400, "The body must be a JSON object such as {\"image\": [[[...]]]} with an "
                                        f"image of shape {self.model.expected_shape()}.",
                                   expected_shape=list(self.model.input_size))
            budget = parse_budget(body)
            images = self.model.decode(body)
            options = candidates(self.stitches, budget, int(images.shape[0]))
        except RequestError as e:
            self.stats.errors[e.status] += 1
            return e.status, e.body()
        item = _Item(images, options, arrival, bool(body.get("logits")))
        self.pending += item.n
        stitch, logits = await self._batch(item)
        latency_ms = (time.perf_counter() - arrival) * 1000
        self.stats.answered(stitch.stitch_id, item.n, latency_ms)
        single = "images" not in body
        answer = {"stitch": stitch.stitch_id, "flops": stitch.flops, "top1": stitch.top1,
                  "latency_ms": round(latency_ms, 4)}
        probs = top5(logits)
        answer["top5"] = probs[0] if single else probs
        if item.logits:
            answer["logits"] = logits[0].tolist() if single else logits.tolist()
        return 200, answer

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005, batch_size_fn=_images_in)
    async def _batch(self, items: list[_Item]) -> list[tuple[StitchInfo, Any]]:
        now = time.perf_counter()
        images = _images_in(items)
        self.pending -= images
        waited_ms = (now - min(item.arrival for item in items)) * 1000
        chosen = [choose(self.settings.policy, item.options, slo_ms=self.settings.slo_ms, waited_ms=waited_ms,
                         batch=images, queued=self.pending, max_batch=self.settings.max_batch_size,
                         overhead_ms=self.overhead_ms)
                  for item in items]
        groups: dict[int, list[int]] = {}
        for i, stitch in enumerate(chosen):
            groups.setdefault(stitch.stitch_id, []).append(i)
        main = max(groups, key=lambda sid: sum(items[i].n for i in groups[sid]))
        self.stats.batch(main)
        loop = asyncio.get_running_loop()
        outputs = await loop.run_in_executor(self._executor, self._forward, items, groups)
        took_ms = (time.perf_counter() - now) * 1000
        profiled = sum(chosen[members[0]].latency_ms(sum(items[i].n for i in members)) for members in groups.values())
        self.overhead_ms += _OVERHEAD_WEIGHT * (max(took_ms - profiled, 0.0) - self.overhead_ms)
        return [(chosen[i], outputs[i]) for i in range(len(items))]

    def _forward(self, items: list[_Item], groups: dict[int, list[int]]) -> list[Any]:
        out: list[Any] = [None] * len(items)
        for stitch_id, members in groups.items():
            x = torch.cat([items[i].images for i in members])
            logits = self.model.run(x, stitch_id)
            start = 0
            for i in members:
                out[i] = logits[start:start + items[i].n]
                start += items[i].n
        return out

    # -- introspection ---------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "policy": self.settings.policy, "slo_ms": self.settings.slo_ms,
            "max_batch_size": self.settings.max_batch_size, "model_bytes": self.model.model_bytes,
            "input_shape": list(self.model.input_size), "num_classes": self.model.num_classes,
            "source": {"catalog": self.settings.catalog, "sweep": self.settings.sweep, "trial": self.settings.trial,
                       "checkpoint": self.settings.checkpoint},
            "stitches": [{**s.describe(), "anchors": list(s.anchors), "cuts": [list(c) for c in s.cuts],
                          "top1_selection": s.top1_selection,
                          "latency_ms_by_batch": s.latency.to_json() if s.latency else None}
                         for s in self.stitches],
        }

    def snapshot(self) -> dict[str, Any]:
        return self.stats.snapshot()

    def profile(self) -> dict[str, Any]:
        """This replica's measured latency per stitch and batch size, and its memory."""
        return {"pid": os.getpid(), "rss_bytes": _rss_bytes(), "model_bytes": self.model.model_bytes,
                "latency_ms_by_batch": {str(s.stitch_id): s.latency.to_json() for s in self.stitches if s.latency}}

    async def _broadcast(self, method: str) -> list[Any] | None:
        """``method`` called on every replica of this deployment (None when they cannot be reached)."""
        try:
            context = serve.get_replica_context()
            handle = serve.get_deployment_handle(context.deployment, context.app_name)
            return await handle.broadcast(method).results_async()
        except Exception:  # noqa: BLE001 - introspection is best effort; never fail a GET
            return None

    async def describe_all(self) -> dict[str, Any]:
        """:meth:`describe`, with every replica's latency profile and memory under ``replicas``."""
        return {**self.describe(), "replicas": await self._broadcast("profile") or [self.profile()]}

    async def all_stats(self) -> dict[str, Any]:
        """Every replica's counters merged (this replica's alone when the others cannot be reached)."""
        return merge_stats(await self._broadcast("snapshot") or [self.snapshot()])


#: The keys of a Serve config's ``args`` that name a trial of a catalog (see :func:`build_app`).
BUILDER_ARGS = ("catalog", "sweep", "trial", "stitches", "checkpoint", "policy", "slo_ms", "max_batch_size",
                "batch_wait_ms", "device")


def build_app(args: dict[str, Any]) -> serve.Application:
    """The application builder (``import_path: orchestrator.serve.app:build_app``).

    ``args`` is either what ``python -m orchestrator.serve --write-config`` writes (:meth:`ServeSettings.to_dict`:
    the stitches resolved to their catalog rows) or a reference to the catalog, resolved when the
    application is deployed, as a RayService manifest holds it::

        {"catalog": "s3://bucket/catalog", "sweep": "S", "trial": "T", "stitches": "front",
         "policy": "slo", "slo_ms": 100, "max_batch_size": 8, "batch_wait_ms": 5, "device": "cpu"}
    """
    if isinstance(args.get("stitches"), (list, tuple)):
        settings = ServeSettings.from_dict(args)
    else:
        unknown = sorted(set(args) - set(BUILDER_ARGS))
        if unknown or "catalog" not in args:
            raise ValueError(f"orchestrator.serve.app:build_app args take {', '.join(BUILDER_ARGS)}, 'catalog' "
                             f"required; got {', '.join(unknown) or 'no catalog'}")
        settings = settings_from_catalog(read_checkpoint=False, **args)
    return StitchServer.bind(settings.to_dict())
