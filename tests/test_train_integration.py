"""Training on the shared local Ray cluster: the micro demo end to end with two gloo workers, and a
worker killed mid-training. Marked ``integration``: in-process drivers of the shared cluster whose job
gives its workers a temp folder of the test's own (``TMPDIR`` in the job's runtime environment).

- A two-epoch run (issue 12 and issue 11): one catalog row per stitch with its selection top-1,
  ``early_hv`` after every epoch, and checkpoints that leave nothing behind: many reported, Ray keeps
  ``num_to_keep`` of them in storage, no checkpoint folder stays in the temp folder during the run or
  after it.
- A worker killed mid-training: Ray Train resumes the run from its last registered checkpoint (steps
  run again from there, not from scratch), one catalog row per stitch, and the same holds for storage
  and the temp folder.

LS against Kaiming initialisation is test_recipe.py's (no Ray); the demo's console, test_console.py's.
The demo anchors are pretrained once and cached (``$SNNET_CACHE`` or ``~/.cache/snnet/demo``).
"""

import json
import os
import signal
import threading
import time

import pyarrow.parquet as pq
import pytest
from _hooks import PidFileHold, TempDirProbe, by_value
from conftest import (
    MICRO_STITCHES,
    assert_resumed_run_left_checkpoints_clean,
    checkpoint_folders_in,
    connected,
    micro_config,
    stored_checkpoints,
    training_images,
    wait_for_registered_checkpoint,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def worker_tmp(ray_cluster, tmp_path_factory):
    """This test as a driver of the shared cluster whose job's workers get a temp folder of their own."""
    tmp = tmp_path_factory.mktemp("worker-tmp")
    env = {"TMPDIR": str(tmp)}
    by_value()  # the tests give the workers _hooks' probes as objects
    with connected(ray_cluster, log_to_driver=False, runtime_env={"env_vars": env}):
        yield tmp


def test_the_micro_demo_trains_on_two_gloo_workers_and_leaves_no_checkpoint_in_the_temp_folder(
        worker_tmp, tmp_path):
    """Two epochs, two gloo workers, the 2% selection split held out, a checkpoint per finished stitch."""
    import ray.train

    from orchestrator.catalog.objectives import hypervolume
    from orchestrator.train.launch import record_run, run_training
    from orchestrator.train.prepare import prepare

    storage, log = tmp_path / "runs", tmp_path / "reports.jsonl"

    class Recorder(ray.train.UserCallback):  # runs in Ray Train's controller: it writes, the test reads
        def after_report(self, run_context, metrics, checkpoint):
            with open(log, "a") as f:
                f.write(json.dumps({k: v for k, v in metrics[0].items() if k != "results"}) + "\n")

    config = micro_config(tmp_path, epochs=2, eval_checkpoint_seconds=0.0, trial_id="two-epochs")
    prepared = prepare(config, progress=lambda m: None)
    space = prepared[1]
    assert checkpoint_folders_in(worker_tmp) == [] and stored_checkpoints(storage) == []
    result = run_training(prepared.config, prepared=prepared, progress=lambda m: None, callbacks=[Recorder()],
                          worker_callbacks=[TempDirProbe()])
    record_run(result)  # the trial's catalog file

    # The catalog: one row per stitch.
    table = pq.read_table(result.catalog_file)
    assert table.num_rows == len(space) == MICRO_STITCHES
    assert sorted(table.column("stitch_id").to_pylist()) == list(range(len(space)))
    rows = table.to_pylist()
    assert all(0.0 <= r["top1"] <= 100.0 and r["top1"] <= r["top5"] for r in rows)
    assert all(r["workers"] == 2 and r["epochs"] == 2 and r["init"] == "ls" for r in rows)
    anchors = sorted((r for r in rows if len(r["anchors"]) == 1), key=lambda r: r["flops"])
    # pretrained anchors stay good while stitches train: still a family (about 49 / 75 % when cached)
    tops = [r["top1"] for r in anchors]
    assert tops[0] > 40.0 and tops[1] > tops[0] + 3.0, tops
    assert os.path.isdir(result.checkpoint)
    assert set(result.r2) == set(space.layers) and all(0 < v <= 1 for v in result.r2.values())

    # What the workers reported: the early front after every epoch, both splits at the end.
    reports = [json.loads(line) for line in log.read_text().splitlines()]
    epochs = [m for m in reports if m.get("phase") == "train" and "epoch_seconds" in m]
    assert [m["epoch"] for m in epochs] == [1, 2]
    assert all(isinstance(m["early_hv"], float) and 0.0 < m["early_hv"] < 1.0 for m in epochs), epochs
    final = reports[-1]
    assert final["phase"] == "eval" and final["selection_images"] == 30  # 2% of each digit's training images
    # the workers trained on the images the driver predicted: a quarter of the 1437 - 30 left
    assert final["train_images"] == result.train_images == training_images(prepared) < (1437 - 30) // 3
    assert result.hv_selection == final["hv_selection"]
    selection = [r["top1_selection"] for r in rows]
    assert all(s is not None and 0.0 <= s <= 100.0 and round(s * 30 / 100, 6).is_integer() for s in selection)
    assert {str(r["stitch_id"]): r["top1_selection"] for r in rows} == final["results_selection"]
    ref = max(p.flops for p in space.profiles)
    assert final["hv_selection"] == hypervolume([(r["flops"], r["top1_selection"]) for r in rows], ref)
    # trained anchors: the selection split ranks them as the evaluation split does
    assert anchors[-1]["top1_selection"] > anchors[0]["top1_selection"]

    # Checkpoints: 2 epoch checkpoints and one per evaluation round (18 stitches over 2 workers) were
    # reported; storage keeps num_to_keep=2 of them, the last one is the run's checkpoint.
    assert len([m for m in reports if m.get("phase") == "eval"]) > 2
    stored = stored_checkpoints(storage)
    assert len(stored) == 2 and all(os.path.isfile(os.path.join(p, "state.pt")) for p in stored)
    assert os.path.realpath(result.checkpoint) in map(os.path.realpath, stored)
    assert checkpoint_folders_in(worker_tmp) == []
    # The workers did use this temp folder, and never saw a checkpoint folder left there.
    probe = (worker_tmp / "snnet-probe-rank0").read_text().split()
    # the last step of epoch 2 (a rank's half of the epoch's images in whole batches), no folder seen
    assert probe == [str(2 * ((training_images(prepared) // 2) // config.batch_size) - 1), "0"]


@pytest.mark.e2e  # test_multinode.py loses a whole node mid-training and checks the same after its resume
def test_a_killed_and_resumed_run_keeps_num_to_keep_and_leaves_no_checkpoint_in_the_temp_folder(
        worker_tmp, tmp_path):
    from orchestrator.catalog import read_catalog
    from orchestrator.train.launch import record_run, run_training
    from orchestrator.train.prepare import prepare

    storage, pid_dir = tmp_path / "runs", tmp_path / "pids"
    pid_dir.mkdir()
    # One epoch of 11 steps (16 images per worker): checkpoints at steps 5 and 10, at the epoch's end
    # and after the evaluation (one, at its end): more than num_to_keep=2.
    config = micro_config(tmp_path, batch_size=16, checkpoint_every_steps=5, max_failures=1, trial_id="killed")
    prepared = prepare(config, progress=lambda m: None)
    assert (training_images(prepared) // 2) // config.batch_size == 11
    space = prepared[1]
    outcome = {}

    def train():
        try:
            outcome["result"] = run_training(prepared.config, prepared=prepared, progress=lambda m: None,
                                             worker_callbacks=[TempDirProbe(), PidFileHold(str(pid_dir), 7, 600)])
            record_run(outcome["result"])  # the trial's catalog file
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = e

    thread = threading.Thread(target=train)
    thread.start()
    # Rank 0 (the rank that writes checkpoints) holds at step 7 on the first attempt, after the
    # step-5 checkpoint: once Ray has registered that checkpoint, kill rank 0 there.
    held = pid_dir / "rank0-step7.pid"
    deadline = time.time() + 300
    while time.time() < deadline and thread.is_alive() and not held.exists():
        time.sleep(0.05)
    assert held.exists(), f"training never reached step 7: {outcome}"
    victim = int(held.read_text())
    wait_for_registered_checkpoint(storage)
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=600)
    assert not thread.is_alive(), "training did not finish within 600 s of the kill"
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]

    # A new worker group resumed from the step-5 checkpoint: its rank 0 ran steps 5 to the last again,
    # and rank 1 is a new process too that resumed there, not from scratch.
    restarted = sorted(int(f.stem.split("step")[1]) for f in pid_dir.glob("rank0-step*.pid")
                       if int(f.read_text()) != victim)
    assert restarted and restarted == list(range(5, restarted[-1] + 1)), restarted
    first_rank1 = (pid_dir / "rank1-step0.pid").read_text()
    rank1_again = [int(f.stem.split("step")[1]) for f in pid_dir.glob("rank1-step*.pid")
                   if f.read_text() != first_rank1]
    assert rank1_again and min(rank1_again) == 5, rank1_again
    # The catalog: one row per stitch, none twice (the killed attempt wrote no rows).
    table = read_catalog(config.catalog)
    assert sorted(table.column("stitch_id").to_pylist()) == list(range(len(space))) == list(range(MICRO_STITCHES))
    assert pq.read_table(result.catalog_file).num_rows == MICRO_STITCHES
    # Storage keeps num_to_keep=2 of the 3 or 4 checkpoints reported over the two attempts (step 5 by
    # the killed one); the workers' temp folder holds none of ours.
    assert_resumed_run_left_checkpoints_clean(storage, result.checkpoint, worker_tmp, restarted[-1])


def test_ctrl_c_during_training_exits_130_and_prints_the_command_that_resumes(local_cluster, tmp_path):
    """Ctrl-C (SIGINT to the command's process group) while the workers train: Ray Train's own handler ended
    the command with status 1 and not a word; the command now aborts the run, prints how to resume it and
    exits 130 (``orchestrator.train.ray_hooks.interrupt_as_keyboard``)."""
    import shlex
    import subprocess
    import sys
    from pathlib import Path

    log = tmp_path / "train.log"
    args = [sys.executable, "-m", "orchestrator.train", "--epochs", "500", "--workers", "1",
            "--set", "data_fraction=0.25", "--catalog", str(tmp_path / "catalog"), "--storage", str(tmp_path / "runs"),
            "--address", local_cluster.address]
    # The cluster runs without token authentication: the driver must not turn it on.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        deadline = time.time() + 300
        while "epochs x" not in log.read_text():  # the worker's "training 35 stitches for 500 epochs x ..." line
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-4000:]
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) == 130, log.read_text()[-4000:]
    text = log.read_text()
    own = [line for line in text.splitlines() if not line.startswith("(")]  # not forwarded from a Ray process
    assert not any("Traceback" in line for line in own), text[-4000:]
    command = shlex.split(text.split("interrupted; resume this run with:", 1)[1].strip().splitlines()[0])
    assert command[:3] == ["python", "-m", "orchestrator.train"] and "--trial-id" in command and "--sweep" in command
    assert command[command.index("--epochs") + 1] == "500"
