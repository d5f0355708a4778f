"""Several Ray nodes on one machine (``ray.cluster_utils.Cluster``): DDP across nodes, and a whole
node removed mid-training, on the micro demo: the run resumes from its last checkpoint on the surviving
nodes, Ray keeps ``num_to_keep`` checkpoints and no checkpoint is left in the workers' temp folder.
Marked ``integration`` (CI runs it). It starts a cluster of its own, not the shared one: it needs
several nodes and removes one."""

import threading
import time

import pyarrow.parquet as pq
import pytest
from _hooks import PidFileHold, TempDirProbe, by_value
from conftest import (
    MICRO_STITCHES,
    assert_resumed_run_left_checkpoints_clean,
    micro_config,
    wait_for_registered_checkpoint,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def three_nodes(tmp_path_factory):
    """A head without CPUs (no training lands there) and three one-CPU worker nodes; this test is the
    driver of a job whose workers get a temp folder of its own (``TMPDIR``, as test_train_integration.py)."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        pytest.skip("another Ray instance is already connected in this process")
    tmp = tmp_path_factory.mktemp("worker-tmp")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(3)]
    cluster.wait_for_nodes()
    env = {"TMPDIR": str(tmp)}
    by_value()  # the test gives the workers _hooks' probes as objects
    ray.init(address=cluster.address, runtime_env={"env_vars": env})
    try:
        yield cluster, nodes, tmp
    finally:
        ray.shutdown()
        cluster.shutdown()


def _raylet_pid_of(pid: int) -> int | None:
    import psutil

    try:
        proc = psutil.Process(pid)
        while proc is not None:
            if "raylet" in " ".join(proc.cmdline()[:1]) or proc.name() == "raylet":
                return proc.pid
            proc = proc.parent()
    except psutil.NoSuchProcess:  # gone, or a zombie not yet reaped
        pass
    return None


def test_ddp_across_nodes_survives_losing_a_node(three_nodes, tmp_path):
    from orchestrator.train.launch import record_run, run_training
    from orchestrator.train.prepare import prepare

    cluster, nodes, worker_tmp = three_nodes
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    # The micro demo, 11 steps of 16 images per rank; the node is lost in training (one checkpoint
    # when the evaluation ends).
    config = micro_config(tmp_path, batch_size=16, placement_strategy="STRICT_SPREAD", checkpoint_every_steps=5,
                          max_failures=2, trial_id="multinode")
    prepared = prepare(config, progress=lambda m: None)
    outcome = {}

    def train():
        try:
            outcome["result"] = run_training(prepared.config, prepared=prepared,
                                             worker_callbacks=[TempDirProbe(), PidFileHold(str(pid_dir), 7)])
            record_run(outcome["result"])  # the trial's catalog file
        except BaseException as e:  # noqa: BLE001 - reported below
            outcome["error"] = e

    thread = threading.Thread(target=train)
    thread.start()
    # Both ranks hold at step 7; each writes its pid file as it gets there (one may be a moment behind the
    # other, and a file may be caught half-written): wait for both pids.
    held = {}
    deadline = time.time() + 300
    while time.time() < deadline and thread.is_alive() and len(held) < 2:
        for r in (0, 1):
            try:
                held[r] = int((pid_dir / f"rank{r}-step7.pid").read_text())
            except (FileNotFoundError, ValueError):
                pass
        time.sleep(0.1)
    assert len(held) == 2, f"training never reached step 7 on both ranks ({sorted(held)}): {outcome}"
    pids = set(held.values())
    raylets = {_raylet_pid_of(p) for p in pids}
    assert len(raylets) == 2 and None not in raylets  # the two DDP ranks run on two different nodes

    wait_for_registered_checkpoint(tmp_path / "runs")
    victim_raylet = _raylet_pid_of(int((pid_dir / "rank1-step7.pid").read_text()))
    victim = next(n for n in nodes if n.all_processes["raylet"][0].process.pid == victim_raylet)
    cluster.remove_node(victim)  # the whole node goes: its raylet and every worker on it
    # Where each restarted rank runs, looked up while it runs (a finished worker has no node left to name).
    restarted_on: dict[int, int | None] = {}
    deadline = time.time() + 600
    while thread.is_alive() and time.time() < deadline:
        for f in pid_dir.glob("rank*-step*.pid"):
            try:
                pid = int(f.read_text())
            except ValueError:  # being written
                continue
            if pid not in pids and pid not in restarted_on:
                restarted_on[pid] = _raylet_pid_of(pid)
        time.sleep(0.2)
    thread.join(timeout=60)
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    table = pq.read_table(result.catalog_file)
    assert sorted(table.column("stitch_id").to_pylist()) == list(range(len(prepared[1]))) \
        == list(range(MICRO_STITCHES))  # one row per stitch, none twice (the lost attempt wrote none)
    # The group was rebuilt on the two surviving nodes and resumed from the step-5 checkpoint: its rank 0
    # ran steps 5 to the last again.
    restarted = [f for f in pid_dir.glob("rank*-step*.pid") if int(f.read_text()) not in pids]
    assert restarted and min(int(f.stem.split("step")[1]) for f in restarted) >= 5
    rank0 = sorted(int(f.stem.split("step")[1]) for f in restarted if f.name.startswith("rank0-"))
    assert rank0 == list(range(5, rank0[-1] + 1)), rank0
    survivors = {raylet for raylet in restarted_on.values() if raylet is not None}
    assert survivors and victim_raylet not in survivors
    # Storage keeps num_to_keep=2 of the checkpoints reported over both attempts (step 5 by the lost one,
    # step 10, the epoch's end, the evaluation's); the workers' temp folder holds none of ours.
    assert_resumed_run_left_checkpoints_clean(tmp_path / "runs", result.checkpoint, worker_tmp, rank0[-1])
