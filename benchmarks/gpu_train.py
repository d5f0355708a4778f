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
"""

from __future__ import annotations

import time

from ._common import env_int, log

__all__ = ["run"]

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
