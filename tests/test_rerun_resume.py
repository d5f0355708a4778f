"""``--resume`` of a ``--rerun-best`` sweep on a real local Ray cluster: no row missing, none repeated.

A cheap sweep of two micro demo trials (a quarter of the training data) is re-run at a higher
fidelity (``--rerun-best 2 --set training.data_fraction=0.5``). The re-run's driver is killed right after its
first trial's catalog write, before Tune hears of it (the hardest moment, as in
``test_sweep_faults.py``); ``--rerun-best 2 ... --resume`` then finds the latest ``<name>_rerun``
experiment, keeps the finished re-run's file as it is and trains the other. The re-run partition
ends with one complete file per source trial, each linked to the trial it re-ran (its settings, the
overrides on top); the fidelity columns tell its rows from the source's. ``--rerun-best N`` choosing the
best N is unit-tested in ``test_sweep_selection.py``. Marked ``integration`` (it trains four micro demo
supernets on the shared cluster).
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import MICRO, ONE_WORKER, QUICK, demo_space, with_hooks

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
SPACE = demo_space("rrdemo", training={**MICRO, **QUICK, "sampling": ["uniform", "balanced"]},
                   resources=ONE_WORKER, searcher={"algorithm": "grid", "max_concurrent_trials": 1})
RERUN = ["--rerun-best", "2", "--set", "training.data_fraction=0.5", "--set", "training.seed=7"]



def _trial_files(folder: Path) -> dict[str, Path]:
    return {p.stem[len("trial-"):]: p for p in sorted(folder.glob("trial-*.parquet"))}


def _run(args: list[str], env: dict[str, str], log: Path) -> int:
    with open(log, "w") as out:
        return subprocess.run(args, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT, env=env,
                              timeout=1500).returncode


@pytest.mark.e2e  # a sweep, a killed re-run and its resume: four trainings and three drivers, minutes
def test_a_killed_rerun_resumes_without_missing_or_duplicate_rows(local_cluster, tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    catalog = tmp_path / "catalog"
    args = [sys.executable, "-m", "orchestrator.sweep", "--space", str(tmp_path / "space.yaml"),
            "--catalog", str(catalog), "--storage", str(tmp_path / "runs"), "--address", local_cluster.address]
    # The cluster above runs without token authentication: the drivers must not turn it on.
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    source_folder, rerun_folder = catalog / "sweep=rrdemo", catalog / "sweep=rrdemo_rerun"

    # 1. The cheap sweep: two trials on half the training data.
    log = tmp_path / "source.log"
    assert _run(args, env, log) == 0, log.read_text()[-4000:]
    sources = _trial_files(source_folder)
    assert len(sources) == 2
    assert "early_hv_spearman: n/a" in log.read_text()  # two trials: fewer than three
    source_stamps = {t: p.stat().st_mtime_ns for t, p in sources.items()}

    # 2. The re-run's driver dies right after its first trial's catalog write.
    log = tmp_path / "rerun.log"
    hooked = with_hooks(args + RERUN, kill_driver_after_write=True)
    assert _run(hooked, env, log) == -signal.SIGKILL, log.read_text()[-4000:]
    first = _trial_files(rerun_folder)
    assert len(first) == 1, log.read_text()[-4000:]
    (done_id, done), = first.items()
    stamp, created = done.stat().st_mtime_ns, pq.read_table(done).column("created_at").to_pylist()

    # 3. --resume (the same flags, no --name: the latest re-run experiment) finishes the re-run.
    log = tmp_path / "resume.log"
    assert _run(args + RERUN + ["--resume"], env, log) == 0, log.read_text()[-4000:]
    text = log.read_text()
    assert "resuming sweep from" in text and "rrdemo_rerun-sweep-" in text, text[-4000:]
    assert f"trial {done_id} finished before" in text, text[-4000:]  # found in the catalog, not trained again
    assert {t for t in sources if f"(re-run of {t})" in text} == set(sources), text[-4000:]  # the summary's links

    reruns = _trial_files(rerun_folder)
    assert len(reruns) == 2 and done_id in reruns
    assert done.stat().st_mtime_ns == stamp and pq.read_table(done).column("created_at").to_pylist() == created
    linked = {pq.read_schema(p).metadata[b"snnet.source_trial"].decode(): t for t, p in reruns.items()}
    assert set(linked) == set(sources)  # each source trial re-run exactly once
    for source, trial in linked.items():
        rows = pq.read_table(reruns[trial]).to_pylist()
        source_rows = pq.read_table(sources[source]).to_pylist()
        keys = [(r["trial_id"], r["stitch_id"]) for r in rows]
        assert len(keys) == len(set(keys)) and {r["trial_id"] for r in rows} == {trial}
        assert sorted(r["stitch_id"] for r in rows) == sorted(r["stitch_id"] for r in source_rows)
        assert {(r["data_fraction"], r["seed"]) for r in rows} == {(0.5, 7)}  # the higher-fidelity re-run
        assert {r["data_fraction"] for r in source_rows} == {MICRO["data_fraction"]}  # its cheap source
        assert {r["sampling"] for r in rows} == {r["sampling"] for r in source_rows}  # the source's own settings
        assert pq.read_schema(reruns[trial]).metadata[b"snnet.source_sweep"] == b"rrdemo"
    assert not [p for p in rerun_folder.iterdir() if p.name.startswith(".")]  # no temporary files left
    assert {t: p.stat().st_mtime_ns for t, p in _trial_files(source_folder).items()} == source_stamps
    # the re-run's record still names the plan it started with
    (experiment,) = (tmp_path / "runs").glob("rrdemo_rerun-sweep-*")
    record = json.loads((experiment / "snnet-sweep.json").read_text())
    assert set(record["rerun"]["trials"]) == set(sources) and record["rerun"]["source_sweep"] == "rrdemo"
