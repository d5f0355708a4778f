"""How evenly DDP ranks share the work of a step under each sampling rule.

Under DDP every rank waits at the gradient all-reduce for the slowest rank of the step, so a
rule that hands one rank DeiT-Ti's stitch and another DeiT-B's wastes the fast rank's time.

**Expected** (``ddp_balance_<rule>_w<ranks>``, ranks 2, 8, 64):
:func:`snnet.sampling.balance_report` on the FLOPs of the DeiT-Ti/S/B space at 224x224
(k=2, s=1, 71 stitches): the mean over 2000 steps of mean-over-ranks / max-over-ranks of each
rank's drawn FLOPs. 1.0 means no rank ever waits.

**Measured** (``ddp_balance_<rule>_measured_w2``): two processes
(``torch.multiprocessing``, spawn) join a gloo process group on 127.0.0.1 and train the
demo family (:data:`orchestrator.data.demo_anchors.DEMO_ANCHORS`: three 6-block ViTs of width 32/64/96
on 16x16x1 images, random weights, 35 stitches) wrapped as
``DDP(SupernetStep(supernet), find_unused_parameters=True)``, exactly as the training loop
does, one thread per process. At step ``t`` rank ``r`` runs the stitches
``make_rule(rule, flops, 0).draw(t, r, 2)`` (forward, :func:`orchestrator.train.worker.step_loss`,
backward; no optimizer step, which costs the same on every rank).

* *step time*: barrier, forward + loss + backward (with DDP's all-reduce), barrier: the
  barrier-to-barrier wall time of the synced step.
* *busy time*: from the same step's start to the moment DDP hands its **last** gradient
  bucket to the communication hook, i.e. when this rank's own gradient computation is
  complete. A DDP comm hook (the default all-reduce, wrapped to note the time) records it, so
  busy time excludes waiting for the other rank and for the final all-reduce, without a
  second pass or a replica.

The figure is the mean over steps (after warm-up steps) of mean-over-ranks busy time /
max-over-ranks step time. For a balanced rule it sits below the expected ratio by the
all-reduce and DDP's own per-step overhead (small for this 0.75M-parameter supernet); for
unbalanced rules per-step costs that every stitch pays alike can lift it a little above.
It is noisy where the cores are shared.
``ddp_balance_<rule>_demo_w2`` gives the expected ratio on the demo space itself (FLOPs at
16x16), the figure the measurement should be compared with. The demo family, rather than
DeiT at a small image size, keeps the all-reduce (500 MB of gradients for DeiT-Ti/S/B plus
stitching layers) from drowning the compute differences on CPU.

Settings: ``SNNET_BENCH_DDP_STEPS`` (measured steps per rule, default 12),
``SNNET_BENCH_DDP_WARMUP`` (2), ``SNNET_BENCH_DDP_BATCH`` (256), ``SNNET_BENCH_BALANCE_STEPS``
(2000, steps of the expected ratio); ``SNNET_BENCH_TINY=1`` shrinks all of them and uses the
DeiT-Ti/S space at 32x32 for the expected ratios.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time

from ._common import DEIT_TSB, env_int, log, space_of, tiny

__all__ = ["run"]

WORLD = 2
EXPECTED_WORLDS = (2, 8, 64)
TIMEOUT_S = 600


def _key(rule: str) -> str:
    return rule.replace("-", "_")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, steps: int, warmup: int, batch: int, out_path: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.nn.parallel import DistributedDataParallel as DDP

    import orchestrator.data.demo_anchors as demo
    from orchestrator.train.steps import SupernetStep, step_loss
    from snnet import build_supernet
    from snnet.sampling import RULES, make_rule

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(0)
        net = build_supernet(list(demo.DEMO_ANCHORS))
        flops = [s.flops for s in net.space]
        model = DDP(SupernetStep(net), find_unused_parameters=True)
        last_bucket = [0.0]

        def timed_allreduce(state, bucket):
            last_bucket[0] = time.perf_counter()
            return default_hooks.allreduce_hook(None, bucket)

        model.register_comm_hook(None, timed_allreduce)
        g = torch.Generator().manual_seed(100 + rank)
        profile = net.space.profiles[0]
        x = torch.randn(batch, *profile.input_size, generator=g)
        y = torch.randint(0, profile.num_classes, (batch,), generator=g)
        net.train()
        result: dict[str, dict] = {}
        for name in RULES:
            rule = make_rule(name, flops, seed=0)
            ratios = []
            for step in range(warmup + steps):
                ids = tuple(rule.draw(step, rank, WORLD))
                dist.barrier()
                start = time.perf_counter()
                loss = step_loss(model(x, ids), y, name)
                loss.backward()
                dist.barrier()
                end = time.perf_counter()
                model.zero_grad(set_to_none=True)
                times: list = [None] * WORLD
                dist.all_gather_object(times, (last_bucket[0] - start, end - start))
                if step >= warmup:
                    busy = sum(b for b, _ in times) / WORLD
                    ratios.append(busy / max(s for _, s in times))
                if rank == 0:
                    log(f"ddp_balance: {name} step {step} stitches {ids} busy/step per rank "
                        + ", ".join(f"{b:.3f}/{s:.3f}s" for b, s in times))
            result[name] = {"measured": sum(ratios) / len(ratios), "steps": len(ratios)}
        if rank == 0:
            result["_flops"] = flops
            with open(out_path, "w") as f:
                json.dump(result, f)
    finally:
        dist.destroy_process_group()


def _measure(steps: int, warmup: int, batch: int) -> dict:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="snnet-bench-") as tmp:
        out_path = os.path.join(tmp, "result.json")
        ctx = mp.start_processes(
            _worker, args=(_free_port(), steps, warmup, batch, out_path), nprocs=WORLD, join=False,
            start_method="spawn",
        )
        deadline = time.monotonic() + TIMEOUT_S
        try:
            while not ctx.join(timeout=5):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"ddp_balance workers did not finish within {TIMEOUT_S}s")
        finally:
            for p in ctx.processes:  # only the processes started here, by handle
                if p.is_alive():
                    p.kill()
        with open(out_path) as f:
            return json.load(f)


def run() -> dict[str, float | int | str]:
    from snnet.sampling import RULES, balance_report

    names = DEIT_TSB[:2] if tiny() else DEIT_TSB
    img = 32 if tiny() else 224
    balance_steps = env_int("SNNET_BENCH_BALANCE_STEPS", 2000, tiny_default=50)
    space = space_of(names, img)
    log(f"ddp_balance: expected ratios on {len(space)} stitches over {balance_steps} steps")
    report = balance_report([s.flops for s in space], EXPECTED_WORLDS, seed=0, steps=balance_steps)
    out: dict[str, float | int | str] = {}
    for rule in RULES:
        for w in EXPECTED_WORLDS:
            out[f"ddp_balance_{_key(rule)}_w{w}"] = round(report[rule][w], 4)

    steps = env_int("SNNET_BENCH_DDP_STEPS", 12, tiny_default=2)
    warmup = env_int("SNNET_BENCH_DDP_WARMUP", 2, tiny_default=1)
    batch = env_int("SNNET_BENCH_DDP_BATCH", 256, tiny_default=8)
    log(f"ddp_balance: measuring on {WORLD} gloo workers, {warmup}+{steps} steps per rule, batch {batch}")
    started = time.perf_counter()
    measured = _measure(steps, warmup, batch)
    log(f"ddp_balance: measured in {time.perf_counter() - started:.1f}s")
    demo = balance_report(measured["_flops"], (WORLD,), seed=0, steps=balance_steps)
    for rule in RULES:
        out[f"ddp_balance_{_key(rule)}_measured_w{WORLD}"] = round(measured[rule]["measured"], 4)
        out[f"ddp_balance_{_key(rule)}_demo_w{WORLD}"] = round(demo[rule][WORLD], 4)
    out["ddp_balance_measured_steps"] = steps
    out["ddp_balance_measured_batch"] = batch
    return out
