"""What ``orchestrator.sweep`` checks and settles before Ray starts. Unit tests, no Ray instance.

- The Tuner's ``metric``/``mode`` (:func:`orchestrator.sweep.tuner.tune_metric`) for every searcher algorithm
  x early-stopping scheduler: Tune accepts them (the checks ``ray.tune.run`` makes before any trial).
- ``--catalog`` of a bucket that cannot be reached: one paragraph, exit 2.
- One trial's workers x CPUs x GPUs against this machine when no cluster is given.
- Every searched value (each choice, each range's ends) gets a trial's checks, quietly, reusing the
  first point's findings: a window deeper than the anchors names the family and ``setting=value``.
"""

from __future__ import annotations

import pytest

from orchestrator.sweep.tuner import tune_metric
from search_spaces import ALGORITHMS, SCHEDULERS
from snnet import SNNetError

# -- the Tuner's metric and mode -------------------------------------------------------------------


def _space(algorithm: str, scheduler: str, *extra: str):
    from search_spaces import load_space

    objectives = ["searcher.objectives=[hypervolume, train_cost]"] if algorithm == "nsga2" else []
    return load_space("demo", overrides=[f"searcher.algorithm={algorithm}", f"searcher.scheduler={scheduler}",
                                         *objectives, *extra])


#: Variants of the demo space per algorithm: as shipped, repeated over seeds, with nothing left to search.
_VARIANTS = {"shipped": (), "seeds": ("searcher.seeds=[0, 1]",),
             "fixed": ("space.kernel_size=2", "training.sampling=uniform")}


@pytest.mark.parametrize("variant", list(_VARIANTS))
@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_tune_accepts_the_metric_and_mode_of_every_searcher_and_scheduler(algorithm, scheduler, variant):
    """Ray 2.x refuses ``TuneConfig(metric=..., mode=...)`` when the searcher or the scheduler was built
    with its own (``ValueError: You passed a metric or mode argument to Tuner(...), but the scheduler you
    are using was already instantiated ...``): the same two checks, on the sweep's own objects."""
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.schedulers.util import _set_search_properties_backwards_compatible as scheduler_props
    from ray.tune.search import BasicVariantGenerator, SearchGenerator
    from ray.tune.search.util import _set_search_properties_backwards_compatible as searcher_props

    from orchestrator.catalog.objectives import OBJECTIVES
    from orchestrator.sweep import tuner as sweep_tuner

    search = _space(algorithm, scheduler, *_VARIANTS[variant])
    metrics = list(search.searcher.objectives)
    modes = [OBJECTIVES[m] for m in metrics]
    search_alg, scheduler_obj = sweep_tuner._searcher(search, metrics, modes), sweep_tuner._scheduler(search)
    kwargs = tune_metric(metrics, modes, searcher=search_alg is not None, scheduler=scheduler_obj is not None)
    metric, mode = kwargs.get("metric"), kwargs.get("mode")
    assert set(kwargs) in (set(), {"metric", "mode"})
    assert scheduler_props((scheduler_obj or FIFOScheduler()).set_search_properties, metric, mode)
    generator = SearchGenerator(search_alg) if search_alg is not None else BasicVariantGenerator()
    config = sweep_tuner.tune_search_space(search)
    accepted = searcher_props(generator.set_search_properties, metric, mode, config)
    assert accepted or search_alg is None  # the variant generator resolves the space itself
    if search_alg is None and scheduler_obj is None and len(metrics) == 1:  # the results' default metric
        assert kwargs == {"metric": metrics[0], "mode": modes[0]}


def test_tune_metric_is_given_only_to_the_variant_generator_without_a_scheduler():
    one = (["hypervolume"], ["max"])
    assert tune_metric(*one, searcher=False, scheduler=False) == {"metric": "hypervolume", "mode": "max"}
    assert tune_metric(*one, searcher=True, scheduler=False) == {}
    assert tune_metric(*one, searcher=False, scheduler=True) == {}
    assert tune_metric(*one, searcher=True, scheduler=True) == {}
    assert tune_metric(["hypervolume", "train_cost"], ["max", "min"], searcher=False, scheduler=False) == {}


# -- the catalog's location ------------------------------------------------------------------------


def test_an_unreachable_catalog_bucket_is_one_paragraph_before_ray(tmp_path, monkeypatch, capsys):
    """``--catalog s3://...`` of a bucket that cannot be reached: the write probe's paragraph, as for
    ``--storage`` and ``orchestrator.train``, not pyarrow's ``OSError: When resolving region for bucket``."""
    import orchestrator.train.cluster as run
    from orchestrator.sweep import __main__ as sweep_cli

    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(run, "ensure_ray", lambda *a, **k: pytest.fail("Ray must not start"))
    assert sweep_cli.main(["--catalog", "s3://nonexistent-bucket-xyz/cat", "--storage", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: The catalog location 's3://nonexistent-bucket-xyz/cat' is not writable (")
    assert err.rstrip().endswith("pass another --catalog; nothing was trained.") and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_a_catalog_that_is_a_file_is_still_named_as_one(tmp_path):
    from orchestrator.sweep import preflight as sweep_preflight

    (tmp_path / "cat").write_text("x")
    with pytest.raises(SNNetError, match=r"The catalog must be a folder or URI, but '.*cat' is a file\."):
        sweep_preflight.check_locations(_space("tpe", "none"), str(tmp_path / "cat"), str(tmp_path / "runs"))


# -- one trial's resources against this machine ----------------------------------------------------


def test_a_trial_larger_than_this_machine_is_refused_before_ray(two_cpus, tmp_path, monkeypatch, capsys):
    from orchestrator.sweep import __main__ as sweep_cli
    from orchestrator.sweep import driver as sweep_driver

    monkeypatch.setattr(sweep_driver, "validate_families", lambda *a, **k: pytest.fail("checked before the families"))
    argv = ["--catalog", str(tmp_path / "cat"), "--storage", str(tmp_path / "runs"),
            "--set", "resources.workers_per_trial=8"]
    assert sweep_cli.main(argv) == 2
    assert capsys.readouterr().err == (
        "error: A trial of the sweep needs 8 workers x 1 CPU each (8 CPUs), but this machine (a local Ray instance) "
        "has 2 CPUs and 0 GPUs: pass --set resources.workers_per_trial=2 or fewer, or run on a larger cluster "
        "(--address).\n")
    assert not (tmp_path / "runs").exists()


def test_a_trial_that_fits_passes_and_a_cluster_is_not_asked_before_connecting(two_cpus, monkeypatch):
    import orchestrator.train.cluster as run
    from orchestrator.sweep import preflight as sweep_preflight

    sweep_preflight.check_trial_resources(_space("tpe", "none"), None)  # the demo's 2 workers x 1 CPU fit
    gpus = _space("tpe", "none", "resources.workers_per_trial=1", "resources.gpus_per_worker=1")
    with pytest.raises(SNNetError, match=r"needs 1 workers x 1 CPU and 1 GPU each \(1 CPUs, 1 GPUs\), .* has 2 CPUs "
                                         r"and 0 GPUs: lower resources.workers_per_trial or the CPUs/GPUs per worker"):
        sweep_preflight.check_trial_resources(gpus, None)
    monkeypatch.setattr(run, "local_resources", lambda: pytest.fail("not this machine: a cluster is given"))
    big = _space("tpe", "none", "resources.workers_per_trial=8")
    sweep_preflight.check_trial_resources(big, "10.0.0.1:6379")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    sweep_preflight.check_trial_resources(big, None)


def test_each_rerun_trial_is_checked_with_its_recorded_resources(two_cpus):
    from orchestrator.sweep import preflight as sweep_preflight
    from search_spaces import TrainConfig

    plan = {"trials": {"t1": {"config": TrainConfig(workers=2).model_dump(mode="json")},
                       "t2": {"config": TrainConfig(workers=3).model_dump(mode="json")}}}
    with pytest.raises(SNNetError, match=r"^A trial of the sweep needs 3 workers x 1 CPU each \(3 CPUs\)"):
        sweep_preflight.check_trial_resources(_space("tpe", "none"), None, plan)


# -- every searched value, before Ray ----------------------------------------------------------------


def test_the_other_values_of_a_setting_are_each_choice_and_each_end_of_a_range():
    from orchestrator.sweep.preflight import _other_values
    from search_spaces import Choice, FloatRange, IntRange

    assert _other_values(Choice((2, 3, 30)), 2) == [3, 30]
    assert _other_values(Choice((True, 1)), True) == [1]  # 1 is not true
    assert _other_values(IntRange(1, 4), 1) == [4]  # the first point of a range is its low end
    log = FloatRange(1e-4, 1e-2, log=True)
    assert _other_values(log, log.first()) == [1e-4, 1e-2]  # ... of a log range, its geometric mean
    assert _other_values(IntRange(3, 3), 3) == []


@pytest.mark.parametrize("override, fault", [
    ("space.kernel_size=[2, 30]", "space.kernel_size=30 cannot run (checked with every other searched setting at "
                                  "its first value): The window must fit the depth: kernel_size <= 6"),
    ("training.batch_size={low: 16, high: 100000}", "training.batch_size=100000 cannot run"),
    ("training.sampling=[uniform, balanced, sandwich]", None),
])
def test_each_searched_value_gets_a_trials_checks_before_ray(tmp_path, override, fault):
    from orchestrator.sweep import preflight as sweep_preflight
    from search_spaces import load_space

    search = load_space("demo", overrides=[override])
    if fault is None:
        sweep_preflight.validate_families(search, str(tmp_path / "c"), str(tmp_path / "r"), lambda m: None)
        return
    with pytest.raises(SNNetError) as info:
        sweep_preflight.validate_families(search, str(tmp_path / "c"), str(tmp_path / "r"), lambda m: None)
    message = str(info.value)
    assert message.startswith(f"Search space 'demo', family demo_vit: {fault}") and "\n" not in message


def test_a_window_deeper_than_the_anchors_stops_the_sweep_before_ray(two_cpus, tmp_path, capsys):
    from orchestrator.sweep import __main__ as sweep_cli

    argv = ["--catalog", str(tmp_path / "cat"), "--storage", str(tmp_path / "runs"), "--set",
            "space.kernel_size=[2, 30]"]
    assert sweep_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Search space 'demo', family demo_vit: space.kernel_size=30 cannot run (") and \
        "got kernel_size=30." in err and err.count("\n") == 1


def test_the_extra_values_build_no_anchor_open_no_dataset_probe_nothing_and_print_nothing(tmp_path, monkeypatch):
    """Validating every searched value costs no anchor build, dataset read or write probe beyond the
    first point's: the same calls and the same console lines as the first point alone."""
    import orchestrator.train.prepare as run
    import snnet.anchors as anchors_module
    from orchestrator.sweep import preflight as sweep_preflight
    from search_spaces import load_space

    search = load_space("demo", overrides=["space.kernel_size=[2, 3, 4]", "space.stride=[1, 2]",
                                           "training.anchor_lr={low: 1.0e-4, high: 1.0e-3, log: true}"])
    # demo anchors found
    sweep_preflight.validate_families(search, str(tmp_path / "c"), str(tmp_path / "r"), lambda m: None)
    calls: list[str] = []

    def counting(name):
        real = getattr(run, name) if name != "read" else run.DatasetFacts.read

        def wrapper(*a, **k):
            calls.append(name)
            return real(*a, **k)
        return wrapper

    for name in ("create_anchor", "check_writable", "profile_anchor"):
        monkeypatch.setattr(run, name, counting(name))
    monkeypatch.setattr(run.DatasetFacts, "read", staticmethod(counting("read")))
    real_check_spec = anchors_module.check_spec
    monkeypatch.setattr(anchors_module, "check_spec",
                        lambda *a, **k: calls.append("check_spec") or real_check_spec(*a, **k))
    seen = {}
    for values in (False, True):
        calls.clear()
        lines: list[str] = []
        sweep_preflight.validate_families(search, str(tmp_path / "c"), str(tmp_path / "r"), lines.append, values=values)
        seen[values] = (sorted(calls), lines)
    assert seen[True] == seen[False]
    assert seen[True][0].count("check_writable") == 2 and seen[True][0].count("read") == 1
    assert seen[True][0].count("check_spec") == 3 and seen[True][0].count("create_anchor") == 3
