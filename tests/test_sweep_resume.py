"""The sweep's pieces that need no Ray: the space fingerprint and what changed, the resume check,
the experiment-name rule, the catalog as the record of completion, one trial per seed for a
fixed space, and the rule's own stitches per step."""

import json
import math

import pytest
from conftest import DEMO_ANCHORS, demo_space

import orchestrator.sweep.__main__ as sweep_cli
import orchestrator.sweep.preflight as sweep_preflight
import orchestrator.sweep.record as sweep_records
import orchestrator.sweep.space as sweep_space
import orchestrator.sweep.trial as sweep_trial
import orchestrator.sweep.tuner as sweep_tuner
from orchestrator.catalog import CatalogWriter, validate_name
from orchestrator.sweep.trial import SweepContext
from search_spaces import load_space
from search_spaces.fingerprint import (
    canonical_json,
    changed_fields,
    space_document,
    space_fingerprint,
)
from search_spaces.names import validate_name as rule
from snnet import AnchorSpec, SNNetError
from snnet.sampling import rule_class

FIXED = demo_space("fixeddemo", training={"sampling": "uniform"}, searcher={"algorithm": "tpe", "seeds": [0, 1, 2]})


def _fixed(tmp_path, text=FIXED, **kw):
    path = tmp_path / "fixed.yaml"
    path.write_text(text)
    return load_space(str(path), **kw)


# -- one name rule ---------------------------------------------------------------------------------
def test_the_catalog_re_exports_the_one_name_rule():
    assert validate_name is rule


@pytest.mark.parametrize("name", ["1demo", "inf", "a/b", "a..b"])
def test_the_schema_refuses_what_the_catalog_refuses(tmp_path, name):
    with pytest.raises(SNNetError, match="name: is the sweep's catalog partition: A sweep name must"):
        _fixed(tmp_path, FIXED.replace("name: fixeddemo", f"name: {json.dumps(name)}"))


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "a\\b", ""])
def test_name_must_be_one_folder_under_storage(tmp_path, name):
    with pytest.raises(SNNetError, match="is not a folder name under --storage"):
        sweep_preflight.check_experiment_name(name, str(tmp_path), resume=False)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_name_needs_resume_or_a_new_name(tmp_path):
    (tmp_path / "mine").mkdir()
    with pytest.raises(SNNetError, match=r"exists already.*--resume --name mine.*new --name"):
        sweep_preflight.check_experiment_name("mine", str(tmp_path), resume=False)
    assert sweep_preflight.check_experiment_name("mine", str(tmp_path), resume=True) == "mine"
    assert sweep_preflight.check_experiment_name("other", str(tmp_path), resume=False) == "other"


def _cli(capsys, *argv):
    import ray

    code = sweep_cli.main(list(argv))
    err = capsys.readouterr().err
    assert not ray.is_initialized()  # stopped before Ray started
    return code, err


def test_cli_name_errors_are_one_paragraph_before_ray(tmp_path, capsys):
    storage = tmp_path / "runs"
    code, err = _cli(capsys, "--storage", str(storage), "--catalog", str(tmp_path / "c"), "--name", "../../x")
    assert code == 2 and err.startswith("error: --name '../../x' is not a folder name") and "Traceback" not in err
    (storage / "taken").mkdir(parents=True)
    code, err = _cli(capsys, "--storage", str(storage), "--catalog", str(tmp_path / "c"), "--name", "taken")
    assert code == 2 and "--resume" in err and "new --name" in err and err.count("\n") == 1
    assert not (tmp_path.parent / "x").exists()


# -- fingerprint and what changed -------------------------------------------------------------------
def test_fingerprint_is_stable_and_follows_every_setting(tmp_path):
    a, b = _fixed(tmp_path), _fixed(tmp_path)
    assert space_fingerprint(a) == space_fingerprint(b) == space_fingerprint(space_document(a))
    assert space_fingerprint(a).startswith("sha256:") and len(space_fingerprint(a)) == 7 + 64
    assert space_fingerprint(_fixed(tmp_path, overrides=["training.epochs=2"])) != space_fingerprint(a)
    assert canonical_json({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'


def test_fingerprint_covers_settings_not_defaults(tmp_path):
    # A setting written out at its default resolves every trial the same, and a later release
    # that adds a knob with a default must not block resuming an older sweep: defaults are left out.
    plain = _fixed(tmp_path)
    explicit = _fixed(tmp_path, overrides=["training.mode=full", "space.nearest=true"])
    assert space_fingerprint(explicit) == space_fingerprint(plain)
    document = space_document(plain)
    assert document["training"]["epochs"] == 1 and "mode" not in document["training"]
    older = {**document, "training": {k: v for k, v in document["training"].items() if k != "epochs"}}
    assert changed_fields(older, document) == ["training.epochs"]


def test_changed_fields_names_dotted_paths():
    old = {"training": {"epochs": 3, "anchor_lr": 3e-4}, "space": {"kernel_size": [2, 3]},
           "families": [{"anchors": ["a", "b"]}], "searcher": {"seeds": None}}
    new = {"training": {"epochs": 1, "anchor_lr": 3e-4}, "space": {"kernel_size": [2]},
           "families": [{"anchors": ["a", "c"]}], "searcher": {"seeds": None}, "dataset": "x"}
    assert changed_fields(old, new) == ["training.epochs", "space.kernel_size", "families[0].anchors[1]", "dataset"]
    assert changed_fields(old, old) == []


def test_resume_with_an_edited_space_names_what_changed(tmp_path):
    record = sweep_records.sweep_record(_fixed(tmp_path))
    edited = _fixed(tmp_path, overrides=["training.epochs=2", "training.anchor_lr=1e-5"])
    assert sweep_records.check_resume(record, _fixed(tmp_path), accept_changed_space=False, experiment="E") is False
    assert sweep_records.check_resume(None, edited, accept_changed_space=False, experiment="E") is False
    with pytest.raises(SNNetError, match=r"training\.epochs, training\.anchor_lr changed.*--accept-changed-space"):
        sweep_records.check_resume(record, edited, accept_changed_space=False, experiment="E")
    assert sweep_records.check_resume(record, edited, accept_changed_space=True, experiment="E") is True


def test_cli_resume_with_an_edited_space_stops_before_ray(tmp_path, capsys):
    space = tmp_path / "fixed.yaml"
    space.write_text(FIXED)
    experiment = tmp_path / "runs" / "exp"
    experiment.mkdir(parents=True)
    (experiment / "tuner.pkl").write_bytes(b"")  # what Tuner.can_restore looks for
    sweep_records.write_json(str(experiment / sweep_records.RECORD), sweep_records.sweep_record(load_space(str(space))))
    base = ["--space", str(space), "--storage", str(tmp_path / "runs"), "--catalog", str(tmp_path / "c"),
            "--name", "exp", "--resume"]
    code, err = _cli(capsys, *base, "--set", "training.epochs=3", "--set", "space.kernel_size=[2,3]")
    assert code == 2 and "Traceback" not in err
    assert "space.kernel_size, training.epochs changed" in err
    code, err = _cli(capsys, "--space", str(space), "--accept-changed-space")
    assert code == 2 and "--accept-changed-space only applies with --resume" in err


def test_a_sweep_record_holds_fingerprint_code_version_and_space(tmp_path):
    search = _fixed(tmp_path)
    record = sweep_records.sweep_record(search)
    from orchestrator.train.launch import code_version

    assert record["space_fingerprint"] == space_fingerprint(search) and record["code_version"] == code_version()
    sweep_records.write_json(str(tmp_path / "e" / sweep_records.RECORD), record)
    assert sweep_records.read_record(str(tmp_path / "e")) == record
    assert sweep_records.read_record(str(tmp_path / "missing")) is None


# -- the catalog is the record of completion --------------------------------------------------------
def _row(i):
    return {"stitch_id": i, "anchors": ["a"], "cuts": [], "flops": 1.0, "params": 1, "top1": 50.0 + i}


def test_a_complete_catalog_file_is_a_finished_trial(tmp_path):
    catalog = str(tmp_path / "catalog")
    assert sweep_records.completed_result(catalog, "s", "t1") is None  # no file
    CatalogWriter(catalog, "s").write_trial("t1", [_row(0)])  # a file without the sweep's result
    assert sweep_records.completed_result(catalog, "s", "t1") is None
    result = {"hypervolume": 0.5, "train_cost": math.nan, "num_stitches": 2, "seed": 1}
    CatalogWriter(catalog, "s").write_trial("t2", [_row(0), _row(1)],
                                            metadata={sweep_records.META_RESULT: json.dumps(result, allow_nan=True)})
    done = sweep_records.completed_result(catalog, "s", "t2")
    assert done["hypervolume"] == 0.5 and done["seed"] == 1 and math.isnan(done["train_cost"])
    (tmp_path / "catalog" / "sweep=s" / "trial-t3.parquet").write_bytes(b"PAR1 torn")  # unreadable: not finished
    assert sweep_records.completed_result(catalog, "s", "t3") is None


def test_a_started_trial_keeps_its_settings_and_an_old_point_falls_back(tmp_path):
    old = _fixed(tmp_path, overrides=["space.kernel_size=[2,3]", "searcher.seeds=null"])
    new = _fixed(tmp_path, overrides=["space.kernel_size=[2]", "searcher.seeds=null", "training.epochs=2"])
    ctx = {"search": new.model_dump(mode="json"), "fingerprint": space_fingerprint(new),
           "started_search": old.model_dump(mode="json"), "started_fingerprint": space_fingerprint(old),
           "demo_specs": {n: AnchorSpec(n) for n in DEMO_ANCHORS}, "catalog": str(tmp_path / "c"),
           "storage": str(tmp_path / "r"), "experiment": str(tmp_path / "r" / "exp")}
    # only the old space holds k=3
    train, fp = sweep_trial.trial_settings(SweepContext(**ctx), {"space__kernel_size": 3}, "t1")
    assert (train.kernel_size, train.epochs, fp) == (3, 1, space_fingerprint(old))
    # the new space holds it
    train, fp = sweep_trial.trial_settings(SweepContext(**ctx), {"space__kernel_size": 2}, "t2")
    assert (train.kernel_size, train.epochs, fp) == (2, 2, space_fingerprint(new))
    ctx["search"], ctx["fingerprint"] = ctx["started_search"], ctx["started_fingerprint"]
    # recorded: unchanged
    again, fp = sweep_trial.trial_settings(SweepContext(**ctx), {"space__kernel_size": 2}, "t2")
    assert again == train and fp == space_fingerprint(new)


# -- a fixed space, seeds ---------------------------------------------------------------------------
def test_a_fixed_space_runs_one_trial_per_seed_without_a_searcher(tmp_path):
    from ray import tune

    search = _fixed(tmp_path)
    assert search.parameters() == {}
    assert sweep_tuner._searcher(search, ["hypervolume"], ["max"]) is None
    assert sweep_tuner.tune_search_space(search) == {sweep_space.SEED_KEY: tune.grid_search([0, 1, 2])}
    assert sweep_space.num_trials(search) == 3
    single = _fixed(tmp_path, overrides=["searcher.seeds=null"])
    assert sweep_tuner.tune_search_space(single) == {} and sweep_space.num_trials(single) == 1
    assert sweep_trial._point_and_seed(search, {sweep_space.SEED_KEY: 2}) == ({}, 2)


def test_seeds_repeat_each_suggestion_and_report_the_mean_of_every_objective(tmp_path):
    search = _fixed(tmp_path, overrides=["space.kernel_size=[2,3]", "searcher.seeds=[5,6]", "searcher.algorithm=nsga2",
                                         "searcher.objectives=[hypervolume,train_cost]"])
    repeater = sweep_tuner._searcher(search, ["hypervolume", "train_cost"], ["max", "min"])
    repeater.set_search_properties(None, None, sweep_tuner.tune_search_space(search))
    seen = {}
    repeater.searcher.on_trial_complete = lambda tid, result=None, **kw: seen.update({tid: result})
    configs = [repeater.suggest(f"t{i}") for i in range(4)]
    assert configs[0]["space__kernel_size"] == configs[1]["space__kernel_size"]
    assert [sweep_trial._point_and_seed(search, c)[1] for c in configs] == [5, 6, 5, 6]
    repeater.on_trial_complete("t0", {"hypervolume": 0.2, "train_cost": 4.0})
    assert seen == {}
    repeater.on_trial_complete("t1", {"hypervolume": 0.4, "train_cost": 2.0})
    assert seen == {"t0": {"hypervolume": pytest.approx(0.3), "train_cost": pytest.approx(3.0)}}
    assert sweep_space.num_trials(search) == search.searcher.num_samples * 2
    import pickle

    fresh = sweep_tuner._searcher(search, ["hypervolume", "train_cost"], ["max", "min"])
    assert type(pickle.loads(pickle.dumps(fresh))) is type(repeater)  # Tune pickles it with its state


def test_seeds_are_validated(tmp_path):
    with pytest.raises(SNNetError, match="seeds: lists a seed more than once"):
        _fixed(tmp_path, overrides=["searcher.seeds=[1,1]"])
    with pytest.raises(SNNetError, match="seeds: lists no seed"):
        _fixed(tmp_path, overrides=["searcher.seeds=[]"])
    with pytest.raises(SNNetError, match="training.seed must not be searched"):
        _fixed(tmp_path, overrides=["training.seed=[1,2]"])


# -- the rule's own cost --------------------------------------------------------------------------
@pytest.mark.parametrize("rule_name,options", [("uniform", {}), ("sandwich", {}), ("sandwich", {"num_random": 4}),
                                               ("balanced", {})])
def test_stitches_per_step_is_the_rules_own(rule_name, options):
    expected = rule_class(rule_name).stitches_per_step(**options)
    assert sweep_trial._stitches_per_step(rule_name, options) == expected
    if rule_name == "sandwich":
        assert expected == 2 + options.get("num_random", 2)



def test_resuming_a_rerun_without_rerun_best_says_how_instead_of_continuing_it_as_its_source(tmp_path):
    """A re-run's experiment resumed without ``--rerun-best`` would be offered, through the changed-space
    check, to continue as its source sweep (rows in the wrong partition): it is refused with the way to
    resume it."""
    space = tmp_path / "rr.yaml"
    space.write_text(demo_space("rr"))
    search = load_space(str(space))
    experiment = tmp_path / "runs" / "rr_rerun-sweep-1"
    experiment.mkdir(parents=True)
    (experiment / "tuner.pkl").write_bytes(b"")  # what Tuner.can_restore looks for
    record = {**sweep_records.sweep_record(search), "rerun": {"source_sweep": "rr", "trials": {"t0": {}}}}
    sweep_records.write_json(str(experiment / sweep_records.RECORD), record)

    with pytest.raises(SNNetError, match=r"is a re-run of rr: resume it with --rerun-best N --resume"):
        sweep_preflight.locate_experiment(search, str(tmp_path / "runs"), "rr_rerun-sweep-1", True, False)
    located, _ = sweep_preflight.locate_experiment(search, str(tmp_path / "runs"), "rr_rerun-sweep-1", True, False,
                                                   rerun=True)
    assert located.endswith("rr_rerun-sweep-1")


@pytest.mark.parametrize("algorithm, objectives", [("tpe", ["hypervolume"]),
                                                   ("nsga2", ["hypervolume", "train_cost"])])
def test_a_searcher_that_suggested_pickles_and_suggests_again(tmp_path, algorithm, objectives):
    """Tune saves the searcher, Optuna sampler and study included, with the experiment state that
    ``--resume`` reads back (optuna 5's NSGA-II sampler holds a lock that does not pickle by itself)."""
    import pickle

    search = _fixed(tmp_path, overrides=["space.kernel_size=[2,3]", f"searcher.algorithm={algorithm}",
                                         f"searcher.objectives=[{','.join(objectives)}]"])
    modes = ["max", "min"][: len(objectives)]
    searcher = sweep_tuner._searcher(search, objectives, modes)
    searcher.set_search_properties(None, None, sweep_tuner.tune_search_space(search))
    for i in range(3):
        assert searcher.suggest(f"t{i}")["space__kernel_size"] in (2, 3)
        searcher.on_trial_complete(f"t{i}", dict(zip(objectives, (0.1 * i, 3.0 - i))))
    restored = pickle.loads(pickle.dumps(searcher))
    assert restored.suggest("t3")["space__kernel_size"] in (2, 3)
