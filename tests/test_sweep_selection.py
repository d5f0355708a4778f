"""The sweep side of selection apart from report, without Ray: the objective on the selection split,
the Pareto set of trials, the early-front Spearman, the schedulers' decisions on ``early_hv``, the
re-run of the best trials, and the report that shows them."""

import ast
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import demo_space

import orchestrator.sweep.__main__ as sweep_cli
import orchestrator.sweep.record as sweep_records
import orchestrator.sweep.rerun as sweep_rerun
import orchestrator.sweep.space as sweep_space
import orchestrator.sweep.trial as sweep_trial
import orchestrator.sweep.tuner as sweep_tuner
from orchestrator.catalog import CatalogWriter
from orchestrator.catalog.objectives import hypervolume, objective_values, split_values
from orchestrator.sweep.report import (
    early_hv_spearman,
    pareto_trials,
    rank_trials,
    sweep_report,
)
from orchestrator.sweep.trial import SweepContext
from search_spaces import load_space
from snnet import SNNetError

SPACE = demo_space("seldemo", space={"kernel_size": [2, 3]}, training={"epochs": [1, 3], "sampling": "uniform"},
                   searcher={"algorithm": "tpe", "num_samples": 4})


def _space(tmp_path, *overrides):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    return load_space(str(path), overrides=list(overrides))


# -- the objective on the selection split ------------------------------------------------------------
def _rows(selection=True):
    rows = [{"flops": 20, "top1": 50.0, "top1_selection": 40.0}, {"flops": 50, "top1": 80.0, "top1_selection": 60.0}]
    return rows if selection else [{**r, "top1_selection": None} for r in rows]


def test_the_objective_is_computed_on_the_selection_split_and_the_evaluation_split_is_reported_beside_it():
    values = objective_values(_rows(), 100, epochs=1, train_images=10, stitches_per_step=1.0)
    # 0.4 * (0.5 - 0.2) + 0.6 * (1 - 0.5) = 0.12 + 0.30
    assert values["hypervolume"] == pytest.approx(0.42) and values["best_top1"] == 60.0
    split = split_values(_rows(), 100)
    assert split == {"objective_split": "selection", "hypervolume_selection": pytest.approx(0.42),
                     "hypervolume_eval": pytest.approx(0.55), "best_top1_eval": 80.0}


def test_without_selection_the_objective_falls_back_to_the_evaluation_split_and_says_so():
    values = objective_values(_rows(selection=False), 100, epochs=1, train_images=10, stitches_per_step=1.0)
    assert values["hypervolume"] == pytest.approx(0.55)
    split = split_values(_rows(selection=False), 100)
    assert split["objective_split"] == "evaluation" and split["hypervolume_selection"] is None
    partly = [_rows()[0], {**_rows()[1], "top1_selection": math.nan}]  # one stitch unscored: not a selection front
    assert split_values(partly, 100)["objective_split"] == "evaluation"


# -- the Pareto set of trials and the ranking ---------------------------------------------------------
PLANTED = [  # hypervolume (max), train_cost (min)
    {"trial_id": "a", "hypervolume": 0.80, "train_cost": 4.0},  # Pareto
    {"trial_id": "b", "hypervolume": 0.70, "train_cost": 2.0},  # Pareto
    {"trial_id": "c", "hypervolume": 0.60, "train_cost": 3.0},  # dominated by b
    {"trial_id": "d", "hypervolume": 0.80, "train_cost": 5.0},  # dominated by a (equal hv, dearer)
    {"trial_id": "e", "hypervolume": 0.50, "train_cost": 1.0},  # Pareto (cheapest)
    {"trial_id": "f", "hypervolume": 0.70, "train_cost": 2.0},  # equal to b: both kept
    {"trial_id": "g", "hypervolume": math.nan, "train_cost": 0.5},  # no value: takes no part
    {"trial_id": "h", "train_cost": 0.1},  # missing hypervolume
]


def test_the_pareto_set_of_trials_on_a_planted_set():
    front = pareto_trials(PLANTED, ["hypervolume", "train_cost"])
    assert [t["trial_id"] for t in front] == ["a", "b", "e", "f"]
    assert [t["trial_id"] for t in pareto_trials(PLANTED, ["hypervolume"])] == ["a", "d"]
    assert [t["trial_id"] for t in pareto_trials(PLANTED, ["train_cost"])] == ["h"]  # h has this one objective
    assert pareto_trials([], ["hypervolume"]) == []


def test_trials_rank_by_front_then_by_the_first_objective():
    ranked = rank_trials(PLANTED, ["hypervolume", "train_cost"])
    # front 1: a, b, f, e (by hypervolume, ties in input order); front 2: c, d; then the incomplete ones
    assert [t["trial_id"] for t in ranked] == ["a", "b", "f", "e", "d", "c", "g", "h"]
    assert [t["trial_id"] for t in rank_trials(PLANTED, ["hypervolume"])] == ["a", "d", "b", "f", "c", "e", "g", "h"]


# -- early_hv_spearman ----------------------------------------------------------------------------------
def _trial(early, final):
    return {"early_hv_epoch1": early, "hypervolume": final}


def test_early_hv_spearman_on_planted_ranks():
    same = [_trial(e, f) for e, f in [(0.1, 0.5), (0.2, 0.6), (0.3, 0.7), (0.4, 0.8)]]
    assert early_hv_spearman(same) == pytest.approx(1.0)
    assert early_hv_spearman([_trial(e, -f) for e, f in [(0.1, 0.5), (0.2, 0.6), (0.3, 0.7)]]) == pytest.approx(-1.0)
    # ranks early 1..5 against final 2 1 4 3 5: sum d^2 = 4, rho = 1 - 6 * 4 / (5 * 24) = 0.8
    planted = [_trial(e, f) for e, f in [(1, 2), (2, 1), (3, 4), (4, 3), (5, 5)]]
    assert early_hv_spearman(planted) == pytest.approx(0.8)
    # trials without both values take no part; fewer than three left: undefined
    assert early_hv_spearman(planted + [_trial(None, 0.1), _trial(math.nan, 0.2)]) == pytest.approx(0.8)
    assert early_hv_spearman(planted[:2]) is None
    assert early_hv_spearman([_trial(1, 1), _trial(1, 2), _trial(1, 3)]) is None  # constant early front


# -- the schedulers act on early_hv ---------------------------------------------------------------------
@pytest.mark.parametrize("name,brackets", [("asha", 1), ("hyperband", 3)])
def test_asha_and_hyperband_act_on_the_early_front(tmp_path, name, brackets):
    from ray.tune.schedulers import AsyncHyperBandScheduler

    scheduler = sweep_tuner._scheduler(_space(tmp_path, f"searcher.scheduler={name}"))
    assert isinstance(scheduler, AsyncHyperBandScheduler) and len(scheduler._brackets) == brackets
    assert (scheduler.metric, scheduler._metric_op, scheduler._time_attr) == ("early_hv", 1.0, "epoch")
    assert scheduler._max_t == 3  # the most epochs a trial of the space trains
    assert sweep_tuner._scheduler(_space(tmp_path)) is None


def test_max_epochs_follows_the_space(tmp_path):
    assert sweep_space.max_epochs(_space(tmp_path)) == 3
    assert sweep_space.max_epochs(_space(tmp_path, "training.epochs=5")) == 5
    assert sweep_space.max_epochs(_space(tmp_path, "training.epochs={low: 2, high: 7}")) == 7


def _result(value, epoch, **extra):
    return {"early_hv": value, "epoch": epoch, **extra}


def test_the_median_pruner_scheduler_stops_a_trial_whose_early_front_is_worse(tmp_path):
    from ray.tune.schedulers import TrialScheduler

    from orchestrator.sweep.schedulers import PrunerScheduler

    scheduler = sweep_tuner._scheduler(_space(tmp_path, "searcher.scheduler=median"))
    assert isinstance(scheduler, PrunerScheduler) and scheduler.metric == "early_hv"
    trials = {name: SimpleNamespace(trial_id=name) for name in "abcd"}
    for name, q in [("a", 0.5), ("b", 0.6)]:  # the first two complete: the pruner waits for them
        for epoch in (1, 2, 3):
            assert scheduler.on_trial_result(None, trials[name], _result(q * epoch, epoch)) == TrialScheduler.CONTINUE
        scheduler.on_trial_complete(None, trials[name], _result(q * 3, 3, catalog_file="x"))
    assert scheduler.on_trial_result(None, trials["c"], _result(0.7, 1)) == TrialScheduler.CONTINUE
    # the evaluation's progress reports repeat the last epoch: an epoch is judged once
    assert scheduler.on_trial_result(None, trials["c"], _result(0.0, 1)) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, trials["d"], _result(0.1, 1)) == TrialScheduler.STOP  # below the median
    assert scheduler.stopped == ["d"]
    # NaN (no early front reported) never stops a trial
    assert scheduler.on_trial_result(None, SimpleNamespace(trial_id="e"), _result(math.nan, 1)) == "CONTINUE"
    import pickle

    restored = pickle.loads(pickle.dumps(scheduler))  # Tune pickles it with the Tuner; the study stays out
    assert restored._study is None and restored.stopped == ["d"]


def test_the_searcher_sees_final_results_only_and_a_stopped_trial_as_pruned():
    from ray.tune.search import Searcher

    from orchestrator.sweep.schedulers import FinalResultsOnly

    class Recording(Searcher):
        def __init__(self):
            super().__init__(metric="hypervolume", mode="max")
            self.results, self.completed = [], {}

        def suggest(self, trial_id):
            return {"x": 1}

        def on_trial_result(self, trial_id, result):
            self.results.append(trial_id)

        def on_trial_complete(self, trial_id, result=None, error=False):
            self.completed[trial_id] = result

    inner = Recording()
    wrapped = FinalResultsOnly(inner)
    assert wrapped.metric == "hypervolume" and wrapped.suggest("t") == {"x": 1}
    wrapped.on_trial_result("t1", sweep_trial.epoch_metrics({"epoch": 1, "early_hv": 0.3}, ["hypervolume"]))
    wrapped.on_trial_complete("t1", sweep_trial.epoch_metrics({"epoch": 1, "early_hv": 0.3}, ["hypervolume"]))
    wrapped.on_trial_complete("t2", {"hypervolume": 0.7, "catalog_file": "f"})
    assert inner.results == [] and inner.completed == {"t1": None, "t2": {"hypervolume": 0.7, "catalog_file": "f"}}


def test_tune_saves_and_restores_the_wrapped_optuna_searcher(tmp_path):
    from ray.tune.search import SearchGenerator

    from orchestrator.sweep.schedulers import FinalResultsOnly

    search = _space(tmp_path, "searcher.scheduler=median")
    wrapped = sweep_tuner._searcher(search, ["hypervolume"], ["max"])
    wrapped.set_search_properties(None, None, sweep_tuner.tune_search_space(search))
    assert wrapped.suggest("t0")
    SearchGenerator(wrapped).save_to_dir(str(tmp_path), session_str="s")  # what Tune does at each state save
    fresh = sweep_tuner._searcher(search, ["hypervolume"], ["max"])
    SearchGenerator(fresh).restore_from_dir(str(tmp_path))
    assert isinstance(fresh, FinalResultsOnly) and "t0" in fresh.searcher._ot_trials


def test_epoch_metrics_hold_the_placeholders_and_leave_out_the_stitch_results():
    m = sweep_trial.epoch_metrics({"epoch": 2, "loss": 1.5, "results": {"0": [1, 2]}}, ["hypervolume", "train_cost"])
    assert m["hypervolume"] == 0.0 and m["train_cost"] == 0.0 and math.isnan(m["early_hv"])
    assert m["epoch"] == 2 and "results" not in m and "catalog_file" not in m
    assert sweep_trial.epoch_metrics({"epoch": 1, "early_hv": 0.25}, ["hypervolume"])["early_hv"] == 0.25


def test_a_scheduled_searcher_is_wrapped_and_an_unscheduled_one_is_not(tmp_path):
    from ray.tune.search.optuna import OptunaSearch

    from orchestrator.sweep.schedulers import FinalResultsOnly

    plain = sweep_tuner._searcher(_space(tmp_path), ["hypervolume"], ["max"])
    assert isinstance(plain, OptunaSearch)
    wrapped = sweep_tuner._searcher(_space(tmp_path, "searcher.scheduler=asha"), ["hypervolume"], ["max"])
    assert isinstance(wrapped, FinalResultsOnly) and isinstance(wrapped.searcher, OptunaSearch)


# -- re-running the best trials -------------------------------------------------------------------------
def _finished_sweep(tmp_path, hypervolumes):
    """A source experiment as a sweep leaves it: trial settings beside it, catalog files with results."""
    search = _space(tmp_path)
    catalog, storage = tmp_path / "catalog", tmp_path / "runs"
    experiment = storage / "seldemo-sweep-20260101-000000"
    for i, hv in enumerate(hypervolumes):
        trial = f"t{i}"
        config = search.trial_config({"space.kernel_size": 2, "training.epochs": 1}, catalog=str(catalog),
                                     trial_id=trial, storage_path=str(storage), anchors=None)
        sweep_records.write_json(str(experiment / sweep_records.TRIAL_SETTINGS / f"{trial}.json"),
                                 {"config": config.model_dump(mode="json"), "space_fingerprint": "fp"})
        if hv is not None:  # None: started, never finished
            result = {"hypervolume": hv, "family": "demo_vit", "catalog_file": "x"}
            CatalogWriter(str(catalog), "seldemo").write_trial(
                trial, [{"stitch_id": 0, "anchors": ["a"], "cuts": [], "flops": 1, "params": 1, "top1": 1.0}],
                metadata={sweep_records.META_RESULT: json.dumps(result)})
    return search, str(catalog), str(storage)


def test_rerun_plan_takes_the_best_finished_trials_with_the_overrides(tmp_path):
    search, catalog, storage = _finished_sweep(tmp_path, [0.5, 0.8, None, 0.7])
    plan = sweep_rerun.rerun_plan(search, catalog, storage, 2, None,
                                  ["training.epochs=5", "training.seed=3", "resources.workers_per_trial=1"])
    assert plan["source_experiment"] == "seldemo-sweep-20260101-000000" and plan["source_sweep"] == "seldemo"
    assert list(plan["trials"]) == ["t1", "t3"]  # t2 never finished
    for trial in plan["trials"].values():
        assert (trial["config"]["epochs"], trial["config"]["seed"], trial["config"]["workers"]) == (5, 3, 1)
        assert trial["config"]["kernel_size"] == 2 and trial["family"] == "demo_vit"
    assert list(sweep_rerun.rerun_plan(search, catalog, storage, 9, None, [])["trials"]) == ["t1", "t3", "t0"]
    named = sweep_rerun.rerun_plan(search, catalog, storage, 1, "seldemo-sweep-20260101-000000", [])
    assert list(named["trials"]) == ["t1"]


def test_rerun_refuses_what_it_cannot_do(tmp_path):
    search, catalog, storage = _finished_sweep(tmp_path, [0.5])
    with pytest.raises(SNNetError, match="cannot apply: a re-run takes training"):
        sweep_rerun.rerun_plan(search, catalog, storage, 1, None, ["space.kernel_size=3"])
    with pytest.raises(SNNetError, match="--rerun-best must be >= 1"):
        sweep_rerun.rerun_plan(search, catalog, storage, 0, None, [])
    with pytest.raises(SNNetError, match="Nothing to re-run: no sweep 'seldemo'"):
        sweep_rerun.rerun_plan(search, catalog, str(tmp_path / "elsewhere"), 1, None, [])
    with pytest.raises(SNNetError, match="epochs"):
        sweep_rerun.rerun_plan(search, catalog, storage, 1, None, ["training.epochs=-1"])
    assert sweep_rerun.rerun_updates(["dataset=demo", "resources.gpus_per_worker=0.5", "searcher.num_samples=3"]) == {
        "dataset": "demo", "gpus_per_worker": 0.5, "use_gpu": True}
    rerun = sweep_rerun.rerun_space(search)
    assert rerun.name == "seldemo_rerun" and rerun.searcher.scheduler == "none" and rerun.searcher.seeds is None


def test_a_rerun_trial_takes_its_source_settings_and_records_the_link(tmp_path):
    search, catalog, storage = _finished_sweep(tmp_path, [0.5, 0.8])
    plan = sweep_rerun.rerun_plan(search, catalog, storage, 1, None, ["training.epochs=4"])
    ctx = {"search": None, "fingerprint": "new", "rerun": plan["trials"], "catalog": catalog, "storage": storage,
           "sweep": "seldemo_rerun", "experiment": str(tmp_path / "runs" / "rerun-exp")}
    train, fingerprint = sweep_trial.trial_settings(SweepContext(**ctx), {sweep_space.RERUN_KEY: "t1"}, "r0")
    assert (train.epochs, train.trial_id, train.sweep, fingerprint) == (4, "r0", "seldemo_rerun", "new")
    recorded = json.loads((tmp_path / "runs" / "rerun-exp" / sweep_records.TRIAL_SETTINGS / "r0.json").read_text())
    assert recorded["source_trial"] == "t1"
    again, _ = sweep_trial.trial_settings(SweepContext(**{**ctx, "rerun": {}}), {sweep_space.RERUN_KEY: "t1"},
                                          "r0")  # resumed: as recorded
    assert again == train


def test_cli_rerun_from_needs_rerun_best(capsys):
    assert sweep_cli.main(["--rerun-from", "x"]) == 2
    assert "--rerun-from only applies with --rerun-best" in capsys.readouterr().err


# -- the report -----------------------------------------------------------------------------------------
def test_the_sweep_report_shows_the_split_the_pareto_set_stopped_trials_and_the_spearman():
    finished = [{"trial_id": f"t{i}", "family": "demo_vit", "hypervolume": hv, "train_cost": cost,
                 "hypervolume_eval": hv - 0.01, "best_top1_eval": 50.0, "early_hv_epoch1": early,
                 "objective_split": "selection", "config": {"space.kernel_size": 2}}
                for i, (hv, cost, early) in enumerate([(0.8, 4.0, 0.5), (0.7, 2.0, 0.4), (0.6, 3.0, 0.3)])]
    trials = finished + [{"trial_id": "t3", "stopped_early": True, "epoch": 1, "early_hv": 0.05, "config": {}},
                         {"trial_id": "t4", "error": "boom"}]
    objectives = ["hypervolume", "train_cost"]
    text = sweep_report({"sweep": "s", "experiment": "e", "catalog": "c", "trials": trials, "objectives": objectives,
                         "pareto": pareto_trials(finished, objectives),
                         "early_hv_spearman": early_hv_spearman(finished)})
    assert "3 trials finished, 1 stopped early, 1 failed" in text
    assert "objective on the selection split" in text
    assert "early_hv_spearman: 1.000" in text
    assert "stopped early: t3 after epoch 1" in text and "failed: t4: boom" in text
    pareto = text.split("Pareto set of trials over hypervolume, train_cost:")[1]
    assert "t0:" in pareto and "t1:" in pareto and "t2:" not in pareto
    lone = sweep_report({"sweep": "s", "experiment": "e", "catalog": "c", "trials": finished[:1],
                         "objectives": ["hypervolume"], "pareto": [], "early_hv_spearman": None})
    assert "early_hv_spearman: n/a" in lone and "Pareto set" not in lone


def test_hypervolume_of_the_planted_rows_is_the_objectives_own():
    assert hypervolume([(20, 40.0), (50, 60.0)], 100) == pytest.approx(0.42)


# -- issue 9: no function in orchestrator/ or search_spaces/ longer than about 80 lines ---------------------
_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("module", sorted(str(p.relative_to(_ROOT)) for package in ("orchestrator", "search_spaces")
                                          for p in (_ROOT / package).rglob("*.py")))
def test_no_function_is_longer_than_80_lines(module):
    tree = ast.parse((_ROOT / module).read_text())
    long = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 80]
    assert long == []
