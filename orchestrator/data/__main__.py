"""``python -m orchestrator.data``: write an ImageNet-layout folder as WebDataset shards, index shards.

``shard ROOT OUT [--shard-size N]`` writes ``ROOT/{train,val}`` as ``OUT/{train,val}/*.tar`` and
indexes them; ``index wds:LOCATION`` counts the samples of shards made elsewhere once and writes
``_info.json`` beside them, so later runs need not read every tar header.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence

from orchestrator.cli import ArgumentParser, run_cli
from orchestrator.data.folders import folder_classes, list_images
from orchestrator.data.shards import WDS_LAYOUT, WDS_PREFIX, is_wds, shard_sets, write_info, write_shards
from snnet import SNNetError

__all__ = ["main"]


def _folder_samples(root: str, split: str) -> Iterator[tuple[str, bytes, int]]:
    """``(key, image bytes, label)`` of every image of one split of a folder, for :func:`write_shards`."""
    train_classes, _ = folder_classes(root)
    for i, (path, label) in enumerate(list_images(root, split, tuple(train_classes))):
        ext = os.path.splitext(path)[1].lower()
        with open(path, "rb") as f:
            yield f"{i:08d}{ext}", f.read(), label


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m orchestrator.data shard ROOT OUT [--shard-size N]`` | ``index wds:LOCATION``."""
    parser = ArgumentParser(prog="python -m orchestrator.data", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    shard = sub.add_parser("shard", help="write an ImageNet-layout folder as WebDataset shards OUT/{train,val}/")
    shard.add_argument("root")
    shard.add_argument("out")
    shard.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    index = sub.add_parser("index", help="count the samples of wds: shards once and write _info.json beside them")
    index.add_argument("spec", help="wds:FOLDER_OR_URI or wds:PATTERN-train-{0000..0099}.tar")
    args = parser.parse_args(argv)

    def run(_argv: Sequence[str] | None) -> int:  # a user's mistake: one ``error:`` paragraph, exit 2
        if args.command == "shard":
            if args.shard_size < 1:
                raise SNNetError(f"--shard-size must be at least 1; got {args.shard_size}.")
            for split in ("train", "val"):
                paths = write_shards(_folder_samples(args.root, split),
                                     os.path.join(args.out, split, f"{split}-%06d.tar"), args.shard_size)
                print(f"{split}: {len(paths)} shard(s) in {os.path.join(args.out, split)}")
            args.spec = WDS_PREFIX + os.path.abspath(args.out)
        if not is_wds(args.spec):
            raise SNNetError(f"{WDS_LAYOUT}; {args.spec!r} does not start with 'wds:'.")
        for path in write_info(args.spec):
            print(f"wrote {path}")
        sets = shard_sets(args.spec)
        print(f"train {sets['train'].size} samples in {len(sets['train'].names)} shard(s), "
              f"val {sets['val'].size} in {len(sets['val'].names)}, {sets['train'].num_classes} classes")
        return 0

    return run_cli(run, argv)


if __name__ == "__main__":
    sys.exit(main())
