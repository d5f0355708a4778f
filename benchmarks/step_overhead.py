"""Cost of running an anchor through the supernet instead of as the plain timm model.

The supernet runs a stitch by walking its path: the anchor's stem, its units one by one
through parameter-free scope modules, its head (:func:`snnet.supernet.run_path`). This
benchmark times one training step's forward + cross-entropy + backward of
``supernet(x, anchor_id)`` for DeiT-S (in the DeiT-Ti/S supernet, random weights) against
``timm.create_model("deit_small_patch16_224")`` loaded with the identical weights, both in
train mode, same input and labels. The two are timed alternately, in ABBA order within each
repeat so that drift in a shared machine's load hits both alike; each figure is the median
over repeats, after one untimed warm-up of each. The logits of the two are checked equal.

``step_overhead_ratio`` = supernet median / plain median wall-clock time (target <= 1.03);
``step_overhead_ratio_cpu`` the same in process CPU time (leaves out waiting for a core).

Settings: ``SNNET_BENCH_OVERHEAD_IMG_SIZE`` (default 224), ``SNNET_BENCH_OVERHEAD_BATCH`` (8),
``SNNET_BENCH_OVERHEAD_REPEATS`` (6, each timing both twice); ``SNNET_BENCH_TINY=1``: DeiT-Ti alone
at 32x32, batch 2, 1 repeat.
"""

from __future__ import annotations

import statistics

from ._common import Timer, env_int, log, threads, tiny

__all__ = ["run"]


def run() -> dict[str, float | int | str]:
    import timm
    import torch
    import torch.nn.functional as F

    from snnet import build_supernet

    torch.set_num_threads(threads())
    # The supernet's anchors, and the one measured (the last); tiny: DeiT-Ti alone.
    anchors = ["deit_tiny_patch16_224"] if tiny() else ["deit_tiny_patch16_224", "deit_small_patch16_224"]
    model_name = anchors[-1]
    img = env_int("SNNET_BENCH_OVERHEAD_IMG_SIZE", 224, tiny_default=32)
    batch = env_int("SNNET_BENCH_OVERHEAD_BATCH", 8, tiny_default=2)
    repeats = env_int("SNNET_BENCH_OVERHEAD_REPEATS", 6, tiny_default=1)

    torch.manual_seed(0)
    log(f"step_overhead: building the supernet of {', '.join(anchors)} and plain {model_name} at {img}x{img}")
    supernet = build_supernet(anchors, img_size=img).train()
    anchor_id = supernet.space.anchor_names.index(model_name)
    plain = timm.create_model(model_name, img_size=img).train()
    plain.load_state_dict(supernet.anchors[anchor_id].model.state_dict())

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, img, img, generator=g)
    y = torch.randint(0, plain.num_classes, (batch,), generator=g)
    with torch.no_grad():
        same = torch.equal(supernet(x, anchor_id), plain(x))

    def step_supernet() -> Timer:
        supernet.zero_grad(set_to_none=True)
        with Timer() as t:
            F.cross_entropy(supernet(x, anchor_id), y).backward()
        return t

    def step_plain() -> Timer:
        plain.zero_grad(set_to_none=True)
        with Timer() as t:
            F.cross_entropy(plain(x), y).backward()
        return t

    step_supernet(), step_plain()  # warm-up
    ours, theirs = [], []
    for r in range(repeats):
        ours.append(step_supernet())
        theirs.append(step_plain())
        theirs.append(step_plain())
        ours.append(step_supernet())
        log(f"step_overhead: repeat {r + 1}/{repeats}: supernet {ours[-2].seconds:.3f}s {ours[-1].seconds:.3f}s, "
            f"plain {theirs[-2].seconds:.3f}s {theirs[-1].seconds:.3f}s")
    med_ours = statistics.median(t.seconds for t in ours)
    med_theirs = statistics.median(t.seconds for t in theirs)
    cpu_ours = statistics.median(t.cpu_seconds for t in ours)
    cpu_theirs = statistics.median(t.cpu_seconds for t in theirs)
    return {
        "step_overhead_supernet_s": round(med_ours, 4),
        "step_overhead_plain_s": round(med_theirs, 4),
        "step_overhead_ratio": round(med_ours / med_theirs, 4),
        "step_overhead_ratio_cpu": round(cpu_ours / cpu_theirs, 4),
        "step_overhead_same_logits": int(same),
        "step_overhead_batch": batch,
        "step_overhead_img_size": img,
    }
