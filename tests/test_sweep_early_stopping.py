"""The sweep's schedulers in a real Ray Tune run: a trial whose early front (``early_hv`` after
epoch 1) is clearly worse than the others' is stopped, and the others run every epoch. Cheap
function trainables stand in for training, reporting per epoch what a sweep trial reports.
Marked ``integration`` (a local Ray instance)."""

import pytest

pytestmark = pytest.mark.integration

EPOCHS = 4
#: The last trial's early front is far below the others' at epoch 1; trials run one at a time in this order.
QUALITY = [0.5, 0.6, 0.7, 0.1]


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
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.parametrize("name", ["asha", "median"])
def test_the_scheduler_stops_the_trial_whose_early_front_is_worse(local_ray, tmp_path, name):
    from ray import tune

    from orchestrator.sweep import summarize_results
    from orchestrator.sweep_schedulers import make_scheduler

    tuner = tune.Tuner(
        tune.with_resources(_trainable_factory(EPOCHS), {"cpu": 0.5}),
        param_space={"q": tune.grid_search(QUALITY)},
        tune_config=tune.TuneConfig(scheduler=make_scheduler(name, EPOCHS), max_concurrent_trials=1),
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
