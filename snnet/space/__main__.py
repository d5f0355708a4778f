"""``python -m snnet.space``: enumerate a stitch space without training and without weights.

The arguments are checked before torch is imported (the anchors and the supernet are imported
where the space is built), so a mistake is answered at once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from .._errors import SNNetError
from .._spec import AnchorSpec, check_model_name
from .._stitch import SpaceConfig, check_window
from ..text import format_flops, render_table
from ._command import ArgumentParser, command, write_stdout

EXAMPLE = "deit_tiny_patch16_224,deit_small_patch16_224,deit_base_patch16_224"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python -m snnet.space",
        description="Enumerate the stitches of a family of timm anchors with exact FLOPs (fvcore) and params.",
    )
    parser.add_argument("--anchors", default=EXAMPLE, help=f"comma-separated timm names (default: {EXAMPLE})")
    parser.add_argument("--kernel-size", type=int, default=2, help="sliding-window kernel size k (default 2)")
    parser.add_argument("--stride", type=int, default=1, help="sliding-window step s (default 1)")
    parser.add_argument("--no-nearest", action="store_true",
                        help="stitch every pair and chains of three or more anchors, not only FLOPs neighbours")
    parser.add_argument("--direction", default="fast-to-slow", choices=["fast-to-slow", "slow-to-fast", "both"])
    parser.add_argument("--two-way", action="store_true", help="add SN-Netv2 two-way stitches (A-B-A)")
    parser.add_argument("--preset", default=None, metavar="NAME",
                        help="'paper': exactly the stitches of SN-Net's released code for the anchors' family "
                             "(default: this project's spaces, which are wider for Swin and ResNet)")
    parser.add_argument("--image-size", type=int, default=None, help="input resolution (default: each model's own)")
    parser.add_argument("--format", default="table", choices=["jsonl", "table"])
    score = parser.add_argument_group("init scores: LS-initialise the stitching layers, then score each stitch")
    score.add_argument("--score", action="store_true",
                       help="add ls_r2, cka, kl and init_top1 of every stitch (snnet.scores); needs --dataset")
    score.add_argument("--dataset", default=None, metavar="DIR",
                       help="image folder with one subfolder per class (or DIR/val) for --score")
    score.add_argument("--pretrained", action="store_true", help="load timm's pretrained weights (default: random)")
    score.add_argument("--score-images", type=int, default=256, help="images the scores use (default 256)")
    score.add_argument("--ls-samples", type=int, default=100, help="images of the LS init (default 100, as the paper)")
    score.add_argument("--seed", type=int, default=0, help="which images go to LS init and to the scores")
    return parser.parse_args(argv)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _table(space, scores=None) -> str:
    rows = [(s.stitch_id, " > ".join(space.names(s)), " ".join(f"[{j},{k}]" for j, k in s.cuts) or "-",
             format_flops(s.flops, "G", label=False), f"{s.params / 1e6:.2f}") for s in space]
    header = ("id", "anchors", "cuts", "GFLOPs", "params(M)")
    if scores is not None:
        rows = [(*row, *(_fmt(scores[s.stitch_id][k], f) for k, f in SCORE_FORMATS))
                for row, s in zip(rows, space)]
        header = (*header, *(k for k, _ in SCORE_FORMATS))
    return render_table(rows, header=header, right=lambda i: i >= 3)


SCORE_FORMATS = (("ls_r2", ".3f"), ("cka", ".3f"), ("kl", ".4f"), ("init_top1", ".1f"))


@command
def main(argv: Sequence[str] | None = None) -> int:
    """Enumerate; a user's mistake is one ``error:`` paragraph and exit 2 (:mod:`snnet.space._command`)."""
    args = parse_args(argv)
    names = [n.strip() for n in args.anchors.split(",") if n.strip()]
    if not names:
        raise SNNetError("--anchors needs at least one timm model name, got none.")
    if args.image_size is not None and args.image_size < 1:
        raise SNNetError(f"--image-size must be >= 1, got {args.image_size}.")
    config = SpaceConfig(
        kernel_size=args.kernel_size,
        stride=args.stride,
        nearest=not args.no_nearest,
        direction=args.direction,
        two_way=args.two_way,
        preset=args.preset,
    )
    config.validate()
    if args.score and not args.dataset:
        raise SNNetError("--score needs --dataset DIR: an image folder (one subfolder per class) to score on.")
    if args.dataset and not args.score:
        raise SNNetError("--dataset is read only with --score (init scores of every stitch); add --score.")
    if args.score and (args.score_images < 1 or args.ls_samples < 1):
        raise SNNetError(f"--score-images and --ls-samples must be >= 1, got {args.score_images} and "
                         f"{args.ls_samples}.")
    if args.score:
        from ._score import image_folder

        image_folder(args.dataset)  # before any model is built
    for name in names:  # before any model is built
        check_model_name(name)
    from ..anchors import anchor_depth  # torch from here on (see the module docstring)
    from ..supernet import build_supernet

    extra = {"img_size": args.image_size} if args.image_size else {}
    if len(names) > 1:  # the window must fit the shallowest anchor: depths from meta builds, no anchor built yet
        check_window(config.kernel_size, [(n, anchor_depth(n, **extra)) for n in names])
    start = time.perf_counter()
    net = build_supernet([AnchorSpec(n, pretrained=args.pretrained) for n in names], config, **extra)
    space = net.space
    elapsed = time.perf_counter() - start
    scores = None
    if args.score:
        from ._score import score_space

        scores = score_space(net, args.dataset, images=args.score_images, ls_samples=args.ls_samples, seed=args.seed)
    if args.format == "jsonl":
        text = "".join(json.dumps({**space.record(s), **(scores[s.stitch_id] if scores else {})}) + "\n"
                       for s in space)
    else:
        text = _table(space, scores) + "\n"
    if not write_stdout(text):  # e.g. piped into `head`
        return 0
    print(
        f"{len(space)} stitches ({len(space.profiles)} anchors, {len(space.layers)} stitching layers) "
        f"enumerated in {elapsed:.1f}s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
