"""The measuring parts of ``benchmarks/gpu_check.sh`` (issue 13), one part per invocation.

``python -m benchmarks.gpu_bench PART [--device cuda|cpu] [--tiny]`` prints ``name: value``
lines on stdout (flushed one by one, so a part stopped at its time cap keeps what it printed)
and progress on stderr. A measurement that fails prints ``<name>: error (<message>)`` and
the part goes on with the next one. Parts:

``env``
    GPU name, bf16 dense peak used for MFU, torch / CUDA / timm / Ray / Python versions.
``throughput``
    Training steps (bf16 autocast, :func:`orchestrator.train.worker.step_loss`, AdamW over the
    supernet's parameter groups, clipping at 1.0 -- what a training worker does) on synthetic
    data resident on the device, batch 128 at 224x224, of the DeiT-Ti/S/B supernet (random
    weights) against plain ``timm`` models:

    - ``gpu_tput_plain_b_img_s`` / ``gpu_tput_super_b_img_s``: plain DeiT-B against the
      supernet fixed at the DeiT-B anchor stitch, in 3 interleaved rounds (plain, supernet,
      plain, ...) of ``steps`` steps each after warm-up; the medians and ``gpu_tput_ratio_b``
      = supernet / plain (target >= 0.97).
    - ``gpu_mem_plain_b_peak_gib``: peak allocated memory of the plain DeiT-B steps (weights,
      AdamW state, activations); ``gpu_mem_super_b_peak_gib``: the same for the supernet
      fixed at DeiT-B, counted from just before the supernet was built (so the plain model
      already resident is excluded): the extra is DeiT-Ti/S's and the stitching layers'
      weights; ``gpu_mem_super_b_peak_full_state_gib``: again after uniform training has
      created every anchor's AdamW state.
    - ``gpu_tput_plain_{t,s,b}_img_s``: the plain anchors' rates, and
      ``gpu_tput_uniform_img_s``: the supernet under uniform stitch sampling (one stitch per
      step, the rule the training loop uses, seed 0) over ``uniform_steps`` steps, against
      ``gpu_tput_uniform_expected_img_s``: the rate the plain anchors' rates predict, each
      drawn stitch costing, per anchor, its share of that anchor's FLOPs times that anchor's
      time per image (junctions charged to the back anchor); ``gpu_tput_uniform_vs_expected``.
    - ``gpu_mfu_super_b`` / ``gpu_mfu_uniform``: model FLOPs utilisation = 3 x forward FLOPs
      per image x images/s / the GPU's bf16 dense peak. Our FLOPs are fvcore's (one
      multiply-add = one FLOP), so the forward's floating-point operations are 2x that
      count (``gpu_mfu_flop_per_mac: 2``).
``compile``
    Regional compilation (:func:`snnet.compile.compile_units`: ``torch.compile`` per block,
    in place) against eager on the same uniform draws: eager rate, warm-up time and graphs
    compiled in warm-up (one training step on each anchor and on one stitch into each back
    anchor), then ``uniform_steps`` steps of uniform sampling: compiled rate, the speedup, and
    the graphs compiled during those steps (``gpu_compile_recompiles``: 0 means changing the
    stitch never recompiled).
``eval``
    Evaluation throughput (bf16 autocast, ``torch.no_grad``, eval mode) of every stitch of
    DeiT-Ti/S/B (71): ``gpu_eval_sNN_img_s`` per stitch, over ``eval_batches`` batches of
    ``eval_batch`` after one warm-up batch, plus min / median / max.
``catalog --catalog DIR --sweep NAME``
    Compares the catalog rows of the demo trained on CPU (trial ``cpu``) and on the GPU
    (trial ``gpu``): rows, mean top-1 of the stitched (non-anchor) stitches, each anchor's
    top-1, the differences, and whether they lie within noise (two binomial standard errors
    of a top-1 on the demo's validation split, at least 1 point).

``--tiny`` (implied by ``--device cpu``) runs the same code on the demo's three tiny timm ViTs
(16x16x1, 35 stitches), batch 4, a few steps: the figures then mean nothing. Sizes can be overridden with
``SNNET_GPU_BATCH``, ``SNNET_GPU_IMG``, ``SNNET_GPU_STEPS``, ``SNNET_GPU_UNIFORM_STEPS``,
``SNNET_GPU_EVAL_BATCH``, ``SNNET_GPU_EVAL_BATCHES``; the compile backend with
``SNNET_GPU_COMPILE_BACKEND`` (default ``inductor``).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

ANCHORS = ("deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224")
# bf16 dense tensor-core peaks, TFLOP/s (vendor datasheets; sparse figures are twice these)
PEAKS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H800", 989.0),
         ("GH200", 989.0), ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10G", 70.0))


def emit(name: str, value: Any) -> None:
    if isinstance(value, float):
        value = f"{value:.4g}" if abs(value) < 1e4 else f"{value:.1f}"
    print(f"{name}: {value}", flush=True)


def log(message: str) -> None:
    print(f"[gpu_bench] {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def guarded(name: str, fn: Callable[[], Any]) -> Any:
    """Run one measurement; on failure print ``name: error (...)`` and return None."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - one failure must not lose the other figures
        import traceback

        traceback.print_exc(file=sys.stderr)
        message = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        emit(name, f"error ({message})")
        return None


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


class Settings:
    def __init__(self, device: str, tiny: bool):
        self.device = device
        self.tiny = tiny
        self.batch = _env_int("SNNET_GPU_BATCH", 4 if tiny else 128)
        self.img = _env_int("SNNET_GPU_IMG", 224)
        self.warmup = 1 if tiny else 10
        self.steps = _env_int("SNNET_GPU_STEPS", 2 if tiny else 50)
        self.rounds = 2 if tiny else 3
        self.uniform_steps = _env_int("SNNET_GPU_UNIFORM_STEPS", 6 if tiny else 200)
        self.eval_batch = _env_int("SNNET_GPU_EVAL_BATCH", 4 if tiny else 256)
        self.eval_batches = _env_int("SNNET_GPU_EVAL_BATCHES", 1 if tiny else 3)
        self.backend = os.environ.get("SNNET_GPU_COMPILE_BACKEND", "inductor")
        if tiny:  # the demo's three 6-block ViTs (widths 32/64/96, 16x16x1, 35 stitches)
            from orchestrator.data.demo_anchors import DEMO_ANCHORS

            self.anchors = tuple(DEMO_ANCHORS)
            self.img = _env_int("SNNET_GPU_IMG", 16)
        else:
            self.anchors = ANCHORS


def peak_tflops(name: str) -> float | None:
    for key, tflops in PEAKS:
        if key.lower() in name.lower():
            return tflops
    return None


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()})"


# -- shared pieces ------------------------------------------------------------------------------


class Bench:
    """Models, data and timed training steps on one device."""

    def __init__(self, s: Settings):
        import torch

        self.s = s
        self.torch = torch
        self.dev = torch.device(s.device)
        self.cuda = self.dev.type == "cuda"
        if self.cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        else:
            torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
        self.chans, self.classes = (1, 10) if s.tiny else (3, 1000)
        g = torch.Generator(device=self.dev).manual_seed(0)
        self.x = torch.randn(s.batch, self.chans, s.img, s.img, device=self.dev, generator=g)
        self.y = torch.randint(0, self.classes, (s.batch,), device=self.dev, generator=g)

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def autocast(self):
        return self.torch.autocast(self.dev.type, dtype=self.torch.bfloat16)

    def mem(self) -> int:
        return self.torch.cuda.memory_allocated() if self.cuda else 0

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()

    def peak(self) -> int:
        return self.torch.cuda.max_memory_allocated() if self.cuda else 0

    def rate(self, step: Callable[[int], None], first: int, steps: int) -> float:
        """Images/s of ``steps`` calls ``step(first), step(first + 1), ...``."""
        self.sync()
        t0 = time.perf_counter()
        for i in range(first, first + steps):
            step(i)
        self.sync()
        return self.s.batch * steps / (time.perf_counter() - t0)

    def supernet(self):
        from snnet import build_supernet

        self.torch.manual_seed(0)
        t0 = time.perf_counter()
        kwargs = {} if self.s.tiny else {"img_size": self.s.img}
        net = build_supernet(list(self.s.anchors), **kwargs).to(self.dev).train()
        log(f"supernet of {len(net.space)} stitches built in {time.perf_counter() - t0:.1f}s")
        return net

    def optimizer(self, net):
        """AdamW over the supernet's parameter groups, as the training loop builds it."""
        return self.torch.optim.AdamW(net.param_groups(1e-4, 1e-3, 0.05), lr=1e-3)

    def supernet_step(self, net, draw: Callable[[int], list[int]], opt):
        from orchestrator.train.steps import step_loss

        params = [p for p in net.parameters() if p.requires_grad]
        x, y = self.x, self.y

        def step(i: int) -> None:
            ids = draw(i)
            with self.autocast():
                outputs = [net(x, s) for s in ids]
            loss = step_loss(outputs, y, "uniform")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            self.torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()

        return step

    def plain(self, name: str):
        import timm

        from orchestrator.train.steps import step_loss

        self.torch.manual_seed(0)
        kwargs = {} if self.s.tiny else {"img_size": self.s.img}
        model = timm.create_model(name, pretrained=False, **kwargs).to(self.dev).train()
        opt = self.torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
        x, y = self.x, self.y

        def step(_i: int) -> None:
            with self.autocast():
                out = model(x)
            loss = step_loss([out], y, "uniform")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            self.torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

        return model, opt, step


def anchor_shares(space, stitch) -> dict[int, float]:
    """Per anchor: the stitch's FLOPs spent in that anchor's modules over the anchor's own FLOPs.

    Junctions (stitching layers) are charged to the anchor the path continues in.
    """
    from snnet._stitch import Head, Junction, Stem, Units

    spent: dict[int, int] = {}
    pending = 0
    for step in stitch.path:
        if isinstance(step, Junction):
            pending += space.layers[step.layer].flops
            continue
        profile = space.profiles[step.anchor]
        if isinstance(step, Stem):
            f = profile.stem_flops
        elif isinstance(step, Units):
            f = sum(profile.unit_flops[step.start:step.stop])
        else:
            assert isinstance(step, Head)
            f = profile.head_flops - (0 if step.norm else profile.norm_flops)
        spent[step.anchor] = spent.get(step.anchor, 0) + f + pending
        pending = 0
    return {a: f / space.profiles[a].flops for a, f in spent.items()}


def uniform_draw(space, seed: int = 0) -> Callable[[int], list[int]]:
    from snnet.sampling import make_rule

    rule = make_rule("uniform", [st.flops for st in space], seed=seed)
    return lambda i: list(rule.draw(i, 0, 1))


def warm_up_ids(space) -> list[int]:
    """Every anchor alone, then one stitch into each back anchor: each block width in training mode, fed by its
    own stem and by a stitching layer (whose output is bf16 under autocast, where a stem gives float32)."""
    ids = [space.find([n], []).stitch_id for n in space.anchor_names]
    backs: dict[str, int] = {}
    for st in space:
        if st.cuts:
            backs.setdefault(st.anchors[-1], st.stitch_id)
    return ids + list(backs.values())


def _gib(n: int) -> float:
    return round(n / 2**30, 3)


def mfu(flops_per_image: float, img_s: float, peak: float | None) -> str | float:
    if not peak:
        return "n/a (no bf16 peak known for this device)"
    return round(3 * 2 * flops_per_image * img_s / (peak * 1e12), 4)


# -- parts --------------------------------------------------------------------------------------


def part_env(s: Settings) -> None:
    import torch

    emit("env_python", platform.python_version())
    emit("env_torch", torch.__version__)
    emit("env_torch_cuda", torch.version.cuda or "none")
    for mod in ("timm", "ray", "fvcore", "pyarrow", "numpy"):
        guarded(f"env_{mod}", lambda mod=mod: emit(f"env_{mod}", __import__(mod).__version__))
    emit("env_cpu_cores", os.cpu_count() or 0)
    if not torch.cuda.is_available():
        emit("env_gpu", "none")
        return
    name = torch.cuda.get_device_name(0)
    emit("env_gpu", name)
    peak = peak_tflops(name)
    emit("env_bf16_dense_peak_tflops", peak if peak else "unknown")

    def props() -> None:
        pr = torch.cuda.get_device_properties(0)
        emit("env_gpu_memory_gib", round(pr.total_memory / 2**30, 1))
        emit("env_gpu_sms", pr.multi_processor_count)
        emit("env_gpu_capability", f"{pr.major}.{pr.minor}")

    def nccl() -> None:
        v = torch.cuda.nccl.version()
        emit("env_nccl", ".".join(map(str, v)) if isinstance(v, (tuple, list)) else v)

    guarded("env_gpu_memory_gib", props)
    guarded("env_cudnn", lambda: emit("env_cudnn", torch.backends.cudnn.version()))
    guarded("env_nccl", nccl)

    def matmul() -> None:  # the bf16 matrix ceiling as found (8192^3, mean of 10 after 3 warm-ups)
        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        for _ in range(3):
            a @ b
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        torch.cuda.synchronize()
        emit("env_bf16_matmul_tflops", round(10 * 2 * 8192**3 / (time.perf_counter() - t0) / 1e12, 1))

    guarded("env_bf16_matmul_tflops", matmul)


def part_throughput(s: Settings) -> None:
    b = Bench(s)
    torch = b.torch
    name = device_name(b.dev)
    peak = peak_tflops(name) if b.cuda else None
    emit("gpu_tput_device", name)
    emit("gpu_tput_batch", s.batch)
    emit("gpu_tput_img_size", s.img)
    emit("gpu_mfu_flop_per_mac", 2)

    # plain DeiT-B first, alone on the device: its peak memory
    base0 = b.mem()
    b.reset_peak()
    plain_b, plain_opt, plain_step = b.plain(s.anchors[-1])
    for i in range(s.warmup):
        plain_step(i)
    b.sync()
    plain_peak = b.peak() - base0
    emit("gpu_mem_plain_b_peak_gib", _gib(plain_peak) if b.cuda else "n/a (cpu)")

    # the supernet, fixed at the DeiT-B anchor stitch
    base1 = b.mem()
    b.reset_peak()
    net = b.supernet()
    space = net.space
    sid_b = space.find([s.anchors[-1]], []).stitch_id
    flops = {st.stitch_id: st.flops for st in space}
    emit("gpu_tput_stitches", len(space))
    emit("gpu_flops_deit_b", flops[sid_b])
    opt = b.optimizer(net)  # one optimizer for the fixed and the uniform steps, as in training
    super_b_step = b.supernet_step(net, lambda i: [sid_b], opt)
    for i in range(s.warmup):
        super_b_step(i)
    b.sync()
    super_peak = b.peak() - base1
    emit("gpu_mem_super_b_peak_gib", _gib(super_peak) if b.cuda else "n/a (cpu)")
    if b.cuda:
        emit("gpu_mem_super_b_extra_gib", _gib(super_peak - plain_peak))
        emit("gpu_mem_super_b_ratio", round(super_peak / plain_peak, 4))

    # interleaved rounds: plain B, supernet at B, ...
    plain_rates, super_rates = [], []
    for r in range(s.rounds):
        plain_rates.append(b.rate(plain_step, 0, s.steps))
        super_rates.append(b.rate(super_b_step, 0, s.steps))
        log(f"round {r}: plain B {plain_rates[-1]:.1f} img/s, supernet at B {super_rates[-1]:.1f} img/s")
    rp, rs = statistics.median(plain_rates), statistics.median(super_rates)
    emit("gpu_tput_plain_b_img_s", round(rp, 1))
    emit("gpu_tput_super_b_img_s", round(rs, 1))
    emit("gpu_tput_ratio_b", round(rs / rp, 4))
    emit("gpu_tput_ratio_b_rounds", " ".join(f"{q / p:.4f}" for p, q in zip(plain_rates, super_rates)))
    emit("gpu_mfu_plain_b", mfu(flops[sid_b], rp, peak))
    emit("gpu_mfu_super_b", mfu(flops[sid_b], rs, peak))
    del plain_b, plain_opt, plain_step
    if b.cuda:
        torch.cuda.empty_cache()

    # the other plain anchors' rates (for the uniform expectation)
    rates = {s.anchors[-1]: rp}
    for name_a, short in zip(s.anchors[:-1], "ts"):
        def one(name_a=name_a, short=short):
            model, opt, step = b.plain(name_a)
            for i in range(s.warmup):
                step(i)
            r = b.rate(step, 0, s.steps * 2)
            emit(f"gpu_tput_plain_{short}_img_s", round(r, 1))
            rates[name_a] = r
            del model, opt, step
            if b.cuda:
                torch.cuda.empty_cache()
        guarded(f"gpu_tput_plain_{short}_img_s", one)

    # uniform sampling
    draw = uniform_draw(space)
    uni_step = b.supernet_step(net, draw, opt)
    first = 10_000  # draws for warm-up and timing come from the same seeded sequence
    for i in range(first - s.warmup, first):
        uni_step(i)
    ru = b.rate(uni_step, first, s.uniform_steps)
    drawn = [sid for i in range(first, first + s.uniform_steps) for sid in draw(i)]
    emit("gpu_tput_uniform_steps", s.uniform_steps)
    emit("gpu_tput_uniform_img_s", round(ru, 1))
    mean_flops = sum(flops[i] for i in drawn) / len(drawn)
    emit("gpu_tput_uniform_mean_flops", int(mean_flops))
    emit("gpu_tput_uniform_flops_ratio_b", round(flops[sid_b] / mean_flops, 4))
    emit("gpu_mfu_uniform", mfu(mean_flops, ru, peak))
    if len(rates) == len(s.anchors):
        t_img = {a: 1.0 / rates[n] for a, n in enumerate(space.anchor_names)}
        expected_s = sum(sum(share * t_img[a] for a, share in anchor_shares(space, space[sid]).items())
                         for sid in drawn)
        expected = len(drawn) / expected_s
        emit("gpu_tput_uniform_expected_img_s", round(expected, 1))
        emit("gpu_tput_uniform_vs_expected", round(ru / expected, 4))

    # peak at DeiT-B once every anchor's optimizer state exists
    b.reset_peak()
    for i in range(2):
        super_b_step(i)
    b.sync()
    emit("gpu_mem_super_b_peak_full_state_gib", _gib(b.peak() - base1) if b.cuda else "n/a (cpu)")


def part_compile(s: Settings) -> None:
    import torch

    from snnet.compile import compile_counts, compile_units

    b = Bench(s)
    net = b.supernet()
    space = net.space
    draw = uniform_draw(space)
    first = 10_000
    emit("gpu_compile_backend", s.backend)
    emit("gpu_compile_steps", s.uniform_steps)

    opt = b.optimizer(net)
    eager_step = b.supernet_step(net, draw, opt)
    for i in range(first - s.warmup, first):
        eager_step(i)
    eager = b.rate(eager_step, first, s.uniform_steps)
    emit("gpu_compile_eager_img_s", round(eager, 1))

    warm_ids = warm_up_ids(space)
    t0 = time.perf_counter()
    c0 = compile_counts()
    modules = compile_units(net, backend=s.backend)
    emit("gpu_compile_units", len(modules))
    step = b.supernet_step(net, lambda i: [warm_ids[i % len(warm_ids)]], opt)
    for i in range(len(warm_ids)):
        step(i)
    b.sync()
    c1 = compile_counts()
    emit("gpu_compile_warmup_s", round(time.perf_counter() - t0, 1))
    emit("gpu_compile_warmup_graphs", c1["graphs"] - c0["graphs"])
    emit("gpu_compile_warmup_stitches", " ".join(map(str, warm_ids)))

    comp_step = b.supernet_step(net, draw, opt)
    for i in range(first - s.warmup, first):  # same warm-up draws as eager (optimizer state)
        comp_step(i)
    c2 = compile_counts()
    emit("gpu_compile_recompiles_in_second_warmup", c2["graphs"] - c1["graphs"])
    compiled = b.rate(comp_step, first, s.uniform_steps)
    c3 = compile_counts()
    emit("gpu_compile_img_s", round(compiled, 1))
    emit("gpu_compile_speedup", round(compiled / eager, 4))
    emit("gpu_compile_recompiles", c3["graphs"] - c2["graphs"])
    emit("gpu_compile_frames_failed", (c3["frames"] - c3["frames_ok"]) - (c0["frames"] - c0["frames_ok"]))
    distinct = len({sid for i in range(first, first + s.uniform_steps) for sid in draw(i)})
    emit("gpu_compile_distinct_stitches_timed", distinct)

    # the same fixed at DeiT-B, against eager at DeiT-B
    sid_b = space.find([s.anchors[-1]], []).stitch_id
    fixed = b.supernet_step(net, lambda i: [sid_b], opt)
    for i in range(s.warmup):
        fixed(i)
    rc = b.rate(fixed, 0, s.steps)
    c4 = compile_counts()
    from snnet.compile import uncompile_units

    uncompile_units(net)
    for i in range(2):
        fixed(i)
    re_ = b.rate(fixed, 0, s.steps)
    emit("gpu_compile_b_img_s", round(rc, 1))
    emit("gpu_compile_b_eager_img_s", round(re_, 1))
    emit("gpu_compile_b_speedup", round(rc / re_, 4))
    emit("gpu_compile_recompiles_total_after_warmup", c4["graphs"] - c1["graphs"])
    del torch


def part_eval(s: Settings) -> None:
    b = Bench(s)
    torch = b.torch
    net = b.supernet().eval()
    space = net.space
    g = torch.Generator(device=b.dev).manual_seed(1)
    x = torch.randn(s.eval_batch, b.chans, s.img, s.img, device=b.dev, generator=g)
    emit("gpu_eval_batch", s.eval_batch)
    emit("gpu_eval_batches_timed", s.eval_batches)
    emit("gpu_eval_stitches", len(space))
    rates = {}
    t_all = time.perf_counter()
    with torch.no_grad():
        for st in space:
            def one(st=st):
                with b.autocast():
                    net(x, st.stitch_id)
                b.sync()
                t0 = time.perf_counter()
                for _ in range(s.eval_batches):
                    with b.autocast():
                        out = net(x, st.stitch_id)
                b.sync()
                r = s.eval_batch * s.eval_batches / (time.perf_counter() - t0)
                if not torch.isfinite(out.float()).all():
                    raise FloatingPointError("non-finite logits")
                rates[st.stitch_id] = r
                emit(f"gpu_eval_s{st.stitch_id:02d}_img_s", round(r, 1))
            guarded(f"gpu_eval_s{st.stitch_id:02d}_img_s", one)
    emit("gpu_eval_total_s", round(time.perf_counter() - t_all, 1))
    if rates:
        values = sorted(rates.values())
        emit("gpu_eval_min_img_s", round(values[0], 1))
        emit("gpu_eval_median_img_s", round(statistics.median(values), 1))
        emit("gpu_eval_max_img_s", round(values[-1], 1))
        for n, short in zip(space.anchor_names, "tsb"):
            sid = space.find([n], []).stitch_id
            if sid in rates:
                emit(f"gpu_eval_anchor_{short}_img_s", round(rates[sid], 1))
        # how well FLOPs predict eval time: images/s x GFLOPs, min and max over stitches
        work = [rates[i] * space[i].flops / 1e9 for i in rates]
        emit("gpu_eval_gmac_s_min", min(work))
        emit("gpu_eval_gmac_s_max", max(work))


def part_catalog(catalog: str, sweep: str) -> None:
    import pyarrow.compute as pc

    from orchestrator.catalog import read_catalog
    from orchestrator.data import get_datasets

    table = read_catalog(catalog, sweep=sweep)
    n_val = len(get_datasets("demo")[1])
    emit("demo_val_images", n_val)
    found = {}
    for trial in ("cpu", "gpu"):
        rows = table.filter(pc.equal(table["trial_id"], trial)).to_pylist()
        emit(f"demo_{trial}_rows", len(rows))
        if not rows:
            emit(f"demo_{trial}_top1_mean_stitched", "error (no rows)")
            continue
        emit(f"demo_{trial}_device", rows[0].get("device"))
        stitched = [r["top1"] for r in rows if r["cuts"]]
        anchors = {r["anchors"][0]: r["top1"] for r in rows if not r["cuts"]}
        emit(f"demo_{trial}_top1_mean_stitched", round(sum(stitched) / len(stitched), 3))
        for name in sorted(anchors):
            emit(f"demo_{trial}_top1_{name}", round(anchors[name], 3))
        found[trial] = (sum(stitched) / len(stitched), anchors, {r["stitch_id"]: r["top1"] for r in rows})
    if len(found) == 2:
        (mc, ac, pc_), (mg, ag, pg) = found["cpu"], found["gpu"]
        p = mc / 100
        noise = max(1.0, 200 * math.sqrt(max(p * (1 - p), 1e-4) / n_val))
        emit("demo_top1_noise_pp", round(noise, 3))
        diffs = {"mean_stitched": mg - mc, **{n: ag[n] - ac[n] for n in ac if n in ag}}
        for k, d in diffs.items():
            emit(f"demo_top1_diff_{k}_pp", round(d, 3))
        common = sorted(set(pc_) & set(pg))
        per = [abs(pg[i] - pc_[i]) for i in common]
        emit("demo_top1_max_abs_diff_any_stitch_pp", round(max(per), 3) if per else "n/a")
        ok = all(abs(d) <= noise for d in diffs.values())
        emit("demo_top1_within_noise", "yes" if ok else "no")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=("env", "throughput", "compile", "eval", "catalog"))
    p.add_argument("--device", default=None, help="cuda (default where available) or cpu")
    p.add_argument("--tiny", action="store_true", help="smoke-test sizes (implied on cpu)")
    p.add_argument("--catalog", default=None)
    p.add_argument("--sweep", default="gpucheck")
    args = p.parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    s = Settings(device, tiny=args.tiny or device == "cpu")
    t0 = time.perf_counter()
    log(f"part {args.part} on {device}{' (tiny)' if s.tiny else ''}")
    if args.part == "env":
        part_env(s)
    elif args.part == "catalog":
        if not args.catalog:
            p.error("catalog needs --catalog DIR")
        guarded("demo_compare", lambda: part_catalog(args.catalog, args.sweep))
    else:
        fn = {"throughput": part_throughput, "compile": part_compile, "eval": part_eval}[args.part]
        if guarded(f"gpu_{args.part}", lambda: fn(s) or True) is None:
            return 1
    log(f"part {args.part} done in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
