"""FLOPs and params of every stitch: the project's per-anchor profiles against one trace per stitch.

**Ours** (what ``snnet.space`` and the training loop do): trace each anchor once with fvcore
(:func:`snnet.flops.profile_anchor`), then let :class:`snnet.StitchSpace` sum the per-piece
FLOPs and params along every stitch's path. **Reference**: build each stitched network
(``supernet.fix(stitch)``) and trace it with fvcore one by one
(``flop_count(fixed.eval(), x).total()``, the same fused-attention handle), and count its
params as the unique parameters its path holds (``supernet.stitch_parameters``).

Both start from the same anchors, built once with random weights before any timer starts:
model construction is excluded from both times. An untimed fvcore trace of a tiny module
warms up fvcore and the JIT tracer first. ``ours`` is the median of 7 runs spread evenly
before, through and after the reference (load on a shared machine drifts, and one short
run would catch one moment of it); the reference runs once over
``SNNET_BENCH_REF_STITCHES`` stitches (default: all 71), spread evenly over the space, and
its time is extrapolated to the whole space (time per stitch x 71) when that is a
subsample. A stitch is a mismatch when its FLOPs differ from its trace, or its
params differ from the reference count or from the parameters an autograd walk of its
forward actually reaches (an independent check, not timed).

``*_s`` and ``space_flops_speedup`` are wall-clock; ``*_cpu_s`` and
``space_flops_speedup_cpu`` the same runs in process CPU time, which leaves out the time
spent waiting for a core where other jobs share them (threads that spin still count).

Settings: ``SNNET_BENCH_FLOPS_IMG_SIZE`` (default 224), ``SNNET_BENCH_REF_STITCHES``;
``SNNET_BENCH_TINY=1``: DeiT-Ti/S at 32x32, 4 reference stitches.
"""

from __future__ import annotations

import statistics
import time

from ._common import DEIT_TSB, Timer, build_anchors, env_int, log, threads, tiny

__all__ = ["run"]

OURS_RUNS = 7  # timed runs of ours, spread over the reference's duration


def _reached_params(module, x) -> int:
    """Numel of the distinct parameters the autograd graph of ``module(x)`` reaches."""
    import torch

    with torch.enable_grad():
        out = module(x)
    seen_params: set[int] = set()
    visited: set = set()
    total = 0
    stack = [out.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in visited:
            continue
        visited.add(fn)
        var = getattr(fn, "variable", None)  # AccumulateGrad: a leaf (parameter)
        if var is not None and id(var) not in seen_params:
            seen_params.add(id(var))
            total += var.numel()
        stack.extend(f for f, _ in fn.next_functions)
    return total


def _spread(n_total: int, n: int) -> list[int]:
    if n >= n_total:
        return list(range(n_total))
    if n <= 1:
        return [0]
    return sorted({round(i * (n_total - 1) / (n - 1)) for i in range(n)})


def run() -> dict[str, float | int | str]:
    import torch
    from torch import nn

    from snnet import StitchedSupernet, StitchSpace, flop_count, profile_anchor

    torch.set_num_threads(threads())
    names = DEIT_TSB[:2] if tiny() else DEIT_TSB
    img = env_int("SNNET_BENCH_FLOPS_IMG_SIZE", 224, tiny_default=32)
    anchors = build_anchors(names, img)

    flop_count(nn.Linear(4, 4), torch.zeros(1, 4)).total()  # warm-up: fvcore import, JIT tracer

    def ours_once() -> tuple[Timer, StitchSpace]:
        with Timer() as t:
            space = StitchSpace([profile_anchor(a) for a in anchors])
        return t, space

    first, space = ours_once()
    ours_runs = [first]
    log(f"space_flops: ours {first.seconds:.3f}s for {len(space)} stitches")

    by_name = {a.name: a for a in anchors}
    supernet = StitchedSupernet(space, [by_name[n] for n in space.anchor_names]).eval()  # construction: untimed
    x = torch.zeros(1, *space.profiles[0].input_size)
    count = env_int("SNNET_BENCH_REF_STITCHES", len(space), tiny_default=4)
    ids = _spread(len(space), max(1, count))
    every = max(1, -(-len(ids) // (OURS_RUNS - 1)))
    reference = Timer()
    mismatches = 0
    started = time.perf_counter()
    for n, sid in enumerate(ids, 1):
        stitch = space[sid]
        with reference:
            flops = flop_count(supernet.fix(stitch).eval(), x).total()
            params = sum(p.numel() for p in supernet.stitch_parameters(stitch))
        reached = _reached_params(supernet.fix(stitch).eval(), x)
        if not (flops == stitch.flops and params == stitch.params == reached):
            mismatches += 1
            log(f"space_flops: MISMATCH stitch {sid} {space.names(stitch)} {stitch.cuts}: flops ours "
                f"{stitch.flops} vs traced {flops}; params ours {stitch.params} vs {params} / reached {reached}")
        if n % 10 == 0 or n == len(ids):
            log(f"space_flops: reference {n}/{len(ids)} stitches, {reference.seconds:.1f}s traced "
                f"({time.perf_counter() - started:.1f}s with checks)")
        if n % every == 0 and n < len(ids):  # interleave: load on a shared machine drifts
            ours_runs.append(ours_once()[0])
    ours_runs.append(ours_once()[0])
    ours = statistics.median(t.seconds for t in ours_runs)
    ours_cpu = statistics.median(t.cpu_seconds for t in ours_runs)
    log(f"space_flops: ours median {ours:.3f}s (runs spread over the reference: "
        f"{', '.join(f'{t.seconds:.3f}' for t in ours_runs)})")
    reference_s = reference.seconds / len(ids) * len(space)
    reference_cpu = reference.cpu_seconds / len(ids) * len(space)
    return {
        "space_flops_stitches": len(space),
        "space_flops_ours_s": round(ours, 4),
        "space_flops_reference_s": round(reference_s, 3),
        "space_flops_reference_stitches": len(ids),
        "space_flops_speedup": round(reference_s / ours, 2),
        "space_flops_mismatches": mismatches,
        "space_flops_ours_cpu_s": round(ours_cpu, 4),
        "space_flops_reference_cpu_s": round(reference_cpu, 3),
        "space_flops_speedup_cpu": round(reference_cpu / ours_cpu, 2),
    }
