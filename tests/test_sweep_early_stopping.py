"""The sweep's schedulers in a real Ray Tune run: a trial whose early front (``early_hv`` after
epoch 1) is clearly worse than the others' is stopped, and the others run every epoch. Cheap
function trainables stand in for training, reporting per epoch what a sweep trial reports.

``hyperband`` is Ray Tune's ``AsyncHyperBandScheduler`` with three brackets; Tune puts each new
trial into a bracket at random (numpy's global generator, seeded here so the run is
reproducible), and only some brackets cut at epoch 1. Several good trials, best last, then
several whose early front is far below theirs: at least one of those must be stopped before its
last epoch, no good trial may be, and the summary must say which.
Marked ``integration`` (the shared local Ray cluster)."""

import pytest
from conftest import connected

pytestmark = pytest.mark.integration

EPOCHS = 4
#: The last trial's early front is far below the others' at epoch 1; trials run one at a time in this order.
QUALITY = [0.5, 0.6, 0.7, 0.1]
#: Trials run one at a time in this order: good ones improving (none falls below the earlier
#: ones' cutoff), then ones whose early front is far below every good one's at every epoch.
GOOD = [0.5, 0.6, 0.7, 0.8]
BAD = [0.10, 0.11, 0.12, 0.13]
#: numpy's global seed for Tune's random choice of bracket per trial. Unseeded, about 1 run in 45
#: would put every good or every bad trial into brackets that never cut before the last epoch.
BRACKET_SEED = 0


def _trainable_factory(epochs: int):
    """A local function, so Ray pickles it by value (workers cannot import this test module)."""

    def trainable(config):
        from ray import tune

        q = config["q"]
        for epoch in range(1, epochs + 1):
            tune.report({"epoch": epoch, "early_hv": q * epoch / epochs, "hypervolume": 0.0})
        tune.report({"epoch": epochs, "early_hv": q, "hypervolume": q, "catalog_file": f"trial-{q}.parquet"})

    return trainable


@pytest.fixture(scope="module")
def local_ray(ray_cluster):
    """This module's tests as one driver of the shared cluster."""
    with connected(ray_cluster, log_to_driver=False):
        yield


@pytest.mark.parametrize("name", ["asha", "median"])
def test_the_scheduler_stops_the_trial_whose_early_front_is_worse(local_ray, tmp_path, name):
    from ray import tune

    from orchestrator.sweep.driver import summarize_results
    from orchestrator.sweep.schedulers import make_scheduler

    tuner = tune.Tuner(
        tune.with_resources(_trainable_factory(EPOCHS), {"cpu": 0.5}),
        param_space={"q": tune.grid_search(QUALITY)},
        tune_config=tune.TuneConfig(scheduler=make_scheduler(name, EPOCHS), max_concurrent_trials=1,
                                    reuse_actors=True),  # one trial process, not one each
        run_config=tune.RunConfig(name=name, storage_path=str(tmp_path), verbose=0),
    )
    results = tuner.fit()
    last_epoch = {r.config["q"]: r.metrics["epoch"] for r in results}
    final = {r.config["q"]: "catalog_file" in r.metrics for r in results}
    assert last_epoch[0.1] == 1 and not final[0.1]  # stopped after its first epoch
    assert all(final[q] and last_epoch[q] == EPOCHS for q in QUALITY[:3])

    search = type("S", (), {"name": "s", "searcher": type("R", (), {"objectives": ("hypervolume",)})()})()
    summary = summarize_results(search, results, "catalog")
    stopped = [t for t in summary["trials"] if t.get("stopped_early")]
    assert [t["config"]["q"] for t in stopped] == [0.1] and stopped[0]["epoch"] == 1
    assert [t["trial_id"] for t in summary["pareto"]] == [r.metrics["trial_id"] for r in results
                                                           if r.config["q"] == 0.7]


def test_hyperband_stops_a_trial_whose_early_front_is_worse(local_ray, tmp_path):
    import numpy as np
    from ray import tune

    from orchestrator.sweep.driver import summarize_results
    from orchestrator.sweep.schedulers import EARLY_METRIC, make_scheduler

    scheduler = make_scheduler("hyperband", EPOCHS)
    assert (scheduler.metric, len(scheduler._brackets)) == (EARLY_METRIC, 3)
    np.random.seed(BRACKET_SEED)
    tuner = tune.Tuner(
        tune.with_resources(_trainable_factory(EPOCHS), {"cpu": 0.5}),
        param_space={"q": tune.grid_search(GOOD + BAD)},
        tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=1,
                                    reuse_actors=True),  # one trial process, not one each
        run_config=tune.RunConfig(name="hyperband", storage_path=str(tmp_path), verbose=0),
    )
    results = tuner.fit()
    assert len(results) == len(GOOD + BAD) and not results.errors
    last_epoch = {r.config["q"]: r.metrics["epoch"] for r in results}
    final = {r.config["q"]: "catalog_file" in r.metrics for r in results}
    assert all(final[q] and last_epoch[q] == EPOCHS for q in GOOD)  # every good trial ran to the end
    cut = sorted(q for q in BAD if not final[q] and last_epoch[q] < EPOCHS)
    assert cut, f"hyperband stopped no bad trial early (last epochs {last_epoch})"
    assert scheduler._num_stopped >= len(cut)

    search = type("S", (), {"name": "s", "searcher": type("R", (), {"objectives": ("hypervolume",)})()})()
    summary = summarize_results(search, results, "catalog")
    stopped = {t["config"]["q"]: t for t in summary["trials"] if t.get("stopped_early")}
    assert set(stopped) <= set(BAD) and set(cut) <= set(stopped)
    assert all(stopped[q]["epoch"] == last_epoch[q] < EPOCHS for q in cut)
    # what stopped them is their early front: below every good trial's at the epoch they stopped
    for q in cut:
        epoch = last_epoch[q]
        assert stopped[q][EARLY_METRIC] < min(g * epoch / EPOCHS for g in GOOD)
    assert [t["trial_id"] for t in summary["pareto"]] == [r.metrics["trial_id"] for r in results
                                                           if r.config["q"] == max(GOOD)]


@pytest.mark.parametrize("algorithm,scheduler", [("grid", "asha"), ("grid", "hyperband"), ("random", "median")])
def test_the_sweeps_tuner_runs_every_scheduler_without_an_optuna_searcher(local_ray, tmp_path, algorithm, scheduler):
    """Grid search and random search without seeds use Tune's variant generator: the sweep's Tuner
    must not pass metric/mode besides the scheduler's own (Tune refused them with a ValueError)."""
    from ray import tune

    from orchestrator.sweep import tuner as sweep_tuner
    from search_spaces import load_space

    search = load_space("demo", overrides=[f"searcher.algorithm={algorithm}", f"searcher.scheduler={scheduler}",
                                           f"training.epochs={EPOCHS}", "searcher.num_samples=1"])
    assert sweep_tuner._searcher(search, ["hypervolume"], ["max"]) is None

    def trainable(config):
        from ray import tune

        q = config["space__kernel_size"] / 10 + (0.05 if config["training__sampling"] == "balanced" else 0.0)
        for epoch in range(1, EPOCHS + 1):
            tune.report({"epoch": epoch, "early_hv": q * epoch / EPOCHS, "hypervolume": 0.0})
        tune.report({"epoch": EPOCHS, "early_hv": q, "hypervolume": q, "catalog_file": f"trial-{q}.parquet"})

    lines: list[str] = []
    tuner = sweep_tuner.new_tuner(search, tune.with_resources(trainable, {"cpu": 0.5}), str(tmp_path / "exp"),
                                  str(tmp_path), 1, None, "sha256:" + "0" * 64, lines.append)
    results = tuner.fit()
    assert len(results) == (4 if algorithm == "grid" else 1) and not results.errors
    assert f"scheduler {scheduler} on early_hv" in lines[0]
