"""Wall-clock latency of a module or of every stitch of a supernet.

Latency here is the **median time of one forward pass over one batch**, in milliseconds,
measured under :func:`torch.inference_mode` with :func:`time.perf_counter` after a few
warm-up passes (which absorb one-time costs: lazy initialisation, allocator growth, cuDNN
autotuning). The stated batch size matters: the catalog's ``latency_ms`` is per batch of
``batch_size`` images, **1 by default** (the deployment case of one request at a time), not
per image. On a GPU every pass is bracketed by :func:`torch.cuda.synchronize`, so the time
covers the kernels, not only their launch.

CPU numbers depend on the caller's ``torch.get_num_threads()`` and on what else runs on the
machine; compare latencies measured on one machine in one session.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterable, Sequence

import torch
from torch import nn

__all__ = ["measure_latency", "measure_space_latency"]


def _check(input_shape: Sequence[int], batch_size: int, warmup: int, repeats: int) -> tuple[int, ...]:
    shape = tuple(int(d) for d in input_shape)
    if not shape or any(d < 1 for d in shape):
        raise ValueError("input_shape must be the shape of one input without the batch, e.g. (3, 224, 224); "
                         f"got {input_shape!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    return shape


def measure_latency(
    module: nn.Module,
    input_shape: Sequence[int],
    *,
    batch_size: int = 1,
    warmup: int = 10,
    repeats: int = 30,
    device: str | torch.device = "cpu",
) -> float:
    """Median milliseconds of one forward pass of ``module`` over a batch of ``batch_size`` inputs.

    Args:
        module: any module taking one tensor; it is moved to ``device`` in place
            (:meth:`nn.Module.to`) and run in eval mode (its train/eval mode is restored after).
        input_shape: the shape of *one* input without the batch dimension, e.g. ``(3, 224, 224)``.
        batch_size: inputs per forward pass; the result is per batch, not per image.
        warmup: untimed passes before timing.
        repeats: timed passes; the median is returned (robust to a stray slow pass).
        device: where to run (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).
    """
    shape = _check(input_shape, batch_size, warmup, repeats)
    device = torch.device(device)
    cuda = device.type == "cuda"
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((batch_size, *shape), generator=generator).to(device)
    was_training = module.training
    module.to(device).eval()
    times = []
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                module(x)
            for _ in range(repeats):
                if cuda:
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                module(x)
                if cuda:
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - start)
    finally:
        module.train(was_training)
    ms = 1000.0 * statistics.median(times)
    assert math.isfinite(ms) and ms >= 0, f"a latency must be a finite non-negative time, got {ms}"
    return ms


def measure_space_latency(
    supernet: nn.Module,
    stitch_ids: Iterable[int] | None = None,
    input_shape: Sequence[int] | None = None,
    **kwargs,
) -> dict[int, float]:
    """Latency (ms per batch, see :func:`measure_latency`) of each stitch, by stitch id.

    ``supernet`` is a :class:`~snnet.supernet.StitchedSupernet`; each stitch runs through
    ``supernet.fix(stitch_id)``, i.e. exactly the path its forward, FLOPs and params follow.
    ``stitch_ids`` defaults to every stitch of the space and ``input_shape`` to the anchors'
    ``(C, H, W)``. ``kwargs`` (``batch_size``, ``warmup``, ``repeats``, ``device``) go to
    :func:`measure_latency`.
    """
    space = supernet.space
    ids = [s.stitch_id for s in space] if stitch_ids is None else [int(i) for i in stitch_ids]
    shape = tuple(space.profiles[0].input_size) if input_shape is None else tuple(input_shape)
    if "device" in kwargs:
        supernet.to(kwargs["device"])  # once, not per stitch
    return {sid: measure_latency(supernet.fix(sid), shape, **kwargs) for sid in ids}
