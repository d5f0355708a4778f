"""Training throughput of a stitched supernet on a GPU against the plain large anchor.

Only where ``torch.cuda.is_available()``; elsewhere the one figure is
``gpu_train: skipped (no CUDA device)``.

**Supernet**: DeiT-S/B (2 anchors, k=2, s=1: 36 stitches, random weights) trained as the
training loop does on one worker: at step ``t`` the stitch ``make_rule("uniform", flops,
0).draw(t, 0, 1)``, bf16 autocast, :func:`orchestrator.train.worker.step_loss`, AdamW over
:meth:`~snnet.StitchedSupernet.param_groups` (anchors and stitching layers), gradient
clipping at 1.0. **Plain**: ``timm.create_model("deit_base_patch16_224")`` with the same
batch, bf16 autocast, the same loss, AdamW and clipping. Synthetic 224x224 images and
labels live on the GPU, so no data loading is timed. Each is timed over
``SNNET_BENCH_GPU_STEPS`` steps (default 40) after 10 warm-up steps, with
``torch.cuda.synchronize()`` at both ends.

``gpu_train_ratio`` = supernet samples/s / plain DeiT-B samples/s. Uniform sampling trains
stitches that are on average cheaper than DeiT-B, so the ratio is above 1 even with no
overhead; ``gpu_train_flops_ratio`` (DeiT-B FLOPs / mean FLOPs of the stitches drawn in the
timed steps) is the ratio a FLOPs-bound step would give, for comparison.

Settings: ``SNNET_BENCH_GPU_BATCH`` (default 128), ``SNNET_BENCH_GPU_STEPS`` (40).
:func:`measure` takes any device; the smoke test runs it on CPU at a tiny size.

**The GPU speed option** (issue 27), ``python -m benchmarks.gpu_train [--device cuda|cpu] [--tiny]`` (the
``speed`` part of ``bash benchmarks/gpu_check.sh --speed``): the DeiT-Ti/S/B supernet (random weights) trained
as a worker trains it (:func:`orchestrator.train.optim.make_optimizer`, the blocks compiled by
:func:`orchestrator.train.speed.compile_blocks`, each forward in :func:`~orchestrator.train.speed.step_context`
and bf16 autocast, gradient clipping at 1.0, ``loss.item()`` every step) under ``gpu_speed`` ``off`` (eager),
``on`` and each measure alone. Every variant is a fresh supernet from seed 0 on the same steps: one step on each
anchor and on one stitch into each back anchor, three uniform draws (the warm-up: compiling, CUDA graph
recording), then uniform draws up to ``SNNET_GPU_UNIFORM_STEPS`` (200) steps, cycling through 8 fixed batches.
Printed: each variant's img/s after warm-up, its speedup over eager (``gpu_uniform_speedup``: ``on`` / eager),
warm-up seconds and the break-even step count (the warm-up's extra seconds over the seconds a step saves), the
largest and mean |loss difference| from eager over the whole curve, peak memory; MFU of plain timm DeiT-B, the
supernet fixed at DeiT-B and uniform sampling, eager and with ``on``; the plain-anchor path (fixed at DeiT-B)
eager against ``on``; the evaluation of every stitch eager against ``on``. Figures are ``name: value`` lines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from ._common import env_int, log
from .gpu_bench import Bench, Settings, device_name, emit, guarded, mfu, peak_tflops, uniform_draw, warm_up_ids

__all__ = ["run", "measure", "measure_speed", "main"]

ANCHORS = ("deit_small_patch16_224", "deit_base_patch16_224")
WARMUP = 10


def _throughput(step, steps: int, batch: int, warmup: int, sync) -> float:
    for i in range(warmup):
        step(i)
    sync()
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    sync()
    return batch * steps / (time.perf_counter() - start)


def measure(device, anchors=ANCHORS, batch: int = 128, steps: int = 40, warmup: int = WARMUP,
            img_size: int = 224) -> dict[str, float]:
    """Samples/s of the supernet of ``anchors`` and of the plain last anchor on ``device``.

    Device-agnostic so that the smoke test can run it on CPU (bf16 autocast works there too).
    """
    import timm
    import torch

    from orchestrator.train.steps import step_loss
    from snnet import build_supernet
    from snnet.sampling import make_rule

    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16)

    torch.manual_seed(0)
    net = build_supernet(list(anchors), img_size=img_size).to(device).train()
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, *net.space.profiles[0].input_size, device=device, generator=g)
    y = torch.randint(0, net.space.profiles[0].num_classes, (batch,), device=device, generator=g)
    flops = [s.flops for s in net.space]
    rule = make_rule("uniform", flops, seed=0)
    opt = torch.optim.AdamW(net.param_groups(1e-4, 1e-3, 0.05), lr=1e-3)
    params = [p for p in net.parameters() if p.requires_grad]

    def supernet_step(i: int) -> None:
        ids = rule.draw(i, 0, 1)
        with autocast():
            outputs = [net(x, s) for s in ids]
        loss = step_loss(outputs, y, "uniform")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    ours = _throughput(supernet_step, steps, batch, warmup, sync)
    drawn = [flops[s] for i in range(warmup, warmup + steps) for s in rule.draw(i, 0, 1)]
    base_flops = flops[net.space.anchor_names.index(anchors[-1])]
    log(f"gpu_train: supernet {ours:.1f} samples/s")
    # Free the supernet before the plain model is built: rebound, not deleted, as supernet_step refers to them.
    net = opt = params = None
    if device.type == "cuda":
        torch.cuda.empty_cache()

    torch.manual_seed(0)
    plain = timm.create_model(anchors[-1], img_size=img_size).to(device).train()
    popt = torch.optim.AdamW(plain.parameters(), lr=1e-4, weight_decay=0.05)

    def plain_step(i: int) -> None:
        with autocast():
            out = plain(x)
        loss = step_loss([out], y, "uniform")
        popt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), 1.0)
        popt.step()

    theirs = _throughput(plain_step, steps, batch, warmup, sync)
    log(f"gpu_train: plain {anchors[-1]} {theirs:.1f} samples/s")
    return {
        "gpu_train_supernet_samples_per_s": round(ours, 1),
        "gpu_train_plain_samples_per_s": round(theirs, 1),
        "gpu_train_ratio": round(ours / theirs, 4),
        "gpu_train_flops_ratio": round(base_flops / (sum(drawn) / len(drawn)), 4),
    }


def run() -> dict[str, float | int | str]:
    import torch

    if not torch.cuda.is_available():
        return {"gpu_train": "skipped (no CUDA device)"}
    batch = env_int("SNNET_BENCH_GPU_BATCH", 128)
    steps = env_int("SNNET_BENCH_GPU_STEPS", 40)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name(0)
    log(f"gpu_train: DeiT-S/B supernet vs plain DeiT-B on {name}, batch {batch}, {steps} steps")
    return {"gpu_train_device": name, "gpu_train_batch": batch, **measure("cuda", batch=batch, steps=steps)}


# -- the GPU speed option (issue 27) -------------------------------------------------------------------------------

POOL = 8  # fixed batches the speed runs cycle through (a loss curve over varied data, no data loading timed)
IMAGENET_TRAIN = 1_281_167  # images per ImageNet-1k epoch: the break-even must fall within the first one


def _speed_config(gpu_speed: str):
    from orchestrator.train.config import TrainConfig

    return TrainConfig(gpu_speed=gpu_speed, anchor_lr=1e-4, stitch_lr=1e-3, weight_decay=0.05, use_gpu=True)


def speed_run(b: Bench, net, init: dict[str, Any], gpu_speed: str, ids, steps: int, warm: int,
              pool) -> dict[str, Any]:
    """``steps`` training steps of ``net`` from the weights ``init`` under ``gpu_speed`` (a fresh optimizer), on the
    stitches ``ids(t)``: the loss of each step, the seconds of the first ``warm`` (compiling included), img/s over
    the rest. ``net`` runs eagerly again afterwards."""
    import torch

    from orchestrator.train import speed
    from orchestrator.train.optim import make_optimizer
    from orchestrator.train.steps import step_loss
    from snnet.compile import uncompile_units

    torch._dynamo.reset()
    net.load_state_dict(init)
    net.train()
    config = _speed_config(gpu_speed)
    measures = config.speed_measures()
    opt = make_optimizer(net, config, 1)
    params = [p for p in net.parameters() if p.requires_grad]
    b.reset_peak()
    base = b.mem()
    losses, marks = [], []
    b.sync()
    t0 = time.perf_counter()
    speed.compile_blocks(net, measures, backend=b.s.backend)
    for t in range(steps):
        if t == warm:
            b.sync()
            marks.append(time.perf_counter())
        x, y = pool[t % len(pool)]
        with speed.step_context(measures), b.autocast():
            outputs = [net(x, i) for i in ids(t)]
        loss = step_loss(outputs, y, "uniform")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
    b.sync()
    end = time.perf_counter()
    uncompile_units(net)
    torch._dynamo.reset()  # the next run (or caller) compiles from nothing, not from this run's graphs
    out = {"losses": losses, "warm_s": marks[0] - t0, "img_s": b.s.batch * (steps - warm) / (end - marks[0]),
           "peak_gib": round((b.peak() - base) / 2**30, 3) if b.cuda else "n/a (cpu)"}
    del opt, params
    if b.cuda:
        torch.cuda.empty_cache()
    return out


def _break_even(eager: dict[str, Any], other: dict[str, Any], batch: int, warm: int) -> int | str:
    """Steps until the option's extra warm-up seconds are paid back by the seconds each step saves."""
    saved = batch / eager["img_s"] - batch / other["img_s"]
    # the warm-up's extra time over what the same warm-up steps would take at the option's steady rate
    extra = (other["warm_s"] - warm * batch / other["img_s"]) - (eager["warm_s"] - warm * batch / eager["img_s"])
    if saved <= 0:
        return "never (no step is faster)"
    return max(0, round(extra / saved))


def _emit_variant(name: str, run: dict[str, Any], eager: dict[str, Any], s: Settings, warm: int) -> None:
    diffs = [abs(a - c) for a, c in zip(run["losses"], eager["losses"])]
    emit(f"gpu_speed_{name}_img_s", round(run["img_s"], 1))
    emit(f"gpu_speed_{name}_speedup", round(run["img_s"] / eager["img_s"], 4))
    emit(f"gpu_speed_{name}_warmup_s", round(run["warm_s"], 2))
    emit(f"gpu_speed_{name}_break_even_steps", _break_even(eager, run, s.batch, warm))
    emit(f"gpu_speed_{name}_loss_max_abs_diff", max(diffs))
    emit(f"gpu_speed_{name}_loss_mean_abs_diff", statistics.fmean(diffs))
    emit(f"gpu_speed_{name}_peak_gib", run["peak_gib"])


def measure_speed(s: Settings) -> None:
    """Uniform sampling under each variant of ``gpu_speed``, then the plain-anchor path and the evaluation."""
    import torch

    from search_spaces.training import SPEED_MEASURES

    b = Bench(s)
    g = torch.Generator(device=b.dev).manual_seed(1)
    pool = [(torch.randn(s.batch, b.chans, s.img, s.img, device=b.dev, generator=g),
             torch.randint(0, b.classes, (s.batch,), device=b.dev, generator=g)) for _ in range(POOL)]
    name = device_name(b.dev)
    peak = peak_tflops(name) if b.cuda else None
    emit("gpu_speed_device", name)
    emit("gpu_speed_batch", s.batch)
    emit("gpu_speed_backend", s.backend)
    emit("gpu_speed_on_measures", ",".join(_speed_config("on").speed_measures()))
    net = b.supernet()
    init = {k: v.detach().clone() for k, v in net.state_dict().items()}  # every variant starts from these
    space = net.space
    warm_ids = warm_up_ids(space)
    draw = uniform_draw(space)
    warm = len(warm_ids) + 3  # cudagraph trees run a function once, record it, then replay
    steps = max(s.uniform_steps, warm + 2)

    def ids(t: int) -> list[int]:
        return [warm_ids[t]] if t < len(warm_ids) else draw(t)

    emit("gpu_speed_steps", steps)
    emit("gpu_speed_warmup_steps", warm)
    flops = {st.stitch_id: st.flops for st in space}
    drawn = [i for t in range(warm, steps) for i in ids(t)]
    mean_flops = sum(flops[i] for i in drawn) / len(drawn)
    runs: dict[str, dict[str, Any]] = {"off": speed_run(b, net, init, "off", ids, steps, warm, pool)}
    emit("gpu_speed_eager_img_s", round(runs["off"]["img_s"], 1))
    emit("gpu_mfu_uniform_eager", mfu(mean_flops, runs["off"]["img_s"], peak))

    def variant(name: str) -> None:
        run = guarded(f"gpu_speed_{name}_img_s", lambda: speed_run(b, net, init, name, ids, steps, warm, pool))
        if run is not None:
            runs[name] = run
            _emit_variant(name, run, runs["off"], s, warm)

    variant("on")  # first, the headline: its warm-up finds inductor's caches cold
    if "on" in runs:
        emit("gpu_uniform_speedup", round(runs["on"]["img_s"] / runs["off"]["img_s"], 4))
        emit("gpu_mfu_uniform_on", mfu(mean_flops, runs["on"]["img_s"], peak))
        be = _break_even(runs["off"], runs["on"], s.batch, warm)
        if isinstance(be, int):  # per-GPU epoch of ImageNet-1k at this batch: IMAGENET_TRAIN / (batch x GPUs)
            emit("gpu_speed_pays_back_within_first_epoch_up_to_gpus", IMAGENET_TRAIN // (s.batch * max(be, 1)))
    sid_b = space.find([s.anchors[-1]], []).stitch_id
    guarded("gpu_speed_b", lambda: _measure_fixed_b(b, net, init, sid_b, flops[sid_b], peak, pool))
    for name in SPEED_MEASURES:  # each measure alone
        variant(name)
    guarded("gpu_speed_eval", lambda: _measure_eval(b, net, init))


def _measure_fixed_b(b: Bench, net, init, sid_b: int, flops_b: int, peak: float | None, pool) -> None:
    """The plain-anchor path: plain timm DeiT-B (eager), the supernet fixed at DeiT-B, eager and ``on``."""
    s = b.s
    warm, steps = 5, 5 + s.steps
    model, _opt, plain_step = b.plain(s.anchors[-1])
    for i in range(warm):
        plain_step(i)
    plain = b.rate(plain_step, 0, s.steps)
    del model, _opt, plain_step
    emit("gpu_speed_plain_b_img_s", round(plain, 1))
    emit("gpu_mfu_plain_b", mfu(flops_b, plain, peak))
    eager = speed_run(b, net, init, "off", lambda t: [sid_b], steps, warm, pool)
    on = speed_run(b, net, init, "on", lambda t: [sid_b], steps, warm, pool)
    emit("gpu_speed_super_b_eager_img_s", round(eager["img_s"], 1))
    emit("gpu_speed_super_b_on_img_s", round(on["img_s"], 1))
    emit("gpu_speed_b_speedup", round(on["img_s"] / eager["img_s"], 4))
    emit("gpu_speed_b_on_vs_plain", round(on["img_s"] / plain, 4))
    emit("gpu_mfu_super_b_eager", mfu(flops_b, eager["img_s"], peak))
    emit("gpu_mfu_super_b_on", mfu(flops_b, on["img_s"], peak))


def _measure_eval(b: Bench, net, init) -> None:
    """Evaluation of every stitch (one batch each after one warm-up batch), eager and with ``on``'s blocks
    compiled and its forward context: the seconds of all stitches, and of the compiled pass's warm-up."""
    import torch

    from orchestrator.train import speed
    from snnet.compile import uncompile_units

    s = b.s
    x = torch.randn(s.eval_batch, b.chans, s.img, s.img, device=b.dev, generator=torch.Generator(
        device=b.dev).manual_seed(2))
    torch._dynamo.reset()
    net.load_state_dict(init)
    net.eval()
    space = net.space
    times = {}
    for variant in ("off", "on"):
        measures = _speed_config(variant).speed_measures()
        t0 = time.perf_counter()
        speed.compile_blocks(net, measures, backend=s.backend)
        with torch.no_grad():
            for st in space:  # warm-up: compiling and recording each width in evaluation mode
                with speed.step_context(measures), b.autocast():
                    net(x, st.stitch_id)
            b.sync()
            t1 = time.perf_counter()
            for st in space:
                with speed.step_context(measures), b.autocast():
                    net(x, st.stitch_id)
            b.sync()
        times[variant] = time.perf_counter() - t1
        emit(f"gpu_speed_eval_{variant}_warmup_s", round(t1 - t0, 2))
        emit(f"gpu_speed_eval_{variant}_s", round(times[variant], 3))
        uncompile_units(net)
        torch._dynamo.reset()
    emit("gpu_speed_eval_speedup", round(times["off"] / times["on"], 4))


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.gpu_train [--device cuda|cpu] [--tiny]``: the GPU speed option's figures."""
    import torch

    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_train", description="the GPU speed option (issue 27)")
    p.add_argument("--device", default=None, help="cuda (default where available) or cpu")
    p.add_argument("--tiny", action="store_true", help="smoke-test sizes (implied on cpu)")
    args = p.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    s = Settings(device, tiny=args.tiny or device == "cpu")
    t0 = time.perf_counter()
    ok = guarded("gpu_speed", lambda: measure_speed(s) or True) is not None
    emit("gpu_speed_total_s", round(time.perf_counter() - t0, 1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
