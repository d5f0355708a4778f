"""``python -m orchestrator.sweep``: search SN-Net's design space with Ray Tune + Optuna.

Each trial is a Ray Tune *function trainable* that launches a Ray Train ``TorchTrainer``
(the nesting Ray Train V2 supports): it trains one stitched supernet for the trial's
family, window kernel size k, step s, sampling rule and learning rates, evaluates every
stitch, writes one Parquet file into the catalog partition ``sweep=<name>``, and reports the
objectives of :mod:`orchestrator.objectives` (the front's hypervolume; NSGA-II can trade it
against training cost). With no arguments it runs the embedded demo end to end.

The driver connects to the Ray cluster it is submitted to (``ray job submit``) or starts a
local instance. Trials need 0 CPUs of their own; their training workers ask for theirs, and
``max_concurrent_trials`` is derived from what the cluster holds so nested trainers never
starve each other. ``--resume`` continues an interrupted sweep from its Tune storage.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from typing import Any, Sequence

from snnet import SNNetError

from ._cli import cli

__all__ = ["main", "run_sweep", "trial_function", "tune_search_space"]


def _key(path: str) -> str:
    return path.replace(".", "__")


def _unkey(key: str) -> str:
    return key.replace("__", ".")


def tune_search_space(search) -> dict[str, Any]:
    """Tune distributions for every searched parameter of a search space."""
    from ray import tune

    from search_spaces import Choice, FloatRange, IntRange

    grid = search.searcher.algorithm == "grid"
    out: dict[str, Any] = {}
    for path, dist in search.parameters().items():
        if isinstance(dist, Choice):
            values = list(dist.values)
            out[_key(path)] = tune.grid_search(values) if grid else tune.choice(values)
        elif isinstance(dist, FloatRange):
            out[_key(path)] = (tune.loguniform if dist.log else tune.uniform)(dist.low, dist.high)
        elif isinstance(dist, IntRange) and grid:
            out[_key(path)] = tune.grid_search(dist.grid_values())  # the grid SearchSpace.grid() computes
        elif isinstance(dist, IntRange):
            out[_key(path)] = tune.lograndint(dist.low, dist.high + 1) if dist.log else tune.randint(dist.low, dist.high + 1)
        else:  # pragma: no cover - the schema admits only the three kinds
            raise TypeError(f"unknown distribution {dist!r}")
    return out


def _scheduler(search):
    if search.searcher.scheduler != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(metric="loss", mode="min", time_attr="epoch", grace_period=1)


def _searcher(search, metrics: list[str], modes: list[str]):
    algorithm = search.searcher.algorithm
    if algorithm in ("grid", "random"):
        return None  # Tune's BasicVariantGenerator
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    seed = search.searcher.seed
    sampler = optuna.samplers.NSGAIISampler(seed=seed) if algorithm == "nsga2" else optuna.samplers.TPESampler(seed=seed)
    if len(metrics) == 1:
        return OptunaSearch(metric=metrics[0], mode=modes[0], sampler=sampler)
    return OptunaSearch(metric=metrics, mode=modes, sampler=sampler)


def _stitches_per_step(sampling: str, options: dict) -> float:
    return 2.0 + float(options.get("num_random", 2)) if sampling == "sandwich" else 1.0


def trial_function(config: dict[str, Any], ctx: dict[str, Any]) -> None:
    """The Tune trainable: one supernet per trial, launched as a nested TorchTrainer.

    ``config`` holds the searched parameters; ``ctx`` (bound with ``tune.with_parameters``)
    the sweep's constants: the validated search space, catalog, storage and FLOPs reference.
    """
    from ray import tune

    from search_spaces import SearchSpace

    from .objectives import objective_values
    from .run import prepare, run_training

    search = SearchSpace.model_validate(ctx["search"])
    params = {_unkey(k): v for k, v in config.items()}
    family = search.family(params.get("family", search.families[0].name))
    train = search.trial_config(params, anchors=ctx["demo_specs"] if family.demo else family.anchor_specs(),
                                catalog=ctx["catalog"], trial_id=tune.get_context().get_trial_id(),
                                storage_path=ctx["storage"])
    prepared = prepare(train, progress=print)
    callbacks = [_epoch_reporter(list(search.searcher.objectives))] if search.searcher.scheduler == "asha" else None
    result = run_training(train, prepared=prepared, callbacks=callbacks)
    from .data import get_datasets

    train_images = len(get_datasets(train.dataset, train.image_size)[0])
    values = objective_values(
        result.rows, ctx["flops_ref"], epochs=train.epochs, train_images=train_images,
        stitches_per_step=_stitches_per_step(train.sampling, train.sampling_options),
    )
    tune.report({
        **values,
        "epoch": train.epochs,
        "loss": result.loss if result.loss is not None else float("nan"),
        "family": family.name,
        "num_stitches": len(result.rows),
        "catalog_file": result.catalog_file,
        "checkpoint": result.checkpoint,
    })


def _epoch_reporter(objectives: list[str]):
    """Forward every per-epoch ``ray.train.report`` of the nested trainer to Tune, for ASHA.

    Tune's searchers expect their metric in every result; until the trial's evaluation ends the
    objectives are reported as 0 (Optuna only records intermediate values, it does not use them
    here), and the trial's final result carries the real values.
    """
    from ray.tune.integration.ray_train import TuneReportCallback

    class EpochReport(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            metrics = [{**{name: 0.0 for name in objectives}, **{k: v for k, v in m.items() if k != "results"}}
                       for m in metrics]
            super().after_report(run_context, metrics, checkpoint)

    return EpochReport()


def _validate_families(search, catalog: str, progress) -> tuple[dict[str, Any], float]:
    """Build every family's space once on the driver, before Ray starts: stitchability,
    model names, checkpoints and data are checked, and the FLOPs reference is fixed."""
    from .run import prepare

    flops_ref = 0.0
    demo_specs = None
    for family in search.families:
        if family.demo and demo_specs is None:
            from .demo import demo_anchor_specs

            demo_specs = demo_anchor_specs(progress=progress)
        config = search.trial_config(search.first_point(family.name), catalog=catalog,
                                     anchors=demo_specs if family.demo else family.anchor_specs())
        _, space = prepare(config, progress=progress)
        flops_ref = max(flops_ref, max(p.flops for p in space.profiles))
        progress(f"[snnet] family {family.name}: {', '.join(space.anchor_names)} "
                 f"({len(space)} stitches at the first k/s choice)")
    return {"demo_specs": demo_specs}, flops_ref


def _max_concurrent(search) -> int:
    import ray

    res = search.resources
    cpus = ray.cluster_resources().get("CPU", 0)
    gpus = ray.cluster_resources().get("GPU", 0)
    per_cpu = res.workers_per_trial * res.cpus_per_worker
    fits = int(cpus // per_cpu) if per_cpu else 1
    if res.gpus_per_worker:
        fits = min(fits, int(gpus // (res.workers_per_trial * res.gpus_per_worker)))
    if fits < 1:
        raise SNNetError(
            f"A trial needs {res.workers_per_trial} workers x {res.cpus_per_worker} CPU"
            + (f" and {res.gpus_per_worker} GPU" if res.gpus_per_worker else "")
            + f" each, but the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs now: lower workers_per_trial, "
            "add nodes, or, on an autoscaling cluster, pass --max-concurrent-trials N so trials wait for nodes."
        )
    return fits


def _latest_experiment(storage: str, sweep: str) -> str | None:
    if "://" in storage:
        return None
    if not os.path.isdir(storage):
        return None
    names = sorted(n for n in os.listdir(storage) if n.startswith(f"{sweep}-sweep-"))
    return os.path.join(storage, names[-1]) if names else None


def run_sweep(space: str = "demo", *, catalog: str = "catalog", storage: str = "runs",
              num_samples: int | None = None, resume: bool = False, name: str | None = None,
              address: str | None = None, max_concurrent_trials: int | None = None,
              overrides: Sequence[str] = (), progress=print) -> dict[str, Any]:
    """Run (or resume) a sweep; returns a summary dict (experiment path, trials, catalog).

    ``overrides``: ``dotted.path=value`` settings of the space (``training.epochs=1``), as ``--set``.
    """
    from search_spaces import load_space

    from .catalog import CatalogWriter
    from .objectives import OBJECTIVES
    from .run import ensure_ray

    search = load_space(space, overrides=overrides)
    if address or os.environ.get("RAY_ADDRESS"):
        from .run import _check_reachable

        _check_reachable(address or os.environ["RAY_ADDRESS"])
    if max_concurrent_trials is not None and max_concurrent_trials < 1:
        raise SNNetError(f"--max-concurrent-trials must be >= 1, got {max_concurrent_trials}.")
    if num_samples is not None:
        if num_samples < 1:
            raise SNNetError(f"--num-samples must be >= 1, got {num_samples}.")
        search = search.model_copy(update={"searcher": search.searcher.model_copy(update={"num_samples": num_samples})})
    CatalogWriter(catalog, search.name)
    from .run import check_storage

    check_storage(storage)
    storage = storage if "://" in storage else os.path.abspath(storage)
    catalog = catalog if "://" in catalog else os.path.abspath(catalog)
    if resume:
        from ray import tune

        experiment = f"{storage.rstrip('/')}/{name}" if name else _latest_experiment(storage, search.name)
        if not experiment or not tune.Tuner.can_restore(experiment):
            raise SNNetError(
                f"Nothing to resume: no earlier sweep '{search.name}' in storage {storage!r}"
                + (f" named {name!r}" if name else "") + ". Run without --resume to start one."
            )
    ctx, flops_ref = _validate_families(search, catalog, progress)  # before any Ray resource is requested
    ensure_ray(address)

    from ray import tune

    metrics = list(search.searcher.objectives)
    modes = [OBJECTIVES[m] for m in metrics]
    ctx.update(search=search.model_dump(mode="json"), catalog=catalog, storage=storage, flops_ref=flops_ref)
    # A trial only waits on its nested TorchTrainer: it holds no CPU (a bundle may not be empty,
    # so it asks for a little memory), leaving every core to the training workers.
    trainable = tune.with_resources(tune.with_parameters(trial_function, ctx=ctx), {"cpu": 0, "memory": 2**26})
    concurrent = max_concurrent_trials or search.searcher.max_concurrent_trials or _max_concurrent(search)
    if resume:
        progress(f"[snnet] resuming sweep from {experiment}")
        tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        exp_name = name or f"{search.name}-sweep-{stamp}"
        tuner = tune.Tuner(
            trainable,
            param_space=tune_search_space(search),
            tune_config=tune.TuneConfig(
                search_alg=_searcher(search, metrics, modes),
                scheduler=_scheduler(search),
                num_samples=search.searcher.num_samples,
                max_concurrent_trials=concurrent,
                **({"metric": metrics[0], "mode": modes[0]} if len(metrics) == 1 and
                   search.searcher.algorithm in ("grid", "random") else {}),
            ),
            run_config=tune.RunConfig(
                name=exp_name,
                storage_path=storage,
                failure_config=tune.FailureConfig(max_failures=1),
                verbose=1,
            ),
        )
        progress(f"[snnet] sweep '{search.name}': {search.searcher.num_samples} trials, searcher "
                 f"{search.searcher.algorithm}, objectives {metrics}, up to {concurrent} at a time; "
                 f"storage {os.path.join(storage, exp_name)}")
    results = tuner.fit()
    return {"sweep": search.name, "experiment": results.experiment_path, "catalog": catalog,
            "trials": _trials(results)}


def _trials(results) -> list[dict[str, Any]]:
    """One summary per trial of Tune's results: its objectives and settings, or its error."""
    trials = []
    for r in results:
        if r.error or not r.metrics or "hypervolume" not in r.metrics:
            trials.append({"trial_id": getattr(r, "path", ""), "error": str(r.error)})
            continue
        trials.append({k: r.metrics.get(k) for k in ("trial_id", "family", "hypervolume", "train_cost",
                                                      "best_top1", "num_stitches", "catalog_file")}
                      | {"config": {_unkey(k): v for k, v in r.config.items()}})
    return trials


def _report(summary: dict[str, Any]) -> str:
    lines = ["", f"== sweep '{summary['sweep']}' " + "=" * 50]
    ok = [t for t in summary["trials"] if "error" not in t]
    failed = [t for t in summary["trials"] if "error" in t]
    lines.append(f"{len(ok)} trials finished, {len(failed)} failed; experiment: {summary['experiment']}")
    lines.append(f"  {'trial':<14} {'family':<12} {'hypervolume':>11} {'best top-1':>10}  settings")
    for t in sorted(ok, key=lambda t: -t["hypervolume"]):
        settings = ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                             for k, v in t["config"].items())
        lines.append(f"  {t['trial_id']:<14} {t['family']:<12} {t['hypervolume']:>11.4f} {t['best_top1']:>9.1f}%  {settings}")
    for t in failed:
        lines.append(f"  failed: {t['trial_id']}: {t['error']}")
    lines.append(f"catalog: {summary['catalog']}  (partition sweep={summary['sweep']})")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m orchestrator.sweep", description=__doc__.splitlines()[0])
    p.add_argument("--space", default="demo", help="shipped space name (see search_spaces/) or a YAML path")
    p.add_argument("--catalog", default="catalog", help="catalog folder or URI (s3://, gs://)")
    p.add_argument("--storage", default="runs", help="Ray Tune/Train storage: folder or URI")
    p.add_argument("--num-samples", type=int, default=None, help="override the space's number of trials")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="override a setting of the space by its dotted path (training.epochs=1, dataset=/data/x, "
                        "resources.workers_per_trial=1, space.kernel_size=[2,3]); repeatable")
    p.add_argument("--dataset", default=None, help="shortcut for --set dataset=DATASET")
    p.add_argument("--epochs", type=int, default=None, help="shortcut for --set training.epochs=N")
    p.add_argument("--resume", action="store_true", help="continue the latest interrupted sweep of this space")
    p.add_argument("--name", default=None, help="experiment name (default: <sweep>-sweep-<time>)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS or local)")
    p.add_argument("--max-concurrent-trials", type=int, default=None,
                   help="trials at a time (default: the space's, else what the cluster holds now)")
    return p.parse_args(argv)


def overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` settings, then the shortcuts ``--dataset`` and ``--epochs`` (which win)."""
    extra = [f"dataset={json.dumps(args.dataset)}"] if args.dataset is not None else []  # a YAML string
    extra += [f"training.epochs={args.epochs}"] if args.epochs is not None else []
    return [*args.overrides, *extra]


@cli()
def main(argv: Sequence[str] | None = None) -> int:
    """Sweep; a user's mistake is one ``error:`` paragraph and exit 2 (:func:`orchestrator._cli.run_cli`)."""
    args = parse_args(argv)
    start = time.perf_counter()
    summary = run_sweep(args.space, catalog=args.catalog, storage=args.storage, num_samples=args.num_samples,
                        resume=args.resume, name=args.name, address=args.address,
                        max_concurrent_trials=args.max_concurrent_trials, overrides=overrides(args))
    print(_report(summary))
    try:
        from .catalog import query

        front = query(summary["catalog"], sweep=summary["sweep"], pareto=True)
        if len(front):
            print("Pareto front of the sweep (top-1 against FLOPs):")
            for _, row in front.iterrows():
                cuts = " ".join(f"[{j},{k}]" for j, k in row["cuts"]) or "-"
                print(f"  {row['flops'] / 1e6:>10.2f} MFLOPs  top-1 {row['top1']:5.1f}%  "
                      f"{' > '.join(row['anchors'])} {cuts}  (trial {row['trial_id']}, stitch {row['stitch_id']})")
    except Exception as e:  # noqa: BLE001 - the sweep itself succeeded; say why the front is missing
        print(f"(could not read the Pareto front: {e})")
    print(f"\nquery it:  python -m orchestrator.catalog query {summary['catalog']} --sweep {summary['sweep']} --pareto")
    print(f"time: {time.perf_counter() - start:.0f}s")
    return 0 if all("error" not in t for t in summary["trials"]) else 1


if __name__ == "__main__":
    sys.exit(main())
