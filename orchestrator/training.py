"""Joint training of a stitched supernet on Ray Train, then evaluation of every stitch.

:func:`train_loop_per_worker` runs on every Ray Train worker (DDP over gloo on CPU, nccl on
GPU, set up by Ray's ``TorchTrainer``):

1. **Least-squares init**, distributed: each rank accumulates the normal equations of every
   stitching layer on its own shard of ``ls_samples`` training images; the sums are
   all-reduced, and every rank solves the same system (:mod:`snnet.least_squares`).
2. **Joint training**: at step ``t`` rank ``r`` trains the stitches ``rule.draw(t, r, W)`` of
   a seeded sampling rule (:mod:`snnet.sampling`). All stitches of a step go through one
   forward of the DDP module, so DDP's unused-parameter detection sees the whole step and
   the ``sandwich`` rule's accumulated gradients and in-place distillation need no
   ``no_sync``. AdamW with separate rates for anchors and stitching layers, warmup plus
   cosine decay, gradient clipping, bf16 autocast on GPU.
3. **Evaluation of every stitch** on the evaluation split, spread over the workers (rank
   ``r`` takes every ``W``-th unfinished stitch), results gathered after each round.

A checkpoint (weights, optimizer, step, finished evaluations) is reported through
``ray.train.report`` after every epoch, every ``checkpoint_every_steps`` steps and every
evaluation round; after a failure Ray restarts the worker group and the loop resumes from
it, skipping the finished steps and stitches. Checkpoints load with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from snnet import StitchedSupernet, StitchSpace, create_anchor
from snnet.sampling import make_rule

from .config import TrainConfig

__all__ = ["train_loop_per_worker", "SupernetStep", "evaluate_stitch", "CHECKPOINT_FILE"]

CHECKPOINT_FILE = "state.pt"


class SupernetStep(nn.Module):
    """``forward(x, stitch_ids)`` -> one output per stitch: a whole step in one DDP forward."""

    def __init__(self, supernet: StitchedSupernet):
        super().__init__()
        self.supernet = supernet

    def forward(self, x: torch.Tensor, stitch_ids: tuple[int, ...]) -> list[torch.Tensor]:
        return [self.supernet(x, i) for i in stitch_ids]


def build_worker_supernet(config: TrainConfig, space: StitchSpace, device: torch.device) -> StitchedSupernet:
    from . import demo  # noqa: F401  - registers the demo anchors with timm on this process

    specs = {s.name: s for s in config.anchors}
    extra = {"img_size": config.image_size} if config.image_size else {}
    anchors = [create_anchor(specs[name], **extra) for name in space.anchor_names]
    return StitchedSupernet(space, anchors).to(device)


def _ls_batches(dataset, samples: int, batch_size: int, rank: int, world: int, device):
    """This rank's share of the first ``samples`` training images (fixed, seeded subset)."""
    g = torch.Generator().manual_seed(1234)
    order = torch.randperm(len(dataset), generator=g)[: min(samples, len(dataset))]
    mine = order[rank::world].tolist()
    for start in range(0, len(mine), batch_size):
        yield torch.stack([dataset[i][0] for i in mine[start : start + batch_size]]).to(device)


def initialise(net: StitchedSupernet, config: TrainConfig, dataset, rank: int, world: int, device) -> dict[str, float]:
    """LS-initialise (all-reduced over ranks) or Kaiming-initialise every stitching layer."""
    import torch.distributed as dist

    if config.init == "kaiming":
        torch.manual_seed(config.seed)
        net.reset_stitch_layers()
        return {}
    net.eval()
    accs = net.least_squares_accumulators(config.ls_mode)
    for x in _ls_batches(dataset, config.ls_samples, config.eval_batch_size, rank, world, device):
        net.accumulate_least_squares(accs, x)
    if dist.is_available() and dist.is_initialized() and world > 1:
        for acc in accs.values():
            acc.all_reduce_()
    return net.solve_least_squares(accs)


def _lr_lambda(total_steps: int, warmup_fraction: float):
    warmup = int(total_steps * warmup_fraction)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def step_loss(outputs: list[torch.Tensor], target: torch.Tensor, rule_name: str,
              teacher_labels: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of every stitch; with ``sandwich``, the others also distil from the first."""

    def ce(out: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(out, target)
        if teacher_labels is not None:  # DeiT's hard distillation
            loss = 0.5 * loss + 0.5 * F.cross_entropy(out, teacher_labels)
        return loss

    if rule_name == "sandwich":
        largest = outputs[0]
        soft = largest.detach().float().softmax(-1)
        loss = ce(largest) + sum(F.cross_entropy(o.float(), soft) for o in outputs[1:])
        return loss
    return sum(ce(o) for o in outputs) / len(outputs)


@torch.no_grad()
def evaluate_stitch(net: StitchedSupernet, stitch_id: int, loader, device, autocast) -> tuple[float, float, int]:
    """Top-1 and top-5 accuracy (percent) of one stitch over a loader, and the sample count."""
    correct1 = correct5 = total = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with autocast():
            out = net(x, stitch_id)
        top = out.float().topk(min(5, out.shape[-1]), dim=-1).indices
        hits = top == y[:, None]
        correct1 += hits[:, 0].sum().item()
        correct5 += hits.any(dim=-1).sum().item()
        total += y.numel()
    return 100.0 * correct1 / max(total, 1), 100.0 * correct5 / max(total, 1), total


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()})"


def _save(state: dict[str, Any]):
    import ray.train

    folder = tempfile.mkdtemp(prefix="snnet-ckpt-")
    torch.save(state, os.path.join(folder, CHECKPOINT_FILE))
    return ray.train.Checkpoint.from_directory(folder)


def _load(checkpoint) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(os.path.join(folder, CHECKPOINT_FILE), map_location="cpu", weights_only=True)


def _fault_hook(config: dict[str, Any], rank: int, step: int, resumed: bool) -> None:
    """Fault-injection support for tests: publish this worker's pid at every step and, on the
    first attempt only, hold at ``hold_at_step`` so a test can kill the process there."""
    folder = config.get("pid_dir")
    if not folder:
        return
    with open(os.path.join(folder, f"rank{rank}-step{step}.pid"), "w") as f:
        f.write(str(os.getpid()))
    if not resumed and config.get("hold_at_step") == step:
        time.sleep(float(config.get("hold_seconds", 120)))


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """The Ray Train worker function (see the module docstring)."""
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    from .data import get_datasets, make_loader

    config = TrainConfig.from_dict(loop_config["train"])
    space = StitchSpace.from_json(loop_config["space"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.set_num_threads(max(1, config.cpus_per_worker))
    use_bf16 = device.type == "cuda"

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()

    def say(message: str) -> None:
        if rank == 0:  # to the process's real stdout: Ray Train's print patch would log it twice
            print(f"[snnet] {message}", file=sys.__stdout__, flush=True)

    net = build_worker_supernet(config, space, device)
    train_ds, val_ds = get_datasets(config.dataset, config.image_size)
    state = _load(ray.train.get_checkpoint())
    if state is None:
        t0 = time.perf_counter()
        r2 = initialise(net, config, train_ds, rank, world, device)
        if r2:
            say(f"least-squares init of {len(r2)} stitching layers on {config.ls_samples} images in "
                f"{time.perf_counter() - t0:.1f}s: R^2 min {min(r2.values()):.3f}, "
                f"mean {sum(r2.values()) / len(r2):.3f}, max {max(r2.values()):.3f}")
        else:
            say(f"Kaiming init of {len(space.layers)} stitching layers")
    else:
        r2 = state["r2"]
        say(f"resuming from checkpoint: epoch {state['epoch']}, step {state['step']}, "
            f"{len(state['evaluated'])} stitches evaluated")

    if config.mode in ("stitch-only", "lora"):
        for p in net.anchors.parameters():
            p.requires_grad_(False)
    if config.mode == "lora":
        for layer in net.stitch_layers.values():
            layer.enable_lora(config.lora_rank)
    if state is not None:
        net.load_state_dict(state["model"])

    teacher = None
    if config.teacher is not None:
        teacher = create_anchor(config.teacher).to(device).eval()

    loader = make_loader(train_ds, config.batch_size, rank=rank, world_size=world, shuffle=True,
                         seed=config.seed, drop_last=True)
    steps_per_epoch = len(loader)
    total_steps = max(1, steps_per_epoch * config.epochs)
    rule = make_rule(config.sampling, [s.flops for s in space], seed=config.seed, **config.sampling_options)
    optimizer = torch.optim.AdamW(
        net.param_groups(config.anchor_lr, config.stitch_lr, config.weight_decay),
        lr=config.stitch_lr,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total_steps, config.warmup_fraction))
    step = epoch = 0
    evaluated: dict[int, list[float]] = {}
    if state is not None:
        if state.get("optimizer"):
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        step, epoch, evaluated = state["step"], state["epoch"], {int(k): v for k, v in state["evaluated"].items()}

    last_loss = float("nan")  # every report carries the latest epoch's loss (schedulers read it)

    def snapshot(extra_metrics: dict[str, Any], with_optimizer: bool = True) -> None:
        metrics = {"epoch": epoch, "step": step, "evaluated": len(evaluated), "loss": last_loss, **extra_metrics}
        checkpoint = None
        if rank == 0:
            checkpoint = _save({
                "model": net.state_dict(),
                "optimizer": optimizer.state_dict() if with_optimizer else None,
                "scheduler": scheduler.state_dict() if with_optimizer else None,
                "step": step,
                "epoch": epoch,
                "r2": r2,
                "evaluated": {str(k): v for k, v in evaluated.items()},
                # enough to rebuild the supernet without the run's driver (export, analysis)
                "train_config": loop_config["train"],
                "space": loop_config["space"],
            })
        ray.train.report(metrics, checkpoint=checkpoint)

    # -- joint training -----------------------------------------------------------------------
    if epoch < config.epochs:
        model = ray.train.torch.prepare_model(
            SupernetStep(net), parallel_strategy_kwargs={"find_unused_parameters": True}
        ) if world > 1 else SupernetStep(net)
        trainable = [p for p in net.parameters() if p.requires_grad]
        say(f"training {len(space)} stitches for {config.epochs} epochs x {steps_per_epoch} steps on "
            f"{world} worker(s), sampling '{config.sampling}', mode '{config.mode}'")
        if rank == 0:
            from snnet.sampling import balance_report

            sizes = sorted({world, 8, 64})
            report = balance_report([s.flops for s in space], world_sizes=sizes, seed=config.seed, steps=200)
            say("expected DDP balance (mean/max work per step over ranks, from the stitches' FLOPs): "
                + "; ".join(f"{rule} " + " ".join(f"w{w}={v:.2f}" for w, v in by_w.items())
                            for rule, by_w in report.items()))
    while epoch < config.epochs:
        net.train()
        if config.mode != "full":  # frozen anchors keep their BatchNorm statistics too
            net.anchors.eval()
        loader.sampler.set_epoch(epoch)
        skip = step - epoch * steps_per_epoch  # batches of this epoch finished before a restart
        t_epoch, loss_sum, seen = time.perf_counter(), 0.0, 0
        for i, (x, y) in enumerate(loader):
            if i < skip:
                continue
            _fault_hook(loop_config, rank, step, resumed=state is not None)
            x, y = x.to(device), y.to(device)
            ids = tuple(rule.draw(step, rank, world))
            labels = None
            if teacher is not None:
                with torch.no_grad(), autocast():
                    labels = teacher(x).argmax(-1)
            with autocast():
                outputs = model(x, ids)
            loss = step_loss(outputs, y, config.sampling, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            loss_sum, seen = loss_sum + loss.item(), seen + 1
            if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0 and i + 1 < steps_per_epoch:
                snapshot({"loss": loss_sum / seen, "phase": "train"})
        epoch += 1
        seconds = time.perf_counter() - t_epoch
        mean_loss = last_loss = loss_sum / max(seen, 1)
        say(f"epoch {epoch}/{config.epochs}  loss {mean_loss:.4f}  "
            f"lr {scheduler.get_last_lr()[-1]:.2e}  {seconds:.1f}s")
        snapshot({"loss": mean_loss, "phase": "train", "epoch_seconds": seconds})

    # -- evaluation of every stitch --------------------------------------------------------------
    net.eval()
    val_loader = make_loader(val_ds, config.eval_batch_size, shuffle=False, seed=config.seed)
    latency: dict[str, float] = {}
    if config.measure_latency:
        # On rank 0 alone, one stitch after another: concurrent timing on shared cores would
        # measure the contention, not the stitch. The other ranks wait at the next collective.
        if rank == 0:
            from snnet.latency import measure_space_latency

            t0 = time.perf_counter()
            shape = space.profiles[0].input_size
            latency = {str(k): v for k, v in measure_space_latency(
                net, [s.stitch_id for s in space], shape, batch_size=config.latency_batch_size,
                device=device).items()}
            say(f"measured latency of {len(latency)} stitches at batch {config.latency_batch_size} on "
                f"{_device_name(device)} in {time.perf_counter() - t0:.1f}s")
        if world > 1:
            dist.barrier()

    def final_metrics() -> dict[str, Any]:
        return {"phase": "eval", "results": {str(k): v for k, v in sorted(evaluated.items())}, "r2": r2,
                "steps": step, "latency": latency, "device": _device_name(device)}

    todo = [s.stitch_id for s in space if s.stitch_id not in evaluated]
    say(f"evaluating {len(todo)} of {len(space)} stitches on {len(val_ds)} images over {world} worker(s)")
    last_snapshot = time.monotonic()
    for start in range(0, len(todo), world):
        mine = todo[start + rank] if start + rank < len(todo) else None
        result = None
        if mine is not None:
            top1, top5, _ = evaluate_stitch(net, mine, val_loader, device, autocast)
            result = (mine, top1, top5)
        results = [result]
        if world > 1:
            results = [None] * world
            dist.all_gather_object(results, result)
        for r in results:
            if r is not None:
                evaluated[r[0]] = [r[1], r[2]]
        done = len(evaluated) == len(space)
        # Checkpoint finished evaluations now and then (all ranks agree: rank 0's clock decides).
        due = torch.tensor([time.monotonic() - last_snapshot >= config.eval_checkpoint_seconds])
        if world > 1:
            dist.broadcast(due, src=0)
        if done:
            say(f"evaluated {len(evaluated)}/{len(space)} stitches")
            snapshot(final_metrics(), with_optimizer=False)
        elif due.item():
            say(f"evaluated {len(evaluated)}/{len(space)} stitches")
            snapshot({"phase": "eval"}, with_optimizer=False)
            last_snapshot = time.monotonic()
    if not todo:  # resumed after everything was evaluated: report the results once more
        snapshot(final_metrics(), with_optimizer=False)
