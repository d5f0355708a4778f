"""``python -m orchestrator.sweep``: search SN-Net's design space with Ray Tune + Optuna.

Each trial trains one stitched supernet for the trial's family, window kernel size k, step s, sampling
rule and learning rates (a Ray Tune trial launching a Ray Train ``TorchTrainer``), evaluates every
stitch, writes one Parquet file into the catalog partition ``sweep=<name>``, and reports the objectives
of :mod:`orchestrator.catalog.objectives` (the front's hypervolume; NSGA-II can trade it against training
cost). With no arguments it runs the embedded demo end to end. ``--resume`` continues an interrupted
sweep from its Tune storage; ``--rerun-best N`` re-runs the best trials of a finished one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from orchestrator.cli import ArgumentParser, cli, format_flops, shared_flags
from orchestrator.sweep.report import sweep_report
from orchestrator.sweep.space import load_search
from snnet import SNNetError

__all__ = ["main", "overrides", "parse_args"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    shared = shared_flags(
        "space", "catalog", "storage", "set", "address",
        space="demo", catalog="catalog", storage=None, options={"storage": {"dest": "storage"}},
        helps={"space": "shipped space name (see search_spaces/) or a YAML path",
               "storage": "Ray Tune/Train storage (the experiment, every trial's checkpoints): folder or URI; "
                          "default: runs beside the catalog, in the same folder or bucket",
               "set": "override a setting of the space by its dotted path (training.epochs=1, dataset=/data/x, "
                      "resources.workers_per_trial=1, space.kernel_size=[2,3]); training.FIELD sets any TrainConfig "
                      "field; repeatable"})
    p = ArgumentParser(prog="python -m orchestrator.sweep", description=__doc__.splitlines()[0], parents=[shared])
    p.add_argument("--num-samples", type=int, default=None, help="override the space's number of trials")
    p.add_argument("--dataset", default=None, help="shortcut for --set dataset=DATASET")
    p.add_argument("--epochs", type=int, default=None, help="shortcut for --set training.epochs=N")
    p.add_argument("--resume", action="store_true", help="continue the latest interrupted sweep of this space")
    p.add_argument("--name", default=None,
                   help="experiment name, one folder under --storage (default: <sweep>-sweep-<time>)")
    p.add_argument("--accept-changed-space", action="store_true",
                   help="with --resume: continue although the space differs from the one the sweep started with")
    p.add_argument("--max-concurrent-trials", type=int, default=None,
                   help="trials at a time (default: the space's, else what the cluster holds now)")
    p.add_argument("--rerun-best", type=int, default=None, metavar="N",
                   help="re-run the N best finished trials of the space's latest sweep (or --rerun-from) with the "
                        "--set overrides (e.g. training.epochs=50 training.data_fraction=1.0), as new trials of the "
                        "sweep <name>_rerun; each records the trial it re-ran")
    p.add_argument("--rerun-from", default=None, metavar="EXPERIMENT",
                   help="with --rerun-best: the experiment (folder under --storage) whose trials are re-run")
    return p.parse_args(argv)


def overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` settings, then the shortcuts ``--dataset`` and ``--epochs`` (which win)."""
    extra = [f"dataset={json.dumps(args.dataset)}"] if args.dataset is not None else []  # a YAML string
    extra += [f"training.epochs={args.epochs}"] if args.epochs is not None else []
    return [*args.overrides, *extra]


def _without_resume(argv: Sequence[str]) -> list[str]:
    """The command line minus ``--resume``, ``--accept-changed-space`` and ``--name N`` (the hint adds them)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--resume", "--accept-changed-space"):
            pass
        elif a == "--name":
            skip = True
        elif not a.startswith("--name="):
            out.append(a)
    return out


@cli()
def main(argv: Sequence[str] | None = None, *, hooks=None) -> int:
    """Sweep; a user's mistake is one ``error:`` paragraph and exit 2 (:func:`orchestrator.cli.run_cli`).
    ``hooks``: :class:`orchestrator.sweep.trial.TrialHooks` for every trial (a program that embeds the CLI)."""
    args = parse_args(argv)
    start = time.perf_counter()
    if args.accept_changed_space and not args.resume:
        raise SNNetError("--accept-changed-space only applies with --resume (a new sweep records its own space).")
    if args.rerun_from is not None and args.rerun_best is None:
        raise SNNetError("--rerun-from only applies with --rerun-best N (it names the sweep whose best trials re-run).")
    settings = overrides(args)
    search = load_search(args.space, settings, args.num_samples, args.max_concurrent_trials)
    # Deferred on purpose, the one place: the sweep's modules import torch, Ray Tune, Optuna and pyarrow at their
    # top (seconds); --help, a bad flag, a bad --set or YAML file are answered above without them.
    from orchestrator.catalog import query
    from orchestrator.sweep.driver import run_sweep

    given = list(sys.argv[1:] if argv is None else argv)
    command = ["python", "-m", "orchestrator.sweep", *_without_resume(given)]
    summary = run_sweep(args.space, catalog=args.catalog, storage=args.storage, num_samples=args.num_samples,
                        resume=args.resume, name=args.name, address=args.address,
                        max_concurrent_trials=args.max_concurrent_trials, overrides=settings,
                        accept_changed_space=args.accept_changed_space, resume_command=command,
                        rerun_best=args.rerun_best, rerun_from=args.rerun_from, search=search, hooks=hooks)
    print(sweep_report(summary))
    try:
        front = query(summary["catalog"], sweep=summary["sweep"], pareto=True)
        if len(front):
            print("Pareto front of the sweep (top-1 against FLOPs):")
            for _, row in front.iterrows():
                cuts = " ".join(f"[{j},{k}]" for j, k in row["cuts"]) or "-"
                print(f"  {format_flops(row['flops'], 'M', digits=2, suffix='FLOPs'):>16}  top-1 {row['top1']:5.1f}%  "
                      f"{' > '.join(row['anchors'])} {cuts}  (trial {row['trial_id']}, stitch {row['stitch_id']})")
    except Exception as e:  # noqa: BLE001 - the sweep itself succeeded; say why the front is missing
        print(f"(could not read the Pareto front: {e})")
    print(f"\nquery it:  python -m orchestrator.catalog query {summary['catalog']} --sweep {summary['sweep']} --pareto")
    print(f"time: {time.perf_counter() - start:.0f}s")
    return 0 if all("error" not in t for t in summary["trials"]) else 1


if __name__ == "__main__":
    sys.exit(main())
