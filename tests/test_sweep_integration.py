"""The sweep on real local Ray clusters, training the micro demo: ``ray job submit`` to a head node,
and ``--resume`` after the driver is killed. Marked ``integration`` (CI runs them).

The job test starts a head of its own with ``ray start --head`` (a user's cluster: the dashboard's job
server, token authentication) and ends it by the process ids it holds; the resume test's drivers join
the shared cluster.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import MICRO, QUICK, demo_space

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]

def small_demo(name: str, samples: int) -> str:
    return demo_space(name, anchors=2, space={"kernel_size": [2, 3]},
                      training={**MICRO, **QUICK, "sampling": ["uniform", "balanced"]},
                      resources={"workers_per_trial": 2, "cpus_per_worker": 1},
                      searcher={"algorithm": "tpe", "objectives": ["hypervolume"], "num_samples": samples, "seed": 0})


def _space(tmp_path: Path, name: str, samples: int) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(small_demo(name, samples))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rows(catalog: Path, sweep: str) -> list[dict]:
    rows = []
    for f in sorted((catalog / f"sweep={sweep}").glob("trial-*.parquet")):
        rows.extend(pq.read_table(f).to_pylist())
    return rows


def _stitches_of(trial_rows: list[dict]) -> int:
    return len({r["stitch_id"] for r in trial_rows})


@pytest.fixture
def head_node(tmp_path):
    """``ray start --head --block`` in its own process group; ended by that group and the pids
    of every process it started (Ray workers run in process groups of their own)."""
    import psutil

    port, dash, agent = _free_port(), _free_port(), _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    log = open(tmp_path / "head.log", "w")
    head = subprocess.Popen(
        ["ray", "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--disable-usage-stats",
         # Not the agent's default port: another Ray node on this machine (the shared cluster) may hold it,
         # and a head whose agent cannot bind answers every job submission "No available agent".
         f"--dashboard-agent-listen-port={agent}"],
        # No drain on SIGTERM (Ray's default waits up to 30 s for the node to go idle, for Ray Serve's
        # sake; a test head is never idle that soon): `ray start` stops its processes at once.
        stdout=log, stderr=subprocess.STDOUT, env={**env, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"},
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 180
    while time.time() < deadline:
        status = subprocess.run(["ray", "job", "list", "--address", url], env=env, capture_output=True, text=True)
        if status.returncode == 0:
            break
        assert head.poll() is None, (tmp_path / "head.log").read_text()
        time.sleep(2)
    else:
        pytest.fail("the Ray head's job server did not come up: " + (tmp_path / "head.log").read_text()[-2000:])
    try:
        yield url, env
    finally:
        family = [head.pid] + [p.pid for p in psutil.Process(head.pid).children(recursive=True)]
        # SIGTERM to `ray start` alone: it stops its own processes (about 2 s). A SIGTERM to the whole
        # group kills the GCS first, and the rest then hang retrying it until the 30 s timeout below.
        # Whatever is left is SIGKILLed by group and by pid.
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in family:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()


def test_ray_job_submit_runs_a_sweep_and_the_catalog_reads_everywhere(head_node, tmp_path):
    url, env = head_node
    # One trial: the job path and the catalog's readers are the subject (sweeps of several trials, and their
    # resume, are test_sweep_faults.py's and the resume test's below).
    space, catalog, storage = _space(tmp_path, "jobdemo", 1), tmp_path / "catalog", tmp_path / "runs"
    deadline = time.time() + 120
    while True:
        submit = subprocess.run(
            ["ray", "job", "submit", "--address", url, "--working-dir", ".", "--",
             "python", "-m", "orchestrator.sweep", "--space", str(space), "--catalog", str(catalog),
             "--storage", str(storage)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
        )
        # The job server answers before the node's agent that runs jobs is up ("please try again later").
        if "No available agent to submit job" not in submit.stdout + submit.stderr or time.time() > deadline:
            break
        time.sleep(2)
    assert submit.returncode == 0, submit.stdout[-4000:] + submit.stderr[-4000:]
    assert "succeeded" in submit.stdout.lower()
    rows = _rows(catalog, "jobdemo")
    trials = {r["trial_id"] for r in rows}
    assert len(trials) == 1
    assert len(rows) == sum(_stitches_of([r for r in rows if r["trial_id"] == t]) for t in trials)
    assert len({(r["trial_id"], r["stitch_id"]) for r in rows}) == len(rows)

    # DuckDB reads the catalog as it is, and its Pareto set equals `catalog query --pareto`.
    duckdb = pytest.importorskip("duckdb")
    glob = f"{catalog}/**/*.parquet"
    con = duckdb.connect()
    front_sql = con.execute(f"""
        select trial_id, stitch_id from read_parquet('{glob}', hive_partitioning=true) a
        where sweep = 'jobdemo' and not exists (
            select 1 from read_parquet('{glob}', hive_partitioning=true) b
            where b.sweep = 'jobdemo' and b.top1 >= a.top1 and b.flops <= a.flops
              and (b.top1 > a.top1 or b.flops < a.flops))
    """).fetchall()
    query = subprocess.run(
        [sys.executable, "-m", "orchestrator.catalog", "query", str(catalog), "--sweep", "jobdemo", "--pareto",
         "--format", "json"], capture_output=True, text=True, timeout=120,
    )
    assert query.returncode == 0, query.stderr
    front_cli = {(r["trial_id"], r["stitch_id"]) for r in json.loads(query.stdout)}
    assert front_cli == set(front_sql) and front_cli
    plot = subprocess.run(
        [sys.executable, "-m", "orchestrator.catalog", "plot", str(catalog), "--out", str(tmp_path / "front.png")],
        capture_output=True, text=True, timeout=120,
    )
    assert plot.returncode == 0, plot.stderr
    assert (tmp_path / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"



@pytest.mark.e2e  # three trials, a driver killed mid-trial and resumed: minutes (test_sweep_faults.py is the quick one)
def test_killed_sweep_driver_resumes_without_missing_or_duplicate_rows(local_cluster, tmp_path):
    space, catalog, storage = _space(tmp_path, "resumedemo", 3), tmp_path / "catalog", tmp_path / "runs"
    args = [sys.executable, "-m", "orchestrator.sweep", "--space", str(space), "--catalog", str(catalog),
            "--storage", str(storage), "--address", local_cluster.address]
    log = open(tmp_path / "first.log", "w")
    driver = subprocess.Popen(args, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    folder = catalog / "sweep=resumedemo"
    deadline = time.time() + 600
    while time.time() < deadline and not list(folder.glob("trial-*.parquet")):
        assert driver.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(1)
    assert list(folder.glob("trial-*.parquet")), "no trial finished in time"
    time.sleep(5)  # let the second trial start training, so it is killed mid-way
    os.kill(driver.pid, signal.SIGKILL)  # the driver only: the cluster (and its storage) live on
    driver.wait(timeout=60)
    log.close()
    assert len(list(folder.glob("trial-*.parquet"))) < 3

    resumed = subprocess.run(args + ["--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]
    assert "resuming sweep" in resumed.stdout
    rows = _rows(catalog, "resumedemo")
    trials = {r["trial_id"] for r in rows}
    assert len(trials) == 3
    keys = [(r["trial_id"], r["stitch_id"]) for r in rows]
    assert len(keys) == len(set(keys))
    for t in trials:  # every trial complete: one row per stitch of its space
        ids = sorted(r["stitch_id"] for r in rows if r["trial_id"] == t)
        assert ids == list(range(len(ids)))
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary files left
