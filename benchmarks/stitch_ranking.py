"""How well do scores at initialisation rank stitches by their accuracy after joint training? (issue 30)

On the embedded demo (the three pretrained demo ViTs on the digits, both kernel sizes of
``search_spaces/demo.yaml``: 35 and 51 stitches), for each kernel size and seed: one joint
training run of the supernet in this process (:class:`orchestrator.train.recipe.SupernetRecipe`, one
worker, ``uniform`` sampling), which after least-squares init scores every stitch
(:mod:`snnet.scores`, on ``score_images`` fixed images of the selection split) and after
training evaluates every stitch on the evaluation split (1080 digits). Every run's rows go into a
stitch catalog (``SNNET_BENCH_RANKING_CATALOG``, default a temporary folder).

Predictors, each known before training: the init scores ``ls_r2``, ``cka``, ``-kl``,
``init_top1``; the baselines ``flops``, ``params`` and ``interp`` (the anchors' top-1 at init on
the same images, linearly interpolated by FLOPs: what the paper calls "nearly predictable").
Targets, over the stitched networks (the anchors themselves are not predicted): ``top1`` after
training, and ``residual`` = top-1 minus the trained anchors' top-1 interpolated by FLOPs (what
decides the front among stitches of similar cost). For each (kernel size, predictor, target):
Spearman and Kendall correlation per seed, averaged over the seeds, with a 95% bootstrap interval
(``B`` resamples of the stitches with replacement, the same resample for every seed of a space;
percentile interval). ``all`` averages over both spaces and all seeds.

Figures: ``stitch_ranking_k{2,3,all}_{predictor}_{target}_{spearman,kendall}`` and ``..._lo``,
``..._hi`` for the Spearman interval, plus ``stitch_ranking_best_residual`` (the init score with
the highest mean Spearman against the residual) and the runs' seconds. With more rules than
``uniform``: ``stitch_ranking_k{k}_hv_{rule}`` (each rule's mean hypervolume over its seeds on the
evaluation split) and ``stitch_ranking_k{k}_hv_{rule}_minus_uniform`` with ``_lo``/``_hi``, the 95%
interval of :func:`orchestrator.catalog.compare` (``catalog compare --by sampling``: paired over the
stitches and the seeds), a rule's variant named with its options (``scored_focus_front_...``).

Settings: ``SNNET_BENCH_RANKING_EPOCHS`` (default 3, as demo.yaml), ``..._SEEDS`` (3),
``..._FIRST_SEED`` (0: seeds 0, 1, ...; another start is a fresh sample), ``..._KERNELS``
(``2,3``), ``..._IMAGES`` (score images, 256), ``..._SELECTION`` (the selection fraction, default 0.15:
about 210 held-out digits), ``..._BOOT`` (1000), ``..._RULES``
(``uniform``; more rules, e.g. ``uniform,scored,balanced,sandwich``, train the same spaces and seeds
under each rule into the catalog, for ``python -m orchestrator.catalog compare CATALOG --by sampling``;
the rankings use the ``uniform`` runs; ``RULE:KEY=VALUE:...`` gives a rule options, e.g.
``scored:score=init_top1:focus=front:temperature=0.1:update=loss``), ``..._JOBS`` (1: the runs one after
another in this process; N: in N spawned processes of one torch thread each).
``SNNET_BENCH_TINY=1``: 1 epoch, 1 seed, kernel 2, 64 images.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings

import numpy as np

from ._common import env_int, log, threads, tiny

__all__ = ["PREDICTORS", "TARGETS", "correlations", "run"]

PREDICTORS = ("ls_r2", "cka", "kl", "init_top1", "flops", "params", "interp")
INIT_SCORES = ("ls_r2", "cka", "kl", "init_top1")
TARGETS = ("top1", "residual")


def _env_list(name: str, default: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, default).split(",") if v.strip()]


def _rule_entry(entry: str) -> tuple[str, dict[str, object], str]:
    """``RULE`` or ``RULE:KEY=VALUE:...`` (a rule with options, e.g. ``scored:score=init_top1:focus=front``)
    as the rule's name, its options (numbers read as numbers) and a label for trial ids."""
    import yaml

    name, *pairs = entry.split(":")
    options: dict[str, object] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        options[key] = yaml.safe_load(value)  # as a space's YAML reads it: 0.1, 2, front
    label = "-".join([name, *(f"{k}{v}" for k, v in options.items())])
    return name, options, label


def _train(kernel_size: int, seed: int, entry: str, epochs: int, images: int, selection: float, catalog: str):
    """One in-process run of the rule ``entry`` (:func:`_rule_entry`); returns its catalog rows (one per stitch)."""
    import torch

    from orchestrator.catalog import CatalogWriter
    from orchestrator.data.demo_anchors import demo_anchor_specs
    from orchestrator.train.config import TrainConfig
    from orchestrator.train.launch import catalog_rows
    from orchestrator.train.recipe import SupernetRecipe
    from snnet import StitchSpace, create_anchor, profile_anchor

    rule, options, label = _rule_entry(entry)
    specs = demo_anchor_specs(progress=None)
    config = TrainConfig(anchors=specs, kernel_size=kernel_size, epochs=epochs, workers=1, sampling=rule,
                         sampling_options=options,
                         score_images=images, selection_fraction=selection, early_stitches=0, seed=seed,
                         sweep="ranking", trial_id=f"k{kernel_size}-{label}-s{seed}")
    space = StitchSpace([profile_anchor(create_anchor(s)) for s in specs], config.space_config())
    torch.manual_seed(seed)
    reports = []
    recipe = SupernetRecipe(config, space, worker=None)
    recipe.worker.report = lambda metrics, state: reports.append(metrics)
    recipe.run()
    final = reports[-1]
    rows = catalog_rows(config, space, final["results"], final["r2"], "", scores=final["init_scores"],
                        selection=final["results_selection"], selection_images=final["selection_images"])
    CatalogWriter(catalog, "ranking").write_trial(config.trial_id, rows)
    return rows


def _timed_train(run_args: tuple) -> tuple[tuple, list[dict], float]:
    import torch

    torch.set_num_threads(threads())
    t0 = time.perf_counter()
    rows = _train(*run_args)
    return run_args, rows, time.perf_counter() - t0


def _train_all(runs: list[tuple], jobs: int):
    """Each run's ``(arguments, rows, seconds)`` in the order of ``runs``: in this process, or in ``jobs``
    spawned processes (one torch thread each)."""
    if jobs <= 1:
        yield from map(_timed_train, runs)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(_timed_train, runs)


def _rule_figures(catalog: str):
    """Each rule's hypervolume against ``uniform``'s per space: ``catalog compare --by sampling`` (evaluation
    split, paired over stitches and seeds, 95% bootstrap interval)."""
    from orchestrator.catalog import compare

    result = compare(catalog, "sampling")
    shown = set()
    for row in result.rows:
        if "uniform" not in (row["a"], row["b"]):
            continue
        k = result.spaces[row["space"] - 1].get("kernel_size")
        other, sign = (row["a"], -1.0) if row["b"] == "uniform" else (row["b"], 1.0)
        if k not in shown:
            shown.add(k)
            yield f"stitch_ranking_k{k}_hv_uniform", round(row["hv_b"] if sign < 0 else row["hv_a"], 4)
        yield f"stitch_ranking_k{k}_hv_{_label(other)}", round(row["hv_a"] if sign < 0 else row["hv_b"], 4)
        low, high = sorted((sign * row["hv_low"], sign * row["hv_high"]))
        name = f"stitch_ranking_k{k}_hv_{_label(other)}_minus_uniform"
        yield name, round(sign * row["hv_diff"], 4)
        yield f"{name}_lo", round(low, 4)
        yield f"{name}_hi", round(high, 4)


def _label(group: str) -> str:
    """A rule's compare group (``scored(focus=front, score=init_top1)``) as a figure's name part."""
    return "".join(c if c.isalnum() else "_" for c in group).strip("_").replace("__", "_")


def _interp(flops: np.ndarray, anchor_flops: np.ndarray, anchor_top1: np.ndarray) -> np.ndarray:
    order = np.argsort(anchor_flops)
    return np.interp(flops, anchor_flops[order], anchor_top1[order])


def _table(rows: list[dict]) -> dict[str, np.ndarray]:
    """Predictors and targets of the stitched rows of one run, in stitch-id order."""
    rows = sorted(rows, key=lambda r: r["stitch_id"])
    anchors = [r for r in rows if len(r["anchors"]) == 1]
    stitched = [r for r in rows if len(r["anchors"]) > 1]
    flops = np.array([r["flops"] for r in stitched], dtype=float)
    a_flops = np.array([r["flops"] for r in anchors], dtype=float)
    col = {
        "ls_r2": [r["ls_r2"] for r in stitched], "cka": [r["init_cka"] for r in stitched],
        "kl": [-r["init_kl"] for r in stitched], "init_top1": [r["init_top1"] for r in stitched],
        "flops": flops, "params": [r["params"] for r in stitched],
        "interp": _interp(flops, a_flops, np.array([r["init_top1"] for r in anchors], dtype=float)),
        "top1": [r["top1"] for r in stitched],
    }
    col["residual"] = np.asarray(col["top1"], dtype=float) - _interp(
        flops, a_flops, np.array([r["top1"] for r in anchors], dtype=float))
    return {k: np.asarray(v, dtype=float) for k, v in col.items()}


def correlations(runs: list[dict[str, np.ndarray]], predictor: str, target: str, boot: int, seed: int = 0):
    """Spearman and Kendall of ``predictor`` against ``target``, averaged over ``runs`` (one space's seeds,
    stitches in the same order), and the 95% bootstrap interval of the Spearman mean."""
    from scipy.stats import kendalltau, spearmanr

    def mean_rho(idx, kind=spearmanr):
        with warnings.catch_warnings():  # a resample of tied values has no rank correlation: nan, left out
            warnings.simplefilter("ignore")
            values = [kind(r[predictor][idx], r[target][idx])[0] for r in runs]
        values = [v for v in values if np.isfinite(v)]
        return float(np.mean(values)) if values else float("nan")

    n = len(runs[0][target])
    full = np.arange(n)
    rng = np.random.default_rng(seed)
    samples = [mean_rho(rng.integers(0, n, n)) for _ in range(boot)]
    samples = [s for s in samples if np.isfinite(s)]
    lo, hi = (np.percentile(samples, [2.5, 97.5]) if samples else (float("nan"), float("nan")))
    return mean_rho(full), mean_rho(full, kendalltau), float(lo), float(hi), samples


def run():
    import torch

    torch.set_num_threads(threads())
    epochs = env_int("SNNET_BENCH_RANKING_EPOCHS", 3, 1)
    seeds = env_int("SNNET_BENCH_RANKING_SEEDS", 3, 1)
    first_seed = env_int("SNNET_BENCH_RANKING_FIRST_SEED", 0)
    kernels = [int(k) for k in _env_list("SNNET_BENCH_RANKING_KERNELS", "2" if tiny() else "2,3")]
    images = env_int("SNNET_BENCH_RANKING_IMAGES", 256, 64)
    boot = env_int("SNNET_BENCH_RANKING_BOOT", 1000, 50)
    selection = float(os.environ.get("SNNET_BENCH_RANKING_SELECTION", "0.15"))
    rules = _env_list("SNNET_BENCH_RANKING_RULES", "uniform")
    if "uniform" not in rules:
        rules.insert(0, "uniform")
    catalog = os.environ.get("SNNET_BENCH_RANKING_CATALOG") or tempfile.mkdtemp(prefix="stitch-ranking-")
    seed_range = f"{first_seed}..{first_seed + seeds - 1}"
    yield "stitch_ranking_settings", (f"epochs={epochs} seeds={seed_range} kernels={kernels} score_images={images} "
                                      f"selection_fraction={selection} boot={boot} rules={','.join(rules)}")
    yield "stitch_ranking_catalog", catalog
    tables: dict[int, list[dict[str, np.ndarray]]] = {k: [] for k in kernels}
    started = time.perf_counter()
    runs = [(k, seed, rule, epochs, images, selection, catalog) for k in kernels for rule in rules
            for seed in range(first_seed, first_seed + seeds)]
    for run_args, rows, seconds in _train_all(runs, env_int("SNNET_BENCH_RANKING_JOBS", 1)):
        k, seed, rule = run_args[:3]
        log(f"stitch_ranking: k={k} {rule} seed {seed}: {len(rows)} stitches in {seconds:.0f}s")
        if rule == "uniform":
            tables[k].append(_table(rows))
    yield "stitch_ranking_train_seconds", round(time.perf_counter() - started, 1)
    if len(rules) > 1:
        yield from _rule_figures(catalog)
    best, best_rho = None, -np.inf
    for target in TARGETS:
        for predictor in PREDICTORS:
            pooled = []
            for k in kernels:
                rho, tau, lo, hi, samples = correlations(tables[k], predictor, target, boot, seed=k)
                pooled.append(samples)
                name = f"stitch_ranking_k{k}_{predictor}_{target}"
                yield f"{name}_spearman", round(rho, 3)
                yield f"{name}_spearman_lo", round(lo, 3)
                yield f"{name}_spearman_hi", round(hi, 3)
                yield f"{name}_kendall", round(tau, 3)
            if len(kernels) > 1:  # both spaces, every seed: the mean of the spaces' means, resampled jointly
                rho = float(np.mean([correlations(tables[k], predictor, target, 0)[0] for k in kernels]))
                joint = np.mean([np.asarray(s[: min(map(len, pooled))]) for s in pooled], axis=0)
                lo, hi = np.percentile(joint, [2.5, 97.5])
                yield f"stitch_ranking_kall_{predictor}_{target}_spearman", round(rho, 3)
                yield f"stitch_ranking_kall_{predictor}_{target}_spearman_lo", round(float(lo), 3)
                yield f"stitch_ranking_kall_{predictor}_{target}_spearman_hi", round(float(hi), 3)
            if target == "residual" and predictor in INIT_SCORES:
                mean = float(np.mean([correlations(tables[k], predictor, target, 0)[0] for k in kernels]))
                if mean > best_rho:
                    best, best_rho = predictor, mean
    yield "stitch_ranking_best_residual", best
    yield "stitch_ranking_seconds", round(time.perf_counter() - started, 1)
