"""``python -m orchestrator.export``: the command line of :mod:`orchestrator.export` (usage there).

A user's mistake prints ``error: <paragraph>`` and exits 2, a failed export exits 1, both without a
traceback; on success one summary of the exported stitch goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from orchestrator.catalog import catalog_warnings_to_stderr
from orchestrator.cli import ArgumentParser, cli, format_flops, shared_flags
from orchestrator.export import ExportError, ExportResult, export_from_catalog

__all__ = ["build_parser", "main"]

PROG = "python -m orchestrator.export"


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=PROG,
        description="Export one stitch of the catalog as a standalone torch.export program (.pt2) "
                    "with a JSON model card next to it.",
        parents=[shared_flags("sweep", options={"sweep": {"metavar": "S"}},
                              helps={"sweep": "only rows of this sweep"})],
    )
    p.add_argument("catalog", metavar="CATALOG", help="catalog folder or URI (s3://, gs://)")
    p.add_argument("--out", required=True, metavar="FILE.pt2", help="where to write the program (card: FILE.json)")
    p.add_argument("--trial", metavar="T", help="the trial id (optional when the selection holds one trial)")
    p.add_argument("--stitch", type=int, metavar="N", help="the stitch id within the trial")
    p.add_argument("--max-flops", metavar="F", help="FLOPs budget (1.5G, 500M, 2e9): the best top-1 under it, on "
                   "the held-out selection split where the catalog has it (top1_selection), else on top1")
    p.add_argument("--max-latency-ms", metavar="L", help="latency budget in ms: the best top-1 under it (see above)")
    p.add_argument("--onnx", action="store_true", help="also write FILE.onnx (needs the onnx package)")
    p.add_argument("--checkpoint", metavar="URI",
                   help="read the trial's supernet from this checkpoint folder (local or URI) instead of the "
                        "row's; needed when the row's lies outside the storage that holds the catalog")
    return p


def _summary(result: ExportResult) -> str:
    card, row = result.card_data, result.row
    path = " > ".join(card["anchors"])
    cuts = " ".join(f"[{j},{k}]" for j, k in card["cuts"]) or "-"
    top1 = f"{card['top1']:.2f}%" if card["top1"] is not None else "-"
    if card.get("top1_selection") is not None:
        top1 += f" (selection split {card['top1_selection']:.2f}%)"
    latency = (f"  latency {card['latency_ms']:.3g} ms ({card['latency_device']})"
               if card["latency_ms"] is not None else "")
    if card.get("chosen_by") == "top1_selection":
        chosen = ["  chosen on top1_selection, the split held out of training; top-1 above is the evaluation split's"]
    elif card.get("chosen_by"):
        chosen = [f"  {card.get('chosen_note') or 'chosen on top1, the evaluation split'}"]
    else:
        chosen = []
    lines = [
        f"exported stitch {row['stitch_id']} of trial {row['trial_id']} (sweep {row['sweep']}): {path}, cuts {cuts}",
        f"  {result.program} ({card['size_bytes'] / 2**20:.2f} MB), card {result.card}"
        + (f", {result.onnx}" if result.onnx else ""),
        f"  params {card['params'] / 1e6:.3f} M  FLOPs {format_flops(card['flops'])}  top-1 {top1}{latency}",
        *chosen,
        f"  input [{', '.join(map(str, card['input']['shape']))}] float32, normalised with mean "
        f"{card['input']['normalization']['mean']} std {card['input']['normalization']['std']}",
    ]
    return "\n".join(lines)


@cli(exit_codes={ExportError: 1})
def main(argv: Sequence[str] | None = None) -> int:
    """Export; a user's mistake is one ``error:`` paragraph and exit 2, a failed export exit 1
    (:func:`orchestrator.cli.run_cli`)."""
    args = build_parser().parse_args(argv)
    with catalog_warnings_to_stderr():
        result = export_from_catalog(
            args.catalog, args.out, sweep=args.sweep, trial=args.trial, stitch=args.stitch,
            max_flops=args.max_flops, max_latency_ms=args.max_latency_ms, onnx=args.onnx,
            checkpoint=args.checkpoint, progress=lambda m: print(m, file=sys.stderr),
        )
    print(_summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
