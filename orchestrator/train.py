"""``python -m orchestrator.train``: train one stitched supernet with Ray Train, write its catalog rows.

With no arguments it trains the embedded demo (three tiny ViTs pretrained on handwritten
digits, cached after the first run) on a local Ray instance with 2 workers.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

from snnet import SNNetError
from snnet.anchors import AnchorSpec

from .config import INITS, MODES, TrainConfig
from .summary import summarize

__all__ = ["main", "parse_args", "config_from_args"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from snnet.sampling import RULES

    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m orchestrator.train", description=__doc__.splitlines()[0])
    p.add_argument("--space", default="demo",
                   help="'demo' (default), or give the anchors with --anchors and the data with --dataset")
    p.add_argument("--anchors", default=None,
                   help="comma-separated timm names; NAME=PATH loads a local checkpoint for NAME")
    p.add_argument("--pretrained", action="store_true", help="load timm hub weights for --anchors")
    p.add_argument("--num-classes", type=int, default=None, help="classifier size for --anchors")
    p.add_argument("--dataset", default=d.dataset, help="'demo' or an ImageNet-layout folder (train/, val/)")
    p.add_argument("--image-size", type=int, default=d.image_size)
    p.add_argument("--kernel-size", type=int, default=d.kernel_size)
    p.add_argument("--stride", type=int, default=d.stride)
    p.add_argument("--epochs", type=int, default=d.epochs, help="0: initialise and evaluate only")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="per worker")
    p.add_argument("--anchor-lr", type=float, default=d.anchor_lr)
    p.add_argument("--stitch-lr", type=float, default=d.stitch_lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--mode", default=d.mode, choices=MODES)
    p.add_argument("--lora-rank", type=int, default=d.lora_rank)
    p.add_argument("--init", default=d.init, choices=INITS)
    p.add_argument("--ls-samples", type=int, default=d.ls_samples)
    p.add_argument("--sampling", default=d.sampling, choices=sorted(RULES))
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--teacher", default=None, help="timm name (NAME=PATH for a checkpoint) for hard distillation")
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (nccl, bf16 autocast)")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every_steps, metavar="STEPS")
    p.add_argument("--max-failures", type=int, default=d.max_failures)
    p.add_argument("--latency", action="store_true", help="measure every stitch's latency (median, after warm-up)")
    p.add_argument("--latency-batch-size", type=int, default=d.latency_batch_size)
    p.add_argument("--catalog", default=d.catalog, help="catalog folder or URI (s3://, gs://)")
    p.add_argument("--sweep", default=d.sweep, help="catalog partition to write into")
    p.add_argument("--trial-id", default=None)
    p.add_argument("--storage", default=d.storage_path, help="Ray run storage (checkpoints): folder or URI")
    p.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS or local)")
    return p.parse_args(argv)


def _spec(text: str, pretrained: bool, num_classes: int | None) -> AnchorSpec:
    name, _, path = text.partition("=")
    kwargs = {"num_classes": num_classes} if num_classes is not None else {}
    path = path.strip()
    return AnchorSpec(name.strip(), pretrained=pretrained and not path, checkpoint=path or None, kwargs=kwargs)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    if args.space != "demo" and args.anchors is None:
        raise SNNetError(f"--space {args.space!r}: only 'demo' is built in; give other anchors with --anchors.")
    anchors = None
    if args.anchors is not None:
        anchors = [_spec(t, args.pretrained, args.num_classes) for t in args.anchors.split(",") if t.strip()]
    return TrainConfig(
        anchors=anchors,
        kernel_size=args.kernel_size,
        stride=args.stride,
        dataset=args.dataset,
        image_size=args.image_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        anchor_lr=args.anchor_lr,
        stitch_lr=args.stitch_lr,
        weight_decay=args.weight_decay,
        mode=args.mode,
        lora_rank=args.lora_rank,
        init=args.init,
        ls_samples=args.ls_samples,
        sampling=args.sampling,
        seed=args.seed,
        teacher=_spec(args.teacher, args.pretrained, args.num_classes) if args.teacher else None,
        workers=args.workers,
        use_gpu=args.gpu,
        checkpoint_every_steps=args.checkpoint_every,
        max_failures=args.max_failures,
        measure_latency=args.latency,
        latency_batch_size=args.latency_batch_size,
        catalog=args.catalog,
        sweep=args.sweep,
        trial_id=args.trial_id,
        storage_path=args.storage,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        from .run import prepare, run_training

        prepared = prepare(config_from_args(args))
        config, space = prepared
        print(f"[snnet] {len(space)} stitches over {', '.join(space.anchor_names)}; trial {config.trial_id}")
        result = run_training(config, prepared=prepared, address=args.address)
    except SNNetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summarize(result.space, result.rows, r2=result.r2))
    print(f"\ncatalog rows: {result.catalog_file}\ncheckpoint:   {result.checkpoint}\n"
          f"time:         {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
