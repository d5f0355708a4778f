"""A result is counted once (issue 28, item 2), and what a reader of the catalog's columns needs (item 7).

The README's main command and its tour both run the demo sweep into ``./catalog``, partition
``sweep=demo``: two experiments whose trials share settings and seeds. Their rows stay, but
fronts, budgets and plots count each configuration once (its newest trial), ``check`` names the
repeats, and a sweep starting over an experiment of its own space says so. Catalog files are
written here with :class:`CatalogWriter`; no Ray.
"""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from orchestrator.catalog import CatalogWarning, CatalogWriter, best_under, check, load, query
from orchestrator.catalog.__main__ import main
from orchestrator.catalog._repeats import drop_repeats, earlier_experiments, repeat_note

T0 = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc)


def trial(experiment: str, sampling: str, seed: int, *, hours: int, base: float = 60.0) -> list[dict]:
    """Five stitches of one trial; the fingerprint stands for (sampling, seed), as the real one would."""
    common = dict(sampling=sampling, seed=seed, experiment=experiment, config_fingerprint=f"sha256:{sampling}-{seed}",
                  created_at=T0 + dt.timedelta(hours=hours), code_version=f"0.1.0+g{hours:012x}", dataset="demo",
                  kernel_size=2, stride=1)
    return [dict(common, stitch_id=i, anchors=["a", "b"] if i else ["a"], cuts=[[i, i + 1]] if i else [],
                 flops=1000 + 100 * i, params=10 + i, top1=base + 2 * i + (sampling == "balanced") + seed / 10)
            for i in range(5)]


@pytest.fixture
def catalog(tmp_path):
    """The demo sweep run twice (experiments first and second, the same two configurations) and a
    third experiment with a new seed; and another sweep with one trial."""
    root = tmp_path / "catalog"
    writer = CatalogWriter(root, "demo")
    for name, hours in (("first", 0), ("second", 1)):
        writer.write_trial(f"{name}-u", trial(f"demo-sweep-{name}", "uniform", 0, hours=hours))
        writer.write_trial(f"{name}-b", trial(f"demo-sweep-{name}", "balanced", 0, hours=hours))
    writer.write_trial("third-u", trial("demo-sweep-third", "uniform", 1, hours=2))
    CatalogWriter(root, "other").write_trial("x", trial("other-sweep", "uniform", 0, hours=3, base=10.0))
    return root


def test_the_same_sweep_run_twice_counts_each_configuration_once(catalog):
    every = load(catalog)
    assert len(every) == 6 * 5  # every row stays in the catalog
    rows = query(catalog, sweep="demo")
    assert sorted(rows["trial_id"].unique()) == ["second-b", "second-u", "third-u"]  # the newer run stands
    assert rows.attrs["repeats_dropped"] == 2
    front = query(catalog, sweep="demo", pareto=True)
    points = list(zip(front["flops"], front["top1"]))
    assert len(points) == len(set(points)) and set(front["trial_id"]) <= {"second-b", "third-u"}
    doubled = query(catalog, sweep="demo", pareto=True, repeats=True)
    assert len(doubled) == 2 * len(front)  # what the second summary printed before: every point twice
    assert query(catalog, sweep="demo", repeats=True).attrs["repeats_dropped"] == 0
    # an older trial named alone is shown: repeats are counted among the rows left by the filters
    assert set(query(catalog, trial="first-u")["trial_id"]) == {"first-u"}
    # a budget picks from the newest trial of a configuration (first-b ties with it and would win the tie)
    best = best_under(every[every["sweep"] == "demo"], max_flops=1200)
    assert best["trial_id"] == "second-b" and best["top1"] == pytest.approx(65.0)
    # across sweeps too: the other sweep's trial is another configuration here only by its fingerprint
    assert query(catalog).attrs["repeats_dropped"] == 3  # 'x' shares uniform-0 with first-u and second-u


def test_drop_repeats_keeps_rows_without_a_fingerprint_and_the_index():
    df = pd.DataFrame([dict(r, sweep="s", trial_id=t) for t, rows in
                       (("old", trial("e1", "uniform", 0, hours=0)), ("new", trial("e2", "uniform", 0, hours=1)))
                       for r in rows])
    kept = drop_repeats(df)
    assert set(kept["trial_id"]) == {"new"} and list(kept.index) == list(range(5, 10))
    df["config_fingerprint"] = None  # files written before catalog schema 7: nothing tells them apart
    assert len(drop_repeats(df)) == 10 and drop_repeats(df).attrs["repeats_dropped"] == 0
    untimed = df.drop(columns=["created_at"]).assign(config_fingerprint="same")  # ties: the last by sweep and trial id
    assert list(drop_repeats(untimed)["trial_id"].unique()) == ["old"]


def test_query_cli_says_what_it_left_out(catalog, capsys):
    assert main(["query", str(catalog), "--sweep", "demo", "--pareto"]) == 0
    err = capsys.readouterr().err
    assert "Left out: 2 trials repeating the settings and seed of a newer trial" in err and "--repeats" in err
    assert main(["query", str(catalog), "--sweep", "demo", "--pareto", "--repeats"]) == 0
    assert "Left out" not in capsys.readouterr().err
    assert main(["query", str(catalog), "--sweep", "demo", "--format", "json"]) == 0
    assert {r["trial_id"] for r in json.loads(capsys.readouterr().out)} == {"second-b", "second-u", "third-u"}


def test_check_names_each_identical_repeat_in_a_note(catalog, capsys):
    result = check(catalog)
    assert not result.problems
    notes = [n for n in result.notes if n.kind == "repeat"]
    assert sorted(n.path.rsplit("/", 2)[-2:][1] for n in notes) == ["trial-first-b.parquet", "trial-first-u.parquet",
                                                                     "trial-second-u.parquet"]
    first_u = next(n for n in notes if n.path.endswith("trial-first-u.parquet"))
    assert "trial 'first-u' (experiment demo-sweep-first, sweep 'demo')" in first_u.reason
    assert "newer trial 'x' (experiment other-sweep, sweep 'other')" in first_u.reason
    assert "code versions 0.1.0+g000000000000 then 0.1.0+g000000000003" in first_u.reason
    assert main(["check", str(catalog), "--sweep", "demo"]) == 0  # repeats are no problem
    out = capsys.readouterr().out
    assert out.count("note: ") == 2 and "identical repeat: trial 'first-b' (experiment demo-sweep-first" in out
    assert "newer trial 'second-b' (experiment demo-sweep-second, sweep 'demo')" in out
    assert main(["check", str(catalog), "--format", "json"]) == 0
    kinds = [n["kind"] for n in json.loads(capsys.readouterr().out)["notes"]]
    assert kinds == ["repeat"] * 3


def test_a_sweep_starting_over_an_experiment_of_its_space_names_it(tmp_path, monkeypatch):
    from orchestrator.sweep import driver as sweep_driver
    from orchestrator.sweep import record as sweep_records
    from search_spaces import load_space

    fingerprint = sweep_records.sweep_record(load_space("demo"))["space_fingerprint"]
    catalog, storage = tmp_path / "catalog", tmp_path / "runs"
    writer = CatalogWriter(catalog, "demo")
    for trial_id, experiment, space in (("t1", "demo-sweep-20260101-000000", fingerprint),
                                        ("t2", "demo-sweep-20260101-000000", fingerprint),
                                        ("t3", "demo-sweep-older", "sha256:another-space")):
        writer.write_trial(trial_id, trial(experiment, "uniform", 0, hours=0),
                           metadata={"snnet.experiment": experiment, "snnet.space_fingerprint": space})
    assert earlier_experiments(catalog, "demo", fingerprint) == {"demo-sweep-20260101-000000": 2}
    assert earlier_experiments(catalog, "demo", fingerprint, exclude="demo-sweep-20260101-000000") == {}
    assert earlier_experiments(tmp_path / "none", "demo", fingerprint) == {}
    assert repeat_note(catalog, "other", fingerprint) is None

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(sweep_driver, "check_trial_resources", stop)  # the note comes before, and before Ray starts
    said: list[str] = []
    with pytest.raises(Stop):
        sweep_driver.run_sweep("demo", catalog=str(catalog), storage=str(storage), progress=said.append)
    (note,) = said
    assert note.startswith("[snnet] note: the catalog partition sweep=demo already holds experiment "
                           "demo-sweep-20260101-000000 (2 trials) of this search space with the same seeds")
    assert "count each configuration and seed once" in note and "--set training.seed=N" in note
    said.clear()
    with pytest.raises(Stop):
        sweep_driver.run_sweep("demo", catalog=str(tmp_path / "fresh"), storage=str(storage), progress=said.append)
    assert said == []


def test_integer_columns_read_as_integers_and_old_files_read_with_nulls(tmp_path, recwarn):
    root = tmp_path / "catalog"
    rows = trial("e", "uniform", 3, hours=0)
    for i, row in enumerate(rows):  # nullable integer columns, null in some rows
        row.update(image_size=None if i else 128, latency_batch_size=None, selection_images=36, epochs=3)
    CatalogWriter(root, "s").write_trial("t", rows)
    for frame in (pd.read_parquet(root), load(root), pq.read_table(root / "sweep=s" / "trial-t.parquet").to_pandas()):
        assert str(frame["image_size"].dtype) == "Int32" and frame["image_size"].isna().sum() == 4
        assert str(frame["seed"].dtype) == "Int64" and str(frame["selection_images"].dtype) == "Int64"
        assert str(frame["latency_batch_size"].dtype) == "Int32" and str(frame["kernel_size"].dtype) == "Int32"
    plain = pd.read_parquet(root)
    assert str(plain["stitch_id"].dtype) == "int32" and str(plain["flops"].dtype) == "int64"  # never null

    # a file of schema 6 lacks the columns of 7: read silently, with nulls
    path = root / "sweep=s" / "trial-t.parquet"
    table = pq.read_table(path).drop_columns(["experiment", "config_fingerprint", "selection_images"])
    pq.write_table(table.replace_schema_metadata({b"snnet.catalog.schema_version": b"6"}), path)
    df = load(root)
    assert not [w for w in recwarn if issubclass(w.category, CatalogWarning)]
    assert df["experiment"].isna().all() and df["config_fingerprint"].isna().all()
    assert df["selection_images"].isna().all() and str(df["selection_images"].dtype) == "Int64"
    # one that says 7 but lacks them is damaged
    pq.write_table(table.replace_schema_metadata({b"snnet.catalog.schema_version": b"7"}), path)
    (problem,) = check(root).problems
    assert problem.kind == "columns" and "experiment, config_fingerprint, selection_images" in problem.reason
